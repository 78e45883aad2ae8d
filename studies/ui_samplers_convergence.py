"""Weak and strong convergence of issue 28's stochastic samplers on the exact-score 2-D Gaussian mixture.

    PYTHONPATH=src OMP_NUM_THREADS=1 python studies/ui_samplers_convergence.py [weak] [strong] [dpmpp_sde_noise]   # the tables of docs/convergence.md

Weak: the moment error of studies/weak_convergence.py (2 means, 3 second central moments against the exact ones) of
N = 20000 samples vs NFE; its Monte-Carlo floor is printed. Strong: with noise_sampler=brownian every grid sees the
same Brownian path per sample, so the error of each sample against the same sampler on a fine grid (640 steps, same
spacing, same paths) is measurable: rms over 2000 samples vs NFE, and its least-squares slope (order). With
noise_sampler=gaussian the same number does not fall (fresh noise per grid): printed for one sampler as the control.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
import weak_convergence as W  # noqa: E402

from nfebench import api  # noqa: E402
from nfebench.samplers.common import PerSampleNoise  # noqa: E402

WEAK = [("euler_ancestral", {}), ("dpmpp_2s_ancestral", {}), ("dpmpp_sde", {}), ("dpmpp_2m_sde", {}),
        ("dpmpp_2m_sde", {"solver_type": "heun"}), ("dpmpp_3m_sde", {}), ("er_sde", {}), ("sa_solver", {}),
        ("sa_solver", {"tau": 1.0})]
WEAK_NFE = [5, 10, 20, 50, 100, 200]
STRONG = [("euler_ancestral", {}), ("dpmpp_2s_ancestral", {}), ("dpmpp_sde", {}), ("dpmpp_2m_sde", {}),
          ("dpmpp_3m_sde", {}), ("er_sde", {}), ("sa_solver", {"tau": 1.0})]
STRONG_NFE = [20, 40, 80, 160]
FINE = 640
N_STRONG = 1000


def two_evals(name):
    return name in ("dpmpp_sde", "dpmpp_2s_ancestral")


def budget(name, nfe):
    return nfe - (1 - nfe % 2) if two_evals(name) else nfe


def weak(name, opts, nfe, n=W.N):
    return W.run(name, opts, budget(name, nfe), n=n)


def strong(name, opts, nfes, n=N_STRONG, noise="brownian", fine=FINE):
    """rms over samples of x(nfe) - x(fine grid), same per-sample seeds (Brownian paths)."""
    gmm = W.mixture()
    xt = torch.randn(n, 2, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    run = lambda k: api.sample(gmm.eps, gmm.sched, xt, name, budget(name, k),  # noqa: E731
                               generator=PerSampleNoise(range(n)), noise_sampler=noise, **opts)
    ref = run(2 * fine if two_evals(name) else fine)
    errs = [float((run(k) - ref).pow(2).sum(1).mean().sqrt()) for k in nfes]
    slope = -np.polyfit(np.log(nfes), np.log(errs), 1)[0]
    return errs, float(slope)


def label(name, opts):
    return name + (" (" + ", ".join(f"{k}={v}" for k, v in opts.items()) + ")" if opts else "")


def main(parts=("weak", "strong", "dpmpp_sde_noise")):
    if "weak" in parts:
        weak_table()
    if "strong" in parts:
        strong_table()
    if "dpmpp_sde_noise" in parts:
        dpmpp_sde_noise_table()


def dpmpp_sde_noise_table(n=8000):
    """dpmpp_sde's weak error with Gaussian and with Brownian noise (8000 samples, per-sample seeds 0..n-1)."""
    gmm = W.mixture()
    xt = torch.randn(n, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    print(f"| dpmpp_sde noise | NFE 49, 99, 199: moment error (N = {n}) |")
    print("|---|---|")
    for noise in ("gaussian", "brownian"):
        errs = [W.moment_error(api.sample(gmm.eps, gmm.sched, xt, "dpmpp_sde", k, generator=PerSampleNoise(range(n)),
                                          noise_sampler=noise), gmm) for k in (49, 99, 199)]
        print(f"| {noise} | {', '.join(f'{e:.2e}' for e in errs)} |", flush=True)


def weak_table():
    print(f"| sampler (options) | NFE {', '.join(map(str, WEAK_NFE))}: moment error (N = {W.N}) |")
    print("|---|---|")
    for name, opts in WEAK:
        errs = [weak(name, opts, k)[0] for k in WEAK_NFE]
        print(f"| {label(name, opts)} | {', '.join(f'{e:.2e}' for e in errs)} |", flush=True)
    print(f"| floor (N exact samples) | {W.floor():.2e} |")


def strong_table():
    print(f"| sampler (options), noise_sampler=brownian | NFE {', '.join(map(str, STRONG_NFE))}: rms error vs "
          f"{FINE} steps | order |")
    print("|---|---|---|")
    for name, opts in STRONG:
        errs, slope = strong(name, opts, STRONG_NFE)
        print(f"| {label(name, opts)} | {', '.join(f'{e:.2e}' for e in errs)} | {slope:.2f} |", flush=True)
    errs, slope = strong("dpmpp_2m_sde", {}, STRONG_NFE, noise="gaussian")
    print(f"| dpmpp_2m_sde, noise_sampler=gaussian (control) | {', '.join(f'{e:.2e}' for e in errs)} | "
          f"{slope:.2f} |")


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    main(sys.argv[1:] or ("weak", "strong"))

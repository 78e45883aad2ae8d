"""Weak convergence of the stochastic and adaptive samplers on an exact-score Gaussian mixture.

    PYTHONPATH=src OMP_NUM_THREADS=1 python studies/weak_convergence.py      # prints the table of docs/convergence.md

A stochastic sampler does not follow one ODE solution, so its error is measured on the distribution: the exact
mean and covariance of a 2-D, two-component mixture (the oracle of tests/test_samplers_suite.py) against those of
N samples. The moment error is the root of the summed squared errors of the 2 means and the 3 second central
moments. With N = 20000 samples its Monte-Carlo floor is about 4e-3 (printed as `floor`: the same statistic for N
exact samples of the mixture). For the adaptive samplers the NFE is what they spent at each tolerance.
"""

from __future__ import annotations

import os
import sys

import torch

from nfebench import api
from nfebench.models.gmm import GaussianMixtureVP
from nfebench.schedule import linear_betas

N, SEED = 20000, 0

# name, sampler, options, budgets (fixed-step samplers) or [(options, cap), ...] (adaptive samplers)
CASES = [
    ("sde euler_maruyama", "sde", {}, [10, 20, 50, 100, 200, 500]),
    ("sde reverse_diffusion", "sde", {"predictor": "reverse_diffusion"}, [10, 20, 50, 100, 200, 500]),
    ("sde ancestral", "sde", {"predictor": "ancestral"}, [10, 20, 50, 100, 200, 500]),
    ("sde reverse_diffusion + langevin", "sde", {"predictor": "reverse_diffusion", "corrector": "langevin"},
     [20, 40, 100, 200, 400, 1000]),
    ("edm_stochastic (CIFAR-10 VP preset)", "edm_stochastic", {}, [9, 19, 49, 99, 199]),
    ("heun (deterministic PF-ODE, for comparison)", "heun", {}, [9, 19, 49, 99, 199]),
    ("restart (CIFAR-10 VP interval)", "restart", {}, [19, 29, 49, 99, 199]),
    ("ggf", "ggf", None, [({"eps_abs": e, "eps_rel": r}, 5000) for e, r in
                          [(0.05, 0.5), (0.0078, 0.05), (0.002, 0.01), (5e-4, 2e-3)]]),
]


def mixture() -> GaussianMixtureVP:
    return GaussianMixtureVP([0.3, 0.7], [[-0.5, 0.2], [0.4, -0.3]],
                             [[[0.02, 0.01], [0.01, 0.03]], [[0.05, -0.02], [-0.02, 0.02]]], linear_betas(), (2,))


def moment_error(x: torch.Tensor, gmm: GaussianMixtureVP) -> float:
    """sqrt(sum of squared errors of the mean (2) and of the second central moments (3)) against the exact ones."""
    m0, c0 = gmm.mean_cov()
    d = x - m0
    i, j = torch.triu_indices(2, 2)
    em = d.mean(0)
    ec = (d[:, i] * d[:, j]).mean(0) - c0[i, j]
    return float(torch.cat([em, ec]).pow(2).sum().sqrt())


def run(sampler: str, options: dict, nfe: int, n: int = N, seed: int = SEED):
    """(moment error, evaluations spent) of n samples."""
    gmm = mixture()
    xt = torch.randn(n, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    x, used = api.sample(gmm.eps, gmm.sched, xt, sampler, nfe, generator=torch.Generator().manual_seed(seed + 1),
                         return_nfe=True, **options)
    return moment_error(x, gmm), used


def floor(n: int = N, seed: int = SEED) -> float:
    gmm = mixture()
    return moment_error(gmm.sample(n, generator=torch.Generator().manual_seed(seed)), gmm)


def main():
    print(f"| sampler (options) | NFE | moment error (N = {N}) |")
    print("|---|---|---|")
    for name, sampler, options, budgets in CASES:
        rows = [run(sampler, options, b) if options is not None else run(sampler, b[0], b[1]) for b in budgets]
        print(f"| {name} | {', '.join(str(u) for _, u in rows)} | {', '.join(f'{e:.2e}' for e, _ in rows)} |",
              flush=True)
    print(f"| floor (N exact samples) | - | {floor():.2e} |")


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    sys.exit(main())

"""Restart sampling (Xu, Deng, Cheng, Tian, Liu, Jaakkola 2023, arXiv 2306.14878), Sec. 4 and Alg. 1.

A deterministic main pass, EDM's Heun on the PF-ODE (Alg. 1 of Karras et al. 2022) over N_main Karras steps, is
interrupted at restart intervals [t_min, t_max] (in EDM's sigma): on reaching t_min it K times adds forward-process
noise back up to t_max, x_hat <- x_hat + sqrt(t_max^2 - t_min^2) z (the "restart forward process", Sec. 4), and
integrates the ODE from t_max back to t_min with N_R-point Karras grids of Heun steps (the "restart backward
process"). As in the paper's code, t_min is moved to the main grid's noise level nearest to it, so the main pass is
unchanged. Every restart step ends above sigma = 0, so each of its N_R - 1 Heun steps spends 2 evaluations:

    NFE = (2 N_main - 1) + sum_i 2 K_i (N_R,i - 1)
"""

from __future__ import annotations

import math

import numpy as np

from .edm import sig_alpha, edm_grid, heun_step
from .registry import SamplerError, register

# The paper's CIFAR-10 VP setting (Xu et al. 2023, Table 3 / its code's example): one interval [0.06, 0.30],
# N_R = 3 points, K = 2 restarts; with N_main = 18 that is 35 + 8 = 43 evaluations.
CIFAR10_VP = [[3, 2, 0.06, 0.30]]


def check_intervals(sched, restarts) -> list[tuple[int, int, float, float]]:
    """[[N_R, K, t_min, t_max], ...] -> tuples, each inside the schedule's EDM sigma range, or a SamplerError."""
    lo, hi = float(sched.edm_sigma(sched.t_min)), float(sched.edm_sigma(sched.t_max))
    out = []
    for iv in restarts:
        if len(iv) != 4:
            raise SamplerError(f"a restart interval is [N_R, K, t_min, t_max], got {list(iv)}")
        n_r, k, t_min, t_max = int(iv[0]), int(iv[1]), float(iv[2]), float(iv[3])
        if n_r < 2 or k < 1 or n_r != iv[0] or k != iv[1]:
            raise SamplerError(f"restart interval {list(iv)}: N_R must be an integer >= 2 and K an integer >= 1")
        if not lo <= t_min < t_max <= hi:
            raise SamplerError(f"restart interval {list(iv)} is outside the schedule: need {lo:.4g} <= t_min < "
                               f"t_max <= {hi:.4g} (EDM sigma)")
        out.append((n_r, k, t_min, t_max))
    return out


def restart_evals(n_main: int, intervals) -> int:
    """(2 N_main - 1) + sum 2 K (N_R - 1): Heun main pass to sigma = 0 plus K restart passes per interval."""
    return 2 * n_main - 1 + sum(2 * k * (n_r - 1) for n_r, k, _, _ in intervals)


@register("restart", stochastic=True)
def restart(eps, sched, x, nfe, noise, *, main_steps=None, restarts=CIFAR10_VP, spacing="karras"):
    """Restart sampling (Xu et al. 2023): a Heun main pass with K_i restarts of [t_min, t_max] (EDM sigma).

    restarts: [[N_R, K, t_min, t_max], ...] (default the paper's CIFAR-10 VP setting [[3, 2, 0.06, 0.30]]).
    main_steps: N_main, the main pass's Heun steps (None: as many as the budget allows). Spends
    (2 N_main - 1) + sum 2 K_i (N_R,i - 1) <= nfe evaluations.
    """
    intervals = check_intervals(sched, restarts)
    if main_steps is None:
        if nfe < restart_evals(2, intervals):
            raise SamplerError(f"nfe={nfe} is below the minimum of sampler 'restart' with these restart intervals: "
                               f"{restart_evals(2, intervals)}")
        main_steps = (nfe - restart_evals(0, intervals)) // 2  # the largest N_main that fits
    if int(main_steps) != main_steps or main_steps < 2:
        raise SamplerError(f"main_steps must be an integer >= 2 (or null), got {main_steps!r}")
    if restart_evals(main_steps, intervals) > nfe:
        raise SamplerError(f"main_steps={main_steps} with these restarts takes {restart_evals(main_steps, intervals)} "
                           f"evaluations, above nfe={nfe}")
    ts = edm_grid(sched, int(main_steps), spacing, None)
    sigmas = np.array([sig_alpha(sched, float(t))[0] for t in ts[1:-1]])  # main-grid levels where a restart can end
    at = {}  # main-grid index i (a restart after reaching ts[i]) -> its intervals, in the order given
    for iv in intervals:
        i = int(np.argmin(np.abs(sigmas - iv[2])))
        if sigmas[i] >= iv[3]:
            raise SamplerError(f"restart interval {list(iv)}: t_min moves to the nearest main-grid sigma "
                               f"{sigmas[i]:.4g}, not below t_max; use more main steps")
        at.setdefault(i + 1, []).append(iv)
    xh = x / sig_alpha(sched, float(ts[0]))[1]
    for i, (s, t) in enumerate(zip(ts[:-1], ts[1:]), start=1):
        xh = heun_step(eps, sched, xh, float(s), float(t))  # main pass
        for n_r, k, _, t_max in at.get(i, []):
            sig_min = sig_alpha(sched, float(t))[0]  # t_min, moved to the main grid
            t_hi = float(sched.tau_from_edm_sigma(t_max))
            sub = sched.timesteps(n_r - 1, "karras", t_start=t_hi, t_end=float(t))  # N_R points, t_max -> t_min
            for _ in range(k):
                xh = xh + math.sqrt(t_max**2 - sig_min**2) * noise.randn_like(xh)  # restart forward
                for u, v in zip(sub[:-1], sub[1:]):  # restart backward: Heun from t_max to t_min
                    xh = heun_step(eps, sched, xh, float(u), float(v))
    return xh * sig_alpha(sched, float(ts[-1]))[1]

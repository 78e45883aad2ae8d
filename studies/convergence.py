"""Convergence order of the deterministic samplers on the exact-score Gaussian-mixture oracle.

    PYTHONPATH=src OMP_NUM_THREADS=1 python studies/convergence.py            # prints the table of docs/convergence.md
    PYTHONPATH=src OMP_NUM_THREADS=1 python studies/convergence.py ve         # the same oracle on the VE schedule
    PYTHONPATH=src OMP_NUM_THREADS=1 python studies/convergence.py vp_linear  # ... on score_sde's continuous VP

Each sampler integrates the probability-flow ODE from the same x_T (tau = t_max) to tau = t_min; the error is the rms
difference from a reference solution of the same ODE by scipy's DOP853 (rtol = atol = 1e-12) in u = log(rho),
rho = sigma/alpha, where d(x/alpha)/du = rho * eps. The order is minus the least-squares slope of log(error) against
log(NFE) over NFE values where the error is asymptotic.

The oracle is smoother than the default GMM (8 components, reg_covar = 1e-2, so the smallest component variance is
1e-2): with reg_covar = 1e-4 the ODE is stiff near tau = 0 and the errors at 20-200 NFE are pre-asymptotic.
Samplers whose default grid ends at clean data (ddim, euler, heun: a last step from tau = 0 to sigma = 0 whose size
does not shrink with N) are run on explicit grids ending at tau = 0, the same grid family as their default.
"""

from __future__ import annotations

import math
import os
import sys
from functools import lru_cache

import numpy as np
import torch

ORACLE = dict(n_components=8, reg_covar=1e-2)
BATCH, SEED = 4, 0

# name, sampler, options, NFE values (in the asymptotic range), theoretical/documented order, explicit grid
# spacing ("default": the sampler's default spacing on the schedule, as an explicit grid ending at t_min; None: the
# sampler's own default grid), tested (asserted within 0.3 by tests/test_convergence.py)
WARMUP_EXTRA = {"pndm": 9, "plms": 1}  # evaluations beyond one per step
O2, O3 = [40, 80, 160, 320], [80, 160, 320, 640]
CASES = [
    ("ddim", "ddim", {}, [25, 50, 100, 200], 1, "default", True),
    ("euler", "euler", {}, [25, 50, 100, 200], 1, "karras", True),
    ("heun", "heun", {}, O2, 2, "karras", True),
    ("dpm order 1 (singlestep)", "dpm", {"order": 1}, [25, 50, 100, 200], 1, None, True),
    ("dpm order 2 (singlestep)", "dpm", {"order": 2}, O2, 2, None, True),
    ("dpm order 3 (singlestep, DPM-Solver-fast, nfe = 2 mod 3)", "dpm", {"order": 3}, [80, 161, 320, 641], 3, None,
     True),
    ("dpm order 2 multistep", "dpm", {"order": 2, "method": "multistep"}, O2, 2, None, True),
    ("dpm order 3 multistep", "dpm", {"order": 3, "method": "multistep"}, O3, 3, None, True),
    ("dpmpp 2M", "dpmpp", {"variant": "2M"}, O2, 2, None, True),
    ("dpmpp 2S", "dpmpp", {"variant": "2S"}, O2, 2, None, True),
    ("dpmpp 3M", "dpmpp", {"variant": "3M"}, O3, 3, None, True),
    ("deis order 1 (tAB)", "deis", {"order": 1}, [25, 50, 100, 200], 1, None, True),
    ("deis order 2 (tAB)", "deis", {"order": 2}, O2, 2, None, True),
    ("deis order 3 (tAB)", "deis", {"order": 3}, [40, 80, 160, 320, 640], 3, None, True),
    ("deis order 3 (logrho)", "deis", {"order": 3, "basis": "logrho"}, [40, 80, 160, 320, 640], 3, None, True),
    ("unipc bh1 order 2, lower_order_final=False", "unipc", {"order": 2, "lower_order_final": False}, O2, 3, None,
     True),
    ("unipc bh2 order 2, lower_order_final=False", "unipc",
     {"order": 2, "variant": "bh2", "lower_order_final": False}, O3, 3, None, True),
    ("unipc bh1 order 3, lower_order_final=False", "unipc", {"order": 3, "lower_order_final": False},
     [20, 40, 80, 160, 320, 640], 4, None, False),
    ("unipc bh1 order 3 (default; its last step is order 1)", "unipc", {"order": 3}, [80, 160, 320, 640], 2, None,
     True),
    ("ipndm", "ipndm", {}, [20, 40, 80], 2, None, True),
    ("ipndm, high NFE", "ipndm", {}, [160, 320, 640], 2, None, False),
    ("plms (fit on steps N = NFE - 1)", "plms", {}, [21, 41, 81], 2, None, True),
    ("pndm (fit on steps N = NFE - 9)", "pndm", {}, [29, 49, 89], 2, None, True),
]

# The same solvers on the continuous schedules (the oracle presented on VE, on score_sde's VP and on Flow(shift=1),
# default parameters), every one on its default grid for that schedule (spacing=default, issue 26: on VE the samplers
# whose paper grid is uniform or quadratic in tau run on EDM's Karras grid, on flow deis' quadratic becomes logsnr).
_BY_NAME = {c[0]: c for c in CASES}
SCHEDULE_NAMES = ["ddim", "euler", "heun", "dpm order 1 (singlestep)", "dpm order 2 (singlestep)",
                  "dpm order 3 multistep", "dpmpp 2M", "dpmpp 3M", "deis order 2 (tAB)", "deis order 3 (tAB)",
                  "deis order 3 (logrho)", "unipc bh1 order 2, lower_order_final=False", "ipndm"]
SCHEDULE_CASES = {kind: [_BY_NAME[n] for n in SCHEDULE_NAMES] for kind in ("vp_linear", "ve", "flow")}


@lru_cache(maxsize=None)
def oracle(schedule: str | None = None):
    """The oracle on the Discrete linear-beta schedule (None) or on `schedule` (ve, vp_linear, flow: default
    parameters; on flow it presents exact velocities, flow_prediction)."""
    from nfebench.models.gmm import load_gmm

    return load_gmm(**ORACLE, schedule=schedule, prediction_type="flow_prediction" if schedule == "flow" else None)


@lru_cache(maxsize=None)
def x_T(schedule: str | None = None):
    """x_T in the model's space: N(0, I), or sigma_max * N(0, I) on VE (the same z on every schedule)."""
    m = oracle(schedule)
    g = torch.Generator().manual_seed(SEED)
    return m.schedule.prior_std * torch.randn(BATCH, *m.sample_shape, generator=g, dtype=torch.float64)


@lru_cache(maxsize=None)
def reference(schedule: str | None = None) -> torch.Tensor:
    """x at tau = t_min from x_T at tau = t_max by DOP853 in u = log(rho), in the VP frame."""
    from scipy.integrate import solve_ivp

    from nfebench.api import to_vp_frame

    m = oracle(schedule)
    sched = m.schedule
    x = to_vp_frame(x_T(schedule), sched)
    u0, u1 = math.log(sched.edm_sigma(sched.t_max)), math.log(sched.edm_sigma(sched.t_min))

    def rhs(u, y):
        rho = math.exp(u)
        tau = float(np.clip(sched.tau_from_edm_sigma(rho), sched.t_min, sched.t_max))
        a = float(sched.alpha(tau))
        xt = torch.from_numpy(a * y).reshape(x.shape)
        e = m(xt, torch.full((x.shape[0],), tau, dtype=torch.float64))
        return rho * e.reshape(-1).numpy()

    y0 = (x / float(sched.alpha(sched.t_max))).reshape(-1).numpy()
    sol = solve_ivp(rhs, (u0, u1), y0, method="DOP853", rtol=1e-12, atol=1e-12)
    assert sol.success, sol.message
    return torch.from_numpy(sol.y[:, -1] * float(sched.alpha(sched.t_min))).reshape(x.shape)


def run(sampler: str, options: dict, nfe: int, grid: str | None, schedule: str | None = None):
    """x_0 of a sampler at nfe (with an explicit grid ending at tau = t_min for the samplers whose default ends at
    clean data) and the evaluations it spent. The oracle is sampled in its own terms, through the adapter."""
    from nfebench import api
    from nfebench.schedules import default_spacing

    m = oracle(schedule)
    opts = dict(options)
    if grid == "default":  # the sampler's default spacing on this schedule (nfebench.schedules.default_spacing)
        grid = default_spacing(api.get_sampler(sampler).options["spacing"], m.schedule)
    if grid is not None:
        steps = nfe // 2 if sampler == "heun" else nfe  # heun on a grid ending at t_min: 2 evaluations per step
        opts["timesteps"] = m.schedule.timesteps(steps, grid).tolist()
    return api.sample(m.network, m.schedule, x_T(schedule), sampler, nfe, return_nfe=True,
                      prediction_type=m.prediction_type, **opts)


def rms(a, b) -> float:
    return float(torch.sqrt(torch.mean((a - b) ** 2)))


def measure(sampler: str, options: dict, nfes, grid=None, schedule: str | None = None):
    """[(nfe_used, error)] and the fitted order: minus the slope of log error vs log nfe_used, except for pndm and
    plms, fitted against their step counts nfe_used - 9 and nfe_used - 1 (their fixed extra warm-up evaluations
    would otherwise inflate the slope at these NFE)."""
    ref = reference(schedule)
    rows = []
    for nfe in nfes:
        x, used = run(sampler, options, nfe, grid, schedule)
        rows.append((used, rms(x, ref)))
    n = np.log([r[0] - WARMUP_EXTRA.get(sampler, 0) for r in rows])
    e = np.log([r[1] for r in rows])
    return rows, float(-np.polyfit(n, e, 1)[0])


def main(schedule: str | None = None):
    torch.set_num_threads(1)
    cases = CASES if schedule is None else SCHEDULE_CASES[schedule]
    print(f"oracle: load_gmm({', '.join(f'{k}={v}' for k, v in ORACLE.items())}, schedule={schedule}), "
          f"batch {BATCH}, seed {SEED}")
    print("| sampler (options) | NFE | rms error vs reference | measured order | theory |")
    print("|---|---|---|---|---|")
    for name, sampler, options, nfes, theory, grid, tested in cases:
        rows, order = measure(sampler, options, nfes, grid, schedule)
        ns = ", ".join(str(r[0]) for r in rows)
        es = ", ".join(f"{r[1]:.2e}" for r in rows)
        print(f"| {name} | {ns} | {es} | {order:.2f} | {theory}{'' if tested else ' (not asserted)'} |", flush=True)


if __name__ == "__main__":
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))
    main(sys.argv[1] if len(sys.argv) > 1 else None)

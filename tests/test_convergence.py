"""Convergence order on the exact-score oracle: the error of x_0 against a DOP853 reference falls with NFE at the
sampler's theoretical (or documented) order, within 0.3. The cases, NFE ranges and reference live in
studies/convergence.py, which also prints the table of docs/convergence.md."""

from __future__ import annotations

import os
import sys

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "studies"))
import convergence as C  # noqa: E402

torch.set_num_threads(1)
CASES = [c for c in C.CASES if c[6]]


def test_reference_is_accurate():
    """The reference is converged far below the errors measured: DOP853 at a 1000x looser tolerance agrees to
    well under the smallest error in the table (1e-8 here vs errors of 1e-7 and above)."""
    from scipy.integrate import solve_ivp  # noqa: F401  (the reference needs scipy)

    ref = C.reference()
    x, used = C.run("dpm", {"order": 3}, 641, None)
    assert used == 641 and C.rms(x, ref) < 2e-7  # our best solver at its finest step agrees with the reference


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_convergence_order(case):
    name, sampler, options, nfes, theory, grid, _ = case
    rows, order = C.measure(sampler, options, nfes, grid)
    assert [r[0] for r in rows] == [n - (1 - n % 2) if sampler == "heun" and grid is None else n for n in nfes]
    assert abs(order - theory) <= 0.3, (name, rows, order)


# one per family run by default, and the samplers whose default grid depends on the schedule (ddim, deis: issue 26,
# spacing=default); the others are slow
FAST_ON_SCHEDULES = ("heun", "dpm order 3 multistep", "ddim", "deis order 3 (tAB)")
SCHEDULE_CASES = [pytest.param(k, c, id=f"{k}-{c[0]}",
                               marks=() if c[0] in FAST_ON_SCHEDULES else pytest.mark.slow)
                  for k, cases in C.SCHEDULE_CASES.items() for c in cases]


@pytest.mark.parametrize("schedule, case", SCHEDULE_CASES)
def test_convergence_order_on_continuous_schedules(schedule, case):
    """The same solvers on the oracle presented on VE (EDM's 0.002..80) and on score_sde's VPLinear converge at the
    same orders as on the discrete schedule (docs/convergence.md, second table)."""
    name, sampler, options, nfes, theory, grid, _ = case
    rows, order = C.measure(sampler, options, nfes, grid, schedule)
    assert abs(order - theory) <= 0.3, (schedule, name, rows, order)

"""DPM-Solver (Lu et al. 2022, arXiv 2206.00927): exponential integrators of the probability-flow ODE in half
log-SNR lambda, with the linear part solved exactly and the noise prediction expanded in Taylor series.

With h = lambda_t - lambda_s, a step from s to t is (Eq. 3.7 / Algorithms 1 and 2):

  order 1 (= DDIM):  x_t = (a_t/a_s) x_s - s_t (e^h - 1) eps_s
  order 2 (r1=1/2):  u = (a_{s1}/a_s) x_s - s_{s1} (e^{r1 h} - 1) eps_s
                     x_t = (a_t/a_s) x_s - s_t (e^h - 1) eps_s - s_t/(2 r1) (e^h - 1) (eps(u, s1) - eps_s)
  order 3 (r1=1/3, r2=2/3): Algorithm 2 (DPM-Solver-3), below.

Intermediate times s_i have lambda_{s_i} = lambda_s + r_i h. `expm1` keeps e^h - 1 accurate for small h.
"""

from __future__ import annotations

import math

from .common import check_spacing, explicit_grid
from .registry import SamplerError, register


def singlestep_orders(nfe: int, order: int) -> list[int]:
    """Orders of the K outer steps that spend exactly `nfe` evaluations (Lu et al. 2022, Sec. 3.4).

    order 3 ("DPM-Solver-fast"): K = nfe // 3 + 1 steps; orders 3,...,3 then [2, 1], [1] or [2] for nfe mod 3 =
    0, 1, 2. order 2: K = ceil(nfe / 2) steps of order 2, the last of order 1 if nfe is odd. order 1: nfe steps.
    """
    if order == 3:
        k, m = nfe // 3 + 1, nfe % 3
        orders = [3] * (k - 2) + [2, 1] if m == 0 else [3] * (k - 1) + ([1] if m == 1 else [2])
    elif order == 2:
        orders = [2] * (nfe // 2) + ([1] if nfe % 2 else [])
    elif order == 1:
        orders = [1] * nfe
    else:
        raise SamplerError(f"order must be 1, 2 or 3, got {order}")
    assert sum(orders) == nfe, (orders, nfe)
    return orders


class _Step:
    """Schedule numbers of one step s -> t, as Python floats."""

    def __init__(self, sched, s: float, t: float):
        self.sched = sched
        self.s, self.t = s, t
        self.lam_s, self.lam_t = float(sched.lambda_(s)), float(sched.lambda_(t))
        self.h = self.lam_t - self.lam_s
        self.a_s = float(sched.alpha(s))

    def at(self, r: float):
        """(tau, alpha, sigma, e^{r h} - 1) at lambda_s + r h."""
        tau = self.t if r == 1.0 else float(self.sched.tau_from_lambda(self.lam_s + r * self.h))
        return tau, float(self.sched.alpha(tau)), float(self.sched.sigma(tau)), math.expm1(r * self.h)


def dpm_solver_step(eps, step: _Step, x, e_s, order: int):
    """One singlestep DPM-Solver update of the given order from step.s to step.t (e_s = eps(x, s) given)."""
    h = step.h
    _, a_t, s_t, phi = step.at(1.0)
    x_lin = (a_t / step.a_s) * x - s_t * phi * e_s  # order-1 part (DDIM)
    if order == 1:
        return x_lin
    if order == 2:
        r1 = 0.5
        s1, a1, sg1, phi1 = step.at(r1)
        u1 = (a1 / step.a_s) * x - sg1 * phi1 * e_s
        return x_lin - (s_t / (2 * r1)) * phi * (eps(u1, s1) - e_s)
    # order 3: Algorithm 2 of Lu et al. 2022 with r1 = 1/3, r2 = 2/3
    r1, r2 = 1.0 / 3.0, 2.0 / 3.0
    s1, a1, sg1, phi1 = step.at(r1)
    s2, a2, sg2, phi2 = step.at(r2)
    u1 = (a1 / step.a_s) * x - sg1 * phi1 * e_s
    d1 = eps(u1, s1) - e_s
    u2 = (a2 / step.a_s) * x - sg2 * phi2 * e_s - (sg2 * r2 / r1) * (phi2 / (r2 * h) - 1.0) * d1
    d2 = eps(u2, s2) - e_s
    return x_lin - (s_t / r2) * (phi / h - 1.0) * d2


@register("dpm")
def dpm(eps, sched, x, nfe, noise, *, order=3, method="singlestep", spacing="logsnr", timesteps=None):
    """DPM-Solver (Lu et al. 2022): singlestep orders 1/2/3 spending exactly the budget; default DPM-Solver-fast.

    spacing: "logsnr" (uniform in lambda, the paper's choice, Sec. 3.3) for the K outer steps; `timesteps` gives the
    outer grid explicitly (K+1 values from T-1 to 0; the evaluations then follow the orders of singlestep_orders).
    method: "singlestep" (this paper); "multistep" (Lu et al. 2022b, App. B) arrives with the full sampler suite.
    """
    if method != "singlestep":
        raise SamplerError(f"unknown method {method!r} for dpm; allowed: singlestep")
    orders = singlestep_orders(nfe, int(order))
    if timesteps is None:
        ts = sched.timesteps(len(orders), check_spacing(spacing))
    else:
        ts = explicit_grid(sched, timesteps, allow_clean=False)
        if len(ts) != len(orders) + 1:
            raise SamplerError(f"dpm order {order} at nfe={nfe} takes {len(orders) + 1} timesteps, got {len(ts)}")
    for s, t, k in zip(ts[:-1], ts[1:], orders):
        step = _Step(sched, float(s), float(t))
        x = dpm_solver_step(eps, step, x, eps(x, float(s)), k)
    return x


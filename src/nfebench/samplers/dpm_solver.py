"""DPM-Solver (Lu et al. 2022, arXiv 2206.00927) and DPM-Solver++ (Lu et al. 2022b, arXiv 2211.01095): exponential
integrators of the probability-flow ODE in half log-SNR lambda, the linear part solved exactly and the model output
expanded in a Taylor series in lambda.

With h = lambda_t - lambda_s and the noise prediction eps (DPM-Solver, Eq. 3.7 and Algorithms 1-2):

  order 1 (= DDIM):  x_t = (a_t/a_s) x_s - s_t (e^h - 1) eps_s
  order 2 (r1):      u = (a_{s1}/a_s) x_s - s_{s1} (e^{r1 h} - 1) eps_s
                     x_t = (a_t/a_s) x_s - s_t (e^h - 1) eps_s - s_t/(2 r1) (e^h - 1) (eps(u, s1) - eps_s)
  order 3 (r1, r2):  Algorithm 2 (DPM-Solver-3), below; the paper's default r1 = 1/3, r2 = 2/3.

With the data prediction x0 = (x - s eps)/a (DPM-Solver++, Eq. 8-9 and Algorithms 1-2), the same expansion gives

  order 1:           x_t = (s_t/s_s) x_s - a_t (e^{-h} - 1) x0_s

Intermediate times s_i have lambda_{s_i} = lambda_s + r_i h. `expm1` keeps e^{+-h} - 1 accurate for small h.
Multistep methods (DPM-Solver++ Sec. 4 and App. B) reuse the model outputs of previous steps instead of evaluating
at intermediate points: one evaluation per step. An explicit multistep grid may end at clean data (-1, or 0 on a
Flow schedule): the last step, where lambda = +inf, is then first order, to the x_0 of its evaluation (diffusers'
final_sigmas_type="zero", which always ends so).
"""

from __future__ import annotations

import math

import torch

from .common import CLEAN, Capped, alpha_sigma, check_spacing, check_tolerances, explicit_grid, worst_sample_rms
from .registry import SamplerError, register

LOWER_ORDER_FINAL_BELOW = 15  # lower the order of the last steps when there are fewer steps (DPM-Solver++ App. B)


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


def multistep_orders(steps: int, order: int, lower_order_final: bool) -> list[int]:
    """Orders of a multistep run: warm up with orders 1, 2, ... (there are no older outputs yet), and with
    lower_order_final and fewer than 15 steps end with orders ..., 2, 1 (DPM-Solver++ App. B, for stability)."""
    if order not in (1, 2, 3):
        raise SamplerError(f"order must be 1, 2 or 3, got {order}")
    orders = [min(order, i + 1) for i in range(steps)]
    if lower_order_final and steps < LOWER_ORDER_FINAL_BELOW:
        orders = [min(k, steps - i) for i, k in enumerate(orders)]
    return orders


class _Step:
    """Schedule numbers of one step s -> t, as Python floats."""

    def __init__(self, sched, s: float, t: float):
        self.sched = sched
        self.s, self.t = s, t
        self.lam_s, self.lam_t = float(sched.lambda_(s)), float(sched.lambda_(t))
        self.h = self.lam_t - self.lam_s
        self.a_s, self.s_s = float(sched.alpha(s)), float(sched.sigma(s))
        self.a_t, self.s_t = float(sched.alpha(t)), float(sched.sigma(t))

    def point(self, r: float | None = None, tau: float | None = None):
        """(tau, alpha, sigma, r) of the point at lambda_s + r h, or of the given timestep tau."""
        if tau is None:
            tau = float(self.sched.tau_from_lambda(self.lam_s + r * self.h))
        else:
            r = (float(self.sched.lambda_(tau)) - self.lam_s) / self.h
        return tau, float(self.sched.alpha(tau)), float(self.sched.sigma(tau)), r


def _grid(sched, n_points, spacing, timesteps, what, allow_clean: bool = False):
    if timesteps is None:
        return sched.timesteps(n_points - 1, check_spacing(spacing))
    ts = explicit_grid(sched, timesteps, allow_clean=allow_clean)
    if len(ts) != n_points:
        raise SamplerError(f"{what} takes {n_points} timesteps, got {len(ts)}")
    return ts


def _singlestep_plan(sched, nfe, orders, spacing, timesteps, what):
    """[(s, t, [intermediate taus or None])] per outer step. `timesteps` is either the outer grid (K+1 values,
    intermediate points at the paper's r_i) or every evaluation point plus the end (nfe+1 values, as diffusers'
    singlestep scheduler lays them out; r_i then follow from the grid)."""
    if timesteps is not None and len(list(timesteps)) == nfe + 1 and nfe + 1 != len(orders) + 1:
        ts = _grid(sched, nfe + 1, spacing, timesteps, what)
        plan, i = [], 0
        for k in orders:
            plan.append((float(ts[i]), float(ts[i + k]), [float(v) for v in ts[i + 1:i + k]]))
            i += k
        return plan
    ts = _grid(sched, len(orders) + 1, spacing, timesteps, f"{what} (outer grid; or {nfe + 1} evaluation points)")
    return [(float(s), float(t), None) for s, t in zip(ts[:-1], ts[1:])]


def dpm_solver_step(eps, step: _Step, x, e_s, order: int, mids=None, with_lower: bool = False):
    """One singlestep DPM-Solver update (noise prediction) of the given order from step.s to step.t (e_s given).

    with_lower (orders 2, 3): return (x_lower, x) where x_lower is the order-1 (resp. order-2, r1 = 1/3) solution
    from the same evaluations, the pair of DPM-Solver-12 / -23 (Lu et al. 2022, Sec. 3.4 and Alg. 4-5).
    """
    h, phi = step.h, math.expm1(step.h)
    x_lin = (step.a_t / step.a_s) * x - step.s_t * phi * e_s  # order-1 part (DDIM)
    if order == 1:
        return x_lin
    if order == 2:  # Algorithm 1 (DPM-Solver-2), r1 = 1/2 by default
        s1, a1, sg1, r1 = step.point(0.5) if mids is None else step.point(tau=mids[0])
        u1 = (a1 / step.a_s) * x - sg1 * math.expm1(r1 * h) * e_s
        x_t = x_lin - (step.s_t / (2 * r1)) * phi * (eps(u1, s1) - e_s)
        return (x_lin, x_t) if with_lower else x_t
    # order 3: Algorithm 2 (DPM-Solver-3), r1 = 1/3, r2 = 2/3 by default
    s1, a1, sg1, r1 = step.point(1 / 3) if mids is None else step.point(tau=mids[0])
    s2, a2, sg2, r2 = step.point(2 / 3) if mids is None else step.point(tau=mids[1])
    phi1, phi2 = math.expm1(r1 * h), math.expm1(r2 * h)
    u1 = (a1 / step.a_s) * x - sg1 * phi1 * e_s
    d1 = eps(u1, s1) - e_s
    u2 = (a2 / step.a_s) * x - sg2 * phi2 * e_s - (sg2 * r2 / r1) * (phi2 / (r2 * h) - 1.0) * d1
    d2 = eps(u2, s2) - e_s
    x_t = x_lin - (step.s_t / r2) * (phi / h - 1.0) * d2
    return (x_lin - (step.s_t / (2 * r1)) * phi * d1, x_t) if with_lower else x_t


# DPM-Solver's adaptive step-size defaults (Lu et al. 2022, Sec. 3.4 and App. C): first step h_init in lambda,
# safety theta, and the tolerance in lambda at which the end counts as reached.
ADAPTIVE_H_INIT, ADAPTIVE_THETA, ADAPTIVE_T_ERR = 0.05, 0.9, 1e-5


def dpm_adaptive(eps, sched, x, nfe, order: int, atol: float, rtol: float):
    """DPM-Solver-12 (order 2) / -23 (order 3), Lu et al. 2022 Sec. 3.4, Alg. 4-5: per attempt, a lower- and a
    higher-order solution from the same evaluations; E = max over the batch of rms((x_high - x_low) / delta),
    delta = max(atol, rtol max(|x_low|, |x_low_prev|)); accept (continue from x_high) if E <= 1; then
    h <- min(theta h E^(-1/order), lambda_end - lambda). Steps in lambda from tau = T-1 to tau = 0. The
    evaluation at the step's start is reused after a rejection; every other evaluation is counted."""
    if order not in (2, 3):
        raise SamplerError(f"dpm method=adaptive needs order 2 (DPM-Solver-12) or 3 (DPM-Solver-23), got {order}")
    check_tolerances(atol=atol, rtol=rtol)
    f = Capped(eps, nfe, "dpm method=adaptive", "atol / rtol")
    s, lam, lam_end = sched.t_max, float(sched.lambda_(sched.t_max)), float(sched.lambda_(sched.t_min))
    h, x_prev, e_s = ADAPTIVE_H_INIT, x, None
    while lam_end - lam > ADAPTIVE_T_ERR:
        t = sched.t_min if lam + h >= lam_end else float(sched.tau_from_lambda(lam + h))
        step = _Step(sched, s, t)
        e_s = f(x, s) if e_s is None else e_s  # unchanged after a rejection
        x_low, x_high = dpm_solver_step(f, step, x, e_s, order, with_lower=True)
        delta = torch.clamp(rtol * torch.maximum(x_low.abs(), x_prev.abs()), min=atol)
        err = worst_sample_rms((x_high - x_low) / delta)
        if err <= 1.0:
            x, x_prev, s, lam, e_s = x_high, x_low, t, step.lam_t, None
        h = min(lam_end - lam, ADAPTIVE_THETA * step.h * err ** (-1 / order) if err > 0 else math.inf)
    return x


def dpmpp_2s_step(eps, step: _Step, x, e_s, order: int, mids=None):
    """One singlestep DPM-Solver++ update (data prediction, Lu et al. 2022b Algorithm 1) of order 1 or 2."""
    h = step.h
    x0_s = (x - step.s_s * e_s) / step.a_s
    if order == 2:
        s1, a1, sg1, r = step.point(0.5) if mids is None else step.point(tau=mids[0])
        u = (sg1 / step.s_s) * x - a1 * math.expm1(-r * h) * x0_s  # first-order step to s1
        x0_u = (u - sg1 * eps(u, s1)) / a1
        d = (1 - 1 / (2 * r)) * x0_s + (1 / (2 * r)) * x0_u
    else:
        d = x0_s
    return (step.s_t / step.s_s) * x - step.a_t * math.expm1(-h) * d


def multistep_update(step: _Step, x, ms, lams, order: int, data: bool):
    """One multistep update from step.s to step.t using the model outputs ms = [m_s, m_{s-1}, m_{s-2}] (newest
    first) at half log-SNRs lams; eps outputs (data=False, DPM-Solver App. B) or x0 outputs (data=True,
    DPM-Solver++(2M) Algorithm 2 and its third-order extension, App. B)."""
    h = step.h
    # backward differences scaled to the step: D1 ~ h m', D2 ~ h^2 m''
    if order >= 2:
        r0 = (lams[0] - lams[1]) / h
        d1_0 = (ms[0] - ms[1]) / r0
        d1 = d1_0
    if order == 3:
        r1 = (lams[1] - lams[2]) / h
        d1_1 = (ms[1] - ms[2]) / r1
        d1 = d1_0 + (r0 / (r0 + r1)) * (d1_0 - d1_1)
        # D2 ~ h^2 m'': the factor 2 is needed for third order (diffusers and the DPM-Solver code omit it, which
        # halves the m'' term and makes their 3M second order; see docs/samplers.md)
        d2 = 2.0 * (d1_0 - d1_1) / (r0 + r1)
    if data:  # x_t = (s_t/s_s) x - a_t (e^{-h}-1) x0 + Taylor terms
        phi = math.expm1(-h)
        x_t = (step.s_t / step.s_s) * x - step.a_t * phi * ms[0]
        if order == 2:
            x_t = x_t - 0.5 * step.a_t * phi * d1  # 2M: (1 + 1/2r) x0_s - (1/2r) x0_{s-1}
        elif order == 3:
            x_t = x_t + step.a_t * (phi / h + 1.0) * d1 - step.a_t * ((phi + h) / h**2 - 0.5) * d2
    else:  # x_t = (a_t/a_s) x - s_t (e^h-1) eps + Taylor terms
        phi = math.expm1(h)
        x_t = (step.a_t / step.a_s) * x - step.s_t * phi * ms[0]
        if order == 2:
            x_t = x_t - 0.5 * step.s_t * phi * d1
        elif order == 3:
            x_t = x_t - step.s_t * (phi / h - 1.0) * d1 - step.s_t * ((phi - h) / h**2 - 0.5) * d2
    return x_t


def run_multistep(eps, sched, x, ts, orders, data: bool):
    """Evaluate once per step at ts[i], keep the last three outputs, update with the scheduled order."""
    ms, lams = [], []
    for i, k in enumerate(orders):
        if float(ts[i + 1]) == CLEAN:  # the last step, to lambda = +inf: first order, x_0 of this evaluation
            a_s, s_s = alpha_sigma(sched, float(ts[i]))
            return (x - s_s * eps(x, float(ts[i]))) / a_s
        step = _Step(sched, float(ts[i]), float(ts[i + 1]))
        e = eps(x, step.s)
        m = (x - step.s_s * e) / step.a_s if data else e  # x0 (data) or eps (noise) prediction
        ms, lams = [m] + ms[:2], [step.lam_s] + lams[:2]
        x = multistep_update(step, x, ms, lams, k, data)
    return x


@register("dpm")
def dpm(eps, sched, x, nfe, noise, *, order=3, method="singlestep", spacing="logsnr", lower_order_final=True,
        timesteps=None, atol=0.0078, rtol=0.05):
    """DPM-Solver (Lu et al. 2022) with the noise prediction: singlestep orders 1/2/3 (default DPM-Solver-fast) or
    multistep orders 1/2/3 (Lu et al. 2022b, App. B); both spend exactly the budget.

    singlestep: K outer steps with the orders of singlestep_orders; `timesteps` is the outer grid (K+1 values) or
    every evaluation point plus the end (nfe+1 values). multistep: nfe steps, one evaluation each, warm-up with
    lower orders; `timesteps` has nfe+1 values. spacing "logsnr" is the paper's choice (Sec. 3.3).
    lower_order_final: multistep only, orders ..., 2, 1 on the last steps when nfe < 15.
    adaptive (Sec. 3.4): DPM-Solver-12 (order 2) or -23 (order 3) with step-size control to atol (0.0078), rtol
    (0.05), used by no other method; nfe is then a cap and the evaluations spent are what it needed.
    """
    order = int(order)
    if method == "singlestep":
        orders = singlestep_orders(nfe, order)
        for (s, t, mids), k in zip(_singlestep_plan(sched, nfe, orders, spacing, timesteps, f"dpm order {order}"),
                                   orders):
            step = _Step(sched, s, t)
            x = dpm_solver_step(eps, step, x, eps(x, s), k, mids)
        return x
    if method == "multistep":
        ts = _grid(sched, nfe + 1, spacing, timesteps, f"dpm multistep at nfe={nfe}", allow_clean=True)
        return run_multistep(eps, sched, x, ts, multistep_orders(nfe, order, lower_order_final), data=False)
    if method == "adaptive":
        return dpm_adaptive(eps, sched, x, nfe, order, atol, rtol)
    raise SamplerError(f"unknown method {method!r} for dpm; allowed: singlestep, multistep, adaptive")


@register("dpmpp")
def dpmpp(eps, sched, x, nfe, noise, *, variant="2M", spacing="logsnr", lower_order_final=True, timesteps=None):
    """DPM-Solver++ (Lu et al. 2022b): the data-prediction solver; variant 2M (Algorithm 2), 3M (App. B) or
    2S (Algorithm 1, r = 1/2). All spend exactly the budget: 2M/3M one evaluation per step; 2S two per step, the
    last step of order 1 when nfe is odd. lower_order_final: multistep only, as in dpm.
    """
    if variant in ("2M", "3M"):
        ts = _grid(sched, nfe + 1, spacing, timesteps, f"dpmpp {variant} at nfe={nfe}", allow_clean=True)
        return run_multistep(eps, sched, x, ts, multistep_orders(nfe, int(variant[0]), lower_order_final), data=True)
    if variant == "2S":
        orders = singlestep_orders(nfe, 2)
        for (s, t, mids), k in zip(_singlestep_plan(sched, nfe, orders, spacing, timesteps, "dpmpp 2S"), orders):
            step = _Step(sched, s, t)
            x = dpmpp_2s_step(eps, step, x, eps(x, s), k, mids)
        return x
    raise SamplerError(f"unknown variant {variant!r} for dpmpp; allowed: 2M, 2S, 3M")

"""SA-Solver (Xue, Yi, Li, Ma, Zhang, Chen, Chen 2023, "SA-Solver: stochastic Adams solver for fast sampling of
diffusion models", arXiv 2309.05019): stochastic Adams predictor-corrector in half log-SNR lambda, data prediction.

The variance-controlled SDE with stochasticity tau (tau = 0: the PF-ODE, tau = 1: the reverse SDE) has, for a step
s -> t with tau constant on it, c = 1 + tau^2 and h = lambda_t - lambda_s, the exact solution (the paper's Eq. 13)

    x_t = e^{-tau^2 h} (sigma_t / sigma_s) x_s + c alpha_t int_{-h}^{0} e^{c u} x0(lambda_t + u) du
          + sigma_t sqrt(1 - e^{-2 tau^2 h}) xi.

SA-Predictor of order p (Alg. 1): x0 replaced by its Lagrange interpolant through the last p outputs, so the
integral is sum_j B_j x0_j with B_j = int_{-h}^0 e^{c u} L_j(lambda_t + u) du (closed form: the integrals of
e^{c u} u^m, here in the shifted variable u = lambda - lambda_t, where the polynomial is well conditioned).
SA-Corrector of order q (Alg. 2): after the model is evaluated at the predicted x_t, the same step is redone from
x_s with the same xi and the interpolant through x0(x_t) and the last q - 1 outputs; the output kept for later
steps is the one at the predicted point (one evaluation per step, as UniPC); there is no corrector after the last
step. At order 2 both add the authors' O(h^3) modification (their code and diffusers' SASolverScheduler:
B_0 += m, B_1 -= m with m = (h^2/2 - (c h - 1 + e^{-c h}) / c^2) / (lambda_s - lambda_prev) for the predictor and
m = h/2 - (c h - 1 + e^{-c h}) / (c^2 h) for the corrector). Orders warm up 1, 2, ... and, with lower_order_final,
fall to min(order, steps left) at the end (diffusers). N = nfe steps from t_max to t_min, one evaluation each.

tau: a number >= 0 (constant), or [lo, hi] (tau = 1 where lo <= the step's start timestep <= hi, else 0: the
paper's and diffusers' default [200, 800] on a 1000-step discrete schedule), or [lo, hi, value].
"""

from __future__ import annotations

import math

import numpy as np

from .brownian import StepNoise
from .dpm_solver import _grid
from .registry import SamplerError, register


def tau_function(tau):
    """tau(timestep) from the option, with a one-line error for a value outside its range."""
    if isinstance(tau, (int, float)) and not isinstance(tau, bool):
        if not (math.isfinite(tau) and tau >= 0):
            raise SamplerError(f"tau must be >= 0, got {tau!r}")
        return lambda t: float(tau)
    vals = list(tau) if isinstance(tau, (list, tuple)) else None
    if not vals or len(vals) not in (2, 3) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                      for v in vals):
        raise SamplerError(f"tau must be a number >= 0, [lo, hi] or [lo, hi, value], got {tau!r}")
    lo, hi, value = float(vals[0]), float(vals[1]), float(vals[2]) if len(vals) == 3 else 1.0
    if not lo <= hi or not value >= 0:
        raise SamplerError(f"tau interval needs lo <= hi and a value >= 0, got {tau!r}")
    return lambda t: value if lo <= t <= hi else 0.0


def exp_poly_integrals(c: float, h: float, m_max: int) -> list[float]:
    """I_m = int_{-h}^0 e^{c u} u^m du for m = 0..m_max, by I_m = [e^{c u} u^m / c] - (m / c) I_{m-1}."""
    out, eh = [], math.exp(-c * h)
    for m in range(m_max + 1):
        boundary = (0.0 if m else 1.0) - eh * (-h) ** m  # e^{c u} u^m at 0 minus at -h
        out.append((boundary - (m * out[-1] if m else 0.0)) / c)
    return out


def adams_weights(nodes: list[float], lam_t: float, h: float, c: float) -> list[float]:
    """B_j = int_{-h}^0 e^{c u} L_j(lambda_t + u) du for the Lagrange basis through `nodes` (half log-SNRs)."""
    us = [lam - lam_t for lam in nodes]
    ints = exp_poly_integrals(c, h, len(us) - 1)
    weights = []
    for j, uj in enumerate(us):
        poly = np.poly1d([1.0])
        for k, uk in enumerate(us):
            if k != j:
                poly = poly * np.poly1d([1.0, -uk]) / (uj - uk)
        coef = poly.coeffs[::-1]  # ascending powers
        weights.append(float(sum(a * ints[m] for m, a in enumerate(coef))))
    return weights


def sa_update(x, x_s_sigma, alpha_t, sigma_t, lam_t, h, tau, nodes, outputs, xi, mod2):
    """One SA step from (x, sigma_s) to t with the interpolant through (nodes, outputs) (newest first)."""
    c = 1.0 + tau * tau
    b = adams_weights(nodes, lam_t, h, c)
    if len(nodes) == 2:  # the authors' O(h^3) modification at order 2
        b[0], b[1] = b[0] + mod2(c), b[1] - mod2(c)
    out = math.exp(-tau * tau * h) * (sigma_t / x_s_sigma) * x + c * alpha_t * sum(bj * o for bj, o in zip(b, outputs))
    if tau > 0:
        out = out + sigma_t * math.sqrt(-math.expm1(-2.0 * tau * tau * h)) * xi
    return out


@register("sa_solver", stochastic=True)
def sa_solver(eps, sched, x, nfe, noise, *, predictor_order=2, corrector_order=2, tau=[200, 800],  # noqa: B006
              lower_order_final=True, spacing="uniform", timesteps=None, noise_sampler="gaussian"):
    """SA-Solver (Xue et al. 2023): stochastic Adams predictor (order 1-4) and corrector (order 1-4) in lambda, data
    prediction; tau a number or an interval [lo, hi] of timesteps where tau = 1 (default [200, 800], the paper's and
    diffusers'); nfe steps from t_max to t_min, one evaluation each; noise_sampler=brownian applies."""
    for name, v in (("predictor_order", predictor_order), ("corrector_order", corrector_order)):
        if v not in (1, 2, 3, 4):
            raise SamplerError(f"{name} must be 1, 2, 3 or 4, got {v!r}")
    tau_of = tau_function(tau)
    ts = [float(t) for t in _grid(sched, nfe + 1, spacing, timesteps, f"sa_solver at nfe={nfe}")]
    n = len(ts) - 1
    al = [float(sched.alpha(t)) for t in ts]
    sg = [float(sched.sigma(t)) for t in ts]
    lam = [float(sched.lambda_(t)) for t in ts]
    z = StepNoise(noise, x, math.exp(-lam[-1]), math.exp(-lam[0]), noise_sampler)  # per step, in EDM sigma = e^-lambda
    outs, last = [], None  # outs: x0 at the grid points so far, newest first; last: (x_s, xi, tau, q) of the step
    for k in range(n):
        x0 = (x - sg[k] * eps(x, ts[k])) / al[k]
        if last is not None:  # SA-Corrector of step k-1 -> k, with the new output
            x_prev, xi, tau_c, q = last
            nodes = [lam[k - i] for i in range(q)]
            h = lam[k] - lam[k - 1]
            x = sa_update(x_prev, sg[k - 1], al[k], sg[k], lam[k], h, tau_c, nodes, ([x0] + outs)[:q], xi,
                          lambda c: h / 2 - (c * h - 1 + math.exp(-c * h)) / (c * c * h))
        outs = [x0] + outs[:3]
        p = min(predictor_order, k + 1, n - k if lower_order_final else 4)
        q = min(corrector_order, k + 2, n - k + 1 if lower_order_final else 4)
        tau_k = tau_of(ts[k])
        xi = z(math.exp(-lam[k]), math.exp(-lam[k + 1])) if tau_k > 0 else None
        h = lam[k + 1] - lam[k]
        nodes = [lam[k - i] for i in range(p)]
        mod = (lambda c: (h * h / 2 - (c * h - 1 + math.exp(-c * h)) / (c * c)) / (lam[k] - lam[k - 1])) if p == 2 \
            else None
        last = (x, xi, tau_k, q)
        x = sa_update(x, sg[k], al[k + 1], sg[k + 1], lam[k + 1], h, tau_k, nodes, outs[:p], xi, mod)
    return x

"""UniPC (Zhao et al. 2023, arXiv 2302.04867): a multistep predictor UniP-p and a corrector UniC-p that reuses the
model evaluation at the predicted point, raising the order by one at no extra cost. Data prediction x0 throughout.

With hh = -h (h = lambda_t - lambda_s), r_k = (lambda_{s_k} - lambda_s) / h for the older points s_k, D_k =
(x0_{s_k} - x0_s) / r_k, and B(h) = h (bh1) or e^h - 1 (bh2), Algorithm 1/2 of the paper (data-prediction form):

  x_t = (s_t/s_s) x_s - a_t (e^{hh} - 1) x0_s - a_t B(hh) sum_k rho_k D_k

where rho solves R rho = b with R_{ik} = r_k^(i-1) and b_i = hh phi_{i+1}(hh) i! / B(hh) (phi_k the phi-functions
of the exponential integrator). The predictor uses the p-1 older points (rho = 1/2 for p = 2), the corrector adds
D_t = x0(x_t_predicted) - x0_s with r = 1. The corrector runs at the start of the next step, with the evaluation that
step needs anyway, so there is no correction after the last step: `nfe` steps spend exactly `nfe` evaluations.
An explicit grid may end at clean data (-1, or 0 on a Flow schedule): the last step is then first order, to the
x_0 of the last evaluation (diffusers' final_sigmas_type="zero").
"""

from __future__ import annotations

import math

import numpy as np

from .common import CLEAN, alpha_sigma
from .dpm_solver import _grid, _Step
from .registry import SamplerError, register


def _r_and_b(hh: float, rks: list[float], order: int, variant: str):
    """R (order x order) and b (order) of the UniPC linear system, in float64, and B(hh)."""
    b_h = hh if variant == "bh1" else math.expm1(hh)
    h_phi_k = math.expm1(hh) / hh - 1.0  # phi_2(hh) * hh
    factorial, R, b = 1, [], []
    for i in range(1, order + 1):
        R.append([r ** (i - 1) for r in rks])
        b.append(h_phi_k * factorial / b_h)
        factorial *= i + 1
        h_phi_k = h_phi_k / hh - 1.0 / factorial  # next phi-function by its recurrence
    return np.array(R), np.array(b), b_h


def _update(step: _Step, x, x0_s, d_list, rks, order, variant, d_t=None):
    """UniP (d_t None) or UniC (d_t = x0 at the predicted point minus x0_s) update from step.s to step.t."""
    hh = -step.h
    x_lin = (step.s_t / step.s_s) * x - step.a_t * math.expm1(hh) * x0_s
    R, b, b_h = _r_and_b(hh, rks + [1.0], order, variant)
    if d_t is None:  # predictor: p-1 older points
        if order == 1:
            return x_lin
        rhos = [0.5] if order == 2 else np.linalg.solve(R[:-1, :-1], b[:-1]).tolist()
        return x_lin - step.a_t * b_h * sum(float(r) * d for r, d in zip(rhos, d_list))
    # corrector: the older points and the new evaluation
    rhos = [0.5] if order == 1 else np.linalg.solve(R, b).tolist()
    corr = sum((float(r) * d for r, d in zip(rhos[:-1], d_list)), 0.0 * x)
    return x_lin - step.a_t * b_h * (corr + float(rhos[-1]) * d_t)


@register("unipc")
def unipc(eps, sched, x, nfe, noise, *, order=3, variant="bh1", spacing="logsnr", lower_order_final=True,
          timesteps=None):
    """UniPC (Zhao et al. 2023): UniP-p predictor + UniC-p corrector (order p+1), data prediction, nfe steps.

    order p in 1..3 (warm-up with lower orders); variant bh1 (B(h) = h) or bh2 (B(h) = e^h - 1), Sec. 3.2;
    lower_order_final: step k of N uses order min(p, N - k) (the official code and diffusers always do this).
    """
    if variant not in ("bh1", "bh2"):
        raise SamplerError(f"unknown variant {variant!r} for unipc; allowed: bh1, bh2")
    order = int(order)
    if order not in (1, 2, 3):
        raise SamplerError(f"order must be 1, 2 or 3, got {order}")
    ts = _grid(sched, nfe + 1, spacing, timesteps, f"unipc at nfe={nfe}", allow_clean=True)
    hist = []  # (lambda, x0) of evaluated points, newest first
    prev = None  # (step, x before the predictor, order) of the previous step, for its corrector
    for i in range(nfe):
        if float(ts[i + 1]) == CLEAN:  # the last step, to lambda = +inf: first order, x_t = the x_0 of this
            a_s, s_s = alpha_sigma(sched, float(ts[i]))  # evaluation (the corrector would only change x, whose
            return (x - s_s * eps(x, float(ts[i]))) / a_s  # weight s_t / s_s is 0 here)
        step = _Step(sched, float(ts[i]), float(ts[i + 1]))
        e = eps(x, step.s)
        x0 = (x - step.s_s * e) / step.a_s  # from the predicted (uncorrected) x, as in the paper
        if prev is not None:  # UniC for the previous step, with this evaluation
            pstep, px, pk = prev
            rks = [(lam - hist[0][0]) / pstep.h for lam, _ in hist[1:pk]]
            ds = [(m - hist[0][1]) / r for (_, m), r in zip(hist[1:pk], rks)]
            x = _update(pstep, px, hist[0][1], ds, rks, pk, variant, d_t=x0 - hist[0][1])
        hist = [(step.lam_s, x0)] + hist[:2]
        k = min(order, i + 1, nfe - i if lower_order_final else order)  # warm-up and final orders
        rks = [(lam - step.lam_s) / step.h for lam, _ in hist[1:k]]
        ds = [(m - x0) / r for (_, m), r in zip(hist[1:k], rks)]
        prev = (step, x, k)
        x = _update(step, x, x0, ds, rks, k, variant)
    return x

"""Pseudo numerical methods (Liu, Ren, Lin, Zhao 2022, "PNDM", arXiv 2202.09778) and improved PNDM (Zhang & Chen
2022, DEIS paper, Sec. 5 "iPNDM").

A pseudo method keeps DDIM's transfer phi(x, e, s -> t) = a_t (x - s_s e) / a_s + s_t e (PNDM Eq. 9) and replaces
its noise e by a combination of model evaluations, as a classical method would combine gradients:

  pndm  (F-PNDM, Eq. 12-13): 3 pseudo Runge-Kutta steps (4 evaluations each, at t, the midpoint twice and the end)
        then pseudo linear multistep: e' = (55 e_0 - 59 e_1 + 37 e_2 - 9 e_3) / 24. N steps spend N + 9.
  plms  pseudo linear multistep with a pseudo improved-Euler first step (2 evaluations) and Adams-Bashforth orders
        2, 3 on steps 2, 3 (the "PLMS" of the PNDM code, also LDM's PLMS sampler). N steps spend N + 1.
  ipndm Adams-Bashforth orders 1, 2, 3 on the first steps, 4 after (iPNDM): no extra evaluations, N steps spend N.

The history e_0, e_1, ... are the evaluations at the start of each step (newest first). Midpoints are in tau.
"""

from __future__ import annotations

from .common import alpha_sigma, check_spacing, explicit_grid
from .registry import SamplerError, register

AB = {1: [1.0], 2: [3 / 2, -1 / 2], 3: [23 / 12, -16 / 12, 5 / 12], 4: [55 / 24, -59 / 24, 37 / 24, -9 / 24]}


def transfer(sched, x, e, s: float, t: float):
    """DDIM's transfer phi(x_s, e, s -> t) (PNDM Eq. 9); t may be CLEAN (-1)."""
    a_s, s_s = alpha_sigma(sched, s)
    a_t, s_t = alpha_sigma(sched, t)
    return (a_t / a_s) * (x - s_s * e) + s_t * e


def _grid(sched, steps, spacing, timesteps, what):
    if timesteps is None:
        return sched.timesteps(steps, check_spacing(spacing))
    ts = explicit_grid(sched, timesteps, allow_clean=True)
    if len(ts) != steps + 1:
        raise SamplerError(f"{what} takes {steps + 1} timesteps, got {len(ts)}")
    return ts


def _ab(hist, order):
    return sum(c * e for c, e in zip(AB[order], hist))


@register("pndm", min_nfe=12)
def pndm(eps, sched, x, nfe, noise, *, spacing="uniform", timesteps=None):
    """F-PNDM (Liu et al. 2022, Alg. 2): 3 pseudo Runge-Kutta warm-up steps, then 4-step pseudo linear multistep.

    nfe >= 12: N = nfe - 9 steps (the warm-up's 3 x 4 evaluations are counted). `timesteps`: N+1 values, may end
    at -1 (clean data) as diffusers' PNDMScheduler does with set_alpha_to_one=True.
    """
    ts = _grid(sched, nfe - 9, spacing, timesteps, f"pndm at nfe={nfe}")
    hist = []
    for i, (s, t) in enumerate(zip(ts[:-1].tolist(), ts[1:].tolist())):
        e1 = eps(x, s)
        hist = [e1] + hist[:3]
        if i < 3:  # pseudo Runge-Kutta (Eq. 12): classical RK4 weights on DDIM transfers
            m = 0.5 * (s + t)
            if m < 0:
                raise SamplerError("pndm's Runge-Kutta warm-up cannot end at clean data (-1); use a longer grid")
            e2 = eps(transfer(sched, x, e1, s, m), m)
            e3 = eps(transfer(sched, x, e2, s, m), m)
            e4 = eps(transfer(sched, x, e3, s, t), t)
            e = (e1 + 2 * e2 + 2 * e3 + e4) / 6
        else:  # pseudo linear multistep (Eq. 13)
            e = _ab(hist, 4)
        x = transfer(sched, x, e, s, t)
    return x


@register("plms", min_nfe=2)
def plms(eps, sched, x, nfe, noise, *, spacing="uniform", timesteps=None):
    """PLMS (Liu et al. 2022's code; Rombach et al. 2022's PLMS sampler): pseudo improved Euler first step, then
    pseudo Adams-Bashforth of orders 2, 3, 4. nfe >= 2: N = nfe - 1 steps."""
    ts = _grid(sched, nfe - 1, spacing, timesteps, f"plms at nfe={nfe}")
    hist = []
    for i, (s, t) in enumerate(zip(ts[:-1].tolist(), ts[1:].tolist())):
        hist = [eps(x, s)] + hist[:3]
        if i == 0:  # pseudo improved Euler: average the slopes at both ends of a trial DDIM step
            e = 0.5 * (hist[0] + eps(transfer(sched, x, hist[0], s, t), t))
        else:
            e = _ab(hist, min(i + 1, 4))
        x = transfer(sched, x, e, s, t)
    return x


@register("ipndm", min_nfe=1)
def ipndm(eps, sched, x, nfe, noise, *, spacing="uniform", timesteps=None):
    """iPNDM (Zhang & Chen 2022, Sec. 5): pseudo Adams-Bashforth with a lower-order warm-up (orders 1, 2, 3, 4, ...),
    one evaluation per step: N = nfe steps."""
    ts = _grid(sched, nfe, spacing, timesteps, f"ipndm at nfe={nfe}")
    hist = []
    for i, (s, t) in enumerate(zip(ts[:-1].tolist(), ts[1:].tolist())):
        hist = [eps(x, s)] + hist[:3]
        x = transfer(sched, x, _ab(hist, min(i + 1, 4)), s, t)
    return x

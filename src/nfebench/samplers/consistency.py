"""Few-step samplers of consistency-type models: multistep consistency sampling, LCM's and TCD's samplers.

All three evaluate the model's clean estimate x0 = (x - sigma eps) / alpha (the adapter turns any parametrization
into eps; a consistency model's own boundary-condition scalings are a model-side wrapper, nfebench.models.consistency)
at a short list of levels tau_1 > ... > tau_K (K = nfe, model time), and between levels go back up the forward
process from that estimate. They differ in how:

    consistency (Song et al. 2023, Alg. 1)   x = x0 + sqrt(s^2 - s_min^2) z in the VE space (s = EDM sigma, s_min
                                              the schedule's bottom; diffusers CMStochasticIterativeScheduler), on
                                              variance-exploding schedules; x = alpha x0 + sigma z otherwise (LCM's).
    lcm (Luo et al. 2023)                     x = alpha x0 + sigma z on every schedule (diffusers LCMScheduler).
    tcd (Zheng et al. 2024, gamma)            DDIM from tau_k to s = (1 - gamma) tau_{k+1} with the model's x0 and
                                              eps, then forward noise from s up to tau_{k+1} (diffusers TCDScheduler).
                                              gamma = 0 is DDIM on the levels (deterministic); gamma = 1 is lcm.

Re-noising is written in the schedule's own terms (alpha, sigma, EDM sigma = sigma / alpha, and prior_std > 1 for a
variance-exploding schedule), in the samplers' VP frame, so the samplers run on every schedule kind.
consistency and lcm return the last clean estimate. tcd, like TCDScheduler, ends at its last DDIM target: the
schedule's bottom t_min (timestep 0 of a discrete schedule, alpha_bar_0 = 1 - beta_1), not at clean data.
"""

from __future__ import annotations

import math

import numpy as np

from .common import alpha_sigma, check_spacing
from .registry import SamplerError, register


def variance_exploding(sched) -> bool:
    """True where x_T is drawn wider than N(0, I) in the model's space (VE: prior_std = sigma_max)."""
    return float(getattr(sched, "prior_std", 1.0)) != 1.0


def renoise(sched, x0, tau: float, z, ve_floor: bool):
    """The state at level tau (VP frame) from a clean estimate x0 and standard normal z.

    ve_floor and a variance-exploding schedule: the consistency models' x_ve = x0 + sqrt(s^2 - s_min^2) z
    (Song et al. 2023, Alg. 1: the noise that brings a sample at s_min to s), i.e. x_vp = alpha x_ve; otherwise
    x = alpha x0 + sigma z (LCM)."""
    a, s = alpha_sigma(sched, tau)
    if ve_floor and variance_exploding(sched):
        s_edm, s_min = float(sched.edm_sigma(tau)), float(sched.edm_sigma(sched.t_min))
        return a * (x0 + math.sqrt(max(s_edm**2 - s_min**2, 0.0)) * z)
    return a * x0 + s * z


def lcm_origin_grid(sched, nfe: int, original_steps: int) -> np.ndarray:
    """LCM's and TCD's default levels on a discrete schedule of T timesteps (diffusers LCMScheduler / TCDScheduler
    set_timesteps): the distillation grid k n - 1 (n = 1..original_steps, k = T // original_steps), reversed, at
    indices floor(linspace(0, original_steps, nfe, endpoint=False))."""
    if not sched.discrete:
        raise SamplerError(f"spacing 'lcm' is LCM's grid of a discrete schedule; this schedule is {sched.describe()}: "
                           f"use spacing uniform, quadratic, logsnr or karras")
    T = int(round(sched.t_max - sched.t_min)) + 1
    if isinstance(original_steps, bool) or not isinstance(original_steps, int) or not 1 <= original_steps <= T:
        raise SamplerError(f"original_steps must be an integer in [1, {T}], got {original_steps!r}")
    if nfe > original_steps:
        raise SamplerError(f"nfe={nfe} levels on LCM's grid of original_steps={original_steps}: raise original_steps")
    k = T // original_steps
    origin = (np.arange(1, original_steps + 1) * k - 1)[::-1]
    idx = np.floor(np.linspace(0, original_steps, num=nfe, endpoint=False)).astype(np.int64)
    return sched.t_min + origin[idx].astype(np.float64)


def levels(sched, nfe: int, timesteps, spacing: str, original_steps: int = 50) -> np.ndarray:
    """The nfe levels: the given timesteps (strictly decreasing, within [t_min, t_max]), or the spacing's grid from
    t_max (its last point, t_min, dropped; rounded on a discrete schedule), or LCM's grid (spacing 'lcm')."""
    if timesteps is not None:
        ts = np.asarray(list(timesteps), dtype=np.float64)
        tol = 1e-9 * max(1.0, abs(sched.t_max))
        if ts.ndim != 1 or ts.size < 1 or np.any(np.diff(ts) >= 0) or ts[0] > sched.t_max + tol \
                or ts[-1] < sched.t_min - tol:
            raise SamplerError(f"consistency levels (timesteps) must be strictly decreasing and within the schedule's "
                               f"[{sched.t_min:g}, {sched.t_max:g}]; got {ts.tolist()}")
        if ts.size != nfe:
            raise SamplerError(f"timesteps lists the levels, one evaluation each: {ts.size} levels for nfe={nfe}")
        return ts
    if spacing == "lcm":
        return lcm_origin_grid(sched, nfe, original_steps)
    check_spacing(spacing)
    if spacing == "elbo":
        raise SamplerError("spacing 'elbo' is the DDPM/DDIM chain's; allowed here: uniform, quadratic, logsnr, "
                           "karras, lcm")
    ts = sched.timesteps(nfe, spacing)[:-1]
    if sched.discrete:
        ts = np.rint(ts)
        if np.any(np.diff(ts) >= 0):
            raise SamplerError(f"spacing {spacing!r} gives repeated integer levels at nfe={nfe}; pass timesteps")
    return ts


def _multistep(eps, sched, x, nfe, noise, ts, clip, ve_floor):
    x0 = None
    for i, tau in enumerate(ts):
        tau = float(tau)
        if i > 0:
            x = renoise(sched, x0, tau, noise.randn_like(x), ve_floor)
        a, s = alpha_sigma(sched, tau)
        x0 = (x - s * eps(x, tau)) / a
        if clip:
            x0 = x0.clamp(-1, 1)
    return x0


@register("consistency", stochastic=True)
def consistency(eps, sched, x, nfe, noise, *, timesteps=None, spacing="karras", clip=False):
    """Multistep consistency sampling (Song et al. 2023, Alg. 1): x0 = f(x_T, T), then at each later level re-noise
    and denoise again; nfe levels (timesteps, model time, decreasing from the schedule's top; else the spacing's).

    Re-noising: x0 + sqrt(s^2 - s_min^2) z on variance-exploding schedules, alpha x0 + sigma z on the others.
    clip: clamp each x0 to [-1, 1] (CMStochasticIterativeScheduler's clip_denoised)."""
    ts = levels(sched, nfe, timesteps, spacing)
    return _multistep(eps, sched, x, nfe, noise, ts, clip, ve_floor=True)


@register("lcm", stochastic=True)
def lcm(eps, sched, x, nfe, noise, *, timesteps=None, spacing="lcm", original_steps=50, clip=False):
    """LCM's multistep sampler (Luo et al. 2023; diffusers LCMScheduler): x0 at each level, re-noised as
    alpha x0 + sigma z. spacing 'lcm': LCM's levels on the original_steps distillation grid (discrete schedules)."""
    ts = levels(sched, nfe, timesteps, spacing, original_steps)
    return _multistep(eps, sched, x, nfe, noise, ts, clip, ve_floor=False)


@register("tcd", stochastic=True)
def tcd(eps, sched, x, nfe, noise, *, gamma=0.3, timesteps=None, spacing="lcm", original_steps=50):
    """Trajectory Consistency Distillation's strategic stochastic sampling (Zheng et al. 2024, Alg. 4; diffusers
    TCDScheduler, whose `eta` is gamma): DDIM from tau_k to s = (1 - gamma) tau_{k+1} (floored on a discrete
    schedule), then forward noise from s to tau_{k+1}. Ends at the schedule's bottom t_min, not clean data."""
    if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not 0 <= gamma <= 1:
        raise SamplerError(f"gamma must be a number in [0, 1], got {gamma!r}")
    ts = levels(sched, nfe, timesteps, spacing, original_steps)
    lo = float(sched.t_min)
    for i, tau in enumerate(ts):
        tau = float(tau)
        nxt = float(ts[i + 1]) if i + 1 < len(ts) else lo
        s_tau = lo + (1.0 - gamma) * (nxt - lo)
        if sched.discrete:
            s_tau = lo + math.floor(s_tau - lo)
        a, s = alpha_sigma(sched, tau)
        e = eps(x, tau)
        x0 = (x - s * e) / a
        a_s, s_s = alpha_sigma(sched, s_tau)
        x = a_s * x0 + s_s * e  # DDIM to s (Song et al. 2021, Eq. 12, eta = 0)
        if gamma > 0 and i + 1 < len(ts):  # forward process from s up to the next level
            a_n, s_n = alpha_sigma(sched, nxt)
            r = a_n / a_s
            x = r * x + math.sqrt(max(s_n**2 - (r * s_s) ** 2, 0.0)) * noise.randn_like(x)
    return x

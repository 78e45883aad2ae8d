"""FastDPM (Kong & Ping 2021, "On Fast Sampling of Diffusion Probabilistic Models", arXiv 2106.00132).

FastDPM samples with S << T steps by choosing S noise levels and running the DDPM/DDIM reverse process on them:

  variant=step (Sec. 4.1, "STEP"): S of the T integer training timesteps,
      linear    tau_i = floor(i (T-1)/(S-1)),                    i = 0..S-1,
      quadratic tau_i = floor((i sqrt(0.8 T)/(S-1))^2)          (so tau_{S-1} = 0.8 T, as DDIM's quadratic choice);
  variant=var (Sec. 4.1, "VAR"): a new short variance schedule beta^_1..beta^_S,
      linear    beta^_i = linspace(beta_0, b, S)_i,   quadratic beta^_i = beta_0 (1 + i b)^2,
  with b chosen so that prod_i (1 - beta^_i) = alpha_bar_{T-1} (the same end noise level), mapped to fractional
  timesteps tau_i with alpha_bar(tau_i) = prod_{j<=i} (1 - beta^_j). The paper maps noise levels to continuous
  steps by a Stirling-approximate closed form of the linear schedule; we use the schedule's own inverse (linear
  interpolation of log alpha_bar, the project's convention), which holds for any discrete VP schedule.

The reverse process on those S points (Sec. 4.2) is the generalized DDIM step with standard deviation
kappa * sqrt(posterior variance): kappa = 1 is "DDPM-rev", kappa = 0 "DDIM-rev" (= DDIM, eta = kappa). The last step
goes to clean data (alpha_bar = 1) with the x0 prediction. NFE = S = nfe. Discrete VP schedules only.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import brentq

from .common import CLEAN, discrete_betas
from .ddpm import ddim
from .registry import SamplerError, register

VARIANTS = ("step", "var")
SCHEDULES = ("linear", "quadratic")


def step_timesteps(T: int, S: int, schedule: str) -> np.ndarray:
    """FastDPM-STEP's S integer timesteps, increasing (Sec. 4.1)."""
    i = np.arange(S, dtype=np.float64)
    if schedule == "linear":
        taus = np.floor(i * (T - 1.0) / (S - 1.0))
    else:
        taus = np.floor((i * math.sqrt(0.8 * T) / (S - 1.0)) ** 2)
    if np.any(np.diff(taus) <= 0):
        raise SamplerError(f"fastdpm variant=step schedule={schedule} repeats integer timesteps at nfe={S}; "
                           f"use schedule=linear or variant=var")
    return taus


def var_betas(beta_0: float, log_alpha_bar_end: float, S: int, schedule: str) -> np.ndarray:
    """FastDPM-VAR's S betas (Sec. 4.1), with sum log(1 - beta^) = log_alpha_bar_end (solved by Brent's method)."""
    i = np.arange(S, dtype=np.float64)
    if schedule == "linear":  # b = the last beta^, above beta_0 and below 1
        g, lo, hi = (lambda b: beta_0 + (b - beta_0) * i / (S - 1.0)), beta_0, 1.0
    else:  # b > 0 the growth rate; beta^_{S-1} < 1 bounds it
        g, lo, hi = (lambda b: beta_0 * (1.0 + i * b) ** 2), 0.0, (1.0 / math.sqrt(beta_0) - 1.0) / (S - 1.0)
    hi *= 1.0 - 1e-12
    f = lambda b: np.log1p(-g(b)).sum() - log_alpha_bar_end  # noqa: E731  (decreasing in b)
    if f(lo) < 0 or f(hi) > 0:
        raise SamplerError(f"fastdpm variant=var cannot reach the schedule's end noise level in nfe={S} steps")
    return g(brentq(f, lo, hi, xtol=1e-15, rtol=1e-15))


def fastdpm_timesteps(sched, S: int, variant: str, schedule: str) -> np.ndarray:
    """The decreasing evaluation grid of FastDPM, then CLEAN."""
    betas = discrete_betas(sched, "fastdpm")
    if variant not in VARIANTS:
        raise SamplerError(f"unknown variant {variant!r} for fastdpm; allowed: {', '.join(VARIANTS)}")
    if schedule not in SCHEDULES:
        raise SamplerError(f"unknown schedule {schedule!r} for fastdpm; allowed: {', '.join(SCHEDULES)}")
    if variant == "step":
        taus = step_timesteps(betas.size, S, schedule)
    else:
        log_ab = np.cumsum(np.log1p(-var_betas(float(betas[0]), float(np.log1p(-betas).sum()), S, schedule)))
        taus = np.clip(sched.tau_from_log_alpha_bar(log_ab), 0.0, sched.t_max)
        taus[-1] = sched.t_max  # the end level is alpha_bar_{T-1} by construction (pin the rounding)
    return np.append(taus[::-1], CLEAN)


@register("fastdpm", min_nfe=2, stochastic=True)
def fastdpm(eps, sched, x, nfe, noise, *, variant="var", schedule="quadratic", kappa=0.0, clip=False):
    """FastDPM (Kong & Ping 2021): DDPM/DDIM-rev on S = nfe noise levels from its STEP or VAR schedules.

    variant: step (S of the integer timesteps) | var (a new S-step variance schedule on fractional timesteps).
    schedule: linear | quadratic. kappa in [0, 1]: the reverse std is kappa * sqrt(posterior variance)
    (0 = DDIM-rev, 1 = DDPM-rev). clip: clamp x0-hat to [-1, 1].
    """
    if not 0.0 <= kappa <= 1.0:
        raise SamplerError(f"kappa must be in [0, 1], got {kappa}")
    return ddim(eps, sched, x, nfe, noise, eta=float(kappa), clip=clip,
                timesteps=fastdpm_timesteps(sched, nfe, variant, schedule))

"""Analytic-DDPM and Analytic-DDIM (Bao et al. 2022): DDPM / DDIM with the optimal reverse variance.

Both walk the same chain as ddpm / ddim (K = nfe integer timesteps T-1 .. 0, then clean data) and spend exactly K
evaluations. The step s -> t has the DDIM-family mean with x0_hat and variance sigma*^2 = lambda^2 + c0^2 Var[x0|x_s]
(nfebench.analytic_dpm, Thm 1), where lambda^2 = beta-tilde (analytic_ddpm) or eta^2 beta-tilde (analytic_ddim,
eta = 0 in the paper). The moments Gamma_n come in through the `moments` option: a cache file written by
nfebench.analytic_dpm.cached_moments (the runner computes it once per model) or an array of length T.
"""

from __future__ import annotations

import math

import numpy as np

from ..analytic_dpm import MomentsError, load_moments, optimal_variance
from .common import CLEAN, alpha_sigma, chain_grid, explicit_grid
from .registry import SamplerError, register


def _moments(moments, sched):
    if not sched.discrete:
        raise SamplerError(f"Analytic-DPM needs a discrete schedule (moments at integer timesteps); this model's "
                           f"schedule is {sched.describe()}")
    try:
        return load_moments(moments, sched.T)
    except MomentsError as e:
        raise SamplerError(str(e)) from None


def _grid(sched, nfe, spacing, timesteps):
    ts = chain_grid(sched, nfe, spacing) if timesteps is None else explicit_grid(sched, timesteps, allow_clean=True)
    if np.any(ts[:-1] != np.rint(ts[:-1])):
        raise SamplerError("Analytic-DPM needs integer timesteps (the moments are estimated at integers)")
    return ts


def _run(eps, sched, x, nfe, noise, eta, moments, spacing, clip, clip_sigma_pixels, timesteps):
    gamma = _moments(moments, sched)
    ts = _grid(sched, nfe, spacing, timesteps)
    sigma2_cap = (clip_sigma_pixels * (2.0 / 255.0) * math.sqrt(math.pi / 2.0)) ** 2 if clip_sigma_pixels > 0 else None
    for i, (s, t) in enumerate(zip(ts[:-1], ts[1:])):
        a_s, s_s = alpha_sigma(sched, s)
        a_t, s_t = alpha_sigma(sched, t)
        e = eps(x, s)
        x0 = (x - s_s * e) / a_s
        if clip:
            x0 = x0.clamp(-1, 1)
            e = (x - a_s * x0) / s_s
        post = (1.0 - (a_s / a_t) ** 2) * s_t**2 / s_s**2  # beta-tilde of the respaced step (0 onto clean data)
        lam2 = eta**2 * post
        mean = a_t * x0 + math.sqrt(max(s_t**2 - lam2, 0.0)) * e  # = the DDPM posterior mean when lam2 = post
        if t == CLEAN:
            x = mean  # last step: the mean, no noise (as ddpm / ddim)
            break
        var = optimal_variance(sched, float(s), float(t), float(gamma[int(s)]), lam2)
        if sigma2_cap is not None and i == len(ts) - 3:  # the step onto tau_1, the second last
            var = min(var, sigma2_cap)
        x = mean + math.sqrt(var) * noise.randn_like(x)
    return x


@register("analytic_ddpm", stochastic=True)
def analytic_ddpm(eps, sched, x, nfe, noise, *, moments=None, spacing="uniform", clip=False, clip_sigma_pixels=0.0,
                  timesteps=None):
    """Analytic-DDPM (Bao et al. 2022): the DDPM posterior mean and the optimal variance from the moments Gamma_n.

    moments: path of a cached Gamma_n file (nfebench.analytic_dpm.cached_moments) or an array of length T.
    clip: clamp x0_hat to [-1, 1] (the authors' code always does). clip_sigma_pixels: cap the std of the second last
    step at y * (2/255) * sqrt(pi/2) (the authors' clip_pixel, 2 for their CIFAR-10 FIDs); 0 = no cap.
    """
    return _run(eps, sched, x, nfe, noise, 1.0, moments, spacing, clip, float(clip_sigma_pixels), timesteps)


@register("analytic_ddim", stochastic=True)
def analytic_ddim(eps, sched, x, nfe, noise, *, moments=None, eta=0.0, spacing="uniform", clip=False,
                  clip_sigma_pixels=0.0, timesteps=None):
    """Analytic-DDIM (Bao et al. 2022): the DDIM mean (lambda^2 = eta^2 beta-tilde) and the optimal variance.

    eta = 0 (the paper's Analytic-DDIM) still adds noise: sigma*^2 = c0^2 Var[x0 | x_s] > 0. Other options as
    analytic_ddpm.
    """
    if not eta >= 0:
        raise SamplerError(f"eta must be >= 0, got {eta}")
    return _run(eps, sched, x, nfe, noise, float(eta), moments, spacing, clip, float(clip_sigma_pixels), timesteps)

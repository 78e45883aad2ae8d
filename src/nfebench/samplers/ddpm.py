"""Ancestral DDPM (Ho et al. 2020) and DDIM (Song, Meng, Ermon 2021) on a respaced chain of integer timesteps.

Both evaluate the model at K = nfe timesteps tau_K > ... > tau_1 = 0 and finish at clean data (alpha_bar = 1),
where the last update returns the model's x_0 prediction: K evaluations, exactly the budget.
"""

from __future__ import annotations

import math

import torch

from ..models.parametrization import learned_log_variance
from .common import CLEAN, alpha_sigma, chain_or_elbo_grid
from .registry import SamplerError, register


def _x0(x, e, a, s, clip):
    x0 = (x - s * e) / a
    return x0.clamp(-1, 1) if clip else x0


@register("ddpm", stochastic=True)
def ddpm(eps, sched, x, nfe, noise, *, variance="small", spacing="uniform", clip=False, timesteps=None,
         elbo_costs=None):
    """Ancestral sampling (Ho et al. 2020, Alg. 2) on a respaced chain (Nichol & Dhariwal 2021, Sec. 4).

    variance: "small" = posterior beta-tilde, "large" = beta (both from Ho et al. 2020, Sec. 3.2), of the
    respaced step beta = 1 - alpha_bar_t / alpha_bar_s; "learned" = the network's own (variance_type learned or
    learned_range): Improved DDPM's exp(v log beta + (1 - v) log beta-tilde) (Nichol & Dhariwal 2021, Eq. 15) of
    the respaced step, as their respaced sampler uses it. clip: clamp x_0-hat to [-1, 1] (the DDPM code does).
    spacing "elbo": the chain with the smallest bound for this variance (Watson et al. 2021), from elbo_costs (the
    model's per-timestep x0 errors, nfebench.elbo_steps; the runner estimates and caches them).
    """
    if variance not in ("small", "large", "learned"):
        raise SamplerError(f"unknown variance {variance!r} for ddpm; allowed: small, large, learned")
    if variance == "learned" and spacing == "elbo" and timesteps is None:
        raise SamplerError("spacing='elbo' needs a fixed variance (small or large), not variance='learned'")
    ts = chain_or_elbo_grid(sched, nfe, spacing, timesteps, elbo_costs, x[0].numel(), variance)
    for s, t in zip(ts[:-1], ts[1:]):
        a_s, s_s = alpha_sigma(sched, s)
        a_t, s_t = alpha_sigma(sched, t)
        e = eps(x, s)
        x0 = _x0(x, e, a_s, s_s, clip)
        beta = 1.0 - (a_s / a_t) ** 2  # respaced beta of this step
        # posterior q(x_t | x_s, x_0) mean (Ho et al. 2020, Eq. 7)
        mean = (a_t * beta / s_s**2) * x0 + (math.sqrt(1.0 - beta) * s_t**2 / s_s**2) * x
        if t == CLEAN:
            x = mean  # last step: no noise
        else:
            post = beta * s_t**2 / s_s**2
            if variance == "learned":
                try:
                    log_var = learned_log_variance(e, math.log(beta), math.log(post))
                except ValueError as err:
                    raise SamplerError(str(err)) from None
                std = (0.5 * log_var).exp().to(dtype=x.dtype, device=x.device)
            else:
                std = math.sqrt(post if variance == "small" else beta)
            x = mean + std * noise.randn_like(x)
    return x


@register("ddim", stochastic=True)
def ddim(eps, sched, x, nfe, noise, *, eta=0.0, spacing="uniform", clip=False, timesteps=None, elbo_costs=None):
    """DDIM (Song, Meng, Ermon 2021, Eq. 12): eta=0 is deterministic, eta=1 is the DDPM posterior variance.

    spacing: the paper uses "uniform" (linear tau; CelebA) and "quadratic" (CIFAR-10), App. D.2; "elbo": the chain
    of the smallest small-variance DDPM bound (Watson et al. 2021; DDIM shares the chain's marginals), from elbo_costs.
    """
    if not eta >= 0:
        raise SamplerError(f"eta must be >= 0, got {eta}")
    ts = chain_or_elbo_grid(sched, nfe, spacing, timesteps, elbo_costs, x[0].numel(), "small")
    for s, t in zip(ts[:-1], ts[1:]):
        a_s, s_s = alpha_sigma(sched, s)
        a_t, s_t = alpha_sigma(sched, t)
        e = eps(x, s)
        x0 = _x0(x, e, a_s, s_s, clip)
        if clip:
            e = (x - a_s * x0) / s_s  # keep eps consistent with the clipped x_0 (as the DDIM code does)
        # sigma_eta of Eq. 16: eta * sqrt(posterior variance)
        sig = eta * (s_t / s_s) * math.sqrt(max(0.0, 1.0 - (a_s / a_t) ** 2)) if eta > 0 else 0.0
        x = a_t * x0 + math.sqrt(max(0.0, s_t**2 - sig**2)) * e
        if sig > 0:
            x = x + sig * noise.randn_like(x)
    return x

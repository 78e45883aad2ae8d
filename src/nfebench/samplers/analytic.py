"""Analytic-DDPM and Analytic-DDIM (Bao et al. 2022): DDPM / DDIM with the optimal reverse variance.

Both walk the same chain as ddpm / ddim (K = nfe integer timesteps T-1 .. 0, then clean data) and spend exactly K
evaluations. The step s -> t has the DDIM-family mean with x0_hat and variance sigma*^2 = lambda^2 + c0^2 Var[x0|x_s]
(nfebench.analytic_dpm, Thm 1), where lambda^2 = beta-tilde (analytic_ddpm) or eta^2 beta-tilde (analytic_ddim,
eta = 0 in the paper). The moments Gamma_n come in through the `moments` option: a cache file written by
nfebench.analytic_dpm.cached_moments (the runner computes it once per model) or an array of length T.

SN-DDPM / SN-DDIM / NPR-DDPM / NPR-DDIM (Bao et al. 2022b, "Estimating the optimal covariance with imperfect mean"):
the same chain and means with a per-pixel, state-dependent variance from a covariance head that shares the model's
evaluation (nfebench.cov_heads): K = nfe evaluations. The head's output arrives as the evaluation's auxiliary output
(CountedEps.aux); a model without heads is a one-line error.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..analytic_dpm import MomentsError, load_moments, optimal_variance, variance_bounds
from .common import CLEAN, alpha_sigma, chain_grid, chain_or_elbo_grid, explicit_grid
from .registry import SamplerError, register


def _moments(moments, sched):
    if not sched.discrete:
        raise SamplerError(f"Analytic-DPM needs a discrete schedule (moments at integer timesteps); this model's "
                           f"schedule is {sched.describe()}")
    try:
        return load_moments(moments, sched.T)
    except MomentsError as e:
        raise SamplerError(str(e)) from None


def _grid(sched, nfe, spacing, timesteps, elbo_costs, dims, gamma):
    ts = chain_or_elbo_grid(sched, nfe, spacing, timesteps, elbo_costs, dims, "analytic", gamma)
    if np.any(ts[:-1] != np.rint(ts[:-1])):
        raise SamplerError("Analytic-DPM needs integer timesteps (the moments are estimated at integers)")
    return ts


def _run(eps, sched, x, ts, noise, eta, clip, clip_sigma_pixels, variance):
    """The DDIM-family chain on grid ts with lambda^2 = eta^2 beta-tilde and the reverse variance
    variance(s, t, lambda^2, x_s, eps_hat) (a float, or a tensor shaped as x for a diagonal covariance)."""
    sigma2_cap = (clip_sigma_pixels * (2.0 / 255.0) * math.sqrt(math.pi / 2.0)) ** 2 if clip_sigma_pixels > 0 else None
    for i, (s, t) in enumerate(zip(ts[:-1], ts[1:])):
        a_s, s_s = alpha_sigma(sched, s)
        a_t, s_t = alpha_sigma(sched, t)
        e = eps(x, s)
        x0 = (x - s_s * e) / a_s
        if clip:
            x0 = x0.clamp(-1, 1)
            e_used = (x - a_s * x0) / s_s
        else:
            e_used = e
        post = (1.0 - (a_s / a_t) ** 2) * s_t**2 / s_s**2  # beta-tilde of the respaced step (0 onto clean data)
        lam2 = eta**2 * post
        mean = a_t * x0 + math.sqrt(max(s_t**2 - lam2, 0.0)) * e_used  # = the DDPM posterior mean when lam2 = post
        if t == CLEAN:
            x = mean  # last step: the mean, no noise (as ddpm / ddim)
            break
        var = variance(float(s), float(t), lam2, eps, e)
        if sigma2_cap is not None and i == len(ts) - 3:  # the step onto tau_1, the second last
            var = var.clamp(max=sigma2_cap) if torch.is_tensor(var) else min(var, sigma2_cap)
        x = mean + (var.sqrt() if torch.is_tensor(var) else math.sqrt(var)) * noise.randn_like(x)
    return x


def _analytic(eps, sched, x, nfe, noise, eta, moments, spacing, clip, clip_sigma_pixels, timesteps, elbo_costs):
    gamma = _moments(moments, sched)
    ts = _grid(sched, nfe, spacing, timesteps, elbo_costs, x[0].numel(), gamma)
    return _run(eps, sched, x, ts, noise, eta, clip, clip_sigma_pixels,
                lambda s, t, lam2, counted, e: optimal_variance(sched, s, t, float(gamma[int(s)]), lam2))


@register("analytic_ddpm", stochastic=True, needs=("moments",))
def analytic_ddpm(eps, sched, x, nfe, noise, *, moments=None, spacing="uniform", clip=False, clip_sigma_pixels=0.0,
                  timesteps=None, elbo_costs=None):
    """Analytic-DDPM (Bao et al. 2022): the DDPM posterior mean and the optimal variance from the moments Gamma_n.

    moments: path of a cached Gamma_n file (nfebench.analytic_dpm.cached_moments) or an array of length T.
    clip: clamp x0_hat to [-1, 1] (the authors' code always does). clip_sigma_pixels: cap the std of the second last
    step at y * (2/255) * sqrt(pi/2) (the authors' clip_pixel, 2 for their CIFAR-10 FIDs); 0 = no cap.
    spacing "elbo": the chain of the smallest analytic-variance bound (Watson et al. 2021), from elbo_costs.
    """
    return _analytic(eps, sched, x, nfe, noise, 1.0, moments, spacing, clip, float(clip_sigma_pixels), timesteps,
                     elbo_costs)


@register("analytic_ddim", stochastic=True, needs=("moments",))
def analytic_ddim(eps, sched, x, nfe, noise, *, moments=None, eta=0.0, spacing="uniform", clip=False,
                  clip_sigma_pixels=0.0, timesteps=None, elbo_costs=None):
    """Analytic-DDIM (Bao et al. 2022): the DDIM mean (lambda^2 = eta^2 beta-tilde) and the optimal variance.

    eta = 0 (the paper's Analytic-DDIM) still adds noise: sigma*^2 = c0^2 Var[x0 | x_s] > 0. Other options as
    analytic_ddpm.
    """
    if not eta >= 0:
        raise SamplerError(f"eta must be >= 0, got {eta}")
    return _analytic(eps, sched, x, nfe, noise, float(eta), moments, spacing, clip, float(clip_sigma_pixels),
                     timesteps, elbo_costs)


# --- SN-DPM / NPR-DPM (Bao, Li, Sun, Zhu, Zhang 2022, ICML, arXiv 2206.07309) -------------------------------------
HEAD_KINDS = {"sn_ddpm": "sn", "sn_ddim": "sn", "npr_ddpm": "npr", "npr_ddim": "npr"}


def head_variance(sched, s: float, t: float, lam2: float, eps_hat: torch.Tensor, moment: torch.Tensor,
                  kind: str) -> torch.Tensor:
    """The diagonal reverse variance of the step s -> t from a covariance head (Bao et al. 2022b, Eq. 7, 10, 12):

        lambda^2 + c0^2 * clip((sigma_s^2 / a_s^2) * v(x_s), 0, min(sigma_s^2 / a_s^2, 1)),
        v = E[eps^2 | x_s] - eps_hat^2   (sn: the squared-noise head; exact when eps_hat = E[eps | x_s])
        v = E[(eps - eps_hat)^2 | x_s]   (npr: the residual head; optimal for the imperfect mean eps_hat),

    per pixel: (sigma_s / a_s)^2 v is Var[x_0 | x_s] (npr: E[(x_0 - x0_hat)^2 | x_s]); the clip is Analytic-DPM's
    Thm 2 bound for data in [-1, 1] (c0, the bound: nfebench.analytic_dpm.variance_bounds).
    """
    c02, upper = variance_bounds(sched, s, t, lam2)
    a_s, s_s = float(sched.alpha(s)), float(sched.sigma(s))
    v = moment - eps_hat**2 if kind == "sn" else moment
    return lam2 + c02 * (s_s**2 / a_s**2 * v).clamp(0.0, upper)


def _headed(name, eps, sched, x, nfe, noise, eta, spacing, clip, timesteps):
    kind = HEAD_KINDS[name]
    ts = chain_grid(sched, nfe, spacing) if timesteps is None else explicit_grid(sched, timesteps, allow_clean=True)

    def variance(s, t, lam2, counted, e):
        if counted.aux is None:
            raise SamplerError(f"{name} needs a model with covariance heads (eps_fn returning (eps, moment)): "
                               f"nfebench.cov_heads.attach_heads(model, {kind!r}), or a checkpoint with cov_heads/")
        return head_variance(sched, s, t, lam2, e, counted.aux.to(e.dtype), kind)

    return _run(eps, sched, x, ts, noise, eta, clip, 0.0, variance)


@register("sn_ddpm", stochastic=True, needs=("cov_heads",))
def sn_ddpm(eps, sched, x, nfe, noise, *, spacing="uniform", clip=False, timesteps=None):
    """SN-DDPM (Bao et al. 2022b): the DDPM posterior mean with the diagonal covariance from E[eps^2 | x_s].

    Needs a model with the `sn` covariance head (nfebench.cov_heads); its output shares the evaluation (NFE = nfe).
    """
    return _headed("sn_ddpm", eps, sched, x, nfe, noise, 1.0, spacing, clip, timesteps)


@register("sn_ddim", stochastic=True, needs=("cov_heads",))
def sn_ddim(eps, sched, x, nfe, noise, *, eta=0.0, spacing="uniform", clip=False, timesteps=None):
    """SN-DDIM (Bao et al. 2022b): the DDIM mean (lambda^2 = eta^2 beta-tilde) with the `sn` head's covariance."""
    if not eta >= 0:
        raise SamplerError(f"eta must be >= 0, got {eta}")
    return _headed("sn_ddim", eps, sched, x, nfe, noise, float(eta), spacing, clip, timesteps)


@register("npr_ddpm", stochastic=True, needs=("cov_heads",))
def npr_ddpm(eps, sched, x, nfe, noise, *, spacing="uniform", clip=False, timesteps=None):
    """NPR-DDPM (Bao et al. 2022b): the DDPM posterior mean with the covariance from E[(eps - eps_hat)^2 | x_s]."""
    return _headed("npr_ddpm", eps, sched, x, nfe, noise, 1.0, spacing, clip, timesteps)


@register("npr_ddim", stochastic=True, needs=("cov_heads",))
def npr_ddim(eps, sched, x, nfe, noise, *, eta=0.0, spacing="uniform", clip=False, timesteps=None):
    """NPR-DDIM (Bao et al. 2022b): the DDIM mean (lambda^2 = eta^2 beta-tilde) with the `npr` head's covariance."""
    if not eta >= 0:
        raise SamplerError(f"eta must be >= 0, got {eta}")
    return _headed("npr_ddim", eps, sched, x, nfe, noise, float(eta), spacing, clip, timesteps)

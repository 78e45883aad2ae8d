"""The public Python API: nfebench.sample and nfebench.nll."""

from __future__ import annotations

from typing import Callable

import torch

from .samplers import CountedEps, SamplerError, get_sampler
from .samplers.common import as_noise
from .schedule import VPSchedule


def check_nfe(nfe, min_nfe: int, sampler: str) -> int:
    if isinstance(nfe, bool) or not isinstance(nfe, int):
        raise SamplerError(f"nfe must be a positive integer, got {nfe!r}")
    if nfe < min_nfe:
        raise SamplerError(f"nfe={nfe} is below the minimum of sampler {sampler!r}: {min_nfe}")
    return nfe


def dry_run(sampler: str, nfe: int, betas, **options) -> int:
    """Run the sampler on a zero model and one 1-pixel sample: validates its options and budget in milliseconds,
    before a real model is touched. Returns the evaluations the sampler will spend per sample. The zero model also
    returns a zero auxiliary output, standing in for covariance heads (SN/NPR); other samplers never see it."""
    zeros = lambda x, t: (torch.zeros_like(x), torch.zeros_like(x))  # noqa: E731
    _, used = sample(zeros, betas, torch.zeros(1, 1, 1, 1, dtype=torch.float64), sampler, nfe,
                     generator=torch.Generator().manual_seed(0), return_nfe=True, **options)
    return used


def sample(eps_fn: Callable, betas, x_T: torch.Tensor, sampler: str = "dpm", nfe: int = 10, generator=None,
           return_nfe: bool = False, **options):
    """Solve from x_T to x_0 with `sampler`, calling eps_fn at most `nfe` times.

    eps_fn(x, t): noise prediction; t is the model's own timestep, a float tensor of shape [B] in [0, T-1]; between
    integers the schedule is linear interpolation of log(alpha_bar). betas: the 1-D training schedule (length T).
    generator: None, a torch.Generator, or a nfebench.samplers.PerSampleNoise (batch-size-independent noise).
    options: the sampler's own options (see nfebench.samplers.SAMPLERS[name].options); unknown ones are errors.
    Returns x_0 (and the number of evaluations spent if return_nfe=True).
    """
    spec = get_sampler(sampler)
    opts = spec.check_options(options)
    check_nfe(nfe, spec.min_nfe, sampler)
    sched = betas if isinstance(betas, VPSchedule) else VPSchedule(betas)
    eps = CountedEps(eps_fn, budget=nfe)
    with torch.no_grad():
        x0 = spec.fn(eps, sched, x_T, nfe, as_noise(generator), **opts)
    return (x0, eps.calls) if return_nfe else x0


def nll(eps_fn: Callable, betas, images_uint8: torch.Tensor, method: str = "ode", nfe: int | None = None,
        generator=None, **options) -> dict:
    """Negative log-likelihood of held-out uint8 images [N, C, H, W] in bits/dim (definitions: docs/nll.md).

    Same eps_fn(x, t) and time convention as `sample` (t: the model's own timestep, float tensor [B] in [0, T-1]).
    method="vlb": the negative ELBO of the K-step ddpm/ddim chain, K = nfe (None: the full chain, K = T); no offset.
        options: variance = small | large | analytic (Bao et al. 2022; needs moments), clip (clamp x0_hat),
        spacing (the chain's, as the samplers; "elbo" with elbo_costs: Watson et al.'s optimal chain), elbo_costs
        (path from nfebench.elbo_steps.cached_x0_errors, or an array of length T), moments (path from
        nfebench.analytic_dpm.cached_moments, or an array of length T), batch_size, num_images (the first n images; None: all).
    method="ode": the probability-flow ODE likelihood of uniformly dequantized data (+7 bits/dim offset included).
        nfe=None: the adaptive reference (scipy RK45, atol = rtol = 1e-5) reporting what it spent; an int: a
        fixed-step solver spending exactly nfe forward passes. options: solver = rk45 | heun | euler, atol, rtol,
        divergence = auto | exact | hutchinson (auto: exact up to 256 dims), probes (Hutchinson), spacing (the
        fixed-step grid), batch_size, num_images.
    generator: a torch.Generator for the Monte-Carlo noise (forward-process noise, dequantization, probes); None
    uses torch's global generator. Unknown options raise ValueError.
    Returns a dict with at least bpd, bpd_se, method, variance, nfe (forward passes per image), vjp (vector-Jacobian
    products per image), num_images, and per-term diagnostics (vlb: prior_bpd, kl_bpd, decoder_bpd; ode: prior_bpd,
    delta_bpd, offset_bits).
    """
    from .metrics.nll import nll as _nll

    return _nll(eps_fn, betas, images_uint8, method=method, nfe=nfe, generator=generator, **options)

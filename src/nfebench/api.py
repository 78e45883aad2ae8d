"""The public Python API: nfebench.sample and nfebench.nll."""

from __future__ import annotations

from functools import partial
from typing import Callable

import torch

from .models.base import EpsModel
from .models.parametrization import EpsAdapter, check_guidance
from .samplers import CountedEps, SamplerError, get_sampler
from .samplers.common import COMMON_OPTIONS, apply_common_options, as_noise
from .schedules import Schedule, ScheduleError, Truncated, as_schedule


def check_nfe(nfe, min_nfe: int, sampler: str) -> int:
    if isinstance(nfe, bool) or not isinstance(nfe, int):
        raise SamplerError(f"nfe must be a positive integer, got {nfe!r}")
    if nfe < min_nfe:
        raise SamplerError(f"nfe={nfe} is below the minimum of sampler {sampler!r}: {min_nfe}")
    return nfe


def dry_run(sampler: str, nfe: int, betas_or_schedule, variance_type: str | None = None, **options) -> int:
    """Run the sampler on a zero model and one 1-pixel sample: validates its options and budget in milliseconds,
    before a real model is touched. Returns the evaluations the sampler will spend per sample. The zero model also
    returns a zero auxiliary output, standing in for covariance heads (SN/NPR); other samplers never see it."""
    channels = 2 if variance_type in ("learned", "learned_range") else 1
    zeros = lambda x, t: (torch.zeros_like(x).repeat(1, channels, 1, 1), torch.zeros_like(x))  # noqa: E731
    _, used = sample(zeros, betas_or_schedule, torch.zeros(1, 1, 1, 1, dtype=torch.float64), sampler, nfe,
                     generator=torch.Generator().manual_seed(0), variance_type=variance_type, return_nfe=True,
                     **options)
    return used


def to_vp_frame(x_T: torch.Tensor, schedule: Schedule, tau: float | None = None) -> torch.Tensor:
    """x_T in the model's own space (N(0, I) on VP schedules; sigma_max * z on VE) -> the samplers' VP state, at
    the schedule's t_max, or at tau (an explicit grid's first timestep: x_T is the state there)."""
    scale = float(schedule.input_scale(schedule.t_max if tau is None else tau))
    return x_T if scale == 1.0 else x_T / scale


def as_eps(model_fn: Callable, schedule: Schedule, prediction_type: str, variance_type) -> Callable:
    """eps(x_vp, tau) of a raw network (through the adapter), or a loaded EpsModel as it is (it is already eps in
    the VP frame, with its own parametrization and schedule; the schedule passed must be that one)."""
    if not isinstance(model_fn, EpsModel):
        return EpsAdapter(model_fn, schedule, prediction_type, variance_type)
    if schedule.describe() != model_fn.schedule.describe() or (prediction_type, variance_type) != ("epsilon", None):
        raise SamplerError(f"model {model_fn.name!r} is a loaded EpsModel (already eps, {model_fn.prediction_type} "
                           f"on {model_fn.schedule.describe()}): pass model.schedule and no prediction_type or "
                           f"variance_type (or pass model.network, the raw network, with them)")
    return model_fn


def sample(model_fn: Callable, betas_or_schedule, x_T: torch.Tensor, sampler: str = "dpm", nfe: int = 10,
           generator=None, prediction_type: str = "epsilon", *, variance_type: str | None = None,
           return_nfe: bool = False, class_labels=None, guidance_scale: float | None = None,
           null_class: int | None = None, t_start: float | None = None, **options):
    """Solve from x_T to x_0 with `sampler`, calling model_fn at most `nfe` times.

    model_fn(x, tau): the network in its own terms. tau is the model's own time variable, a float tensor of shape
    [B] (the discrete timestep in [0, T-1], the continuous t, or the VE sigma), x its own input scaling (the VP
    state, or x_0 + sigma eps on a VE schedule); it returns its prediction_type: epsilon | sample (x_0) |
    v_prediction | score (docs/models.md; nfebench.models.parametrization turns it into eps).
    betas_or_schedule: a nfebench.schedules schedule (Discrete, VPLinear, VE) or a plain 1-D betas array (length
    T, the Discrete schedule: between integers, linear interpolation of log(alpha_bar)). A loaded EpsModel
    (nfebench.models.load_model) is taken as it is, with its own schedule: nfebench.sample(model, model.schedule, ..).
    x_T: the starting noise in the model's space (N(0, I); on VE: sigma_max * z, as EDM draws it).
    variance_type: learned | learned_range for networks with 2C output channels (ddpm's variance=learned).
    class_labels: one integer label per sample (a class-conditional model, then called model_fn(x, tau, labels));
    guidance_scale w: classifier-free guidance eps = eps_u + w (eps_c - eps_u) in eps after the parametrization's
    conversion (diffusers' convention; None or 1: the conditional model alone, 0: unconditional), eps_u the model
    at null_class. One guided evaluation counts as one NFE (two network passes, batched as one forward of 2B).
    generator: None, a torch.Generator, or a nfebench.samplers.PerSampleNoise (batch-size-independent noise).
    t_start: truncated diffusion (ES-DDPM, TDPM): x is the state at model time t_start in the model's space (e.g. a
    prior's sample noised to t_start) and the sampler's grid starts there (nfebench.schedules.Truncated).
    options: the sampler's own options (see nfebench.samplers.SAMPLERS[name].options); unknown ones are errors.
    spacing omitted (or "default"): the sampler's default grid on this schedule (its paper's on VP; on VE and Flow
    what the schedule's default_spacings make of it, e.g. ddim on VE: karras); an explicit spacing is literal.
    Every sampler also takes sigmas (an explicit grid in EDM sigma, a list or a file; the last may be 0, clean data),
    ays_model (sd15 | sdxl | svd, the list of spacing="ays"); docs/samplers.md.
    Returns x_0 (and the number of evaluations spent if return_nfe=True).
    """
    spec = get_sampler(sampler)
    common = {k: options.pop(k) for k in COMMON_OPTIONS if k in options}
    sched = as_schedule(betas_or_schedule)
    opts = spec.check_options(spec.resolve_spacing(options, sched))  # spacing omitted: the default on this schedule
    check_nfe(nfe, spec.min_nfe, sampler)
    opts, noise = apply_common_options(spec, sched, opts, as_noise(generator), **common)
    y = check_guidance(class_labels, guidance_scale, null_class, x_T.shape[0])
    eps_fn = as_eps(model_fn, sched, prediction_type, variance_type)
    if t_start is not None:
        try:
            sched = Truncated(sched, t_start)
        except ScheduleError as e:
            raise SamplerError(str(e)) from None
    eps = CountedEps(eps_fn if y is None else partial(eps_fn, class_labels=y, guidance_scale=guidance_scale,
                                                      null_class=null_class), budget=nfe)
    with torch.no_grad():
        start = None if opts.get("timesteps") is None else float(list(opts["timesteps"])[0])
        x0 = spec.fn(eps, sched, to_vp_frame(x_T, sched, start), nfe, noise, **opts)
    return (x0, eps.calls) if return_nfe else x0


def nll(model_fn: Callable, betas_or_schedule, images_uint8: torch.Tensor, method: str = "ode", nfe: int | None = None,
        generator=None, prediction_type: str = "epsilon", *, variance_type: str | None = None, **options) -> dict:
    """Negative log-likelihood of held-out uint8 images [N, C, H, W] in bits/dim (definitions: docs/nll.md).

    Same model_fn(x, tau), schedule, prediction_type and variance_type as `sample`.
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
    products per image), num_images, per_image_bpd (float64 tensor, one value per image), and per-term diagnostics
    (vlb: prior_bpd, kl_bpd, decoder_bpd; ode: prior_bpd, delta_bpd, offset_bits).
    """
    from .metrics.nll import nll as _nll

    sched = as_schedule(betas_or_schedule)
    return _nll(as_eps(model_fn, sched, prediction_type, variance_type), sched, images_uint8, method=method,
                nfe=nfe, generator=generator, **options)

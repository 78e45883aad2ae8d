"""What every sampler shares: the counted eps-model, noise sources, and timestep grids."""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

from ..schedules import LAST_REPLACED_BY_ZERO, SPACINGS, Schedule
from .registry import SamplerError

CLEAN = -1.0  # timestep of clean data: alpha_bar(-1) = 1, sigma = 0 (the DDPM/DDIM chain's final x_0)


class BudgetExceeded(RuntimeError):
    pass


class CountedEps:
    """Wraps eps_fn(x, t[B]) as eps(x, tau: float), counting calls and refusing to exceed the budget.

    One call evaluates the whole batch at one timestep, so `calls` is the NFE spent per sample. The first NaN/Inf
    seen (in the sampler's state going in, or in the model's output) is recorded in `nonfinite` with the evaluation
    number and timestep; sampling goes on so the caller can keep the broken samples for inspection.
    A model with an auxiliary output of the same forward pass (covariance heads, nfebench.cov_heads) returns the pair
    (eps, aux): the call returns eps and keeps aux in `aux` (None for a model without one).
    """

    def __init__(self, eps_fn: Callable, budget: int | None = None, check_finite: bool = True):
        self.eps_fn, self.budget, self.calls = eps_fn, budget, 0
        self.check_finite, self.nonfinite = check_finite, None
        self.aux = None

    def __call__(self, x: torch.Tensor, tau: float) -> torch.Tensor:
        if self.budget is not None and self.calls >= self.budget:
            raise BudgetExceeded(f"sampler tried to spend more than its budget of {self.budget} evaluations")
        self.calls += 1
        if self.check_finite and self.nonfinite is None and not torch.isfinite(x).all():
            self.nonfinite = f"the sampler state was NaN/Inf before evaluation {self.calls} (timestep {tau:.4g})"
        t = torch.full((x.shape[0],), float(tau), dtype=x.dtype, device=x.device)
        out = self.eps_fn(x, t)
        out, self.aux = out if isinstance(out, tuple) else (out, None)
        if self.check_finite and self.nonfinite is None and not torch.isfinite(out).all():
            self.nonfinite = f"the model returned NaN/Inf at evaluation {self.calls} (timestep {tau:.4g})"
        return out


class Noise:
    """A source of standard normal noise. Samplers draw only the noise they use (no draws in deterministic steps)."""

    def __init__(self, generator: torch.Generator | None = None):
        self.generator = generator

    def randn_like(self, x: torch.Tensor) -> torch.Tensor:
        if self.generator is None:
            return torch.randn_like(x)
        return torch.randn(x.shape, generator=self.generator, device=self.generator.device,
                           dtype=x.dtype).to(x.device)


class PerSampleNoise(Noise):
    """One generator per sample (seeded by its global index), so samples do not depend on the batch they ran in.

    The idea of EDM's generate.py (Karras et al. 2022): sample i's noise is a function of seed i alone.
    """

    def __init__(self, seeds: Sequence[int], device="cpu"):
        super().__init__(None)
        self.seeds = [int(s) for s in seeds]
        self.generators = [torch.Generator(device="cpu").manual_seed(int(s)) for s in seeds]
        self.device = device

    def randn_like(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] != len(self.generators):
            raise ValueError(f"batch of {x.shape[0]} but {len(self.generators)} per-sample seeds")
        return self.randn(x.shape[1:], dtype=x.dtype).to(x.device)

    def randn(self, shape, dtype=torch.float32) -> torch.Tensor:
        return torch.stack([torch.randn(tuple(shape), generator=g, dtype=dtype) for g in self.generators])


def as_noise(generator) -> Noise:
    if generator is None or isinstance(generator, torch.Generator):
        return Noise(generator)
    if isinstance(generator, Noise):
        return generator
    raise TypeError(f"generator must be None, a torch.Generator or a nfebench Noise, got {type(generator).__name__}")


def check_spacing(spacing: str) -> str:
    if spacing in ("tuned", "gits"):
        raise SamplerError(f"spacing {spacing!r} is a cached grid the CLI passes as timesteps (python -m nfebench.tune "
                           "makes it); in Python pass timesteps=nfebench.tune(...)")
    if spacing not in SPACINGS:
        raise SamplerError(f"unknown spacing {spacing!r}; allowed: {', '.join(SPACINGS)}")
    return spacing


def explicit_grid(sched: Schedule, timesteps, allow_clean: bool) -> np.ndarray:
    """Validate a user-given grid: strictly decreasing, within [t_min, t_max] (or ending at CLEAN where allowed; on a
    schedule with a clean_tau (Flow: tau = 0, s = 0) a last value there is read as CLEAN)."""
    ts = np.asarray(list(timesteps), dtype=np.float64)
    if allow_clean and sched.clean_tau is not None and ts.size and ts[-1] == sched.clean_tau:
        ts[-1] = CLEAN
    lo = sched.t_min
    ok = ts.ndim == 1 and ts.size >= 2 and np.all(np.diff(ts) < 0) and ts[0] <= sched.t_max
    if not ok or not (ts[-1] >= lo or (allow_clean and ts[-1] == CLEAN)):
        where = f"[{lo:g}, {sched.t_max:g}]" + (" (the last may be -1, clean data)" if allow_clean else "")
        raise SamplerError(f"timesteps must be a strictly decreasing list of >= 2 values in {where}")
    if np.any(ts[:-1] < lo):
        raise SamplerError("only the last timestep may be -1 (clean data)")
    return ts


def eval_points(sched: Schedule, num_evals: int, spacing: str) -> np.ndarray:
    """The evaluation points of a sampler that ends with a step to clean data: num_evals points of `spacing` from
    t_max to t_min (EDM's and k-diffusion's layout), or, for the spacings ComfyUI defines as N + 1 levels with the
    last replaced by 0 (schedules.LAST_REPLACED_BY_ZERO: sgm_uniform, simple, beta, ays), the first N of N + 1."""
    if spacing in LAST_REPLACED_BY_ZERO:
        return sched.timesteps(num_evals, spacing)[:-1]
    return np.array([sched.t_max]) if num_evals == 1 else sched.timesteps(num_evals - 1, spacing)


def chain_grid(sched: Schedule, num_evals: int, spacing: str) -> np.ndarray:
    """The DDPM/DDIM chain: num_evals timesteps from t_max down to t_min, then CLEAN (Ho et al. 2020 Alg. 2;
    Song et al. 2021 Sec. 4.2). The model is evaluated at every point but the last. On a Discrete schedule the
    timesteps are rounded to the integers the model was trained on; on continuous ones the grid is used as is."""
    check_spacing(spacing)
    taus = eval_points(sched, num_evals, spacing)
    taus = np.rint(taus) if sched.discrete and num_evals > 1 else taus
    if np.any(np.diff(taus) >= 0):
        raise SamplerError(f"spacing {spacing!r} gives repeated integer timesteps at {num_evals} steps; "
                           f"use fewer steps or another spacing")
    return np.append(taus, CLEAN)


def chain_or_elbo_grid(sched: Schedule, num_evals: int, spacing: str, timesteps, elbo_costs, dims: int,
                       variance: str = "small", gamma=None, allow_clean: bool = True) -> np.ndarray:
    """The grid of the DDPM/DDIM-family chains: explicit `timesteps`, else chain_grid, or with spacing="elbo" the
    chain with the smallest K-step bound for `variance` (Watson et al. 2021; nfebench.elbo_steps), then CLEAN."""
    if timesteps is not None:
        return explicit_grid(sched, timesteps, allow_clean=allow_clean)
    if spacing != "elbo":
        return chain_grid(sched, num_evals, spacing)
    from ..elbo_steps import ElboError, elbo_timesteps

    try:
        return np.append(elbo_timesteps(sched, num_evals, elbo_costs, dims, variance, gamma), CLEAN)
    except ElboError as e:
        raise SamplerError(str(e)) from None


def alpha_sigma(sched: Schedule, tau: float) -> tuple[float, float]:
    """(alpha, sigma) at tau as Python floats; tau = CLEAN gives (1, 0)."""
    if tau == CLEAN:
        return 1.0, 0.0
    return float(sched.alpha(tau)), float(sched.sigma(tau))


class Capped:
    """An adaptive sampler's view of the counted model: `nfe` is a cap, and reaching it before the end of the
    integration is a one-line SamplerError naming the sampler and the tolerance to loosen."""

    def __init__(self, eps: Callable, nfe: int, name: str, loosen: str):
        self.eps, self.nfe, self.name, self.loosen, self.calls = eps, nfe, name, loosen, 0

    def __call__(self, x: torch.Tensor, tau: float) -> torch.Tensor:
        if self.calls >= self.nfe:
            raise SamplerError(f"{self.name} needed more than nfe={self.nfe} evaluations; raise nfe or loosen "
                               f"{self.loosen}")
        self.calls += 1
        return self.eps(x, tau)


def check_tolerances(**tols) -> None:
    """An adaptive sampler's tolerances must be positive numbers."""
    for k, v in tols.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
            raise SamplerError(f"{k} must be a positive number, got {v!r}")


def worst_sample_rms(v: torch.Tensor) -> float:
    """max over the batch of each sample's root-mean-square: the error norm of a batch-level step-size controller
    that must satisfy every sample (DPM-Solver's adaptive solver, Lu et al. 2022 Sec. 3.4; used for GGF too)."""
    return float(v.reshape(v.shape[0], -1).double().pow(2).mean(1).sqrt().max())


def discrete_betas(sched, who: str) -> np.ndarray:
    """The training betas of a discrete VP schedule, for samplers defined on its integer timesteps; a one-line error
    for any other schedule."""
    betas = getattr(sched, "betas", None)
    if betas is None:
        raise SamplerError(f"{who} needs a discrete VP schedule (training betas); got {type(sched).__name__}")
    return np.asarray(betas, dtype=np.float64)


# --- options every sampler takes, resolved before it runs (issue 28) ------------------------------------------------
COMMON_OPTIONS = {"sigmas": None, "ays_model": None}
SIGMA_TOLERANCE = 1e-3  # a published list's ends may sit this far (relative) outside the schedule's range


def read_sigmas(sigmas) -> np.ndarray:
    """A sigma list: a sequence of numbers, or a file (.npy; .json list; text, numbers split by commas/whitespace)."""
    if isinstance(sigmas, (str, bytes)) or hasattr(sigmas, "__fspath__"):
        from pathlib import Path

        path = Path(sigmas)
        if not path.is_file():
            raise SamplerError(f"sigmas={str(sigmas)!r} is neither a list of numbers nor a file")
        try:
            if path.suffix == ".npy":
                return np.load(path).astype(np.float64).reshape(-1)
            text = path.read_text()
            import json

            vals = json.loads(text) if path.suffix == ".json" else text.replace(",", " ").split()
            return np.asarray(vals, dtype=np.float64).reshape(-1)
        except (ValueError, TypeError, OSError) as e:
            raise SamplerError(f"sigmas file {str(path)!r} does not hold a list of numbers ({e})") from None
    try:
        return np.asarray(list(sigmas), dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise SamplerError(f"sigmas must be a list of numbers or a file, got {sigmas!r}") from None


def sigmas_to_timesteps(sched: Schedule, sigmas) -> np.ndarray:
    """An explicit grid in EDM sigma (decreasing, > 0, the last may be 0 = clean data) -> the model's timesteps.
    The ends may sit SIGMA_TOLERANCE outside the schedule's range (published lists round); they are clamped."""
    s = read_sigmas(sigmas)
    if s.size < 2 or not np.all(np.isfinite(s)) or np.any(np.diff(s) >= 0) or s[-1] < 0 or np.any(s[:-1] <= 0):
        raise SamplerError(f"sigmas must be a strictly decreasing list of >= 2 values > 0 (the last may be 0); "
                           f"got {s.tolist()}")
    top, bottom = float(sched.edm_sigma(sched.t_max)), float(sched.edm_sigma(sched.t_min))
    pos = s[s > 0]
    if pos[0] > top * (1 + SIGMA_TOLERANCE) or pos[-1] < bottom * (1 - SIGMA_TOLERANCE):
        raise SamplerError(f"sigmas {pos[0]:g} .. {pos[-1]:g} leave the schedule's range [{bottom:.4g}, {top:.5g}]")
    taus = sched.tau_from_edm_sigma(np.clip(pos, bottom, top))
    taus[pos >= top], taus[pos <= bottom] = sched.t_max, sched.t_min
    return np.append(taus, CLEAN) if s[-1] == 0 else taus


def apply_common_options(spec, sched: Schedule, opts: dict, noise: Noise, sigmas=None, ays_model=None,
                         model_ays=None):
    """Resolve the options every sampler takes into its own: sigmas -> timesteps, ays_model -> the ays spacing's
    parameter (default: the model's `ays_model`, else sd15). Returns (options, noise)."""
    from ..schedules import AYS_SIGMAS, Spacing

    opts = dict(opts)
    if ays_model is not None and opts.get("spacing") != "ays":
        raise SamplerError(f"ays_model applies to spacing=ays; sampler {spec.name!r} has spacing="
                           f"{opts.get('spacing')!r}")
    if opts.get("spacing") == "ays":
        name = ays_model or model_ays or "sd15"
        if name not in AYS_SIGMAS:
            raise SamplerError(f"unknown ays_model {name!r}; allowed: {', '.join(AYS_SIGMAS)}")
        opts["spacing"] = Spacing("ays", ays_model=name)
    if sigmas is not None:
        if "timesteps" not in spec.options:
            raise SamplerError(f"sampler {spec.name!r} takes no explicit grid, so no sigmas")
        if opts.get("timesteps") is not None:
            raise SamplerError("give either sigmas or timesteps, not both")
        opts["timesteps"] = sigmas_to_timesteps(sched, sigmas).tolist()
    return opts, noise

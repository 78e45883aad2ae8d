"""What a sampler, its options or a model needs before sampling, resolved in one place.

The runner knows no sampler or model family by name. Instead:
- a sampler declares its needs when it registers (`@register("analytic_ddpm", needs=("moments",))`);
- an option value can imply a need (`OPTION_NEEDS`: spacing=elbo needs the ELBO step costs);
- a model declares needs on itself (`model.needs`: a tuple of names, e.g. a text encoder's embeddings or a prior);
- a point's own settings can (a tuned grid is checked against the weights it was tuned for; a metric that needs
  something prepared, `METRIC_NEEDS`: metrics.ode_error needs the ODE reference).

`prepare(model, p)` collects those names in a fixed order and calls each one's resolver once. A resolver computes
(or loads from its cache) what the need stands for and returns a `Resolution`: sampler options to fill, the model the
sampler should call instead (a wrapper), and row fields, timings or per-sample values (stored beside the seeds) to
record. Its one-off cost is printed and kept
apart from the NFE. A new preparation is one resolver in `RESOLVERS`, never a branch in run.py.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .samplers import get_sampler


@dataclass
class Resolution:
    """What one resolved need changes. Empty fields change nothing."""

    options: dict = field(default_factory=dict)  # sampler options to set (only where the option is unset / None)
    model: object | None = None  # the model the sampler calls from now on (a wrapper of the one it was given)
    row: dict = field(default_factory=dict)  # leaderboard fields (columns must exist in the schema)
    timings: dict = field(default_factory=dict)  # seconds, into metrics.json's timings
    # per-sample hooks on the sampler's raw output (before decoding and quantization): hook(x0, seeds) -> [B] values,
    # hook.key names them, hook.summary(values [N]) gives row fields (nfebench.metrics.ode_error.OdeError)
    per_sample: list = field(default_factory=list)
    details: dict = field(default_factory=dict)  # into metrics.json beside the row
    stored: dict = field(default_factory=dict)  # name -> array [num_samples], stored beside the seeds (samples.npz)


# need name -> resolver(model, point, progress) -> Resolution. Filled below and by the modules that add needs.
RESOLVERS: dict[str, Callable] = {}

# (option, value) -> the need that option value implies; the need fills the sampler option of its own name, so it
# applies to the samplers that take that option (the chain samplers' elbo_costs).
OPTION_NEEDS = {("spacing", "elbo"): "elbo_costs"}

# metrics.<key> true -> the need it implies (resolved after the sampler's own needs, seeing their options)
METRIC_NEEDS = {"ode_error": "ode_reference"}

# model config keys read here, never passed to a loader: the consistency preconditioning, a truncated chain's prior,
# a distilled model's card (teacher, training cost) and the sampler its card names (default_sampler, documentation).
MODEL_KEYS = ("consistency", "prior", "teacher", "training_cost", "default_sampler")


def resolver(name: str):
    """Register the resolver of need `name` (one per name)."""

    def deco(fn):
        if name in RESOLVERS:
            raise ValueError(f"need {name!r} has two resolvers ({RESOLVERS[name].__module__} and {fn.__module__})")
        RESOLVERS[name] = fn
        return fn

    return deco


def needs_of(model, p) -> list[str]:
    """The needs of point p on this model, in resolution order (model first: a wrapper can serve sampler needs)."""
    spec = get_sampler(p.sampler)
    names = list(getattr(model, "needs", ()) or ())
    model_cfg, cfg = getattr(p, "model", None) or {}, getattr(p, "cfg", None) or {}
    if model_cfg.get("consistency"):
        names.append("consistency")
    if model_cfg.get("prior") is not None or cfg.get("t_start") is not None:
        names.append("prior")
    if model_cfg.get("teacher") is not None or model_cfg.get("training_cost") is not None:
        names.append("card")
    names += list(spec.needs)
    names += [need for (opt, value), need in OPTION_NEEDS.items()
              if p.sampler_options.get(opt) == value and need in spec.options]
    if getattr(p, "tuned", None) is not None:
        names.append("tuned_weights")
    names += [need for key, need in METRIC_NEEDS.items() if (getattr(p, "metrics", None) or {}).get(key)]
    return list(dict.fromkeys(names))  # once each, first mention first


@dataclass
class Prepared:
    model: object  # what the sampler calls
    options: dict  # the sampler options, needs filled in
    row: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    per_sample: list = field(default_factory=list)  # the resolutions' per-sample hooks
    details: dict = field(default_factory=dict)
    values: dict = field(default_factory=dict)  # hook key -> {seed: value}, filled while sampling

    def observe(self, x0, seeds) -> dict:
        """Run every per-sample hook on a batch of raw sampler output; {key: [B] values} (saved with the shard)."""
        out = {h.key: np.asarray(h(x0, seeds), dtype=np.float64) for h in self.per_sample}
        self.restore(out, seeds)
        return out

    def restore(self, arrays, seeds) -> None:
        """Take the hooks' values of samples finished earlier (a resumed shard, samples.npz) from `arrays`."""
        for h in self.per_sample:
            if h.key not in arrays:
                raise KeyError(f"{h.key} is missing from the stored samples; run again with force=true")
            self.values.setdefault(h.key, {}).update(zip((int(s) for s in seeds), np.asarray(arrays[h.key])))

    def arrays(self, seeds) -> dict:
        """{key: [N] values in seed order}."""
        return {h.key: np.array([self.values[h.key][int(s)] for s in seeds]) for h in self.per_sample}

    def summarize(self, seeds) -> dict:
        """The hooks' row fields from all N values."""
        vals = self.arrays(seeds)
        return {k: v for h in self.per_sample for k, v in h.summary(vals[h.key]).items()}
    stored: dict = field(default_factory=dict)


def prepare(model, p, progress: bool = True) -> Prepared:
    """Resolve every need of p on `model`; p.sampler_options is not modified (the row keeps what the user set)."""
    out = Prepared(model=model, options=dict(p.sampler_options))
    q = copy.copy(p)  # what the resolvers see: p with the options filled so far (p itself keeps what the user set)
    for name in needs_of(model, p):
        if out.options.get(name) is not None:  # a need that fills an option the user already set is met
            continue
        if name not in RESOLVERS:
            raise KeyError(f"need {name!r} has no resolver (known: {', '.join(sorted(RESOLVERS))})")
        t0 = time.perf_counter()
        q.sampler_options = dict(out.options)
        res = RESOLVERS[name](out.model, q, progress)
        out.options.update({k: v for k, v in res.options.items() if out.options.get(k) is None})
        out.model = res.model if res.model is not None else out.model
        out.row.update(res.row)
        out.timings.update(res.timings or {f"{name}_seconds": round(time.perf_counter() - t0, 3)})
        out.per_sample += res.per_sample
        out.details.update(res.details)
        out.stored.update(res.stored)
    return out


# --- the needs nfebench has today ------------------------------------------------------------------------------

def _announce(progress: bool, what: str, info: dict) -> None:
    if progress:
        how = "cached" if info["cached"] else f"estimated in {info['seconds']:.0f} s"
        print(f"[nfebench] {what}: {how} ({info['per_sample_evals']} evaluations x {info['num_images']} train "
              f"images, one-off, not counted in NFE): {info['path']}")


def _train_split(p):
    from .data import load_split

    return load_split(p.dataset["name"], "train", **p.dataset.get("options", {}))


def model_digest(model) -> str:
    from .analytic_dpm import gmm_digest, weights_digest

    return gmm_digest(model.gmm) if hasattr(model, "gmm") else weights_digest(model.source)


@resolver("moments")
def analytic_moments(model, p, progress=True) -> Resolution:
    """Analytic-DPM's Gamma_n for this model: estimated once on the dataset's train split and cached beside the
    checkpoint (or in ~/.cache/nfebench)."""
    from .analytic_dpm import cached_moments
    from .point import ConfigError

    if not model.schedule.discrete:
        raise ConfigError(f"Analytic-DPM needs a discrete schedule (moments at integer timesteps); model "
                          f"{model.name!r} has {model.schedule.describe()}")
    _, info = cached_moments(model, model.betas, _train_split(p), model_digest=model_digest(model),
                             model_dir=model.source)
    _announce(progress, "Analytic-DPM moments", info)
    return Resolution(options={"moments": info["path"]})


@resolver("elbo_costs")
def elbo_costs(model, p, progress=True) -> Resolution:
    """spacing=elbo's per-timestep x0 errors (Watson et al. 2021; nfebench.elbo_steps), cached beside the checkpoint."""
    from .elbo_steps import cached_x0_errors

    _, info = cached_x0_errors(model, model.betas, _train_split(p), model_digest=model_digest(model),
                               model_dir=model.source)
    _announce(progress, "ELBO step costs", info)
    return Resolution(options={"elbo_costs": info["path"]})


@resolver("tuned_weights")
def tuned_grid(model, p, progress=True) -> Resolution:
    """A grid tuned for other weights (a retrained checkpoint) is an error."""
    from .tuning import check_record

    check_record(p.tuned, model_digest=model_digest(model))
    return Resolution()


@resolver("cov_heads")
def covariance_heads(model, p, progress=True) -> Resolution:
    """SN/NPR-DPM sample with the covariance head on the network's forward pass (nfebench.cov_heads)."""
    from .cov_heads import attach_heads
    from .samplers.analytic import HEAD_KINDS

    return Resolution(model=attach_heads(model, HEAD_KINDS[p.sampler]))


@resolver("ode_reference")
def ode_reference(model, p, progress=True) -> Resolution:
    """metrics.ode_error's converged reference from the same x_T, cached under results_dir (nfebench.metrics.ode_error);
    stochastic samplers get none (their row says why)."""
    from .metrics.ode_error import resolve

    return resolve(model, p, progress)


# --- few-step models and truncated diffusion (issue 21) ----------------------------------------------------------

@resolver("consistency")
def consistency_preconditioning(model, p, progress=True) -> Resolution:
    """A consistency model's boundary-condition scalings (model.consistency; nfebench.models.consistency) as a
    wrapper of the model, so every sampler sees the preconditioned x_0."""
    from .models.base import ModelError
    from .models.consistency import precondition
    from .point import ConfigError

    spec = (getattr(p, "model", None) or {}).get("consistency") or getattr(model, "consistency", None)
    try:
        return Resolution(model=precondition(model, spec))
    except ModelError as e:
        raise ConfigError(str(e)) from None


@resolver("card")
def model_card(model, p, progress=True) -> Resolution:
    """A distilled model's teacher and training cost (model.teacher, model.training_cost) into its row."""
    cfg = p.model
    return Resolution(row={"teacher": cfg.get("teacher"), "training_cost": cfg.get("training_cost")})


def prior_seeds(seeds) -> list[int]:
    """The seeds the prior gets: derived from each sample's seed, apart from the stream of its diffusion noise."""
    import numpy as np

    return [int(np.random.SeedSequence([int(s), 21]).generate_state(1)[0]) for s in seeds]


@resolver("prior")
def truncated_start(model, p, progress=True) -> Resolution:
    """Truncated diffusion (ES-DDPM, Lyu et al. 2022; TDPM, Zheng et al. 2023): model.prior (package.module:function,
    fn(seeds) -> x_0 samples [len(seeds), *sample_shape] in the model's space, sample i from seeds[i] alone) draws
    every sample's x_0 once, here (its cost is prior_seconds, not NFE); each sample starts at t_start as
    alpha x_0 + sigma z, z from its own noise, and the sampler's grid starts at t_start (schedules.Truncated)."""
    import dataclasses

    import torch

    from .models.base import ModelError
    from .models.python_factory import import_factory
    from .point import ConfigError, sample_seeds
    from .schedules import ScheduleError, Truncated

    t_start, spec = p.cfg.get("t_start"), p.model.get("prior")
    if t_start is None or spec is None:
        raise ConfigError(f"truncated diffusion needs both t_start and model.prior; got t_start={t_start!r}, "
                          f"model.prior={spec!r}")
    if isinstance(t_start, bool) or not isinstance(t_start, (int, float)):
        raise ConfigError(f"t_start must be a number (model time), got {t_start!r}")
    try:
        sched = Truncated(model.schedule, t_start)
        fn = import_factory(spec, what="model.prior")
    except (ScheduleError, ModelError) as e:
        raise ConfigError(str(e)) from None
    seeds = sample_seeds(p.seed, p.num_samples)
    t0 = time.perf_counter()
    try:
        x0 = fn(prior_seeds(seeds))
    except Exception as e:  # the user's code failing
        raise ConfigError(f"model.prior {spec!r} failed: {type(e).__name__}: {e}") from None
    seconds = time.perf_counter() - t0
    want = (len(seeds), *model.sample_shape)
    if not isinstance(x0, torch.Tensor) or tuple(x0.shape) != want:
        got = tuple(x0.shape) if isinstance(x0, torch.Tensor) else type(x0).__name__
        raise ConfigError(f"model.prior {spec!r} returned {got}; expected a tensor of shape {want} (one x_0 per seed)")
    if progress:
        print(f"[nfebench] prior {spec}: {len(seeds)} samples in {seconds:.1f} s (not counted in NFE); chain from "
              f"t_start={t_start:g}")
    by_seed = {s: x0[i] for i, s in enumerate(seeds)}
    a, s = float(sched.alpha(sched.t_max)), float(sched.sigma(sched.t_max))

    def start(noise, batch_seeds):
        x = torch.stack([by_seed[s_] for s_ in batch_seeds]).to(model.dtype)
        return a * x + s * noise.randn(model.sample_shape, dtype=model.dtype)

    wrapped = dataclasses.replace(model, schedule=sched, start=start, needs=(), calls=0)
    return Resolution(model=wrapped, row={"t_start": float(t_start), "prior_seconds": round(seconds, 3)},
                      timings={"prior_seconds": round(seconds, 3)})

"""A benchmark point before it runs: the validated config (Point), its run key, its per-sample seeds, and the
one-line ConfigError for bad top-level values.

Everything here is read from the config (and, for spacing=default, the schedule kind the model config names) without
loading a model, so the runner, the launchers (nfebench.cluster), recommend, tune, shards and the need resolvers
(nfebench.needs) share it without importing the runner (nfebench.run: load -> sample -> score -> record).
"""

from __future__ import annotations

import hashlib
import json
import math
import tempfile
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from .api import check_nfe
from .leaderboard import read_leaderboard
from .models import schedule_kind
from .models.parametrization import check_guidance
from .paths import portable
from .samplers import get_sampler
from .samplers.common import COMMON_OPTIONS
from .schedules import SPACINGS, default_spacing


class ConfigError(ValueError):
    """A bad top-level value: the message names it and what is allowed."""


# Keys that change where or how fast a run goes, not what it produces: excluded from the run key.
NON_KEY_FIELDS = ("results_dir", "device", "batch_size", "force", "shard", "storage")
# Config keys added after rows were recorded: at these defaults they are left out of the key, so earlier run ids
# (and the rows already in a leaderboard, which make reproduce skips) stay valid. None: top-level keys.
LATER_DEFAULTS = {None: {"guidance_scale": None, "class_labels": None, **COMMON_OPTIONS, "t_start": None,
                         "prompts": None, "negative_prompt": None, "guidance_interval": None},  # issue 22
                  "model": {"prediction_type": None, "variance_type": None, "schedule": None,
                            "num_classes": None, "null_class": None, "conditional": False,
                            "image_seq_len": None},  # dynamic-shift flow configs (issue 26)
                  "metrics": {"reference_stats": None, "fid_infinity": False, "prc": False, "ode_error": False,
                              "ode_reference": None, "sfid": False, "reference_batch": None},
                  "sampler": {"elbo_costs": None,  # the chain samplers' spacing=elbo input
                              "atol": 0.0078, "rtol": 0.05,  # dpm's method=adaptive tolerances
                              "frame": None}}  # euler / heun: the schedule's ODE frame (issue 26)


@dataclass
class Point:
    """A validated benchmark point (plain Python values, no OmegaConf)."""

    cfg: dict
    model: dict
    sampler: str
    sampler_options: dict
    dataset: dict
    metrics: dict
    nfe: int
    num_samples: int
    batch_size: int
    seed: int
    device: str
    results_dir: Path
    force: bool
    tuned: dict | None = None  # sampler.spacing=tuned: the cached grid (nfebench.tuning.load_tuned)
    guidance_scale: float | None = None
    class_labels: list | None = None  # as configured: None (drawn per sample) or a fixed list
    labels: dict = field(default_factory=dict)  # per-sample seed -> its class label (set once the model is loaded)
    prepared: object = None  # nfebench.needs.Prepared: the resolved needs (row fields, timings), set once loaded
    default_grid: tuple | None = None  # spacing=default: (the schedule kind told before loading, the paper's spacing)


def _positive_int(cfg: dict, key: str) -> int:
    v = cfg.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
        raise ConfigError(f"{key} must be a positive integer, got {v!r}")
    return v


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return "cpu"
    if isinstance(device, str) and device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device={device!r} but this machine has no CUDA GPU; allowed here: auto, cpu")
        return device
    raise ConfigError(f"unknown device {device!r}; allowed: auto, cpu, cuda, cuda:N")


def validate(cfg: DictConfig | dict) -> Point:
    c = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    sampler_cfg = dict(c["sampler"])
    name = sampler_cfg.pop("name")
    spec = get_sampler(name)
    kind = schedule_kind(dict(c["model"]))  # spacing=default means the sampler's default grid on this schedule kind
    opts = spec.check_options(spec.resolve_spacing(sampler_cfg, kind))
    default_grid = spec.default_spacing_asked(sampler_cfg)
    # the options every sampler takes (top-level keys sigmas, ays_model, noise_sampler): recorded with the sampler's
    # own where they differ from their defaults; spacing=ays takes its list from the model's config by default
    common = {k: c.get(k, default) for k, default in COMMON_OPTIONS.items()}
    if opts.get("spacing") == "ays" and common["ays_model"] is None:
        common["ays_model"] = dict(c["model"]).get("ays_model")
    opts.update({k: v for k, v in common.items() if v != COMMON_OPTIONS[k]})
    nfe = c.get("nfe")
    check_nfe(nfe, spec.min_nfe, name)
    w, labels = c.get("guidance_scale"), c.get("class_labels")
    if w is not None and (isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0):
        raise ConfigError(f"guidance_scale must be a finite number >= 0 or null, got {w!r}")
    if labels is not None and (not isinstance(labels, list) or not labels
                               or not all(isinstance(v, int) and not isinstance(v, bool) for v in labels)):
        raise ConfigError(f"class_labels must be null or a non-empty list of integers, got {labels!r}")
    results_dir, tuned = Path(c.get("results_dir", "results")), None
    if opts.get("spacing") in ("tuned", "gits"):  # a grid cached by nfebench.tune (gits: tune.method=gits)
        from .tuning import load_tuned

        tuned, opts = load_tuned(results_dir, c["model"].get("name", "model"), name, opts, nfe,
                                 "gits" if opts["spacing"] == "gits" else "ld3")
    return Point(cfg=c, model=dict(c["model"]), sampler=name, sampler_options=opts, dataset=dict(c["dataset"]),
                 metrics=dict(c["metrics"]), nfe=nfe, num_samples=_positive_int(c, "num_samples"),
                 batch_size=_positive_int(c, "batch_size"), seed=int(c.get("seed", 0)),
                 device=resolve_device(c.get("device", "auto")), results_dir=results_dir,
                 force=bool(c.get("force", False)), tuned=tuned, guidance_scale=None if w is None else float(w),
                 class_labels=labels, default_grid=(kind, spec.options["spacing"]) if default_grid else None)


def check_default_grid(p: Point, model) -> None:
    """spacing=default was resolved (and keyed) from the schedule kind the config names; the loaded schedule must agree."""
    if p.default_grid is None:
        return
    kind, paper = p.default_grid
    if default_spacing(paper, model.schedule) != default_spacing(paper, kind):
        raise ConfigError(f"spacing=default: the model config reads as a {kind!r} schedule but loaded "
                          f"{model.schedule.describe()}; give sampler.spacing explicitly (allowed: "
                          f"{', '.join(SPACINGS)})")


def sampler_call_options(p: Point) -> dict:
    """The options the sampler runs with: a tuned grid's timesteps in place of the hash the row records."""
    if p.tuned is None:
        return p.sampler_options
    return {**{k: v for k, v in p.sampler_options.items() if k != "tuned_grid"}, "timesteps": p.tuned["timesteps"]}


def class_labels_for(p: Point, model, seeds: list[int]) -> dict:
    """seed -> class label for each sample: drawn uniformly over model.num_classes from the sample's own seed, or
    the configured list (sample i gets class_labels[i % len]); {} for an unconditional model."""
    if model.conditioning is not None:  # the model conditions each sample itself (its need resolver checks guidance)
        return {}
    unused = [k for k in ("prompts", "negative_prompt", "guidance_interval") if p.cfg.get(k) is not None]
    if unused:
        raise ConfigError(f"{unused[0]} needs a text-to-image model (model=pipeline); model {model.name!r} takes no "
                          f"prompts")
    k = model.num_classes
    if k is None:
        if p.class_labels is not None or p.guidance_scale is not None:
            raise ConfigError(f"class_labels / guidance_scale need a class-conditional model; model {model.name!r} "
                              f"has no class labels (set model.num_classes if it has)")
        return {}
    if p.class_labels is None:
        labels = [int(np.random.default_rng([s, 1]).integers(k)) for s in seeds]
    else:
        bad = [v for v in p.class_labels if not 0 <= v < k]
        if bad:
            raise ConfigError(f"class_labels: label {bad[0]} is out of range; allowed: 0..{k - 1} "
                              f"(model.num_classes={k})")
        labels = [p.class_labels[i % len(p.class_labels)] for i in range(len(seeds))]
    check_guidance(labels, p.guidance_scale, model.null_class)
    return dict(zip(seeds, labels))


def run_key(p: Point) -> str:
    """run_id: readable prefix + hash of everything that determines the samples and scores."""
    keyed = {k: v for k, v in p.cfg.items() if k not in NON_KEY_FIELDS}
    runtime = keyed.pop("runtime", None) or {}  # tf32/channels_last/compile change speed, not the samples' meaning;
    if runtime.get("autocast"):                 # bf16 autocast changes the numbers, so it is part of the key
        keyed["autocast"] = runtime["autocast"]
    keyed["sampler"] = {"name": p.sampler, **p.sampler_options}
    for group, defaults in LATER_DEFAULTS.items():
        if group is None:
            keyed = {k: v for k, v in keyed.items() if not (k in defaults and v == defaults[k])}
        elif isinstance(keyed.get(group), dict):
            keyed[group] = {k: v for k, v in keyed[group].items() if not (k in defaults and v == defaults[k])}
    keyed = portable(keyed)  # the repository's own checkpoints are named relative to it: one key in every clone
    digest = hashlib.sha256(json.dumps(keyed, sort_keys=True, default=str).encode()).hexdigest()[:10]
    return f"{p.model.get('name', 'model')}-{p.sampler}-nfe{p.nfe}-s{p.seed}-{digest}"


def sample_seeds(seed: int, n: int) -> list[int]:
    """Per-sample seeds: sample i's noise depends on (seed, i) alone, never on the batch it ran in. A new list each
    call, of values computed once per (seed, n) and process (a run asks 3-4 times, a sweep's points share them:
    7 us per seed, 0.4 s for 50k)."""
    return list(_sample_seeds(seed, n))


@lru_cache(maxsize=4)
def _sample_seeds(seed: int, n: int) -> tuple[int, ...]:
    return tuple(int(np.random.SeedSequence([seed, i]).generate_state(1)[0]) for i in range(n))


def check_writable(results_dir: Path) -> None:
    try:
        results_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=results_dir, prefix=".write-test-"):
            pass
    except OSError as e:
        raise ConfigError(f"results_dir {str(results_dir)!r} is not writable ({e.strerror or e})") from None


def _done_ids(board: Path, key: str) -> list[str]:
    """Run ids in the leaderboard for this config: the key itself and forced re-runs key.2, key.3, ..."""
    if not board.exists():
        return []
    ids = read_leaderboard(board)["run_id"].astype(str)
    return [r for r in ids if r == key or r.startswith(key + ".")]

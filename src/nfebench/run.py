"""One benchmark point: load the model -> sample with a counted budget -> score -> one leaderboard row.

Data flows forward only. Everything the run writes goes under results_dir:
    results_dir/runs/<run_id>/config.yaml    the resolved config
    results_dir/runs/<run_id>/samples.npz    uint8 samples [N, C, H, W] and their per-sample seeds
    results_dir/runs/<run_id>/grid.png       the first 100 samples
    results_dir/runs/<run_id>/metrics.json   metrics, timings, nfe_used
    results_dir/leaderboard.csv              one row per finished run
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from . import __version__
from .data import load_split
from .images import to_uint8
from .leaderboard import append_row, atomic_write_bytes, atomic_write_text, read_leaderboard
from .models import load_model
from .api import check_nfe, dry_run
from .samplers import CountedEps, PerSampleNoise, get_sampler
from .schedule import VPSchedule


class ConfigError(ValueError):
    """A bad top-level value: the message names it and what is allowed."""


# Keys that change where or how fast a run goes, not what it produces: excluded from the run key.
NON_KEY_FIELDS = ("results_dir", "device", "batch_size", "force")


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
    opts = spec.check_options(sampler_cfg)
    nfe = c.get("nfe")
    check_nfe(nfe, spec.min_nfe, name)
    return Point(cfg=c, model=dict(c["model"]), sampler=name, sampler_options=opts, dataset=dict(c["dataset"]),
                 metrics=dict(c["metrics"]), nfe=nfe, num_samples=_positive_int(c, "num_samples"),
                 batch_size=_positive_int(c, "batch_size"), seed=int(c.get("seed", 0)),
                 device=resolve_device(c.get("device", "auto")), results_dir=Path(c.get("results_dir", "results")),
                 force=bool(c.get("force", False)))


def run_key(p: Point) -> str:
    """run_id: readable prefix + hash of everything that determines the samples and scores."""
    keyed = {k: v for k, v in p.cfg.items() if k not in NON_KEY_FIELDS}
    keyed["sampler"] = {"name": p.sampler, **p.sampler_options}
    digest = hashlib.sha256(json.dumps(keyed, sort_keys=True, default=str).encode()).hexdigest()[:10]
    return f"{p.model.get('name', 'model')}-{p.sampler}-nfe{p.nfe}-s{p.seed}-{digest}"


def sample_seeds(seed: int, n: int) -> list[int]:
    """Per-sample seeds: sample i's noise depends on (seed, i) alone, never on the batch it ran in."""
    return [int(np.random.SeedSequence([seed, i]).generate_state(1)[0]) for i in range(n)]


def generate(model, p: Point, seeds: list[int], progress=True):
    """Sample len(seeds) images in batches; returns (uint8 samples, nfe_used per sample, seconds)."""
    from tqdm import tqdm

    spec = get_sampler(p.sampler)
    sched = VPSchedule(model.betas)
    out, nfe_used, t0 = [], 0, time.perf_counter()
    starts = range(0, len(seeds), p.batch_size)
    with torch.no_grad(), tqdm(total=len(seeds), desc=f"sampling {p.sampler} nfe={p.nfe}", unit="img",
                               disable=not progress, mininterval=1) as bar:
        for i in starts:
            noise = PerSampleNoise(seeds[i:i + p.batch_size])
            x = noise.randn(model.sample_shape, dtype=model.dtype).to(model.device)
            eps = CountedEps(model, budget=p.nfe)
            x0 = spec.fn(eps, sched, x, p.nfe, noise, **p.sampler_options)
            nfe_used = max(nfe_used, eps.calls)
            out.append(to_uint8(x0).cpu())
            bar.update(x.shape[0])
    return torch.cat(out), nfe_used, time.perf_counter() - t0


def save_grid(samples: torch.Tensor, path: Path, nrow: int = 10, scale: int = 4) -> None:
    """The first nrow^2 samples as one PNG, upscaled `scale`x (nearest) so small images stay visible."""
    from PIL import Image
    from torchvision.utils import make_grid

    x = samples[: nrow * nrow]
    if scale > 1:
        x = x.repeat_interleave(scale, dim=2).repeat_interleave(scale, dim=3)
    grid = make_grid(x, nrow=nrow, padding=2, pad_value=128)  # uint8 [C, H, W]
    arr = grid.permute(1, 2, 0).numpy()
    img = Image.fromarray(arr[..., 0] if samples.shape[1] == 1 else arr)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


def score(samples: torch.Tensor, p: Point, progress=True) -> dict:
    """FID/IS/KID of the samples against the dataset's train split (torch-fidelity)."""
    m = p.metrics
    if not (m.get("fid") or m.get("isc") or m.get("kid")):
        return {}
    from .metrics.fidelity import FID, IS_MEAN, IS_STD, KID_MEAN, KID_STD, compute_fidelity

    ref = load_split(p.dataset["name"], "train", **p.dataset.get("options", {}))
    res = compute_fidelity(samples, ref, reference_name=f"{p.dataset['name']}-train-{ref.shape[0]}",
                           feature_extractor=m["feature_extractor"], weights_path=m.get("feature_extractor_weights_path"),
                           fid=bool(m.get("fid")), isc=bool(m.get("isc")), kid=bool(m.get("kid")),
                           batch_size=m.get("batch_size", 500), device=p.device, verbose=progress)
    return {"fid": res.get(FID), "is_mean": res.get(IS_MEAN), "is_std": res.get(IS_STD),
            "kid_mean": res.get(KID_MEAN), "kid_std": res.get(KID_STD),
            "feature_extractor": m["feature_extractor"], "reference": f"{p.dataset['name']}/train/{ref.shape[0]}"}


def run(cfg: DictConfig | dict, progress: bool = True) -> dict | None:
    """Run one benchmark point; returns its leaderboard row (None if skipped because it is already there)."""
    p = validate(cfg)
    run_id = run_key(p)
    board = p.results_dir / "leaderboard.csv"
    if not p.force and board.exists():
        done = read_leaderboard(board)
        if (done["run_id"] == run_id).any():
            print(f"[nfebench] {run_id} is already in {board}; skipping (force=true re-runs it)")
            return None
    # >>> gpu: torchrun ranks, runtime options, preflight of data/weights (nfebench.runtime, nfebench.distributed)
    from .runtime import begin
    session = begin(p)  # under torchrun: p.device becomes this rank's GPU
    # <<< gpu
    model_opts = {k: v for k, v in p.model.items() if k not in ("kind", "note")}
    model = load_model(p.model["kind"], device=p.device, **model_opts)
    dry_run(p.sampler, p.nfe, model.betas, **p.sampler_options)  # bad options fail here, before any sampling

    seeds = sample_seeds(p.seed, p.num_samples)
    # >>> gpu: this rank's share of the seeds, OOM backoff, gather to rank 0 (only rank 0 goes on)
    samples, nfe_used, secs, gpu_row = session.generate(model, p, seeds, generate, progress)
    if samples is None:
        return None
    # <<< gpu
    run_dir = p.results_dir / "runs" / run_id
    atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(OmegaConf.create(p.cfg)))
    buf = io.BytesIO()
    np.savez_compressed(buf, samples=samples.numpy(), seeds=np.array(seeds, dtype=np.uint32))
    atomic_write_bytes(run_dir / "samples.npz", buf.getvalue())
    save_grid(samples, run_dir / "grid.png")

    metrics = score(samples, p, progress)
    device_name = p.device + (f" ({torch.cuda.get_device_name(p.device)})" if p.device.startswith("cuda") else "")
    row = {
        "run_id": run_id, "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": p.model.get("name"), "dataset": p.dataset["name"], "sampler": p.sampler,
        "sampler_options": json.dumps(p.sampler_options, sort_keys=True), "nfe": p.nfe, "nfe_used": nfe_used,
        "num_samples": p.num_samples, "seed": p.seed, **metrics,
        "sampling_seconds": round(secs, 3), "samples_per_second": round(p.num_samples / secs, 2),
        "device": device_name, "nfebench_version": __version__,
        **gpu_row,  # gpu: precision, channels_last, compiled, peak_gpu_mem_mb, batch_size_used, world_size
    }
    atomic_write_text(run_dir / "metrics.json", json.dumps(row, indent=2) + "\n")
    append_row(board, row)
    print_row(row, board)
    return row


def print_row(row: dict, board: Path) -> None:
    def fmt(v):
        return f"{v:.4g}" if isinstance(v, float) and not math.isnan(v) else ("-" if v is None else str(v))

    keys = ["model", "sampler", "nfe", "nfe_used", "num_samples", "fid", "is_mean", "kid_mean",
            "feature_extractor", "reference", "sampling_seconds"]
    w = max(len(k) for k in keys)
    print("\n".join([""] + [f"  {k:<{w}}  {fmt(row.get(k))}" for k in keys]
                    + [f"  -> appended to {board} (run {row['run_id']})", ""]))


"""One benchmark point: load the model -> sample with a counted budget -> score -> one leaderboard row.

Data flows forward only. Everything the run writes goes under results_dir, each file atomically:
    results_dir/runs/<run_id>/config.yaml          the resolved config
    results_dir/runs/<run_id>/shards/A-B.npz       samples A..B-1, written as each batch finishes (resume points)
    results_dir/runs/<run_id>/samples.npz          uint8 samples [N, C, H, W], their per-sample seeds (and class labels)
    results_dir/runs/<run_id>/grid.png             the first 100 samples
    results_dir/runs/<run_id>/features.npz         per-sample features the metrics were computed from (see score)
    results_dir/runs/<run_id>/nll.npz              NLL runs: per_image_bpd of the test images, in split order
    results_dir/runs/<run_id>/per_sample.npz       per-sample values of the raw sampler output (metrics.ode_error)
    results_dir/runs/<run_id>/metrics.json         the leaderboard row, as JSON
    results_dir/runs/<run_id>/status.json          only for a failed run: what went wrong
    results_dir/leaderboard.csv                    one row per finished run

Re-running the same config after an interruption (even kill -9) resumes from the finished shards; since every
sample's noise depends on its own seed alone, the result is identical to an uninterrupted run.
"""

from __future__ import annotations

import io
import json
import math
import shutil
import time
from functools import partial
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from filelock import FileLock, Timeout
from omegaconf import DictConfig, OmegaConf

from . import __version__, memo
from .data import load_split
from .images import to_uint8
from .leaderboard import append_row, atomic_write_bytes, atomic_write_text
from .models.parametrization import network_passes
from .paths import portable
from .api import dry_run
from .samplers import CountedEps, PerSampleNoise, SamplerError, get_sampler
from .needs import MODEL_KEYS, RESOLVERS, prepare
from .samplers.common import COMMON_OPTIONS, apply_common_options
from .runtime import begin
from .shards import parse_shard, run_shard
from .storage import options as storage_options, save_npz as _save_npz
from .cluster import check_slurm_device
from .point import (LATER_DEFAULTS, NON_KEY_FIELDS, ConfigError, Point, _done_ids, check_default_grid,  # noqa: F401
                    check_writable, class_labels_for, resolve_device, run_key, sample_seeds, sampler_call_options,
                    validate)  # the point before it runs (nfebench.point); re-exported, as nfebench.run.validate etc.


class RunFailed(RuntimeError):
    """The run produced NaN/Inf (or another non-input failure): marked failed, samples kept, no row written."""


def _finished_shards(shard_dir: Path, n: int) -> dict[int, Path]:
    """Shards already on disk, by start index (ignoring any that do not fit this run's sample count)."""
    done = {}
    for f in sorted(shard_dir.glob("*.npz")) if shard_dir.exists() else []:
        try:
            a, b = (int(v) for v in f.stem.split("-"))
        except ValueError:
            continue
        if 0 <= a < b <= n:
            done[a] = f
    return done


def generate(model, p: Point, seeds: list[int], shard_dir: Path | None = None, progress=True):
    """Sample len(seeds) images in batches; returns (uint8 samples, nfe_used per sample, sampling seconds).

    With shard_dir, each finished batch is written there as `start-end.npz` and batches already there are loaded
    instead of sampled again (resume). A batch that produces NaN/Inf raises RunFailed after its raw float output is
    saved beside the shards as `failed-start-end.npz`.
    """
    from tqdm import tqdm

    spec = get_sampler(p.sampler)
    sched = model.schedule
    n = len(seeds)
    done = _finished_shards(shard_dir, n) if shard_dir else {}
    parts, nfe_used, seconds, i = [], 0, 0.0, 0
    with torch.no_grad(), tqdm(total=n, desc=f"sampling {p.sampler} nfe={p.nfe}", unit="img",
                               disable=not progress, mininterval=1) as bar:
        while i < n:
            if i in done:  # resume: a batch finished by an earlier, interrupted run
                with np.load(done[i]) as z:
                    parts.append(torch.from_numpy(z["samples"]))
                    if getattr(p, "prepared", None) is not None:  # per-sample values of the raw output (ode_error)
                        p.prepared.restore(z, seeds[i:i + z["samples"].shape[0]])
                    nfe_used, seconds = max(nfe_used, int(z["nfe_used"])), seconds + float(z["seconds"])
                    j = i + z["samples"].shape[0]
            else:
                j = min(n, i + p.batch_size, min([a for a in done if a > i], default=n))
                # per-sample conditioning the model applies itself (EpsModel.conditioning: a pipeline's prompts,
                # encoded here, before the sampling clock starts and timed by the conditioning itself)
                cond = model.conditioning(seeds[i:j]) if model.conditioning is not None else {} if not p.labels \
                    else dict(class_labels=torch.tensor([p.labels[s] for s in seeds[i:j]]),
                              guidance_scale=p.guidance_scale, null_class=model.null_class)
                t0 = time.perf_counter()
                noise = PerSampleNoise(seeds[i:j])
                own = dict(sampler_call_options(p))
                common = {k: own.pop(k) for k in COMMON_OPTIONS if k in own}
                own, noise = apply_common_options(spec, sched, own, noise, **common)
                grid = own.get("timesteps")  # an explicit grid (timesteps or sigmas): x_T is the state at its start
                x = model.initial_state(noise, seeds[i:j], None if grid is None else float(list(grid)[0]))
                x = x.to(model.device)
                eps = CountedEps(partial(model, **cond), budget=p.nfe)
                x0 = spec.fn(eps, sched, x, p.nfe, noise, **own)
                bad = eps.nonfinite or (None if torch.isfinite(x0).all() else
                                        "the sampler's output was NaN/Inf after its last evaluation")
                if bad:
                    if shard_dir:
                        _save_npz(shard_dir.parent / f"failed-{i:07d}-{j:07d}.npz", samples=x0.float().cpu().numpy(),
                                  seeds=np.array(seeds[i:j], dtype=np.uint32))
                    raise RunFailed(f"NaN/Inf in samples {i}..{j - 1}: {bad}")
                dt = time.perf_counter() - t0  # sampling alone; a latent model's decode is timed by its decoder
                per = p.prepared.observe(x0, seeds[i:j]) if getattr(p, "prepared", None) is not None else {}
                batch = to_uint8(x0 if model.decoder is None else model.decoder(x0)).cpu()
                if shard_dir:
                    _save_npz(shard_dir / f"{i:07d}-{j:07d}.npz", samples=batch.numpy(), nfe_used=eps.calls,
                              seconds=dt, **per)
                parts.append(batch)
                nfe_used, seconds = max(nfe_used, eps.calls), seconds + dt
            bar.update(j - i)
            i = j
    return torch.cat(parts), nfe_used, seconds


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


def reference_for(p: Point, weights_path: str | None, progress=True) -> tuple:
    """The reference side of p's protocol and its label: the dataset's train split in p's feature space (cached
    once per protocol by nfebench.metrics.fidelity.reference_features), or with metrics.reference_stats the
    precomputed statistics of that file (a GaussianRef; the label names the file and its hash)."""
    from .metrics.fidelity import reference_features, reference_statistics

    m = p.metrics
    if m.get("reference_stats"):
        return reference_statistics(m["reference_stats"], m["feature_extractor"], p.device)
    if m.get("reference_batch"):  # ADM's reference batch: its images' features, or its statistics alone
        from .metrics.adm import gaussian, load_reference_batch

        batch = load_reference_batch(m["reference_batch"])
        if batch["images"] is None:
            return gaussian(batch["mu"], batch["sigma"], p.device), batch["label"]
        feats = reference_features(batch["images"], batch["label"].replace(":", "-"), m["feature_extractor"],
                                   weights_path, m.get("batch_size", 500), p.device, verbose=progress)
        return feats, batch["label"]
    ref = load_split(p.dataset["name"], "train", **p.dataset.get("options", {}))
    feats = reference_features(ref, f"{p.dataset['name']}-train-{ref.shape[0]}", m["feature_extractor"], weights_path,
                               m.get("batch_size", 500), p.device, verbose=progress)
    return feats, f"{p.dataset['name']}/train/{ref.shape[0]}"


def score(samples: torch.Tensor, p: Point, progress=True, features_path: Path | None = None) -> dict:
    """FID/IS/KID (and, when asked, FID_inf and precision/recall) of the samples against the dataset's train split
    (or FID and IS against metrics.reference_stats).

    torch-fidelity's extractor gives the features; with features_path they are saved there (features.npz: `fid`
    [N, d] the FID/KID layer, `isc` [N, classes] the IS logits unless storage.logits=false, both in
    storage.features' dtype, float32 by default, and the per-sample `seeds`), so that nfebench.compare can test any
    two runs later without featurizing again. The row's metrics come from the float32 features in memory.
    """
    m = p.metrics
    if not (m.get("fid") or m.get("isc") or m.get("kid")):
        return {}
    from .metrics.fidelity import (FID, FID_INF, IS_MEAN, IS_STD, KID_MEAN, KID_STD, PRECISION, RECALL,
                                   check_extractor, featurize, fidelity_from_features)

    weights = check_extractor(m["feature_extractor"], m.get("feature_extractor_weights_path"), ("samples", samples),
                              isc=bool(m.get("isc")))
    ref, reference = memo.reference_for(p, weights, progress)  # once per sweep process
    feats = featurize(samples, m["feature_extractor"], weights, m.get("batch_size", 500), p.device, progress)
    if features_path is not None:
        from .storage import feature_arrays  # storage.features (float32 or float16), storage.logits

        _save_npz(features_path, compress=False, seeds=np.array(sample_seeds(p.seed, samples.shape[0]), np.uint32),
                  **feature_arrays(p.cfg, feats))
    kid = bool(m.get("kid"))
    if not isinstance(ref, dict) and kid:  # KID needs the reference features, not only their mean and covariance
        kid = False
        if progress:
            print("[nfebench] metrics.reference_stats: KID needs the reference images, not computed")
    res = fidelity_from_features(feats, ref, fid=bool(m.get("fid")), isc=bool(m.get("isc")), kid=kid,
                                 fid_infinity=bool(m.get("fid_infinity")), prc=bool(m.get("prc")), device=p.device)
    if m.get("sfid") or m.get("reference_batch"):  # ADM's conventions: sFID, a reference batch's own statistics
        from .metrics.adm import adm_metrics

        res.update(adm_metrics(samples, feats, p, weights, progress))
    return {"fid": res.get(FID), "sfid": res.get("sfid"), "is_mean": res.get(IS_MEAN), "is_std": res.get(IS_STD),
            "kid_mean": res.get(KID_MEAN), "kid_std": res.get(KID_STD),
            "feature_extractor": m["feature_extractor"], "reference": reference,
            "fid_infinity": res.get(FID_INF), "prc_precision": res.get(PRECISION), "prc_recall": res.get(RECALL)}


def class_accuracy(samples: torch.Tensor, p: Point) -> dict:
    """The fraction of samples the dataset's classifier assigns the label they were asked for, for a model trained
    on that dataset (digits: digits-cnn; empty for others: the Inception classifier for ImageNet is a later step)."""
    if not p.labels or p.dataset.get("feature_extractor") != "digits-cnn" or p.model.get("dataset") != p.dataset["name"]:
        return {}
    from .metrics.digits_cnn import DigitsCNN

    net = DigitsCNN()
    net.load_state_dict(torch.load(p.dataset["feature_extractor_weights_path"], map_location="cpu",
                                   weights_only=True))
    wanted = torch.tensor([p.labels[s] for s in sample_seeds(p.seed, p.num_samples)])
    with torch.no_grad():
        predicted = torch.cat([net.eval().logits(b).argmax(1) for b in samples.split(1000)])
    return {"class_accuracy": (predicted == wanted).double().mean().item()}


def clip_metrics(samples: torch.Tensor, p: Point, path: Path, progress=True) -> dict:
    """metrics.clip_score / metrics.cmmd (nfebench.metrics.clip); per-sample values saved at path."""
    if not (p.metrics.get("clip_score") or p.metrics.get("cmmd")):
        return {}
    from .metrics.clip import clip_metrics as compute

    return compute(samples, p.prepared.stored.get("prompts"), p.metrics, p.device, path, progress,
                   seeds=sample_seeds(p.seed, samples.shape[0]))


CHAIN_SAMPLERS = ("ddpm", "ddim", "analytic_ddpm", "analytic_ddim")


def measure_nll(model, p: Point, progress=True) -> dict:
    """NLL of the dataset's test split in bits/dim (metrics.nll = vlb | ode), see nfebench.metrics.nll."""
    from .metrics.nll import nll

    m = p.metrics
    method = m.get("nll") or "none"
    if method == "none":
        return {}
    nfe = m.get("nll_nfe")
    if nfe == "run":  # vlb: the run's own K-step chain; ode: the adaptive reference solver
        nfe = p.nfe if method == "vlb" else None
    opts = {**(m.get("nll_options") or {}), "num_images": m.get("nll_num_images")}
    if method == "vlb":
        opts["variance"] = m.get("nll_variance", "small")
        if p.sampler in CHAIN_SAMPLERS and "spacing" not in opts:  # the bound on the sampler's own subsequence
            opts["spacing"] = p.sampler_options["spacing"]
        if opts["variance"] == "analytic" and opts.get("moments") is None:  # the bound's needs, resolved as a sampler's
            opts["moments"] = RESOLVERS["moments"](model, p, progress).options["moments"]
        if opts.get("spacing") == "elbo" and opts.get("elbo_costs") is None:
            opts["elbo_costs"] = p.sampler_options.get("elbo_costs") or \
                RESOLVERS["elbo_costs"](model, p, progress).options["elbo_costs"]
    test = load_split(p.dataset["name"], "test", **p.dataset.get("options", {}))
    res = nll(model, model.schedule, test, method=method, nfe=nfe, generator=torch.Generator().manual_seed(p.seed),
              **opts)
    return {"nll": res, "row": {"nll_bpd": res["bpd"], "nll_method": method, "nll_variance": res.get("variance"),
                                "nll_nfe": res["nfe"], "nll_num_images": res["num_images"]}}


def run(cfg: DictConfig | dict, progress: bool = True) -> dict | None:
    """Run one benchmark point; returns its leaderboard row (None if skipped because it is already there)."""
    p = validate(cfg)
    storage_options(p.cfg)  # a bad storage.* fails before sampling
    check_slurm_device(p.cfg.get("device"))  # in a SLURM job: an explicit cuda:N must be an allocated GPU
    shard = parse_shard(p.cfg.get("shard"))  # shard=i/N: this job samples only its share (nfebench.shards)
    check_writable(p.results_dir)
    key = run_key(p)
    board = p.results_dir / "leaderboard.csv"
    done = _done_ids(board, key)
    if done and not p.force:
        print(f"[nfebench] {key} is already in {board}; skipping (force=true runs it again)")
        return None
    run_id = key if not done else f"{key}.{len(done) + 1}"  # a forced re-run gets its own id and directory
    if p.metrics.get("reference_stats"):  # a bad statistics file, or a metric it cannot give, fails before sampling
        from .metrics.fidelity import MetricsError, load_reference_stats

        load_reference_stats(p.metrics["reference_stats"], p.metrics["feature_extractor"])
        if p.metrics.get("fid_infinity") or p.metrics.get("prc"):
            raise MetricsError("metrics.reference_stats gives FID (and IS) only: metrics.fid_infinity and metrics.prc "
                               "need the reference images; set them to false")
    session = begin(p)  # torchrun ranks (p.device becomes this rank's GPU), runtime options, preflight of data/weights
    t_load = time.perf_counter()
    model_opts = {k: v for k, v in p.model.items() if k not in ("kind", "note", *MODEL_KEYS)}
    model = memo.load_model(p.model["kind"], device=p.device, **model_opts)  # once per sweep process
    check_default_grid(p, model)
    p.labels = class_labels_for(p, model, sample_seeds(p.seed, p.num_samples))  # bad labels / guidance fail here
    if p.metrics.get("sfid") or p.metrics.get("reference_batch"):  # sFID's layer, the batch's resolution
        from .metrics.adm import preflight

        preflight(p.metrics, tuple(model.sample_shape[1:]))
    prepared = prepare(model, p, progress)  # what the sampler, its options and the model need (nfebench.needs)
    p.sampler_options, sampling, p.prepared = prepared.options, prepared.model, prepared
    dry_run(p.sampler, p.nfe, model.schedule, model.variance_type, **sampler_call_options(p))  # bad options fail here
    model.load_seconds = time.perf_counter() - t_load

    run_dir = p.results_dir / "runs" / run_id
    if not session.dist.is_main:  # a torchrun rank other than 0 only samples its share; rank 0 writes everything
        return session.generate(sampling, p, sample_seeds(p.seed, p.num_samples), _generator(None), progress)[0]
    run_dir.mkdir(parents=True, exist_ok=True)
    if shard is not None:
        return run_shard(p, shard, model, sampling, session, run_id, run_dir, board, progress)
    try:
        lock = FileLock(str(run_dir / ".lock")).acquire(timeout=0)
    except Timeout:
        session.dist.finish()
        raise ConfigError(f"run {run_id} is already running in another process (lock {run_dir / '.lock'})") from None
    with lock:
        return _run_locked(p, model, sampling, session, run_id, run_dir, board, progress)


def _generator(shard_dir: Path | None):
    """generate() in the form Session.generate calls it: (model, point, seeds, progress)."""
    return lambda model, p, seeds, progress: generate(model, p, seeds, shard_dir, progress)


def _run_locked(p: Point, model, sampling, session, run_id: str, run_dir: Path, board: Path, progress: bool) -> dict:
    """`sampling` is the model the sampler calls (model, or model with covariance heads); NLL uses `model`."""
    atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(OmegaConf.create(portable(p.cfg))))  # any clone
    (run_dir / "status.json").unlink(missing_ok=True)
    seeds = sample_seeds(p.seed, p.num_samples)
    final = run_dir / "samples.npz"
    single = session.dist.world_size == 1  # shards and resume are per process: under torchrun a run starts over
    if single and final.exists():  # sampling finished earlier; the run stopped before its row was written
        session.dist.finish()
        with np.load(final) as z:
            samples = torch.from_numpy(z["samples"])
            p.prepared.restore(z, seeds)
        prev = json.loads((run_dir / "sampling.json").read_text())
        nfe_used, secs, gpu_row = prev["nfe_used"], prev["sampling_seconds"], prev["gpu_row"]
        print(f"[nfebench] reusing the finished samples in {final}")
    else:
        try:
            samples, nfe_used, secs, gpu_row = session.generate(
                sampling, p, seeds, _generator(run_dir / "shards" if single else None), progress)
        except (RunFailed, SamplerError) as e:  # SamplerError: an adaptive sampler reached its nfe cap
            atomic_write_text(run_dir / "status.json", json.dumps({"status": "failed", "error": str(e)}, indent=2))
            raise RunFailed(f"{e}; run marked failed, samples kept in {run_dir}") from None
        labels = {"class_labels": np.array([p.labels[s] for s in seeds], dtype=np.int64)} if p.labels else {}
        _save_npz(final, samples=samples.numpy(), seeds=np.array(seeds, dtype=np.uint32), **labels,
                  **p.prepared.stored, **p.prepared.arrays(seeds))
        atomic_write_text(run_dir / "sampling.json",
                          json.dumps({"nfe_used": nfe_used, "sampling_seconds": secs, "gpu_row": gpu_row}))
        shutil.rmtree(run_dir / "shards", ignore_errors=True)
    save_grid(samples, run_dir / "grid.png")

    t_score = time.perf_counter()
    metrics = {**score(samples, p, progress, features_path=run_dir / "features.npz"), **class_accuracy(samples, p),
               **clip_metrics(samples, p, run_dir / "clip.npz", progress)}
    t_nll = time.perf_counter()
    likelihood = measure_nll(model, p, progress)
    if likelihood:  # per-image bits, for nfebench.stats.paired_nll
        _save_npz(run_dir / "nll.npz", per_image_bpd=likelihood["nll"].pop("per_image_bpd").numpy())
    metrics.update(likelihood.get("row", {}))
    if p.prepared.per_sample:  # per-sample values of the raw output (ode_error), for paired comparisons
        _save_npz(run_dir / "per_sample.npz", seeds=np.array(seeds, dtype=np.uint32), **p.prepared.arrays(seeds))
        metrics.update(p.prepared.summarize(seeds))
    timings = {"load_seconds": round(getattr(model, "load_seconds", 0.0), 3), **p.prepared.timings,
               "sampling_seconds": round(secs, 3), "scoring_seconds": round(t_nll - t_score, 3)}
    if model.decoder is not None:  # latent models: decoding the latents, apart from sampling_seconds
        timings["decode_seconds"] = round(model.decoder.seconds, 3)
    encode = getattr(getattr(sampling, "conditioning", None), "seconds", None)  # one that encodes (prompts)
    if encode is not None:
        timings["encode_seconds"] = round(encode, 3)
    if likelihood:
        timings["nll_seconds"] = round(time.perf_counter() - t_nll, 3)
    device_name = p.device + (f" ({torch.cuda.get_device_name(p.device)})" if p.device.startswith("cuda") else "")
    row = {
        "run_id": run_id, "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": p.model.get("name"), "dataset": p.dataset["name"], "sampler": p.sampler,
        "sampler_options": json.dumps(portable(p.sampler_options), sort_keys=True), "nfe": p.nfe, "nfe_used": nfe_used,
        "num_samples": p.num_samples, "seed": p.seed, **metrics,
        "sampling_seconds": round(secs, 3), "samples_per_second": round(p.num_samples / secs, 2),
        "device": device_name, "nfebench_version": __version__,
        **gpu_row,  # gpu: precision, channels_last, compiled, peak_gpu_mem_mb, batch_size_used, world_size
        "prediction_type": model.prediction_type, "schedule": model.schedule.describe(),
        "guidance_scale": p.guidance_scale, "network_passes": nfe_used * network_passes(p.guidance_scale),
        **p.prepared.row, **({"encode_seconds": timings["encode_seconds"]} if encode is not None else {}),
    }
    details = {"timings": timings, **({"nll": likelihood["nll"]} if likelihood else {}), **p.prepared.details}
    atomic_write_text(run_dir / "metrics.json", json.dumps({**row, **details}, indent=2, default=str) + "\n")
    append_row(board, row)
    if not storage_options(p.cfg)["samples"]:  # storage.samples=false: the scored samples are not kept
        final.unlink(missing_ok=True)
    print_row(row, board, timings)
    return row


def print_row(row: dict, board: Path, timings: dict) -> None:
    def fmt(v):
        return f"{v:.4g}" if isinstance(v, float) and not math.isnan(v) else ("-" if v is None else str(v))

    keys = ["model", "sampler", "nfe", "nfe_used", "num_samples", "fid", "is_mean", "kid_mean",
            "feature_extractor", "reference"] + (["nll_bpd", "nll_method", "nll_variance", "nll_nfe"]
                                                  if row.get("nll_method") else []) + (
        ["guidance_scale", "network_passes", "class_accuracy"] if row.get("guidance_scale") is not None
        or row.get("class_accuracy") is not None else []) + (
        ["ode_error", "ode_reference", "ode_reference_error"] if row.get("ode_reference") else []) + (
        ["sfid"] if row.get("sfid") is not None else []) + (
        ["prompts", "clip_score", "clip_model", "cmmd"] if row.get("prompts") else [])
    w = max(len(k) for k in keys)
    spent = ", ".join(f"{k.split('_')[0]} {v:.1f} s" for k, v in timings.items())
    print("\n".join([""] + [f"  {k:<{w}}  {fmt(row.get(k))}" for k in keys]
                    + [f"  {'time':<{w}}  {spent}", f"  -> appended to {board} (run {row['run_id']})", ""]))


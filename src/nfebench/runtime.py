"""How a run uses its hardware: TF32, bf16 autocast, channels_last, torch.compile, out-of-memory backoff, torchrun.

None of these change which samples a run asks for (per-sample seeds); bf16 and, to float rounding, the others change
the numbers, so each is recorded in the leaderboard row (precision, channels_last, compiled) and is part of the run key.

Config (all optional; defaults shown):
    runtime:
      tf32: true            # CUDA matmuls/convolutions in TF32 (Ampere and later); no effect on CPU
      autocast: null        # null | bf16: the network runs under torch.autocast(bf16); sampler arithmetic stays fp32
      channels_last: false  # the network's weights and inputs in channels_last memory format
      compile: false        # torch.compile the network's forward (compile time is included in sampling_seconds)
      oom_backoff: true     # on CUDA out-of-memory, halve the batch size and start sampling again

The runner calls `begin(point)` once before loading the model, and `session.generate(...)`, which wraps its own
generate() (nfebench.run.run).
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass

import torch

from .distributed import DistContext, init_from_env

AUTOCAST = {None: None, "bf16": torch.bfloat16}


class RuntimeConfigError(ValueError):
    """A bad `runtime.*` value, or a run that cannot fit in memory even at batch size 1."""


@dataclass(frozen=True)
class RuntimeOptions:
    tf32: bool = True
    autocast: str | None = None
    channels_last: bool = False
    compile: bool = False
    oom_backoff: bool = True

    @classmethod
    def from_cfg(cls, cfg: dict | None) -> "RuntimeOptions":
        cfg = dict(cfg or {})
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(cfg) - fields)
        if unknown:
            raise RuntimeConfigError(f"unknown option runtime.{unknown[0]}; allowed: {', '.join(sorted(fields))}")
        for k in ("tf32", "channels_last", "compile", "oom_backoff"):
            if k in cfg and not isinstance(cfg[k], bool):
                raise RuntimeConfigError(f"runtime.{k} must be true or false, got {cfg[k]!r}")
        if cfg.get("autocast") not in AUTOCAST:
            raise RuntimeConfigError(f"unknown runtime.autocast {cfg['autocast']!r}; allowed: null, bf16")
        return cls(**cfg)

    def precision(self, device: str, dtype: torch.dtype = torch.float32) -> str:
        """What the network computes in: fp64 | fp32 | tf32 | bf16 (recorded in the row)."""
        if dtype == torch.float64:
            return "fp64"
        if self.autocast:
            return self.autocast
        return "tf32" if (self.tf32 and str(device).startswith("cuda")) else "fp32"


def set_tf32(enabled: bool) -> None:
    """TF32 for CUDA matmuls and cuDNN convolutions (the new fp32_precision API where this torch has it)."""
    mode = "tf32" if enabled else "ieee"
    try:
        torch.backends.cuda.matmul.fp32_precision = mode
        torch.backends.cudnn.conv.fp32_precision = mode
    except AttributeError:  # older torch
        torch.backends.cuda.matmul.allow_tf32 = enabled
        torch.backends.cudnn.allow_tf32 = enabled


def prepare_model(model, opts: RuntimeOptions, device: str):
    """The EpsModel with the runtime options applied (a new EpsModel; the original is left as it was)."""
    if str(device).startswith("cuda"):
        set_tf32(opts.tf32)
        torch.backends.cudnn.benchmark = True
    if opts.autocast and model.dtype != torch.float32:
        raise RuntimeConfigError(f"runtime.autocast={opts.autocast} needs a float32 model, not {model.dtype}")
    module = getattr(model, "module", None)
    if opts.channels_last:
        if module is None:
            raise RuntimeConfigError(f"runtime.channels_last=true needs a network model; {model.name!r} has none")
        module.to(memory_format=torch.channels_last)
    fn = model.fn
    if opts.compile:
        if module is None:
            raise RuntimeConfigError(f"runtime.compile=true needs a network model; {model.name!r} has none")
        fn = torch.compile(fn)
    if not (opts.autocast or opts.channels_last or opts.compile):
        return model
    amp_dtype, device_type = AUTOCAST[opts.autocast], torch.device(device).type
    channels_last = opts.channels_last

    def eps(x, t, **conditioning):
        xin = x.contiguous(memory_format=torch.channels_last) if channels_last else x
        if amp_dtype is None:
            out = fn(xin, t, **conditioning)
        else:
            with torch.autocast(device_type=device_type, dtype=amp_dtype):
                out = fn(xin, t, **conditioning)
        res = out.to(x.dtype).contiguous()  # the sampler's arithmetic stays in the model's dtype (fp32)
        if hasattr(out, "variance_values"):  # a learned variance travels with the eps output (parametrization.py)
            res.variance_values, res.variance_type = out.variance_values, out.variance_type
        return res

    return dataclasses.replace(model, fn=eps, calls=0)


def _is_oom(e: BaseException) -> bool:
    return isinstance(e, torch.OutOfMemoryError) or "out of memory" in str(e).lower()


def generate_with_backoff(gen, p, seeds: list, opts: RuntimeOptions):
    """gen(point, seeds) -> (samples, nfe_used, seconds), retried with half the batch size after a CUDA OOM.

    Sampling starts again from the first seed after a backoff (OOM nearly always strikes on the first batch); the
    samples do not depend on the batch size. Returns (samples, nfe_used, seconds, batch_size_used).
    """
    bs = p.batch_size
    while True:
        try:
            samples, nfe_used, secs = gen(dataclasses.replace(p, batch_size=bs), seeds)
            return samples, nfe_used, secs, bs
        except (torch.OutOfMemoryError, RuntimeError) as e:
            if not _is_oom(e) or not str(p.device).startswith("cuda"):
                raise
            if not opts.oom_backoff or bs == 1:
                hint = "set runtime.oom_backoff=true or lower batch_size" if not opts.oom_backoff else "use a GPU " \
                       "with more memory"
                raise RuntimeConfigError(f"out of GPU memory at batch_size={bs} on {p.device}; {hint}") from None
            del e
            torch.cuda.empty_cache()
            bs = max(1, bs // 2)
            print(f"[nfebench] out of GPU memory: retrying with batch_size={bs}", file=sys.stderr)


def preflight(p) -> None:
    """Fail before sampling, not after: the reference split and the feature-extractor weights must be there."""
    m = p.metrics
    if m.get("clip_score") or m.get("cmmd"):  # text-to-image metrics (issue 22): the CLIP model must be here
        from .metrics.clip import check_clip

        check_clip(m)
    if not (m.get("fid") or m.get("isc") or m.get("kid")):
        return
    from .data import DataError, load_split

    if p.model.get("kind") == "pipeline" and not m.get("reference_stats") and p.dataset["name"] != "folder":
        raise DataError(f"a text-to-image pipeline has no FID reference in dataset={p.dataset['name']}; score it "
                        f"with metrics=t2i (CLIP score, CMMD), add metrics.reference_stats=FILE.npz (e.g. COCO-30k "
                        f"statistics) or dataset=folder dataset.path=DIR (reference images)")
    trained_on = p.model.get("dataset")
    if trained_on and trained_on != p.dataset["name"] and p.dataset["name"] != "folder":
        raise DataError(f"model {p.model.get('name')!r} was trained on {trained_on} but dataset={p.dataset['name']} "
                        f"is the FID reference; add dataset={trained_on} (or dataset=folder dataset.path=DIR, or "
                        f"metrics=none)")
    if not m.get("reference_stats"):  # FID against precomputed statistics needs no reference images
        load_split(p.dataset["name"], "train", **p.dataset.get("options", {}))  # cached: score() reuses it
    from .metrics.fidelity import check_extractor

    check_extractor(m.get("feature_extractor"), m.get("feature_extractor_weights_path"), isc=bool(m.get("isc")))


@dataclass
class Session:
    """One run's hardware context: the torchrun ranks and the runtime options."""

    dist: DistContext
    opts: RuntimeOptions

    def generate(self, model, p, seeds: list, generate, progress=True):
        """Sample this rank's share of `seeds` with the runtime options; gather on rank 0.

        Returns (samples, nfe_used, seconds, row_fields); samples is None on ranks other than 0, which then have
        nothing more to do. seconds is the slowest rank's sampling time, so num_samples / seconds is the throughput
        of the whole job.
        """
        try:
            model = prepare_model(model, self.opts, p.device)
            mine = self.dist.shard(seeds, align=p.batch_size)  # whole batches: the same batches as one process
            cuda = str(p.device).startswith("cuda")
            if cuda:
                torch.cuda.synchronize(p.device)
                torch.cuda.reset_peak_memory_stats(p.device)
            if mine:
                local, nfe_used, secs, bs = generate_with_backoff(
                    lambda q, s: generate(model, q, s, progress and self.dist.is_main), p, mine, self.opts)
            else:  # fewer batches than torchrun processes: this rank has none
                local, nfe_used, secs, bs = torch.empty((0, *model.sample_shape), dtype=torch.uint8), 0, 0.0, p.batch_size
            peak = torch.cuda.max_memory_allocated(p.device) / 2**20 if cuda else float("nan")
            samples = self.dist.gather_samples(local, len(seeds), align=p.batch_size)
            nfe_used, secs, peak = self.dist.reduce([nfe_used, secs, peak], "max")
            (bs,) = self.dist.reduce([bs], "min")
        finally:
            self.dist.finish()
        row = {"precision": self.opts.precision(p.device, model.dtype), "channels_last": self.opts.channels_last,
               "compiled": self.opts.compile, "peak_gpu_mem_mb": round(peak, 1) if cuda else None,
               "batch_size_used": int(bs), "world_size": self.dist.world_size}
        return samples, int(nfe_used), secs, row


def begin(p) -> Session:
    """Call once after validation, before loading the model: starts torchrun's process group (setting p.device to
    this rank's GPU), validates `runtime.*`, and checks on rank 0 that the reference data and feature-extractor
    weights are there (every rank then raises rank 0's error, so none waits forever)."""
    opts = RuntimeOptions.from_cfg(p.cfg.get("runtime"))
    ctx = init_from_env(p.device)
    p.device = ctx.device
    err = None
    if ctx.is_main:
        try:
            preflight(p)
        except ValueError as e:  # the user errors (DataError, MetricsError, ...)
            err = e
    err = ctx.broadcast_error(err)
    if err is not None:
        ctx.finish()
        raise err
    return Session(ctx, opts)

"""The leaderboard: one CSV row per benchmark point, with a fixed, documented schema.

Columns are an API: never rename or reorder one; new ones are only appended at the end (an older file is upgraded
in place by adding the new columns empty). Appends take a file lock and replace the file atomically, so parallel
writers (sweeps, torchrun ranks, two terminals) lose no row and tear none, and an interruption leaves either the
old or the new file.
"""

from __future__ import annotations

import csv
import io
import os
import tempfile
from pathlib import Path

from filelock import FileLock

COLUMNS = [
    "run_id",              # key of the resolved config (same config -> same run_id) and name of its run directory
    "timestamp",           # UTC, ISO 8601, when the row was written
    "model",               # model config name (e.g. digits_ddpm)
    "dataset",             # dataset whose train split is the FID reference (e.g. digits)
    "sampler",             # sampler name (nfebench.samplers registry)
    "sampler_options",     # JSON of the sampler's resolved options
    "nfe",                 # budget of network evaluations per sample, as asked
    "nfe_used",            # evaluations per sample actually spent, counted by the model's call counter
    "num_samples",         # samples generated and scored
    "seed",                # base seed; sample i uses the seed derived from (seed, i)
    "fid",                 # Frechet distance in the feature space named by feature_extractor
    "is_mean", "is_std",   # Inception-Score-style score of the feature extractor's logits (10 splits)
    "kid_mean", "kid_std", # kernel inception distance (poly kernel) in that feature space
    "nll_bpd",             # negative log-likelihood in bits/dim (empty unless an NLL method ran)
    "feature_extractor",   # digits-cnn | inception-v3-compat: FIDs in different spaces are not comparable
    "reference",           # reference set: dataset/split/size (e.g. digits/train/1500)
    "sampling_seconds",    # wall time of sampling alone
    "samples_per_second",  # num_samples / sampling_seconds
    "device",              # cpu | cuda:0 (+ GPU name)
    "nfebench_version",
    # --- added with the NLL estimators ---
    "nll_method",          # vlb (variational bound of the K-step chain, no offset) | ode (probability-flow ODE, +7 bits)
    "nll_variance",        # vlb's reverse variance: small | large | analytic (empty for ode)
    "nll_nfe",             # evaluations per test image the NLL spent (K for vlb; mean forward passes for ode)
    "nll_num_images",      # test images the NLL was averaged over
    # --- added with the GPU runner ---
    "precision",           # what the network computed in: fp32 | tf32 | bf16 | fp64 (runtime.tf32 / runtime.autocast)
    "channels_last",       # runtime.channels_last
    "compiled",            # runtime.compile (torch.compile; its compile time is inside sampling_seconds)
    "peak_gpu_mem_mb",     # peak CUDA memory allocated while sampling (max over ranks); empty on CPU
    "batch_size_used",     # batch size that fit (smaller than batch_size after an out-of-memory backoff)
    "world_size",          # torchrun processes that sampled (1 without torchrun)
    # --- added with model generality (any parametrization and schedule) ---
    "prediction_type",     # what the network predicts: epsilon | sample | v_prediction | score
    "schedule",            # the noise schedule: discrete(T=1000) | vp_linear(...) | ve(sigma_min=..,sigma_max=..)
    # --- added with the per-sample features (issue 17) ---
    "fid_infinity",        # FID_inf, Chong & Forsyth's extrapolation to infinitely many samples (metrics.fid_infinity)
    "prc_precision",       # precision, Kynkaanniemi et al. k=3, in the FID feature space (metrics.prc)
    "prc_recall",          # recall, same (metrics.prc)
    # --- added with class conditioning and guidance ---
    "guidance_scale",      # classifier-free guidance w (eps_u + w (eps_c - eps_u)); empty: the model's plain behaviour
    "network_passes",      # network passes per sample: nfe_used, x2 where both halves of guidance ran
    "class_accuracy",      # fraction of samples the dataset's classifier labels as asked (digits-cnn; else empty)
    # --- added with the solver papers' metrics (issue 23; docs/metrics.md) ---
    "ode_error",           # mean over samples of the rms distance to the converged ODE solution from the same x_T
    "ode_reference",       # that reference (sampler, NFE, end point), or why there is none (a stochastic sampler)
    "ode_reference_error", # rms distance of the reference to itself at half its NFE (an overestimate of its error)
    "sfid",                # sFID: Frechet distance of Inception mixed_6/conv's first 7 channels (ADM's convention)
    # --- added with the text-to-image pipelines (issue 22) ---
    "prompts",             # the prompt set: NAME@HASH (file name, first 12 hex of its SHA-256); builtin@... shipped
    "encode_seconds",      # wall time of encoding the distinct prompts once (outside sampling_seconds and the NFE)
    "clip_score",          # torchmetrics' CLIP score: max(mean over samples of 100 cos(image, caption), 0)
    "clip_model",          # the CLIP backbone of clip_score and cmmd (scores from different backbones do not compare)
    "cmmd",                # CMMD (Jayasumana et al. 2024): RBF-kernel MMD^2 (sigma 10) x 1000 of CLIP image embeddings

    # --- added with few-step models and truncated diffusion (issue 21) ---
    "teacher",             # a distilled model's teacher (its model config name, from model.teacher); empty otherwise
    "training_cost",       # the distillation's training cost, from the model card (model.training_cost)
    "t_start",             # truncated diffusion: the model time the chain started at (empty: the schedule's top)
    "prior_seconds",       # truncated diffusion: seconds the prior (model.prior) took for all samples, not in NFE
]


class LeaderboardError(ValueError):
    pass


def _format(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(v) if v == v else ""  # NaN -> empty
    return str(v)


def _read_header(path: Path) -> list[str] | None:
    if not path.exists() or path.stat().st_size == 0:
        return None
    with path.open(newline="") as f:
        return next(csv.reader(f), None)


def append_row(path: str | Path, row: dict) -> None:
    """Append one row (missing columns empty; unknown keys are an error) under a lock, atomically."""
    path = Path(path)
    unknown = sorted(set(row) - set(COLUMNS))
    if unknown:
        raise LeaderboardError(f"unknown leaderboard column {unknown[0]!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock", timeout=600):
        header = _read_header(path)
        old = path.read_text() if header else ""
        if header and header != COLUMNS[: len(header)]:
            raise LeaderboardError(f"{path} has columns {header[:3]}...; not an nfebench leaderboard of this schema")
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        if header is None:
            w.writerow(COLUMNS)
        elif len(header) < len(COLUMNS):  # upgrade an older file: append the new columns, empty
            rows = list(csv.reader(io.StringIO(old)))[1:]
            w.writerow(COLUMNS)
            w.writerows(r + [""] * (len(COLUMNS) - len(r)) for r in rows)
            old = ""
        w.writerow([_format(row.get(c)) for c in COLUMNS])
        if old and not old.endswith("\n"):
            old += "\n"
        atomic_write_text(path, old + buf.getvalue())


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write a file so that a reader (or a crash) sees the old version or the new one, never a torn one."""
    atomic_write_bytes(path, text.encode())


_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give the result the usual permissions
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_leaderboard(path: str | Path):
    """The leaderboard as a pandas DataFrame (empty, with the columns, if the file does not exist)."""
    import pandas as pd

    path = Path(path)
    if not path.exists():
        return pd.DataFrame(columns=COLUMNS)
    return pd.read_csv(path, dtype={"run_id": str, "sampler_options": str})

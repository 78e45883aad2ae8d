"""One benchmark point across many jobs: `shard=i/N` (docs/cluster.md).

Job i of N samples only its share of the point's per-sample seeds: whole batches, the same contiguous block of
batches torchrun's rank i of N would take (nfebench.distributed.DistContext.bounds), so every sample runs in the
same batch as in one job. Its batches land in the run's ordinary shard files, `runs/<run_id>/shards/A-B.npz` with
the point's own sample indices, i.e. exactly the files an interrupted single-job run leaves behind. Scoring is
therefore the single-job code path resuming from those files: the last shard to finish does it (or
`python -m nfebench.merge RUN`), and the samples, features and FID equal the single-job run's bit for bit.

A shard job that is interrupted resumes from its own batches (`shards/part-i-of-N/`) when re-run; a shard whose
share is already on disk samples nothing.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from .distributed import DistContext
from .paths import portable

_SPEC = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


def parse_shard(spec) -> tuple[int, int] | None:
    """`shard=i/N` -> (i, N) with 0 <= i < N; None (or null) -> None."""
    from .point import ConfigError

    if spec is None:
        return None
    m = _SPEC.match(str(spec))
    if not m or not 0 <= int(m.group(1)) < int(m.group(2)):
        raise ConfigError(f"shard={spec!r} is out of range; allowed: i/N with integers 0 <= i < N (e.g. shard=0/3, "
                          f"shard=1/3, shard=2/3), or null for the whole point")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError(f"shard={spec} under torchrun: use one or the other (docs/cluster.md)")
    return int(m.group(1)), int(m.group(2))


def share(i: int, n_shards: int, num_samples: int, batch_size: int) -> tuple[int, int]:
    """[lo, hi) of the sample indices shard i of N samples: whole batches, contiguous (may be empty)."""
    return DistContext(rank=i, world_size=n_shards).bounds(num_samples, batch_size)


def _on_disk(shard_dir: Path) -> dict[int, int]:
    """Finished batches in shard_dir: start index -> end index."""
    out = {}
    for f in shard_dir.glob("*.npz") if shard_dir.is_dir() else []:
        try:
            a, b = (int(v) for v in f.stem.split("-"))
        except ValueError:
            continue
        out[a] = b
    return out


def covered(done: dict[int, int], lo: int, hi: int) -> bool:
    """Whether the batches in `done` tile [lo, hi) exactly (consecutive files from lo to hi)."""
    while lo < hi:
        if lo not in done:
            return False
        lo = done[lo]
    return lo == hi


def missing_shards(run_dir: Path, n_shards: int, num_samples: int, batch_size: int) -> list[str]:
    """The shards of a point whose samples are not yet in run_dir/shards, as `i/N (samples lo..hi-1)`."""
    if (run_dir / "samples.npz").exists():
        return []
    done = _on_disk(run_dir / "shards")
    out = []
    for i in range(n_shards):
        lo, hi = share(i, n_shards, num_samples, batch_size)
        if not covered(done, lo, hi):
            out.append(f"{i}/{n_shards} (samples {lo}..{hi - 1})")
    return out


def write_layout(run_dir: Path, n_shards: int, batch_size: int, num_samples: int) -> None:
    from .leaderboard import atomic_write_text

    atomic_write_text(run_dir / "shards.json", json.dumps(
        {"shards": n_shards, "batch_size": batch_size, "num_samples": num_samples}, indent=2) + "\n")


def read_layout(run_dir: Path) -> dict | None:
    path = run_dir / "shards.json"
    return json.loads(path.read_text()) if path.is_file() else None


def run_shard(p, spec: tuple[int, int], model, sampling, session, run_id: str, run_dir: Path, board: Path,
              progress: bool = True) -> dict | None:
    """Sample shard i of N of point p into run_dir/shards; if it completes the point, score it (the single-job
    path). Returns the leaderboard row when this job scored the point, else None."""
    from filelock import FileLock, Timeout
    from omegaconf import OmegaConf

    from .leaderboard import atomic_write_text
    from .point import ConfigError, _done_ids, sample_seeds
    from .run import _generator, _run_locked

    i, n_shards = spec
    if p.force:
        session.dist.finish()
        raise ConfigError(f"shard={i}/{n_shards} with force=true: a sharded point runs once; to run it again, "
                          f"use another results_dir or seed")
    lo, hi = share(i, n_shards, p.num_samples, p.batch_size)
    shard_dir = run_dir / "shards"
    shard_dir.mkdir(parents=True, exist_ok=True)
    write_layout(run_dir, n_shards, p.batch_size, p.num_samples)
    atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(OmegaConf.create(portable({**p.cfg, "shard": None}))))
    if lo < hi and not (run_dir / "samples.npz").exists() and not covered(_on_disk(shard_dir), lo, hi):
        part = shard_dir / f"part-{i}-of-{n_shards}"
        part.mkdir(exist_ok=True)
        try:
            lock = FileLock(str(part / ".lock")).acquire(timeout=0)
        except Timeout:
            raise ConfigError(f"shard {i}/{n_shards} of run {run_id} is already running in another process") from None
        with lock:
            seeds = sample_seeds(p.seed, p.num_samples)[lo:hi]
            session.generate(sampling, p, seeds, _generator(part), progress)
            for f in sorted(part.glob("*.npz")):  # part-local indices -> the point's own sample indices
                a, b = (int(v) for v in f.stem.split("-"))
                os.replace(f, shard_dir / f"{a + lo:07d}-{b + lo:07d}.npz")
        (part / ".lock").unlink(missing_ok=True)
        part.rmdir()
    else:
        session.dist.finish()
    missing = missing_shards(run_dir, n_shards, p.num_samples, p.batch_size)
    if missing:
        if progress:
            print(f"[nfebench] shard {i}/{n_shards} of {run_id}: samples {lo}..{hi - 1} done; waiting for "
                  f"{', '.join(missing)}; the last shard scores the point (or: python -m nfebench.merge {run_dir})")
        return None
    try:  # every shard is on disk: score once (the first shard to get the run lock; the others return)
        lock = FileLock(str(run_dir / ".lock")).acquire(timeout=0)
    except Timeout:
        return None
    with lock:
        if _done_ids(board, run_id):  # another shard scored it between our check and the lock
            return None
        return _run_locked(p, model, sampling, session, run_id, run_dir, board, progress)

"""`python -m nfebench.merge RUN`: score a point sampled as `shard=i/N` jobs (docs/cluster.md).

RUN is the run directory (results/runs/<run_id>) or its run id under --results. Every shard must be on disk; the
missing ones are named in a one-line error (exit 2). The point is then scored by the single-job code path, which
resumes from the shards' files: the row equals a single-job run's. Usually unnecessary: the last shard job to
finish scores the point itself; use this when that job was lost after its samples were written.
"""

from __future__ import annotations

import argparse
from pathlib import Path


class MergeError(ValueError):
    """A run that cannot be merged: the message names the missing shards or files."""


def merge(run_dir: Path, progress: bool = True) -> dict | None:
    from omegaconf import OmegaConf

    from .run import run
    from .shards import missing_shards, read_layout

    if not (run_dir / "config.yaml").is_file():
        raise MergeError(f"{run_dir} is not a run directory (no config.yaml); give results/runs/<run_id>")
    layout = read_layout(run_dir)
    if layout is None:
        raise MergeError(f"{run_dir} was not sampled in shards (no shards.json); run its point without shard=")
    missing = missing_shards(run_dir, layout["shards"], layout["num_samples"], layout["batch_size"])
    if missing:
        raise MergeError(f"cannot merge {run_dir.name}: shard(s) {', '.join(missing)} not on disk; run them "
                         f"(shard={','.join(m.split()[0] for m in missing)}) and merge again")
    cfg = OmegaConf.to_container(OmegaConf.load(run_dir / "config.yaml"), resolve=True)
    cfg.update(shard=None, batch_size=layout["batch_size"], results_dir=str(run_dir.parent.parent))
    return run(cfg, progress)


def main(argv: list[str] | None = None) -> None:
    from .__main__ import exit_on_user_error

    ap = argparse.ArgumentParser(prog="python -m nfebench.merge", description=__doc__.split("\n\n")[0])
    ap.add_argument("run", help="run directory (results/runs/<run_id>) or run id")
    ap.add_argument("--results", default="results", help="results_dir for a bare run id (default: results)")
    args = ap.parse_args(argv)
    run_dir = Path(args.run)
    if not run_dir.is_dir():
        run_dir = Path(args.results) / "runs" / args.run
    exit_on_user_error(lambda: merge(run_dir), extra=(MergeError,))


if __name__ == "__main__":
    main()

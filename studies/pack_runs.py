"""Commit the run files a results directory's report needs: python studies/pack_runs.py SRC DST [--check-only]
                                                                                    [--rtol R] [--atol A]

For every run of DST/leaderboard.csv that SRC/runs/<run_id>/ holds (SRC: a results directory the same points were
run into, e.g. a re-run into a scratch directory), copy into DST/runs/<run_id>/ what git keeps of a run (.gitignore):
  samples.npz   the uint8 samples and their per-sample seeds (about 57 kB for 1000 digits samples)
  metrics.json  the row as that run wrote it (seed, sample count and protocol are what the report reads)
  config.yaml   the resolved config, with paths inside the repository written ${nfebench_root:}/... so that it
                resolves in any clone (nfebench.compare.Run.point)
From these the report re-scores features.npz (nfebench.report.stored_run) and recomputes every paired CI.

A run is copied only if SRC's metrics give DST's row exactly (FID, IS, KID, NLL, nfe_used: runs are deterministic
given their config), or within |a - b| <= --atol + --rtol |b| (rows scored by an earlier metric code, e.g. the
torch-fidelity scorer of the first runs: the same samples score within a few 1e-6): every mismatch is printed and the
run is left out. Prints the runs copied, the rows of DST with
no run in SRC, and the bytes added.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

from nfebench.leaderboard import read_leaderboard
from nfebench.paths import ROOT, portable

CHECKED = ("fid", "is_mean", "kid_mean", "nll_bpd", "nfe_used", "num_samples", "seed", "feature_extractor", "reference")


def same(a, b, rtol: float = 0.0, atol: float = 0.0) -> bool:
    if a is None or (isinstance(a, float) and math.isnan(a)):
        return b is None or (isinstance(b, float) and math.isnan(b)) or pd.isna(b)
    if isinstance(a, (int, float)) and not isinstance(a, bool):
        return b is not None and not pd.isna(b) and abs(float(a) - float(b)) <= atol + rtol * abs(float(b))
    return str(a) == str(b)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("src", type=Path)
    ap.add_argument("dst", type=Path)
    ap.add_argument("--check-only", action="store_true", help="compare, copy nothing")
    ap.add_argument("--rtol", type=float, default=0.0, help="relative tolerance of the metrics (default 0: exact)")
    ap.add_argument("--atol", type=float, default=0.0, help="absolute tolerance of the metrics (default 0), for "
                                                            "values near 0 such as KID")
    args = ap.parse_args(argv)
    board = read_leaderboard(args.dst / "leaderboard.csv")
    dst_rel = args.dst.resolve().relative_to(ROOT) if args.dst.resolve().is_relative_to(ROOT) else args.dst
    copied, absent, bad, size = [], [], [], 0
    for _, row in board.iterrows():
        run_id = row["run_id"]
        src = args.src / "runs" / run_id
        if not (src / "metrics.json").is_file() or not (src / "samples.npz").is_file():
            absent.append(run_id)
            continue
        got = json.loads((src / "metrics.json").read_text())
        diff = [f"{k} {row.get(k)!r} vs {got.get(k)!r}" for k in CHECKED
                if k in board.columns and not same(got.get(k), row.get(k), args.rtol, args.atol)]
        if diff:
            bad.append(f"{run_id}: {'; '.join(diff)}")
            continue
        copied.append(run_id)
        if args.check_only:
            continue
        dst = args.dst / "runs" / run_id
        dst.mkdir(parents=True, exist_ok=True)
        cfg = OmegaConf.to_container(OmegaConf.load(src / "config.yaml"))
        cfg = portable(cfg)
        cfg["results_dir"] = str(dst_rel)
        (dst / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(cfg)))
        for name in ("samples.npz", "metrics.json"):
            shutil.copyfile(src / name, dst / name)
        size += sum((dst / n).stat().st_size for n in ("config.yaml", "samples.npz", "metrics.json"))
    print(f"{args.dst}: {len(board)} rows; {len(copied)} runs {'match' if args.check_only else 'copied'} "
          f"({size / 1e6:.1f} MB); {len(absent)} rows without a run in {args.src}; {len(bad)} mismatches")
    for line in bad:
        print("  MISMATCH", line)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

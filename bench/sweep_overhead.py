"""Sweep overhead in one process: wall time of a Hydra sweep (basic launcher), less one process start-up, over the
sum of its points' sampling time. Before: NFEBENCH_NO_MEMO=1 (every point loads its model and reference features
again); after: nfebench.memo (loaded once per process). Target (issue 24): after < 1.15.

The sweep is `python -m nfebench -m sampler=ddim,dpmpp nfe=10,20 num_samples=1000` on the embedded digits model, each
time into a fresh results_dir, in a fresh child process. "Less one process start-up" is done by construction: the
child first imports what any point needs (nfebench.run, the diffusers UNet loader and diffusers' UNet2DModel, which
diffusers imports lazily, about 1.6 s; the metrics: the start-up), then
starts the clock and runs the sweep through nfebench's own entry point (`nfebench.__main__.main` with the sweep's
arguments), so the timed span is Hydra's composition plus the four points, nothing else. Before and after
alternate, and the median of the repeats is reported (the machine is shared).

    OMP_NUM_THREADS=1 PYTHONPATH=src python bench/sweep_overhead.py --repeats 3 --json bench/results/sweep_overhead_cpu.json

NFEBENCH_BENCH_LAZY_IMPORTS=1 leaves diffusers' lazy UNet2DModel import inside the timed span (the first point pays it).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nfebench.machine import machine, write_json  # noqa: E402

SRC = str(Path(__file__).resolve().parents[1] / "src")
STARTUP = "import nfebench.run, nfebench.models.diffusers_unet, nfebench.metrics.fidelity"


SWEEP = ["-m", "sampler=ddim,dpmpp", "nfe=10,20"]
MODEL_LIBS_AT_STARTUP = os.environ.get("NFEBENCH_BENCH_LAZY_IMPORTS") != "1"  # =1: diffusers' lazy import is timed


def child(num_samples: int, results: str) -> None:
    """Run in the child process: import (the start-up, untimed), then time the sweep; print wall seconds."""
    import importlib

    for mod in STARTUP.replace("import ", "").split(", "):
        importlib.import_module(mod)
    if MODEL_LIBS_AT_STARTUP:  # diffusers resolves UNet2DModel lazily: importing it is start-up, not a point's work
        from diffusers import UNet2DModel  # noqa: F401
    import nfebench.__main__ as entry

    sys.argv = ["nfebench", *SWEEP, f"num_samples={num_samples}", f"results_dir={results}"]
    t0 = time.perf_counter()
    entry.main()
    print(f"SWEEP_SECONDS {time.perf_counter() - t0}")


def one(memo: bool, args) -> dict:
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": str(args.threads)}
    if not memo:
        env["NFEBENCH_NO_MEMO"] = "1"
    with tempfile.TemporaryDirectory() as res:
        out = subprocess.run([sys.executable, __file__, "--child", res, "--num-samples", str(args.num_samples)],
                             env=env, check=True, capture_output=True, text=True).stdout
        sweep = float(out.split("SWEEP_SECONDS")[-1].split()[0])
        sampling = float(pd.read_csv(Path(res) / "leaderboard.csv").sampling_seconds.sum())
    return {"memo": memo, "sweep_less_startup_s": sweep, "sampling_s": sampling, "ratio": sweep / sampling}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--num-samples", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--child", metavar="RESULTS", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        return child(a.num_samples, a.child)
    runs = []
    for _ in range(a.repeats):
        for memo in (False, True):
            runs.append(one(memo, a))
            print({k: round(v, 3) if isinstance(v, float) else v for k, v in runs[-1].items()}, flush=True)
    res = {"runs": runs, "model_libs_at_startup": MODEL_LIBS_AT_STARTUP}
    for memo, name in ((False, "before"), (True, "after")):
        res[f"{name}_ratio_median"] = statistics.median(r["ratio"] for r in runs if r["memo"] == memo)
    print(f"machine: {machine()}")
    print(f"sweep wall time less one start-up (imports), over sampling time: before {res['before_ratio_median']:.3f}x, "
          f"after {res['after_ratio_median']:.3f}x")
    if a.json:
        write_json(a.json, a, res)


if __name__ == "__main__":
    main()

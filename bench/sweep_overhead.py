"""Sweep overhead in one process: wall time of a Hydra sweep (basic launcher), less one process start-up, over the
sum of its points' sampling time. Before: NFEBENCH_NO_MEMO=1 (every point loads its model and reference features
again); after: nfebench.memo (loaded once per process). Target (issue 24): after < 1.15.

The sweep is `python -m nfebench -m sampler=ddim,dpmpp nfe=10,20 num_samples=1000` on the embedded digits model, each
time into a fresh results_dir. One process start-up is the wall time of a process importing what any point needs
(nfebench.run, the diffusers UNet loader, the metrics), measured beside each sweep. Before and after alternate, and
the median of the repeats is reported (the machine is shared).

    OMP_NUM_THREADS=1 PYTHONPATH=src python bench/sweep_overhead.py --repeats 3 --json bench/results/sweep_overhead_cpu.json
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


def wall(cmd: list[str], env: dict) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, capture_output=True)
    return time.perf_counter() - t0


def one(memo: bool, args) -> dict:
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": str(args.threads)}
    if not memo:
        env["NFEBENCH_NO_MEMO"] = "1"
    startup = wall([sys.executable, "-c", STARTUP], env)
    with tempfile.TemporaryDirectory() as res:
        sweep = wall([sys.executable, "-m", "nfebench", "-m", "sampler=ddim,dpmpp", "nfe=10,20",
                      f"num_samples={args.num_samples}", f"results_dir={res}"], env)
        sampling = float(pd.read_csv(Path(res) / "leaderboard.csv").sampling_seconds.sum())
    return {"memo": memo, "sweep_s": sweep, "startup_s": startup, "sampling_s": sampling,
            "ratio": (sweep - startup) / sampling}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--num-samples", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", help="also write the results here")
    a = ap.parse_args(argv)
    runs = []
    for _ in range(a.repeats):
        for memo in (False, True):
            runs.append(one(memo, a))
            print({k: round(v, 3) if isinstance(v, float) else v for k, v in runs[-1].items()}, flush=True)
    res = {"runs": runs}
    for memo, name in ((False, "before"), (True, "after")):
        res[f"{name}_ratio_median"] = statistics.median(r["ratio"] for r in runs if r["memo"] == memo)
    print(f"machine: {machine()}")
    print(f"sweep wall time less one start-up, over sampling time: before {res['before_ratio_median']:.3f}x, "
          f"after {res['after_ratio_median']:.3f}x")
    if a.json:
        write_json(a.json, a, res)


if __name__ == "__main__":
    main()

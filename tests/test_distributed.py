"""torchrun: 2 CPU processes (gloo) give exactly the samples of one process; only rank 0 writes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from nfebench.distributed import DistContext


def test_shards_are_whole_batches_covering_the_seeds_in_order():
    for n in (1, 3, 5, 6, 7, 100):
        for w in (1, 2, 3):
            for bs in (1, 2, 4, 64):
                parts = [DistContext(rank=r, world_size=w).shard(list(range(n)), align=bs) for r in range(w)]
                assert sum(parts, []) == list(range(n))
                assert all(not part or part[0] % bs == 0 for part in parts)  # each starts a single-process batch
    assert [DistContext(r, 2).shard(list(range(3)), align=4) for r in (0, 1)] == [[0, 1, 2], []]


def test_torchrun_two_gloo_processes_match_one_process(tmp_path, tiny_unet_dir):
    from nfebench.run import run

    common = [f"model.path={tiny_unet_dir}", "metrics=none", "sampler=ddpm", "nfe=4", "num_samples=7",
              "batch_size=4", "seed=3"]
    import nfebench

    src = str(Path(nfebench.__file__).resolve().parents[1])  # this checkout's nfebench, not another installed one
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    env.pop("HYDRA_FULL_ERROR", None)
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                        "-m", "nfebench", *common, f"results_dir={tmp_path / 'two'}", "device=cpu"],
                       capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    board = pd.read_csv(tmp_path / "two" / "leaderboard.csv")
    assert len(board) == 1 and board.iloc[0].world_size == 2 and board.iloc[0].num_samples == 7

    from hydra import compose, initialize_config_dir

    import nfebench.__main__ as entry

    with initialize_config_dir(config_dir=str(entry.CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[*common, f"results_dir={tmp_path / 'one'}", "device=cpu"])
    row = run(cfg, progress=False)
    assert row["world_size"] == 1 and row["run_id"] == board.iloc[0].run_id  # same point, same key
    with np.load(tmp_path / "two" / "runs" / row["run_id"] / "samples.npz") as two, \
            np.load(tmp_path / "one" / "runs" / row["run_id"] / "samples.npz") as one:
        assert np.array_equal(two["seeds"], one["seeds"])
        # rank 0 ran batch [0-3], rank 1 batch [4-6]: the batches of the single process, so bit-identical samples
        assert np.array_equal(two["samples"], one["samples"])

"""shard=i/N and nfebench.merge (in-process, tiny model), the SLURM launcher's pure helpers, their one-line errors.
The same behaviour on a real SLURM: tests/slurm/test_slurm.py (`make test-slurm`)."""

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import nfebench.__main__ as entry
from nfebench.cluster import check_launcher_overrides, failure_reason, failure_report, slurm_gpus
from nfebench.merge import MergeError, merge
from nfebench.run import ConfigError, run
from nfebench.shards import missing_shards, parse_shard, share

from .test_cli import SRC


def point(tiny_unet_dir, results, *extra):
    with initialize_config_dir(config_dir=str(entry.CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"model.path={tiny_unet_dir}", f"results_dir={results}",
                                                       "sampler=ddim", "nfe=3", "num_samples=20", "batch_size=6",
                                                       *extra])
    return OmegaConf.to_container(cfg, resolve=True)


def test_shares_are_whole_batches_tiling_the_seeds():
    for n, bs, k in [(20, 6, 3), (100, 32, 3), (7, 10, 4), (12, 1, 12)]:
        bounds = [share(i, k, n, bs) for i in range(k)]
        assert bounds[0][0] == 0 and bounds[-1][1] == n
        assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
        assert all(lo % bs == 0 for lo, hi in bounds if lo < hi)


@pytest.mark.parametrize("spec", ["3/3", "-1/3", "0/0", "a/b", "1", "2/1"])
def test_a_shard_spec_out_of_range_is_a_one_line_error(spec):
    with pytest.raises(ConfigError, match=r"shard=.* is out of range; allowed: i/N with integers 0 <= i < N"):
        parse_shard(spec)
    assert parse_shard("2/3") == (2, 3) and parse_shard(None) is None


def test_sharded_point_equals_the_single_job_run_bit_for_bit(tmp_path, tiny_unet_dir):
    one, sharded = tmp_path / "one", tmp_path / "sharded"
    row = run(point(tiny_unet_dir, one), progress=False)
    assert run(point(tiny_unet_dir, sharded, "shard=2/3"), progress=False) is None  # last share first: no merge yet
    assert run(point(tiny_unet_dir, sharded, "shard=0/3"), progress=False) is None
    run_dir = sharded / "runs" / row["run_id"]  # same run id: shard is not part of the key
    with pytest.raises(MergeError, match=r"shard\(s\) 1/3 \(samples 12\.\.17\) not on disk; run them \(shard=1/3\)"):
        merge(run_dir, progress=False)
    assert missing_shards(run_dir, 3, 20, 6) == ["1/3 (samples 12..17)"]
    merged = run(point(tiny_unet_dir, sharded, "shard=1/3"), progress=False)  # the last shard scores the point
    assert merged["run_id"] == row["run_id"] and merged["fid"] == row["fid"] and merged["kid_mean"] == row["kid_mean"]
    for name in ("samples.npz", "features.npz"):
        with np.load(one / "runs" / row["run_id"] / name) as a, np.load(run_dir / name) as b:
            assert a.files == b.files and all(np.array_equal(a[k], b[k]) for k in a.files)
    # re-running any shard, or merging again, adds no row
    assert run(point(tiny_unet_dir, sharded, "shard=1/3"), progress=False) is None
    assert merge(run_dir, progress=False) is None
    assert len(pd.read_csv(sharded / "leaderboard.csv")) == 1


def test_merge_cli_names_missing_shards_in_one_line(tmp_path, tiny_unet_dir):
    run(point(tiny_unet_dir, tmp_path, "shard=0/2", "metrics=none"), progress=False)
    (run_dir,) = (tmp_path / "runs").iterdir()
    r = subprocess.run([sys.executable, "-m", "nfebench.merge", str(run_dir)], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": SRC}, timeout=120)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "shard(s) 1/2 (samples 12..19) not on disk" in r.stderr
    assert not (run_dir / "samples.npz").exists()


def test_unknown_launcher_resource_is_a_one_line_error_listing_the_allowed():
    msg = check_launcher_overrides(["hydra/launcher=slurm", "hydra.launcher.gpus=2"])
    assert msg.startswith("unknown launcher resource 'gpus' (hydra.launcher.gpus=2) for hydra/launcher=slurm")
    assert "gpus_per_node" in msg and "array_parallelism" in msg and "partition" in msg
    assert check_launcher_overrides(["hydra/launcher=slurm", "hydra.launcher.partition=gpu",
                                     "hydra.launcher.gpus_per_node=0", "hydra.launcher.array_parallelism=4"]) is None
    assert "n_jobs" in check_launcher_overrides(["hydra/launcher=joblib", "hydra.launcher.njobs=2"])


def test_failure_reasons_are_short():
    err = RuntimeError("Job 18_1 (task: 0) with path /x/18_1_0_result.pkl\nhas not produced any output "
                       "(state: CANCELLED by 0)\nError stream produced:\n----\nlong log")
    assert failure_reason(err) == "CANCELLED by 0"
    assert failure_reason(RuntimeError("Traceback...\n  File x\nValueError: boom\n")) == "ValueError: boom"
    line = failure_report([(1, ["sampler=ddim", "nfe=50"], "18_1", "CANCELLED by 0")], 4, "r/leaderboard.csv")
    assert "\n" not in line and line.startswith("1 of 4 submitted points failed: #1 sampler=ddim nfe=50 (job 18_1: "
                                                "CANCELLED by 0)")


def test_slurm_gpus_come_from_the_allocation(monkeypatch):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    assert slurm_gpus() is None
    monkeypatch.setenv("SLURM_JOB_ID", "7")
    monkeypatch.delenv("SLURM_STEP_GPUS", raising=False)
    monkeypatch.delenv("SLURM_JOB_GPUS", raising=False)
    assert slurm_gpus() is None  # GPUs not managed as GRES: nothing to check
    monkeypatch.setenv("SLURM_JOB_GPUS", "2,5")
    assert slurm_gpus() == ["2", "5"]
    from nfebench.cluster import check_slurm_device

    check_slurm_device("cuda:1")
    with pytest.raises(ConfigError, match=r"allocated 2 GPU\(s\) \(SLURM ids 2,5\); allowed: auto, cuda, cuda:0..cuda:1"):
        check_slurm_device("cuda:2")
    monkeypatch.setenv("SLURM_JOB_GPUS", "")
    with pytest.raises(ConfigError, match="was allocated no GPU"):
        check_slurm_device("cuda")

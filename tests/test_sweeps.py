"""Hydra multirun: parallel joblib workers, re-runs skip finished points, submitit, simultaneous sweeps."""

import pandas as pd
import pytest

from .test_cli import error_lines, run_cli


def sweep(tiny_unet_dir, results, *extra):
    return run_cli("-m", f"model.path={tiny_unet_dir}", f"results_dir={results}", "sampler=ddim,dpm", "nfe=3,4",
                   "num_samples=12", "batch_size=6", *extra)


def test_joblib_sweep_adds_exactly_4_intact_rows_and_a_rerun_adds_none(tmp_path, tiny_unet_dir):
    r = sweep(tiny_unet_dir, tmp_path, "hydra/launcher=joblib", "hydra.launcher.n_jobs=4")
    assert r.returncode == 0, r.stderr[-2000:]
    df = pd.read_csv(tmp_path / "leaderboard.csv")
    assert len(df) == 4 and df.run_id.is_unique
    assert sorted(zip(df.sampler, df.nfe)) == [("ddim", 3), ("ddim", 4), ("dpm", 3), ("dpm", 4)]
    assert (df.nfe_used == df.nfe).all() and df.fid.notna().all()
    r = sweep(tiny_unet_dir, tmp_path)
    assert r.returncode == 0 and r.stdout.count("skipping") == 4
    assert len(pd.read_csv(tmp_path / "leaderboard.csv")) == 4


def test_a_bad_point_does_not_stop_a_sweep(tmp_path, tiny_unet_dir):
    r = run_cli("-m", f"model.path={tiny_unet_dir}", f"results_dir={tmp_path}", "sampler=pndm,dpm", "nfe=5",
                "num_samples=6", "metrics=none")
    assert r.returncode == 0
    (err,) = error_lines(r)
    assert "sampler=pndm" in err and "below the minimum of sampler 'pndm': 12" in err
    assert list(pd.read_csv(tmp_path / "leaderboard.csv").sampler) == ["dpm"]


def test_two_sweeps_in_the_same_second_get_separate_sweep_dirs(tmp_path, tiny_unet_dir):
    fixed = "hydra.sweep.dir=${results_dir}/multirun/same-second-${nfebench_uid:}"
    for _ in range(2):
        assert run_cli("-m", f"model.path={tiny_unet_dir}", f"results_dir={tmp_path}", "nfe=3", "num_samples=4",
                       "metrics=none", fixed).returncode == 0
    assert len(list((tmp_path / "multirun").glob("same-second-*"))) == 2


@pytest.mark.slow
def test_submitit_local_executor_runs_a_sweep(tmp_path, tiny_unet_dir):
    r = sweep(tiny_unet_dir, tmp_path, "hydra/launcher=submitit_local", "metrics=none")
    assert r.returncode == 0, r.stderr[-2000:]
    assert len(pd.read_csv(tmp_path / "leaderboard.csv")) == 4

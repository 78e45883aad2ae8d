"""The Hydra app: every config composes; a tiny end-to-end run; bad input is one line, exit 2, no row."""

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

import nfebench.__main__ as entry

CONF = entry.CONF_DIR
GROUPS = ["model", "sampler", "dataset", "metrics", "experiment"]


def options(group):
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize("group", GROUPS)
def test_every_config_composes(group):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        for opt in options(group):
            cfg = compose(config_name="config", overrides=[f"{group}={opt}"], return_hydra_config=True)
            assert cfg.device == "auto" and cfg.nfe > 0
            if group == "experiment":  # @package _global_: check the sweep it defines names real samplers
                swept = cfg.hydra.sweeper.params.get("sampler", cfg.sampler.name)
                assert set(swept.split(",")) <= set(options("sampler")), opt
                continue
            assert cfg[group] is not None
            if group == "sampler":
                from nfebench.samplers import get_sampler

                spec = get_sampler(cfg.sampler.name)  # every sampler config names a registered sampler ...
                spec.check_options({k: v for k, v in cfg.sampler.items() if k != "name"})  # ... with real options
                assert set(cfg.sampler) - {"name"} == set(spec.options), f"{opt}.yaml must list every option"


SRC = str(Path(__file__).resolve().parents[1] / "src")  # the checkout under test, whatever is installed


def run_cli(*args, cwd=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": SRC}
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run([sys.executable, "-m", "nfebench", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=300)


def error_lines(r):
    """The `nfebench: error:` lines of a finished CLI run (stderr may also hold progress bars)."""
    return [line for line in r.stderr.splitlines() if "nfebench: error:" in line]


def test_end_to_end_run_from_another_directory(tmp_path, tiny_unet_dir):
    res = tmp_path / "res"
    r = run_cli(f"model.path={tiny_unet_dir}", f"results_dir={res}", "num_samples=30", "batch_size=16", "nfe=5",
                cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    df = pd.read_csv(res / "leaderboard.csv")
    assert len(df) == 1
    row = df.iloc[0]
    assert (row.sampler, row.nfe, row.nfe_used, row.num_samples) == ("dpm", 5, 5, 30)
    assert row.feature_extractor == "digits-cnn" and row.reference == "digits/train/1500"
    for k in ("fid", "is_mean", "kid_mean"):
        assert pd.notna(row[k])
    run_dir = res / "runs" / row.run_id
    assert {p.name for p in run_dir.iterdir()} >= {"config.yaml", "samples.npz", "grid.png", "metrics.json"}
    assert not (tmp_path / "outputs").exists() and not (tmp_path / ".hydra").exists()
    # the same point again is skipped: still one row
    r = run_cli(f"model.path={tiny_unet_dir}", f"results_dir={res}", "num_samples=30", "batch_size=8", "nfe=5",
                cwd=tmp_path)
    assert r.returncode == 0 and "skipping" in r.stdout
    assert len(pd.read_csv(res / "leaderboard.csv")) == 1


# bad values that validate() rejects the same way: checked in process by default, through the CLI in make test-slow
VALIDATED = [
    (["nfe=0"], "nfe=0 is below the minimum"),
    (["num_samples=0"], "num_samples must be a positive integer, got 0"),
    (["batch_size=-3"], "batch_size must be a positive integer, got -3"),
    (["sampler=ddim", "sampler.eta=-1"], "eta must be >= 0, got -1"),
]


@pytest.mark.parametrize("args, needle", [
    (["sampler.name=nope"], "unknown sampler 'nope'"),
    (["sampler=nope"], "unknown sampler 'nope'; allowed: analytic_ddim, analytic_ddpm, consistency, ddim"),
    (["model=nope"], "unknown model 'nope'; allowed: "),
    (["dataset=imagenet"], "unknown dataset 'imagenet'; allowed: "),
    (["-m", "sampler=ddim,dmp"], "unknown sampler 'dmp'"),
    (["nfe=abc"], "nfe must be a positive integer, got 'abc'"),
    (["+sampler.ordr=2"], "unknown option 'ordr' for sampler 'dpm'"),
    (["model.path=/no/such/dir"], "/no/such/dir"),
    (["device=cuda"], "device='cuda' but this machine has no CUDA GPU"),
    *[pytest.param(a, n, marks=pytest.mark.slow) for a, n in VALIDATED],
])
def test_bad_input_is_one_line_exit_2_no_traceback_no_row(tmp_path, tiny_unet_dir, args, needle):
    r = run_cli(f"model.path={tiny_unet_dir}", f"results_dir={tmp_path}", "num_samples=4", *args, cwd=tmp_path)
    assert r.returncode == 2, (r.returncode, r.stderr[-1500:])
    err = error_lines(r)
    assert len(err) == 1 and err[0].startswith("nfebench: error: ") and needle in err[0], r.stderr[-1500:]
    assert r.stderr.strip().splitlines()[-1] == err[0]
    assert "Traceback" not in r.stderr + r.stdout
    assert not (Path(tmp_path) / "leaderboard.csv").exists()


@pytest.mark.parametrize("args, needle", VALIDATED)
def test_validated_bad_values_are_user_errors_before_any_row(tmp_path, tiny_unet_dir, args, needle):
    """In process: the error the CLI prints as its one line (nfebench.__main__.user_errors), no row written."""
    from nfebench.run import run

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"model.path={tiny_unet_dir}", f"results_dir={tmp_path}",
                                                       "num_samples=4", *args])
    with pytest.raises(entry.user_errors()) as e:
        run(cfg, progress=False)
    assert needle in str(e.value) and "\n" not in str(e.value)
    assert not (Path(tmp_path) / "leaderboard.csv").exists()


@pytest.mark.slow  # ~80 s of Analytic-DPM moment estimation; the moments' cache is unit-tested in test_analytic.py
def test_analytic_samplers_run_through_the_cli_with_moments_cached_beside_the_checkpoint(tmp_path, tiny_unet_dir):
    args = [f"model.path={tiny_unet_dir}", f"results_dir={tmp_path}", "sampler=analytic_ddim", "nfe=5",
            "num_samples=8", "metrics=none"]
    r = run_cli(*args)
    assert r.returncode == 0, r.stderr[-1500:]
    assert "Analytic-DPM moments" in r.stdout and "not counted in NFE" in r.stdout
    assert list(tiny_unet_dir.glob("analytic_moments_*.npz"))
    assert pd.read_csv(tmp_path / "leaderboard.csv").nfe_used.tolist() == [5]
    r = run_cli(*args, "nfe=6")  # the second run reuses the cached moments
    assert r.returncode == 0 and "moments: cached" in r.stdout

"""nfebench.recommend on the tiny oracle: its ranking and advice are the paired tests' (nfebench.stats.paired_fid with
Holm's adjustment), a second call runs nothing new, and bad input is one line, exit 2, nothing written."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import nfebench.__main__ as entry
from nfebench import stats
from nfebench.compare import find_run, reference_features
from nfebench.recommend import advice, recommend
from nfebench.report import holm, load_leaderboard, significance_section
from nfebench.run import ConfigError
from nfebench.samplers import SamplerError

SAMPLERS = "[ddim,dpmpp,ddpm]"
N_BOOT = 200


def config(results_dir, *overrides) -> dict:
    with initialize_config_dir(config_dir=str(entry.CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="recommend", overrides=[
            "model=gmm_digits", "model.n_components=2", "nfe=6", "num_samples=200", "device=cpu", f"n_boot={N_BOOT}",
            f"samplers={SAMPLERS}", f"results_dir={results_dir}", *overrides])
    return OmegaConf.to_container(cfg, resolve=True)


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    d = tmp_path_factory.mktemp("recommend")
    return d, recommend(config(d, "tune=true"), progress=False)


def test_ranking_and_advice_are_the_paired_tests(done):
    d, out = done
    ranked = out["ranked"]
    # ddim (eta = 0) and dpmpp take a tuned grid too; ddpm (stochastic) runs at its default only
    assert sorted(r["candidate"] for r in ranked) == sorted(
        [f"{s} (spacing={g})" for s, g in [("ddim", "uniform"), ("ddim", "tuned"), ("dpmpp", "logsnr"),
                                           ("dpmpp", "tuned")]] + ["ddpm"])
    assert [r["fid"] for r in ranked] == sorted(r["fid"] for r in ranked)
    best = find_run(ranked[0]["run_id"], d)
    ref = reference_features(best)["fid"]
    raw = []
    for r in ranked[1:]:  # each difference to the best, recomputed from the stored features
        res = stats.paired_fid(find_run(r["run_id"], d).features()["fid"], best.features()["fid"], ref,
                               n_boot=N_BOOT)
        assert (r["delta"], r["delta_ci_low"], r["delta_ci_high"]) == pytest.approx(
            (res["delta"], res["ci_low"], res["ci_high"]))
        assert r["verdict"] == ("tied" if res["ci_low"] <= 0 <= res["ci_high"] else "worse")
        raw.append(res["p_value"])
    assert [r["p_holm"] for r in ranked[1:]] == pytest.approx(holm(raw))
    tied = [r["candidate"] for r in ranked if r["verdict"] == "tied"]
    worse = [r["candidate"] for r in ranked if r["verdict"] == "worse"]
    assert worse, "200 samples at NFE 6 separate ddpm from the best"
    line = out["advice"]
    assert line.startswith(f"use {ranked[0]['candidate']};")
    tied_part, _, worse_part = line.partition("significantly worse")[0].partition(" statistically tied")
    assert all(name in tied_part for name in tied) and all(name in worse_part for name in worse)
    assert not any(name in worse_part for name in tied)


def test_advice_agrees_with_the_reports_significance_marks(done):
    d, out = done
    text = "\n".join(significance_section(load_leaderboard(d / "leaderboard.csv"), d))
    group = [r["candidate"] for r in out["ranked"] if r["verdict"] in ("best", "tied")]
    assert (f"NFE 6: tied with the best: {', '.join(group)}." if len(group) > 1 else
            f"NFE 6: {group[0]} leads significantly") in text


def test_a_single_runs_fid_is_printed_without_an_interval_of_its_own(done):
    """Issue 27: at small FIDs a single run's bootstrap interval can exclude the FID; only the paired one is shown."""
    d, out = done
    md = Path(out["markdown"]).read_text()
    assert "| # | Candidate | FID | FID - best | 95 % CI | p (Holm) |" in md
    with open(out["csv"]) as f:
        header = next(csv.reader(f))
    assert "fid_ci_low" not in header and {"fid", "delta_ci_low", "delta_ci_high"} <= set(header)
    for r in out["ranked"][1:]:  # the paired interval is there for every tested candidate
        assert r["delta_ci_low"] <= r["delta"] <= r["delta_ci_high"]


def test_writes_markdown_and_csv_of_the_ranking(done):
    d, out = done
    with open(out["csv"]) as f:
        rows = list(csv.DictReader(f))
    assert [row["run_id"] for row in rows] == [r["run_id"] for r in out["ranked"]]
    assert [row["verdict"] for row in rows] == [r["verdict"] for r in out["ranked"]]
    md = Path(out["markdown"]).read_text()
    assert out["advice"] in md and all(r["candidate"] in md for r in out["ranked"])


def test_a_second_call_runs_nothing_new(done, monkeypatch):
    d, out = done
    import nfebench.run
    import nfebench.tuning

    board = (d / "leaderboard.csv").read_text()
    monkeypatch.setattr(nfebench.run, "generate", lambda *a, **k: pytest.fail("sampled again"))
    monkeypatch.setattr(nfebench.tuning, "tune", lambda *a, **k: pytest.fail("tuned again"))
    again = recommend(config(d, "tune=true"), progress=False)
    assert (d / "leaderboard.csv").read_text() == board
    assert [r["run_id"] for r in again["ranked"]] == [r["run_id"] for r in out["ranked"]]
    assert again["advice"] == out["advice"]


def test_rows_without_their_run_directory_are_listed_untested(done, tmp_path):
    d, out = done  # as in a fresh clone of a committed results directory without its runs/
    copy = tmp_path / "clone"
    shutil.copytree(d, copy)
    last = out["ranked"][-1]
    shutil.rmtree(copy / "runs" / last["run_id"])
    again = recommend(config(copy, "tune=true"), progress=False)
    gone = next(r for r in again["ranked"] if r["run_id"] == last["run_id"])
    assert gone["verdict"] == "untested" and np.isnan(gone["delta"])
    assert again["advice"].endswith(f"{last['candidate']} could not be tested (no stored features)")


def test_advice_names_the_tied_and_the_worse():
    diffs = [{"variant": "a", "delta": 0.0, "tied": True}, {"variant": "b", "delta": 0.1, "tied": True},
             {"variant": "c", "delta": 0.2, "tied": True}, {"variant": "d", "delta": 3.0, "tied": False}]
    assert advice(diffs) == "use a; b and c are statistically tied with it; d is significantly worse"
    assert advice(diffs[:1] + diffs[3:]) == ("use a; no other candidate is statistically tied with it; d is "
                                             "significantly worse")


@pytest.mark.parametrize("override,error,needle", [
    ("samplers=[ddim,nope]", SamplerError, "unknown sampler 'nope'"),
    ("samplers=[ddim,ddim]", ConfigError, "'ddim' twice"),
    ("samplers=[]", ConfigError, "non-empty list"),
    ("tune=maybe", ConfigError, "tune must be true or false"),
    ("n_boot=10", ConfigError, "n_boot must be an integer >= 100"),
    ("nfe=0", SamplerError, "nfe=0"),
    ("metrics=none", ConfigError, "metrics.fid must be true"),
    ("+tuning.teacher=1", ConfigError, "unknown tuning setting 'teacher'"),
])
def test_bad_input_fails_before_anything_runs(tmp_path, override, error, needle):
    with pytest.raises(error, match=needle):
        recommend(config(tmp_path / "r", override), progress=False)
    assert not (tmp_path / "r").exists()


def test_cli_error_is_one_line_exit_2(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(Path(entry.__file__).parents[1])}
    p = subprocess.run([sys.executable, "-m", "nfebench.recommend", "model=gmm_digits", "samplers=ddim,heun",
                        "nfe=0", f"results_dir={tmp_path / 'r'}"], capture_output=True, text=True, env=env)
    assert p.returncode == 2 and p.stderr.strip().count("\n") == 0 and "Traceback" not in p.stderr
    assert "nfe=0" in p.stderr and not (tmp_path / "r").exists()

"""studies/pack_runs.py: a re-run's files are copied only where its metrics give the committed row (issue 27)."""

import json
import os
import sys

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "studies"))

import pack_runs  # noqa: E402

from nfebench.leaderboard import COLUMNS  # noqa: E402


def test_same_takes_relative_and_absolute_tolerances():
    assert pack_runs.same(1.0, 1.0) and not pack_runs.same(1.0 + 1e-12, 1.0)
    assert pack_runs.same(2.00001, 2.0, rtol=1e-5) and not pack_runs.same(2.0001, 2.0, rtol=1e-5)
    assert not pack_runs.same(-0.056521, -0.056523, rtol=1e-5)  # a KID near 0: relative alone refuses it
    assert pack_runs.same(-0.056521, -0.056523, rtol=1e-5, atol=1e-5)
    assert pack_runs.same(None, float("nan")) and not pack_runs.same(None, 1.0)


def _run(root, run_id, fid, kid):
    d = root / "runs" / run_id
    d.mkdir(parents=True)
    np.savez(d / "samples.npz", samples=np.zeros((2, 1, 8, 8), np.uint8))
    (d / "metrics.json").write_text(json.dumps({"fid": fid, "kid_mean": kid, "nfe_used": 10, "seed": 0}))
    (d / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create({"results_dir": str(root), "seed": 0})))


def test_copies_only_matching_runs(tmp_path, capsys):
    src, dst = tmp_path / "src", tmp_path / "dst"
    rows = [{**{c: None for c in COLUMNS}, "run_id": rid, "fid": fid, "kid_mean": kid, "nfe_used": 10, "seed": 0}
            for rid, fid, kid in (("a", 1.5, 0.1), ("b", 2.0, -0.05), ("c", 3.0, 0.2))]
    dst.mkdir()
    pd.DataFrame(rows).to_csv(dst / "leaderboard.csv", index=False)
    _run(src, "a", 1.5, 0.1)                # exact
    _run(src, "b", 2.0 + 4e-6, -0.050002)  # an earlier scorer's row: within --rtol 1e-5 --atol 1e-5 only
    assert pack_runs.main([str(src), str(dst)]) == 1  # b is a mismatch; c has no run
    assert (dst / "runs" / "a" / "samples.npz").is_file() and not (dst / "runs" / "b").exists()
    assert "1 rows without a run" in capsys.readouterr().out
    assert pack_runs.main([str(src), str(dst), "--rtol", "1e-5", "--atol", "1e-5"]) == 0
    assert (dst / "runs" / "b" / "metrics.json").is_file()
    assert OmegaConf.load(dst / "runs" / "b" / "config.yaml").results_dir == str(dst)

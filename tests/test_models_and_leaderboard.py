import json

import numpy as np
import pytest
import torch

from nfebench.leaderboard import COLUMNS, LeaderboardError, append_row, read_leaderboard
from nfebench.models import ModelError, load_model


def test_loader_reads_a_freshly_saved_random_unet(tiny_unet_dir):
    m = load_model("diffusers", path=str(tiny_unet_dir), name="tiny")
    assert m.sample_shape == (1, 8, 8)
    np.testing.assert_allclose(m.betas, np.linspace(1e-4, 0.02, 1000), rtol=1e-6)
    x = torch.randn(3, 1, 8, 8)
    out = m(x, torch.full((3,), 500.0))
    assert out.shape == x.shape and torch.isfinite(out).all() and m.calls == 1


def test_loader_takes_betas_from_the_scheduler_config(tmp_path, tiny_unet_dir):
    import shutil

    d = tmp_path / "m"
    shutil.copytree(tiny_unet_dir, d)
    cfg = json.loads((d / "scheduler_config.json").read_text())
    cfg.update(num_train_timesteps=500, beta_end=0.04)
    (d / "scheduler_config.json").write_text(json.dumps(cfg))
    m = load_model("diffusers", path=str(d))
    assert m.betas.shape == (500,) and m.betas[-1] == pytest.approx(0.04)


def test_loader_errors_name_the_path(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        load_model("diffusers", path=str(tmp_path / "nope"))
    with pytest.raises(ModelError, match="no config.json"):
        load_model("diffusers", path=str(tmp_path))
    with pytest.raises(ModelError, match="unknown model kind 'onnx'"):
        load_model("onnx")


def test_leaderboard_round_trips(tmp_path):
    board = tmp_path / "lb.csv"
    row = {"run_id": "a-1", "sampler": "dpm", "nfe": 10, "nfe_used": 10, "fid": 1.2345678901234567,
           "sampler_options": json.dumps({"order": 3, "spacing": "logsnr"}), "device": "cpu"}
    append_row(board, row)
    append_row(board, {**row, "run_id": "a-2", "fid": None})
    df = read_leaderboard(board)
    assert list(df.columns) == COLUMNS and len(df) == 2
    assert df.loc[0, "fid"] == row["fid"] and np.isnan(df.loc[1, "fid"])
    assert json.loads(df.loc[0, "sampler_options"]) == {"order": 3, "spacing": "logsnr"}
    with pytest.raises(LeaderboardError, match="unknown leaderboard column 'fdi'"):
        append_row(board, {"fdi": 1})


def test_leaderboard_upgrades_an_older_file_with_fewer_columns(tmp_path):
    board = tmp_path / "lb.csv"
    board.write_text(",".join(COLUMNS[:5]) + "\nold,2026,m,d,ddim\n")
    append_row(board, {"run_id": "new", "sampler": "dpm"})
    df = read_leaderboard(board)
    assert list(df.columns) == COLUMNS and list(df.run_id) == ["old", "new"]

"""metrics.reference_stats=FILE.npz: FID against precomputed (mu, sigma), as pytorch-fid, EDM and ADM publish them."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from nfebench.data import load_split
from nfebench.metrics.fidelity import (FID, IS_MEAN, DigitsCNNExtractor, MetricsError, compute_fidelity,
                                       fid_against_stats, load_reference_stats)

from .test_cli import error_lines, run_cli

WEIGHTS = str(Path(__file__).resolve().parents[1] / "checkpoints/digits-cnn/digits_cnn.pt")


@pytest.fixture(scope="module")
def stats_file(tmp_path_factory):
    """mu and sigma of the digits train split's features, computed here with numpy from the extractor's forward."""
    fx = DigitsCNNExtractor("digits-cnn", ["penultimate"], feature_extractor_weights_path=WEIGHTS)
    with torch.no_grad():
        f = fx(load_split("digits", "train"))[0].double().numpy()
    path = tmp_path_factory.mktemp("stats") / "digits_train.npz"
    np.savez(path, mu=f.mean(0), sigma=np.cov(f, rowvar=False))
    return path


def test_fid_against_statistics_equals_fid_against_the_images(stats_file, tmp_path):
    x = load_split("digits", "test")
    images = compute_fidelity(x, load_split("digits", "train"), "digits-train-stats-test", "digits-cnn",
                              weights_path=WEIGHTS, kid=False, cache_dir=tmp_path, verbose=False)
    stats = fid_against_stats(x, stats_file, "digits-cnn", WEIGHTS, verbose=False)
    assert stats[FID] == pytest.approx(images[FID], rel=1e-5) and stats[FID] > 0
    assert stats[IS_MEAN] == pytest.approx(images[IS_MEAN], rel=1e-6)
    assert stats["reference"].startswith("stats:digits_train.npz@") and len(stats["reference"]) == 35


def test_bad_statistics_files_are_one_line_errors(stats_file, tmp_path):
    with pytest.raises(MetricsError, match="reference statistics file '/no/stats.npz' not found"):
        load_reference_stats("/no/stats.npz", "digits-cnn")
    (tmp_path / "junk.npz").write_text("not a zip")
    with pytest.raises(MetricsError, match="is not a readable .npz"):
        load_reference_stats(tmp_path / "junk.npz", "digits-cnn")
    np.savez(tmp_path / "keys.npz", mean=np.zeros(64))
    with pytest.raises(MetricsError, match=r"must hold mu \[D\] and sigma \[D, D\]; got keys mean"):
        load_reference_stats(tmp_path / "keys.npz", "digits-cnn")
    np.savez(tmp_path / "shape.npz", mu=np.zeros(64), sigma=np.zeros((64, 3)))
    with pytest.raises(MetricsError, match=r"got mu \[64\], sigma \[64, 3\]"):
        load_reference_stats(tmp_path / "shape.npz", "digits-cnn")
    with pytest.raises(MetricsError, match="are 64-dimensional but feature extractor inception-v3-compat gives 2048"):
        load_reference_stats(stats_file, "inception-v3-compat")


def test_cli_scores_against_statistics_and_names_them_in_the_row(stats_file, tmp_path):
    r = run_cli("model=gmm_digits", f"metrics.reference_stats={stats_file}", "num_samples=20", "nfe=4",
                f"results_dir={tmp_path}")
    assert r.returncode == 0, r.stderr[-1500:]
    row = pd.read_csv(tmp_path / "leaderboard.csv").iloc[0]
    assert row.reference.startswith("stats:digits_train.npz@") and row.fid > 0 and pd.isna(row.kid_mean)
    bad = tmp_path / "wrong_dim.npz"
    np.savez(bad, mu=np.zeros(8), sigma=np.eye(8))
    r = run_cli("model=gmm_digits", f"metrics.reference_stats={bad}", "num_samples=20", "nfe=4",
                f"results_dir={tmp_path / 'bad'}")
    assert r.returncode == 2 and "are 8-dimensional but feature extractor digits-cnn gives 64" in error_lines(r)[0]
    assert not (tmp_path / "bad" / "leaderboard.csv").exists() and not (tmp_path / "bad" / "runs").exists()

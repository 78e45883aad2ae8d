"""torch-fidelity with the digits feature extractor: the metric behaves like a distance on known inputs."""

from pathlib import Path

import pytest
import torch

from nfebench.data import load_split
from nfebench.metrics.fidelity import MetricsError, compute_fidelity

WEIGHTS = str(Path(__file__).resolve().parents[1] / "checkpoints/digits-cnn/digits_cnn.pt")


@pytest.fixture(scope="module")
def ref():
    return load_split("digits", "train")


def fidelity(samples, ref, tmp_path, **kw):
    return compute_fidelity(samples, ref, "digits-train-test", "digits-cnn", weights_path=WEIGHTS,
                            cache_dir=tmp_path, verbose=False, **kw)


def test_real_data_scores_well_and_noise_scores_badly(ref, tmp_path):
    real = fidelity(load_split("digits", "test"), ref, tmp_path)
    noise = fidelity(torch.randint(0, 256, (297, 1, 8, 8), generator=torch.Generator().manual_seed(0),
                                   dtype=torch.uint8), ref, tmp_path)
    same = fidelity(ref, ref, tmp_path, isc=False, kid=False)
    assert same["frechet_inception_distance"] == pytest.approx(0.0, abs=1e-3)
    assert real["frechet_inception_distance"] < 0.05 * noise["frechet_inception_distance"]
    assert real["kernel_inception_distance_mean"] < noise["kernel_inception_distance_mean"]
    # 10 balanced classes: IS tends to 10 for many sharp samples; 297 images in 10 splits bias it low (6.06 here)
    assert real["inception_score_mean"] > 5.0 and real["inception_score_mean"] > 2 * noise["inception_score_mean"]


def test_kid_subset_size_adapts_to_few_samples(ref, tmp_path):
    out = fidelity(load_split("digits", "test")[:40], ref, tmp_path, fid=False, isc=False)
    assert "kernel_inception_distance_mean" in out


def test_bad_extractor_or_missing_weights_are_clear_errors(ref, tmp_path):
    x = load_split("digits", "test")[:10]
    with pytest.raises(MetricsError, match="unknown feature extractor 'inception'"):
        compute_fidelity(x, ref, "r", "inception", verbose=False)
    with pytest.raises(MetricsError, match="/no/weights.pt"):
        compute_fidelity(x, ref, "r", "digits-cnn", weights_path="/no/weights.pt", verbose=False)

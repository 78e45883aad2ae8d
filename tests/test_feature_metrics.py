"""FID / IS / KID from stored features equal torch-fidelity's own values on the same features; runs store them."""

import json

import numpy as np
import pytest
import torch
from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric
from torch_fidelity.metric_isc import isc_features_to_metric
from torch_fidelity.metric_kid import kid_features_to_metric

from nfebench.metrics import from_features as F

KID_KW = dict(kid_subsets=100, kid_kernel="poly", kid_kernel_poly_degree=3, kid_kernel_poly_gamma=None,
              kid_kernel_poly_coef0=1, rng_seed=2020, verbose=False)


def features(n, d, scale=1.0, shift=0.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64) * scale + shift


def test_fid_equals_torch_fidelity():
    a, r = features(400, 16, 1.2, 0.1), features(700, 16, seed=1)
    tf = fid_statistics_to_metric(fid_features_to_statistics(a), fid_features_to_statistics(r), False)
    assert F.fid(a, r) == pytest.approx(tf["frechet_inception_distance"], rel=1e-9)
    assert F.fid(r, r) == pytest.approx(0.0, abs=1e-9)


def test_inception_score_equals_torch_fidelity():
    logits = features(503, 10, 3.0)
    tf = isc_features_to_metric(logits, splits=10, shuffle=True, rng_seed=2020)
    assert F.inception_score(logits) == pytest.approx((tf["inception_score_mean"], tf["inception_score_std"]),
                                                      rel=1e-9)


@pytest.mark.parametrize("subset_size", [300, 60])  # 300 of 300: the whole-kernel path; 60: per-subset
def test_kid_equals_torch_fidelity_on_both_paths(subset_size):
    a, r = features(300, 8, 1.1, 0.05), features(450, 8, seed=1)
    tf = kid_features_to_metric(a, r, kid_subset_size=subset_size, **KID_KW)
    ours = F.kid(a, r, subset_size=subset_size)
    assert ours == pytest.approx((tf["kernel_inception_distance_mean"], tf["kernel_inception_distance_std"]),
                                 rel=1e-9)



@pytest.mark.parametrize("subset_size", [300, 60])
def test_reference_terms_are_computed_once_per_reference_tensor_with_the_same_values(subset_size, monkeypatch):
    """A sweep's points share the reference tensors (nfebench.memo): its FID/KID terms are reused, bit for bit;
    a reference modified in place, an equal copy or NFEBENCH_NO_MEMO=1 computes them afresh."""
    a, b, r = features(300, 8, 1.1, 0.05), features(300, 8, 0.9, seed=2), features(450, 8, seed=1)
    F._REFERENCE_TERMS.clear()
    fresh = [(F.fid(x, r.clone()), F.kid(x, r.clone(), subset_size=subset_size)) for x in (a, b)]
    assert len(F._REFERENCE_TERMS) == 0  # the clones died: nothing kept for them
    assert [(F.fid(x, r), F.kid(x, r, subset_size=subset_size)) for x in (a, b)] == fresh
    assert sorted(key[1][0] for key in F._REFERENCE_TERMS) == ["gaussian", "kid_yy"]  # one of each, reused
    r[0, 0] += 1.0  # in place: the cached terms no longer hold
    assert F.fid(a, r) == F.fid(a, r.clone()) != fresh[0][0]
    monkeypatch.setenv("NFEBENCH_NO_MEMO", "1")
    F._REFERENCE_TERMS.clear()
    assert F.kid(a, r, subset_size=subset_size) == F.kid(a, r.clone(), subset_size=subset_size)
    assert not F._REFERENCE_TERMS


def test_sample_seeds_are_computed_once_and_handed_out_as_new_lists():
    from nfebench.run import sample_seeds

    s = sample_seeds(7, 5)
    assert s == [int(np.random.SeedSequence([7, i]).generate_state(1)[0]) for i in range(5)]
    s.append(0)
    assert sample_seeds(7, 5) == s[:5] and sample_seeds(7, 5) is not sample_seeds(7, 5)

def test_fid_infinity_removes_the_one_over_n_bias():
    """Two samples of the reference's own population: FID_N is bias alone (about d / N), FID_inf is near 0."""
    r = features(20000, 8, seed=1)
    a = features(2000, 8, seed=2)
    assert F.fid(a, r) > 3e-3
    assert abs(F.fid_infinity(a, r)) < 0.3 * F.fid(a, r)


def test_a_run_stores_the_features_its_metrics_came_from_and_its_per_image_bits(tmp_path, tiny_unet_dir):
    from omegaconf import OmegaConf

    from nfebench.metrics.fidelity import fidelity_from_features
    from nfebench.run import reference_for, validate
    from tests.test_cli import run_cli

    r = run_cli(f"model.path={tiny_unet_dir}", "sampler=ddim", "nfe=4", "num_samples=100", f"results_dir={tmp_path}",
                "metrics=nll", "metrics.nll_num_images=12", "metrics.fid_infinity=true", "metrics.prc=true",
                "storage.features=float32")
    assert r.returncode == 0, r.stderr[-2000:]
    (run_dir,) = (tmp_path / "runs").iterdir()
    row = json.loads((run_dir / "metrics.json").read_text())
    with np.load(run_dir / "features.npz") as z:
        assert z["fid"].shape == (100, 64) and z["isc"].shape == (100, 10) and z["fid"].dtype == np.float32
        feats = {k: torch.from_numpy(z[k]) for k in ("fid", "isc")}
    with np.load(run_dir / "samples.npz") as z:
        assert (z["seeds"] == np.load(run_dir / "features.npz")["seeds"]).all()
    p = validate(OmegaConf.load(run_dir / "config.yaml"))
    ref_feats, _ = reference_for(p, p.metrics["feature_extractor_weights_path"], progress=False)
    again = fidelity_from_features(feats, ref_feats, fid_infinity=True, prc=True)
    assert row["fid"] == pytest.approx(again["frechet_inception_distance"], rel=1e-12)
    assert row["kid_mean"] == pytest.approx(again["kernel_inception_distance_mean"], rel=1e-12)
    assert row["fid_infinity"] == pytest.approx(again["frechet_inception_distance_infinity"], rel=1e-12)
    assert 0 <= row["prc_precision"] <= 1 and 0 <= row["prc_recall"] <= 1
    bits = np.load(run_dir / "nll.npz")["per_image_bpd"]
    assert bits.shape == (12,) and bits.mean() == pytest.approx(row["nll_bpd"], rel=1e-12)
    assert "per_image_bpd" not in row["nll"]

"""python -m nfebench.compare: the comparison of two stored runs, and its one-line refusals."""

import json
from pathlib import Path

import numpy as np
import pytest

from nfebench import compare
from nfebench.run import sample_seeds

WEIGHTS = Path(__file__).resolve().parents[1] / "checkpoints/digits-cnn/digits_cnn.pt"


def fake_run(root, run_id, seed=0, n=200, shift=0.0, features=True, **row):
    """A run directory as nfebench writes it: metrics.json, features.npz (Gaussian features), nll.npz."""
    d = root / "runs" / run_id
    d.mkdir(parents=True)
    meta = {"run_id": run_id, "sampler": run_id, "nfe": 10, "num_samples": n, "seed": seed, "dataset": "digits",
            "feature_extractor": "digits-cnn", "reference": "digits/train/1500", **row}
    (d / "metrics.json").write_text(json.dumps(meta))
    g = np.random.default_rng(0)  # the same "noise" for every run of the same seed: paired rows
    z = np.random.default_rng(seed).standard_normal((n, 8))
    if features:
        np.savez(d / "features.npz", fid=(z + shift).astype(np.float32), isc=(3 * z[:, :5]).astype(np.float32),
                 seeds=np.array(sample_seeds(seed, n), dtype=np.uint32))
    np.savez(d / "nll.npz", per_image_bpd=1.0 + shift + 0.1 * g.standard_normal(50))
    return d


@pytest.fixture
def ref(monkeypatch):
    feats = {"fid": np.random.default_rng(9).standard_normal((500, 8)).astype(np.float32)}
    monkeypatch.setattr(compare, "reference_features", lambda run: feats)
    return feats


def test_compare_prints_both_values_the_difference_its_ci_and_p(tmp_path, ref, capsys):
    fake_run(tmp_path, "a")
    fake_run(tmp_path, "b", shift=0.3)
    assert compare.main(["a", str(tmp_path / "runs" / "b"), "--results", str(tmp_path), "--n-boot", "200"]) == 0
    out = capsys.readouterr().out
    assert "paired over 200 shared seeds" in out
    lines = {line.split()[0]: line for line in out.splitlines() if line[:3] in ("FID", "KID", "IS ", "NLL")}
    assert set(lines) == {"FID", "KID", "IS", "NLL"}
    assert lines["FID"].endswith(" significant") and "not significant" in lines["IS"]  # IS logits are the same
    res = compare.compare_runs(compare.find_run("a", tmp_path), compare.find_run("b", tmp_path), n_boot=200, ref=ref)
    fid = res[0]
    assert fid["metric"] == "fid" and fid["delta"] == pytest.approx(fid["a"] - fid["b"]) and fid["ci_high"] < 0
    assert res[-1]["metric"] == "nll" and res[-1]["delta"] == pytest.approx(-0.3)


def test_two_seeds_compare_only_unpaired(tmp_path, ref, capsys):
    fake_run(tmp_path, "a", seed=0)
    fake_run(tmp_path, "a1", seed=1)
    assert compare.main(["a", "a1", "--results", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "different seeds (seed 0 x 200 samples vs 1 x 200)" in err
    assert "--unpaired" in err
    assert compare.main(["a", "a1", "--results", str(tmp_path), "--unpaired", "--n-boot", "200"]) == 0
    out = capsys.readouterr().out
    assert "unpaired (200 and 200 samples)" in out
    fid = next(line for line in out.splitlines() if line.startswith("FID"))
    assert "not significant" in fid  # two draws of one population


@pytest.mark.parametrize("make_b, args, needle", [
    (dict(feature_extractor="inception-v3-compat"), [], "different protocols (feature_extractor 'digits-cnn' vs "
                                                        "'inception-v3-compat')"),
    (dict(features=False), [], "has no stored features"),
    ({}, ["--n-boot", "99"], "n_boot must be an integer >= 100, got 99"),
    ({}, ["--n-boot", "99", "--unpaired"], "n_boot must be an integer >= 100, got 99"),
])
def test_refusals_are_one_line(tmp_path, ref, capsys, make_b, args, needle):
    fake_run(tmp_path, "a")
    fake_run(tmp_path, "b", **make_b)
    assert compare.main(["a", "b", "--results", str(tmp_path), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("nfebench.compare: error: ") and needle in err
    if "features" in needle:
        assert "--rescore" in err


def test_rescore_writes_the_features_a_run_lacks(tmp_path):
    from nfebench.data import load_split
    from omegaconf import OmegaConf

    d = fake_run(tmp_path, "old", features=False, n=50)
    OmegaConf.save(OmegaConf.create({
        "model": {"kind": "gmm", "name": "x"}, "sampler": {"name": "ddim"}, "nfe": 10, "num_samples": 50,
        "batch_size": 50, "seed": 0, "device": "cpu", "results_dir": str(tmp_path),
        "dataset": {"name": "digits", "feature_extractor": "digits-cnn"},
        "metrics": {"fid": True, "isc": True, "kid": True, "feature_extractor": "digits-cnn",
                    "feature_extractor_weights_path": str(WEIGHTS)}}), d / "config.yaml")
    np.savez(d / "samples.npz", samples=load_split("digits", "test")[:50].numpy())
    assert compare.main(["--rescore", str(d)]) == 0
    with np.load(d / "features.npz") as z:
        assert z["fid"].shape == (50, 64) and (z["seeds"] == sample_seeds(0, 50)).all()

"""storage.* (how a run directory stores its files): validation, storage.logits=false end to end, the size line."""

import numpy as np
import pytest

from nfebench import compare
from nfebench.storage import StorageError, feature_arrays, options, size_line


@pytest.mark.parametrize("storage, needle", [
    ({"features": "float64"}, "storage.features='float64'; allowed: float16, float32"),
    ({"logits": "no"}, "storage.logits='no'; allowed: true, false"),
    ({"samples": 0}, "storage.samples=0; allowed: true, false"),
    ({"keep": ["fid"]}, "unknown storage option 'keep'; allowed: features, logits, samples"),
])
def test_bad_storage_options_are_one_line_errors_naming_the_value_and_what_is_allowed(storage, needle):
    with pytest.raises(StorageError) as e:
        options({"storage": storage})
    assert str(e.value) == needle
    assert options({}) == {"features": "float32", "logits": True, "samples": True}


def test_feature_arrays_leave_the_logits_out_with_logits_false():
    import torch

    feats = {"fid": torch.ones(3, 4), "isc": torch.zeros(3, 2)}
    assert sorted(feature_arrays({}, feats)) == ["fid", "isc"]
    kept = feature_arrays({"storage": {"logits": False, "features": "float16"}}, feats)
    assert list(kept) == ["fid"] and kept["fid"].dtype == np.float16


def test_a_run_without_logits_stores_none_and_compare_and_report_still_work(tmp_path, tiny_unet_dir, capsys,
                                                                           monkeypatch):
    """Two tiny runs with storage.logits=false: features.npz holds the FID features and seeds only; compare tests FID
    and KID and says in one line that IS was not compared; the report's paired FID test and size line work."""
    from nfebench import report
    from nfebench.run import run
    from tests.test_shards import point

    rows = [run(point(tiny_unet_dir, tmp_path, f"sampler={s}", "storage.logits=false", "storage.features=float16"),
                progress=False) for s in ("ddim", "dpm")]
    for row in rows:
        with np.load(tmp_path / "runs" / row["run_id"] / "features.npz") as z:
            assert sorted(z.files) == ["fid", "seeds"] and z["fid"].dtype == np.float16
        assert row["is_mean"] > 0  # the row's IS comes from the logits in memory
    assert compare.main([r["run_id"] for r in rows] + ["--results", str(tmp_path), "--n-boot", "100"]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines() if line[:3] in ("FID", "KID", "IS ")}
    assert set(lines) == {"FID", "KID", "IS"} and "[" in lines["FID"] and "[" in lines["KID"]
    assert lines["IS"].startswith("IS              not compared: run ") and "storage.logits=false" in lines["IS"]
    diffs = report.fid_differences(report.load_leaderboard(tmp_path / "leaderboard.csv"), tmp_path, n_boot=100)
    assert len(diffs) == 2 and np.isfinite(diffs[1]["delta"])  # the report's paired FID test
    line = size_line(tmp_path)
    assert line.startswith("results_dir on disk: ") and "(2 run directories: " in line
    monkeypatch.setattr(report, "model_section", lambda *args: [])  # its tables and figures: tests/test_report.py
    text = report.build_report(tmp_path)  # the report states the size of results_dir's runs (their kept files)
    assert "results_dir: 2 runs; their kept files take " in text and "samples " in text


def test_is_without_logits_is_one_line_saying_why(tmp_path, monkeypatch):
    """One run stored no logits (storage.logits=false: its row has an IS), another's extractor gives none."""
    from tests.test_compare import fake_run

    monkeypatch.setattr(compare, "reference_features",
                        lambda run: {"fid": np.random.default_rng(9).standard_normal((300, 8)).astype(np.float32)})
    fake_run(tmp_path, "a", is_mean=5.0)
    for name, row in (("b", {"is_mean": 4.0}), ("c", {})):
        d = fake_run(tmp_path, name, **row)
        with np.load(d / "features.npz") as z:
            np.savez(d / "features.npz", fid=z["fid"], seeds=z["seeds"])
    res = compare.compare_runs(*(compare.find_run(r, tmp_path) for r in "ab"), n_boot=100)
    assert [r["metric"] for r in res] == ["fid", "kid", "is", "nll"]
    assert res[2] == {"metric": "is", "unavailable": "run b stored no IS logits (storage.logits=false); the rows' "
                                                     "own IS values stand, without a test"}
    res = compare.compare_runs(*(compare.find_run(r, tmp_path) for r in "cb"), n_boot=100, metrics=("is",))
    assert res[0]["unavailable"].startswith("run c stored no IS logits (its extractor gives none); run b stored no "
                                            "IS logits (storage.logits=false); ")
    assert compare.table(res[:1]).splitlines()[1].startswith("IS              not compared: run c")

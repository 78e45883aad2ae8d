"""The report: name mapping, rank agreement, report.md + figures on synthetic leaderboards, and the CLI."""

import json
import os
import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from nfebench import report  # noqa: E402
from nfebench.leaderboard import COLUMNS  # noqa: E402
from nfebench.report_names import NAME_RULES, NLL_RULES, RANK_REFERENCES, find_rule, published_names  # noqa: E402

SRC = Path(report.__file__).resolve().parents[1]
OPTIONS = {  # resolved options, as run.py writes them
    "ddim": {"eta": 0.0, "spacing": "uniform", "clip": False, "timesteps": None},
    "dpm": {"order": 3, "method": "singlestep", "spacing": "logsnr", "lower_order_final": True, "timesteps": None},
    "unipc": {"order": 3, "variant": "bh1", "spacing": "logsnr", "lower_order_final": True, "timesteps": None},
}
PROTO_A = {"feature_extractor": "digits-cnn", "reference": "digits/train/1500", "num_samples": 300}
PROTO_B = {"feature_extractor": "digits-cnn", "reference": "digits/train/1500", "num_samples": 1000}


# ------------------------------------------------------------------------------------------ synthetic leaderboards


def make_row(sampler, nfe, seed=0, fid=None, model="digits_ddpm", proto=PROTO_A, options=None, **extra):
    row = {c: None for c in COLUMNS}
    run_id = f"{model}-{sampler}-nfe{nfe}-s{seed}-{proto['num_samples']}-{extra.get('nll_variance', '')}"
    row.update(run_id=run_id, timestamp="2026-11-22T07:00:00Z", model=model, dataset="digits", sampler=sampler,
               sampler_options=json.dumps(options if options is not None else OPTIONS.get(sampler, {}),
                                          sort_keys=True),
               nfe=nfe, nfe_used=nfe, seed=seed, fid=fid, is_mean=None if fid is None else 10 - fid / 10,
               kid_mean=None if fid is None else fid / 100, device="cpu", nfebench_version="0.1.0", **proto)
    row.update(extra)
    return row


def write_leaderboard(results: Path, rows: list[dict], samples_for=None) -> Path:
    """leaderboard.csv from rows (extra keys become extra columns at the end), and run dirs with samples.npz for
    the run_ids in samples_for (all, if None)."""
    df = pd.DataFrame(rows)
    results.mkdir(parents=True, exist_ok=True)
    df.to_csv(results / "leaderboard.csv", index=False)
    rng = np.random.default_rng(0)
    for run_id in df["run_id"] if samples_for is None else samples_for:
        d = results / "runs" / run_id
        d.mkdir(parents=True, exist_ok=True)
        np.savez(d / "samples.npz", samples=rng.integers(0, 256, size=(16, 1, 8, 8), dtype=np.uint8))
    return results


FIDS = {"ddim": {5: 30.0, 10: 12.0, 20: 6.0}, "dpm": {5: 25.0, 10: 5.0, 20: 3.0}, "unipc": {5: 20.0, 10: 4.0, 20: 2.5}}


def sweep_rows():
    """3 samplers x 3 NFE x 3 seeds (FID = base + {-2, 0, +2}) under protocol A, plus protocol-B, metric-less and
    NLL rows."""
    rows = [make_row(s, n, seed, fid=FIDS[s][n] + 2.0 * (seed - 1)) for s in FIDS for n in (5, 10, 20)
            for seed in (0, 1, 2)]
    rows.append(make_row("ddim", 10, 0, fid=99.0, proto=PROTO_B))  # another sample count: must be a separate table
    rows.append(make_row("ddim", 40, 0, proto={"feature_extractor": None, "reference": None, "num_samples": 300}))
    for k, bpd in ((10, 5.0), (100, 3.5)):
        for variance in ("small", "analytic"):
            rows.append(make_row("ddpm", k, 0, options={"variance": "small"}, nll_bpd=bpd + (variance == "small"),
                                 nll_method="vlb", nll_variance=variance, nll_nfe=k, nll_num_images=200,
                                 proto={"feature_extractor": None, "reference": None, "num_samples": 0}))
    return rows


@pytest.fixture(scope="module")
def sweep_report(tmp_path_factory):
    results = tmp_path_factory.mktemp("sweep")
    rows = sweep_rows()
    missing = rows[0]["run_id"]
    write_leaderboard(results, rows, samples_for=[r["run_id"] for r in rows if r["run_id"] != missing])
    path = report.write_report(results)
    return results, path.read_text(), missing


# ------------------------------------------------------------------------------------------ name mapping


def test_name_mapping_picks_the_variant_by_options():
    assert "DDIM" in published_names("ddim", {"eta": 0.0}, "survey_table6")
    assert published_names("ddim", {"eta": 1.0}, "survey_table6") == ()  # eta=1 is not the survey's DDIM
    assert published_names("dpm", OPTIONS["dpm"], "dpms-txt") == ("DPM-Solver-fast (uniform logSNR, order mix 3/2/1)",)
    assert published_names("dpm", {**OPTIONS["dpm"], "method": "multistep"}, "dpmsv3-t12") == (
        "DPM-Solver (multistep, noise pred.)",)
    assert published_names("dpmpp", {"variant": "3M"}, "diffsolvers") == ("DPM-Solver++(3M)",)
    assert published_names("dpmpp", {"variant": "2M"}) == ()  # no 2M row published: deliberately unmatched
    assert published_names("deis", {"order": 3, "basis": "tab"}, "deis-img") == ("DEIS tAB2",)  # 3 points = tAB2
    assert published_names("deis", {"order": 3, "basis": "tab"}, "survey_table6") == ("gDDIM",)  # isotropic VP
    assert "UniPC-3 (bh2)" in published_names("unipc", {"order": 3, "variant": "bh2"})
    assert "UniPC-3 (bh2)" not in published_names("unipc", {"order": 3, "variant": "bh1"})
    assert "EDM" in published_names("heun", {}, "survey_table6")
    assert published_names("pndm", {}, "gdim-sec") == ("F-PNDM",)
    assert "Analytic DPM" in published_names("analytic_ddpm", {})
    assert published_names("ddpm", {"variance": "large"}, "survey_table5") == ("DDPM",)
    assert published_names("nosuchsampler", {}) == ()
    assert find_rule("ddim", {}) is None  # a missing option does not match a rule that needs it


def test_every_mapped_name_is_in_the_published_csv():
    published = report.load_published()
    pairs = {(s, n) for r in NAME_RULES for s, names in r.published.items() for n in names}
    pairs |= {(s, n) for v in NLL_RULES.values() for s, names in v.items() for n in names}
    have = set(zip(published["source"], published["sampler"]))
    assert pairs - have == set()
    for ref in RANK_REFERENCES:
        assert len(ref.rows(published)) > 0, ref.key
    assert {"source", "dataset", "model_checkpoint", "sampler", "nfe", "fid", "is_mean", "nll_bpd"} <= set(published)


# ------------------------------------------------------------------------------------------ Kendall tau


def test_kendall_tau_on_constructed_orderings():
    ours = {"a": 1.0, "b": 2.0, "c": 3.0, "d": 4.0}
    assert report.kendall(ours, {"a": 10.0, "b": 20.0, "c": 30.0, "d": 40.0})[0] == pytest.approx(1.0)
    assert report.kendall(ours, {"a": 4.0, "b": 3.0, "c": 2.0, "d": 1.0})[0] == pytest.approx(-1.0)
    tau, p, n = report.kendall(ours, {"a": 1.0, "b": 3.0, "c": 2.0, "d": 4.0, "e": 0.0})  # 1 of 6 pairs swapped
    assert (tau, n) == (pytest.approx(4 / 6), 4) and 0 < p <= 1
    tau, _, n = report.kendall(ours, {"a": 1.0, "b": 2.0, "z": 3.0})
    assert n == 2 and np.isnan(tau)
    assert report.order_text({"x": 3.0, "y": 1.0, "z": 2.0}) == "y < z < x"
    # gap z - y = 1 < hypot(1, 1): seed noise; x has one seed and borrows the median std 0.5: 1.5 > hypot(1, 0.5)
    assert report.order_text({"x": 3.5, "y": 1.0, "z": 2.0}, {"y": 1.0, "z": 1.0, "x": float("nan")}) == "y ≈ z < x"
    assert report.order_text({"x": 2.5, "y": 1.0, "z": 2.0}, {"y": 0.4, "z": 0.6, "x": float("nan")}) == "y < z ≈ x"
    assert report.order_text({"x": 2.5, "y": 1.0, "z": 2.0}, {"y": np.nan, "z": np.nan, "x": np.nan}) == "y < z < x"
    assert report.order_text({"x": 3.0, "y": 1.0, "z": 2.0}, {"y": 0.1, "z": 0.1, "x": 0.1}) == "y < z < x"


def test_rank_agreement_against_one_published_table(tmp_path):
    # dpmsv3 on score_sde ckpt_8 at NFE 10: UniPC 3.93 < DPM-Solver singlestep 4.67 < DDIM 20.11
    rows = [make_row("unipc", 10, fid=1.0), make_row("dpm", 10, fid=2.0), make_row("ddim", 10, fid=3.0)]
    df = report.load_leaderboard(write_leaderboard(tmp_path, rows, samples_for=[]) / "leaderboard.csv")
    results = dict((ref.key, table) for ref, table in report.rank_agreement(df, report.load_published()))
    nfe, n, our_order, their_order, tau, _ = results["dpmsv3-vp"][0]
    assert (nfe, n, tau) == ("10", "3", "+1.00")
    assert our_order == their_order == "unipc < dpm < ddim"


# ------------------------------------------------------------------------------------------ the report


def section(text: str, start: str, end: str) -> str:
    i = text.index(start)
    j = text.find(end, i + len(start))
    return text[i: j if j >= 0 else None]


def test_report_tables_seeds_and_protocol_split(sweep_report):
    _, text, _ = sweep_report
    assert "2 different protocols" in text
    proto_a = section(text, "### Protocol 1: feature extractor `digits-cnn`, reference set `digits/train/1500`, "
                            "300 samples", "### Protocol 2")
    proto_b = section(text, "### Protocol 2: feature extractor `digits-cnn`, reference set `digits/train/1500`, "
                            "1000 samples", "### NLL")
    assert text.index("1 run(s) have no metric") < text.index("### Protocol 1")
    for name in ("**FID**", "**IS**", "**KID**"):
        assert name in proto_a
    assert "| Sampler | NFE 5 | NFE 10 | NFE 20 |" in proto_a
    assert "| ddim | 30.00 ± 2.00 (n=3) | 12.00 ± 2.00 (n=3) | 6.00 ± 2.00 (n=3) |" in proto_a
    assert "99.00" not in proto_a and "| ddim | 99.00 |" in proto_b  # never mixed
    assert "mean ± std over seeds" in proto_a and "mean ± std" not in proto_b.split("#### Published")[0]
    assert "NFE 40" not in text  # the metric-less run is in no table...
    assert "1 run(s) have no metric" in text  # ...and is said so
    assert "| ddim | 7.00 ± 0.20 (n=3) |" in section(proto_a, "**IS**", "**KID**")  # std with the mean's decimals


def test_report_published_numbers_and_rank_agreement(sweep_report):
    _, text, _ = sweep_report
    proto_a = section(text, "### Protocol 1", "### Protocol 2")
    assert "**Different models and datasets**: ours is `digits_ddpm` on `digits`, scored with `digits-cnn` features " \
           "on 300 samples" in proto_a
    assert "DPM-Solver-fast (uniform logSNR, order mix 3/2/1) | `dpms-txt`" in proto_a
    assert "| **unipc** | **ours** |" in proto_a and "**FID**, ours (bold) and published" in proto_a
    assert "Compared with **DPM-Solver-v3" in proto_a
    assert "| 10 | 3 | unipc ≈ dpm < ddim | unipc < dpm < ddim | +1.00 |" in proto_a  # 4 vs 5, std 2: noise


def test_report_nll_and_figures(sweep_report):
    results, text, missing = sweep_report
    nll = section(text, "### NLL", "### Samples")
    assert "vlb" in nll and "200 test images" in nll and "| Sampler / method | K 10 | K 100 |" in nll
    assert "| ddpm vlb/analytic | 5.00 | 3.50 |" in nll and "| ddpm vlb/small | 6.00 | 4.50 |" in nll
    assert "Analytic DPM" in nll  # the published counterpart of the analytic variance
    figures = sorted(p.name for p in (results / "figures").iterdir())
    assert any(f.startswith("fid_vs_nfe_") for f in figures) and sum(f.startswith("fid_vs_nfe_") for f in figures) == 2
    assert any(f.startswith("nll_vs_k_") for f in figures) and "grids_digits-ddpm-digits.png" in figures
    for f in figures:
        data = (results / "figures" / f).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
        assert f"figures/{f}" in text
    assert f"`{missing}`" in text  # the missing run dir is named, not fatal


def test_published_is_beside_ours_at_nfe_1000(tmp_path):
    rows = [make_row("ddpm", 1000, fid=2.0, options={"variance": "large"})]
    df = report.load_leaderboard(write_leaderboard(tmp_path, rows, samples_for=[]) / "leaderboard.csv")
    table = report.published_matches(df, report.load_published(), "is_mean")
    assert "| **ddpm** | **ours** |  | digits; digits_ddpm, digits-cnn features | **9.80** |" in table
    assert "| | DDPM | `survey_table5` | CIFAR-10; n/s | 9.46 |" in table.replace("|  |", "| |")


def test_report_for_one_row_nans_and_extra_columns(tmp_path):
    row = make_row("ddim", 10, fid=float("nan"), gpu_name="H100")  # an extra column, appended by someone else
    row["is_mean"] = 5.0
    write_leaderboard(tmp_path, [row])
    text = report.write_report(tmp_path).read_text()
    assert "| ddim | 5.00 |" in text and "**FID**: not measured" in text
    assert "No published table has at least three" in text
    assert (tmp_path / "figures" / "grids_digits-ddpm-digits.png").stat().st_size > 0


def test_report_without_metrics_and_empty(tmp_path):
    row = make_row("dpm", 10, proto={"feature_extractor": None, "reference": None, "num_samples": 50})
    write_leaderboard(tmp_path / "none", [row], samples_for=[])
    text = report.write_report(tmp_path / "none").read_text()
    assert "1 run(s) have no metric" in text and "No sample grid" in text
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "leaderboard.csv").write_text(",".join(COLUMNS) + "\n")
    assert "no runs yet" in report.write_report(tmp_path / "empty").read_text()


# ------------------------------------------------------------------------------------------ CLI


def test_cli_writes_the_report(tmp_path, capsys):
    write_leaderboard(tmp_path, [make_row("ddim", 10, fid=3.0)])
    assert report.main(["--results", str(tmp_path)]) == 0
    assert (tmp_path / "report.md").read_text().startswith("# nfebench report")
    assert "results_dir on disk: " in capsys.readouterr().out  # the size is printed, not written into report.md


def test_report_does_not_depend_on_other_files_on_disk(tmp_path):
    """report.md is a function of the leaderboard and the runs' kept files: a fresh clone (no features, no caches,
    no earlier report) and a worktree full of them write the same bytes (issue 27)."""
    rows = [make_row("ddim", 10, fid=3.0), make_row("dpm", 10, fid=2.0)]
    write_leaderboard(tmp_path, rows, samples_for=[])
    first = report.write_report(tmp_path).read_text()
    (tmp_path / "runs" / rows[0]["run_id"]).mkdir(parents=True)
    (tmp_path / "runs" / rows[0]["run_id"] / "grid.png").write_bytes(b"x" * 123_456)
    (tmp_path / ".cache").mkdir()
    (tmp_path / ".cache" / "reference.npz").write_bytes(b"y" * 654_321)
    assert report.write_report(tmp_path).read_text() == first
    assert "on disk" not in first


def test_cli_rejects_a_file_that_is_not_a_leaderboard(tmp_path, capsys):
    (tmp_path / "leaderboard.csv").write_text("hello,x\n1,2\n")
    assert report.main(["--results", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == (f"nfebench.report: error: {tmp_path / 'leaderboard.csv'} is not an "
                                               "nfebench leaderboard: no column 'run_id'")
    assert not (tmp_path / "report.md").exists()


def test_cli_missing_leaderboard_is_one_line_exit_2(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    proc = subprocess.run([sys.executable, "-m", "nfebench.report", "--results", str(tmp_path / "nothing")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nfebench.report: error: no leaderboard at")


def test_rows_differing_only_in_nll_settings_count_once_in_quality_tables():
    from nfebench.report import protocol_groups

    base = {"sampler": "ddpm", "sampler_options": "{}", "nfe": 10, "seed": 0, "num_samples": 200, "fid": 1.5,
            "is_mean": 5.0, "kid_mean": 0.1, "feature_extractor": "digits-cnn", "reference": "digits/train/1500"}
    rows = pd.DataFrame([{**base, "nll_variance": v, "run_id": v} for v in ("small", "large", "analytic")]
                        + [{**base, "seed": 1, "fid": 2.5, "nll_variance": "small", "run_id": "s1"}])
    (_, g), = list(protocol_groups(rows))
    assert len(g) == 2 and sorted(g.seed) == [0, 1]


# ------------------------------------------------------------------------------------------ significance


def test_report_marks_ties_with_the_best_and_degrades_without_features(tmp_path, monkeypatch):
    """a is best; b differs from it by far less than the CI (tied, bold); c is clearly worse; d has no features."""
    from nfebench import compare
    from nfebench.metrics.from_features import fid
    from tests.test_compare import fake_run

    ref = {"fid": np.random.default_rng(9).standard_normal((2000, 8)).astype(np.float32)}
    monkeypatch.setattr(compare, "reference_features", lambda run: ref)
    rows = []
    for name, shift in (("ddim", 0.0), ("dpm", 0.002), ("unipc", 0.4), ("deis", 0.0)):
        d = fake_run(tmp_path, f"{name}-10", n=400, shift=shift, features=name != "deis")
        value = fid(np.load(d / "features.npz")["fid"], ref["fid"]) if name != "deis" else 0.5
        rows.append({**make_row(name, 10, fid=value), "run_id": f"{name}-10"})
    write_leaderboard(tmp_path, rows, samples_for=[])
    text = report.write_report(tmp_path).read_text()
    section = text[text.index("#### Is the difference real?"):text.index("#### Published numbers")]
    lines = {line.split(" | ")[0].strip("|* "): line for line in section.splitlines() if line.startswith("| ")}
    assert "| **ddim** |" in lines["ddim"] and "| **dpm** |" in lines["dpm"]  # the best and the one tied with it
    assert ("best" in lines["ddim"]) != ("best" in lines["dpm"])
    assert lines["unipc"].startswith("| unipc |") and float(lines["unipc"].split(" | ")[-1].strip(" |")) < 0.05
    assert "| deis | 0.500 | – | no stored features | – |" in lines["deis"]
    assert "NFE 10: tied with the best: ddim, dpm." in section or "NFE 10: tied with the best: dpm, ddim." in section


def test_holm_adjustment():
    assert report.holm([0.01, 0.04, 0.03, 0.5]) == pytest.approx([0.04, 0.09, 0.09, 0.5])


def test_report_guidance_sweep_plots_fid_and_accuracy_against_w(tmp_path):
    """Rows that differ only in guidance_scale are variants (never averaged as seeds); the report gains
    FID-vs-guidance and accuracy-vs-guidance per NFE."""
    rows = [make_row(s, n, fid=f + w, guidance_scale=w, class_accuracy=0.5 + w / 10, network_passes=2 * n,
                     run_id=f"{s}-{n}-{w}")
            for s, f in (("ddim", 5.0), ("dpm", 3.0)) for n in (10, 20) for w in (0.0, 1.0, 4.0)]
    res = write_leaderboard(tmp_path / "res", rows, samples_for=[])
    text = report.build_report(res)
    assert "| ddim (w=4) |" in text and "(n=" not in section(text, "**FID**", "![")  # 12 runs, no seeds
    guided = section(text, "### Classifier-free guidance", "### Samples")
    assert "| Sampler | w = 0 | w = 1 | w = 4 |" in guided and "| dpm | 3.00 | 4.00 | 7.00 |" in guided  # 3 + w
    for m in ("fid", "class_accuracy"):
        for n in (10, 20):
            assert (res / "figures" / f"{m}_vs_guidance_digits-ddpm-digits_nfe{n}.png").stat().st_size > 1000

"""report.html (self-contained, sortable, filterable; checked in headless Chromium when it is installed), report.tex
(booktabs; compiled with pdflatex when installed), the FID-vs-NFE small multiples, and re-scoring committed runs."""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import yaml  # noqa: E402

from nfebench import compare, report  # noqa: E402
from nfebench.run import sample_seeds  # noqa: E402
from tests.test_report import make_row, write_leaderboard  # noqa: E402

SHIFTS = {"ddim": 0.6, "dpm": 0.0, "unipc": 0.01}  # dpm best, unipc tied with it, ddim clearly worse
NFES = (10, 20)


def synthetic_results(root: Path, monkeypatch) -> Path:
    """3 samplers x 2 NFE, one seed: leaderboard, samples.npz and features.npz (Gaussian, paired by seed) per run;
    the reference features are fixed by a monkeypatch."""
    ref = {"fid": np.random.default_rng(9).standard_normal((2000, 8)).astype(np.float32)}
    monkeypatch.setattr(compare, "reference_features", lambda run: ref)
    from nfebench.metrics.from_features import fid

    rows = []
    z = np.random.default_rng(0).standard_normal((300, 8))
    for s, shift in SHIFTS.items():
        for n in NFES:
            run_id = f"digits_ddpm-{s}-nfe{n}-s0"
            d = root / "runs" / run_id
            d.mkdir(parents=True)
            feats = (z + shift * (10 / n)).astype(np.float32)
            np.savez(d / "features.npz", fid=feats, isc=(3 * z[:, :5]).astype(np.float32),
                     seeds=np.array(sample_seeds(0, 300), dtype=np.uint32))
            row = {**make_row(s, n, fid=fid(feats, ref["fid"])), "run_id": run_id}
            (d / "metrics.json").write_text(json.dumps({**row, "num_samples": 300}))
            rows.append(row)
    write_leaderboard(root, rows)  # writes samples.npz (16 random uint8 8x8) for every run
    return root


@pytest.fixture
def exported(tmp_path, monkeypatch):
    results = synthetic_results(tmp_path / "results", monkeypatch)
    assert report.main(["--results", str(results), "--latex"]) == 0
    return results


def test_html_is_one_self_contained_file_with_the_whole_leaderboard(exported):
    page = (exported / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    # nothing is fetched: no external scripts, styles or images, every image inline
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", page) and "<link" not in page
    images = re.findall(r'<img [^>]*src="([^"]*)"', page)
    assert images and all(src.startswith("data:image/png;base64,") for src in images)
    # the leaderboard: one row per run, with the attributes the filters read
    body = page[page.index('<table id="leaderboard">'):]
    body = body[: body.index("</table>")]
    assert body.count("<tr data-model=") == len(SHIFTS) * len(NFES)
    assert body.count('data-sampler="unipc"') == len(NFES) and 'data-metrics="fid is_mean kid_mean"' in body
    # same-seed grids: one card per run, side by side per NFE; the FID figure and the significance verdict
    assert page.count('class="card"') == len(SHIFTS) * len(NFES) and "<h4>NFE 10, seed 0</h4>" in page
    assert "FID vs NFE" in page and "<b>dpm</b>" in page and "<b>unipc</b>" in page  # best and tied in bold


def test_latex_tables_mark_best_and_ties_and_name_the_protocol(exported):
    tex = (exported / "report.tex").read_text()
    assert r"\usepackage{booktabs}" in tex and tex.count(r"\toprule") == 1 and r"\bottomrule" in tex
    assert "% nfebench: model digits\\_ddpm" not in tex  # comments stay plain text
    assert "% nfebench: model digits_ddpm, dataset digits; FID in digits-cnn features against digits/train/1500; " \
           "300 samples per run" in tex
    rows = {line.split(" & ")[0]: line for line in tex.splitlines() if " & " in line and "NFE" not in line}
    assert set(rows) == set(SHIFTS)
    assert rows["dpm"].count(r"\textbf") == 2 and rows["unipc"].count(r"\textbf") == 2  # best, tied
    assert r"\textbf" not in rows["ddim"]


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex is not installed")
def test_latex_compiles_with_pdflatex(exported, tmp_path):
    shutil.copy(exported / "report.tex", tmp_path / "report.tex")
    proc = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "report.tex"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert (tmp_path / "report.pdf").read_bytes()[:5] == b"%PDF-"


def test_markdown_drops_comparisons_of_one_sampler(tmp_path, monkeypatch):
    results = synthetic_results(tmp_path / "r", monkeypatch)
    write_leaderboard(results, [make_row("ddim", 10, fid=1.0), make_row("ddim", 20, fid=0.5),
                                make_row("dpm", 20, fid=0.4)], samples_for=[])
    text = report.build_report(results)
    assert "One sampler only at NFE 10: nothing to compare." in text
    assert "NFE 10: lowest FID" not in text and "NFE 20: " in text
    assert text.count("Paired bootstrap over the samples' shared seeds") == 0  # the method is said once, on top
    assert text.count("paired bootstrap over the samples' shared seeds") == 1


def test_readable_ticks_never_overprint():
    ticks = report.readable_ticks([10, 20, 50, 53, 55, 162, 428], priority=[10, 20, 50])
    assert ticks == [10, 20, 50, 162, 428]  # the grid first; 53 and 55 would overprint 50
    ticks = report.readable_ticks(np.geomspace(5, 1000, 40))
    assert all(b / a >= 1.25 for a, b in zip(ticks, ticks[1:])) and ticks[0] == 5


def test_every_survey_sampler_has_a_named_family_and_panels_get_distinct_colours():
    cfg = yaml.safe_load((Path(report.__file__).resolve().parents[2] / "conf/experiment/survey_cifar10.yaml")
                         .read_text())
    samplers = cfg["hydra"]["sweeper"]["params"]["sampler"].split(",") + ["rk45", "ggf"]
    assert [s for s in samplers if report.family(s) == "Other"] == []
    largest = max(sum(report.family(s) == name for s in samplers) for name, _ in report.FAMILIES)
    colours = [c for c, _ in report._line_styles(largest + 2)]  # a panel's variants (+ spacing/order variants)
    assert len(set(colours)) == len(colours)


def test_fid_points_bars_are_the_paired_ci_around_each_point(tmp_path, monkeypatch):
    results = synthetic_results(tmp_path / "r", monkeypatch)
    df = report.load_leaderboard(results / "leaderboard.csv")
    pts = report.fid_points(df, results)
    assert len(pts) == len(SHIFTS) * len(NFES)
    tested = pts[np.isfinite(pts["lo"])]
    assert len(tested) == len(NFES) * (len(SHIFTS) - 1)  # the best at each NFE has no bar
    assert ((tested["lo"] <= tested["fid"]) & (tested["fid"] <= tested["hi"])).all()
    best = pts.groupby("nfe")["fid"].min()
    for nfe in NFES:  # tied <=> the bar reaches the best's FID; ddim (far off) is never tied
        diffs = report.fid_differences(df[df["nfe"] == nfe], results)
        for d in diffs[1:]:
            p = tested[(tested["nfe"] == nfe) & (tested["variant"] == d["variant"])].iloc[0]
            assert (p["lo"] <= best[nfe] + 1e-12) == d["tied"] and (d["variant"] != "ddim" or not d["tied"])


def test_report_rescores_runs_that_keep_only_their_samples(tmp_path, monkeypatch):
    """Committed runs keep samples.npz, config.yaml and metrics.json: the report recomputes features.npz."""
    results = synthetic_results(tmp_path / "r", monkeypatch)
    moved = {}
    for d in (results / "runs").iterdir():
        moved[d.name] = (d / "features.npz").read_bytes()
        (d / "features.npz").unlink()
    calls = []

    def fake_rescore(run):
        calls.append(run.run_id)
        (run.dir / "features.npz").write_bytes(moved[run.run_id])

    monkeypatch.setattr(compare, "rescore", fake_rescore)
    text = report.build_report(results)
    assert sorted(calls) == sorted(moved) and "no stored features" not in text


def test_committed_run_config_resolves_in_any_clone(tmp_path):
    """A committed config.yaml names checkpoints as ${nfebench_root:}/...; Run.point resolves them here and takes
    results_dir from where the run directory is."""
    from nfebench.paths import ROOT

    d = tmp_path / "res" / "runs" / "r1"
    d.mkdir(parents=True)
    cfg = {"model": {"kind": "gmm", "name": "gmm_digits", "path": "${nfebench_root:}/checkpoints/x"},
           "sampler": {"name": "ddim"}, "dataset": {"name": "digits"}, "metrics": {}, "nfe": 10, "num_samples": 4,
           "batch_size": 4, "seed": 0, "device": "cpu", "results_dir": "/elsewhere"}
    (d / "config.yaml").write_text(yaml.safe_dump(cfg))
    (d / "metrics.json").write_text("{}")
    p = compare.find_run(str(d), tmp_path).point()
    assert p.model["path"] == f"{ROOT}/checkpoints/x" and p.results_dir == tmp_path / "res"


# ------------------------------------------------------------------------------------------ a real browser


def _browser(height: int = 1000):
    from tests.cdp import Browser, find_chromium

    exe = find_chromium()
    if exe is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return Browser(exe, height=height)


@pytest.mark.slow
def test_report_html_in_headless_chromium(tmp_path, monkeypatch):
    """No console error, every image loads, a click on a header sorts the table, the sampler filter hides the other
    rows. NFEBENCH_REPORT_HTML=path checks that report instead of a synthetic one; NFEBENCH_SCREENSHOT=path.png
    saves a screenshot of the page as it opens (`make report-browser` does both for results/report.html)."""
    page = os.environ.get("NFEBENCH_REPORT_HTML")
    if page is None:
        results = synthetic_results(tmp_path / "results", monkeypatch)
        report.write_report(results)
        page = str(results / "report.html")
    browser = _browser(height=1500 if os.environ.get("NFEBENCH_SCREENSHOT") else 1000)
    try:
        browser.open(Path(page).resolve().as_uri())
        assert browser.eval("document.readyState") == "complete"
        n_images = browser.eval("document.images.length")
        assert n_images > 0
        assert browser.eval("Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).length") == 0
        if shot := os.environ.get("NFEBENCH_SCREENSHOT"):
            browser.screenshot(shot)
        total = browser.eval("document.querySelectorAll('#leaderboard tbody tr').length")
        fid_col = browser.eval("Array.from(document.querySelectorAll('#leaderboard th')).findIndex(t => "
                               "t.textContent === 'FID')")
        values = ("Array.from(document.querySelectorAll('#leaderboard tbody tr')).map(r => r.cells[%d]"
                  ".getAttribute('data-v')).filter(v => v !== '').map(Number)" % fid_col)
        x, y = browser.eval("(() => { const h = document.querySelectorAll('#leaderboard th')[%d]; "
                            "h.scrollIntoView(); const r = h.getBoundingClientRect(); "
                            "return [r.x + r.width / 2, r.y + r.height / 2]; })()" % fid_col)
        browser.click(x, y)  # a real mouse click on the FID header: ascending
        fids = browser.eval(values)
        assert len(fids) > 1 and fids == sorted(fids)
        browser.click(x, y)  # again: descending
        assert browser.eval(values) == sorted(fids, reverse=True)
        sampler = browser.eval("document.querySelector('#leaderboard tbody tr').getAttribute('data-sampler')")
        browser.eval("(() => { const s = document.getElementById('f-sampler'); s.value = %s; "
                     "s.dispatchEvent(new Event('change')); })()" % json.dumps(sampler))
        shown = browser.eval("Array.from(document.querySelectorAll('#leaderboard tbody tr'))"
                             ".filter(r => r.offsetParent !== null).map(r => r.getAttribute('data-sampler'))")
        assert shown and set(shown) == {sampler} and len(shown) < total
        assert browser.errors() == []
    finally:
        browser.close()

"""`python -m nfebench.compare RUN_A RUN_B`: is the difference between two runs real?

RUN_A, RUN_B: run ids (looked up under --results DIR/runs/) or run directories. Prints both runs' FID, KID and IS
(and NLL when both are NLL runs, ODE error when both stored it: metrics.ode_error; CLIP score and CMMD when both
stored them in clip.npz: text-to-image runs), their difference A - B with its confidence interval and p-value from
nfebench.stats (paired over the samples' shared seeds), and refuses, in one line, runs scored under different
protocols, runs sampled from different seeds (unless --unpaired), and runs without stored features (saying how to
re-score them: `--rescore RUN` recomputes features.npz from the run's samples.npz). A run stored without its IS
logits (storage.logits=false) is compared on FID and KID; its IS line says, in one line, that it was not compared.

`python -m nfebench.compare --student MODEL [--sampler S]`: every row of the few-step model MODEL (its `teacher`
column names the teacher) beside every row on its teacher at the same NFE, seed and sample count in the same leaderboard: the paired
FID difference student - solver with its CI and p-value (Holm-adjusted within each NFE), best solver first at each NFE.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PROTOCOL_KEYS = ("dataset", "feature_extractor", "reference", "prompts", "clip_model")
METRICS = (("fid", "FID", "paired_fid"), ("kid", "KID", "paired_kid"), ("is", "IS", "paired_is"))


class CompareError(ValueError):
    """Two runs that cannot be compared as asked: the message says why and what to do."""


@dataclass
class Run:
    run_id: str
    dir: Path
    row: dict  # metrics.json: the leaderboard row (+ timings, nll details)

    def features(self) -> dict:
        path = self.dir / "features.npz"
        if not path.is_file():
            raise CompareError(f"run {self.run_id} has no stored features ({path} is missing: it was scored before "
                               f"nfebench kept them); re-score it from its samples with `python -m nfebench.compare "
                               f"--rescore {self.dir}`")
        with np.load(path) as z:
            return {k: z[k] for k in z.files}

    def per_sample(self) -> dict | None:
        """per_sample.npz (seeds and per-sample values of the raw sampler output, e.g. ode_error), or None."""
        path = self.dir / "per_sample.npz"
        if not path.is_file():
            return None
        with np.load(path) as z:
            return {k: z[k] for k in z.files}

    def clip(self) -> dict | None:
        """clip.npz (text-to-image runs: per-sample CLIP scores and image embeddings), or None."""
        path = self.dir / "clip.npz"
        if not path.is_file():
            return None
        with np.load(path) as z:
            return {k: z[k] for k in z.files}

    def nll_bits(self) -> np.ndarray | None:
        path = self.dir / "nll.npz"
        if not path.is_file():
            return None
        with np.load(path) as z:
            return z["per_image_bpd"]

    def point(self):
        """The run's config, validated. Paths written `${nfebench_root:}/...` (committed runs) resolve in this clone,
        and results_dir is the one the run directory is in (where a tuned grid's schedules/ are)."""
        from omegaconf import OmegaConf

        from .paths import ROOT
        from .point import validate

        if not OmegaConf.has_resolver("nfebench_root"):
            OmegaConf.register_new_resolver("nfebench_root", lambda: str(ROOT))
        cfg = OmegaConf.load(self.dir / "config.yaml")
        cfg.results_dir = str(self.dir.parent.parent)
        return validate(cfg)


def find_run(name: str, results: Path) -> Run:
    """A run by directory or by run id under results/runs/."""
    for d in (Path(name), results / "runs" / name):
        if (d / "metrics.json").is_file():
            return Run(d.name, d, json.loads((d / "metrics.json").read_text()))
    raise CompareError(f"no finished run {name!r}: neither {name} nor {results / 'runs' / name} has a metrics.json")


def check_comparable(a: Run, b: Run, paired: bool) -> None:
    for k in PROTOCOL_KEYS:
        if a.row.get(k) != b.row.get(k):
            raise CompareError(f"runs {a.run_id} and {b.run_id} were scored under different protocols ({k} "
                               f"{a.row.get(k)!r} vs {b.row.get(k)!r}); their metrics are not comparable")
    if paired and (a.row.get("seed"), a.row.get("num_samples")) != (b.row.get("seed"), b.row.get("num_samples")):
        raise CompareError(f"runs {a.run_id} and {b.run_id} were sampled from different seeds (seed "
                           f"{a.row.get('seed')} x {a.row.get('num_samples')} samples vs {b.row.get('seed')} x "
                           f"{b.row.get('num_samples')}), so their samples are not paired; add --unpaired to compare "
                           "them as independent samples")


def reference_features(run: Run) -> dict:
    """The run's protocol's reference features (cached once per protocol; computed on a miss)."""
    from .metrics.fidelity import check_extractor
    from .run import reference_for

    p = run.point()
    weights = check_extractor(p.metrics["feature_extractor"], p.metrics.get("feature_extractor_weights_path"))
    return reference_for(p, weights, progress=False)[0]


def compare_runs(a: Run, b: Run, n_boot: int = 1000, seed: int = 0, level: float = 0.95, paired: bool = True,
                 metrics=("fid", "kid", "is", "ode_error"), ref: dict | None = None) -> list[dict]:
    """nfebench.stats results for each of `metrics` (fid, kid, is, ode_error), and nll when both runs stored
    per-image bits. ode_error is compared when both runs stored it (per_sample.npz) and `metrics` names it; two
    runs with ode_error and no features compare on ode_error alone. IS needs both runs' logits: where a run stored
    none (storage.logits=false) the IS entry is {"metric": "is", "unavailable": why} instead of a test (the rows'
    own IS values stand; the samples are not featurized again)."""
    from . import stats

    check_comparable(a, b, paired)
    pa, pb = a.per_sample(), b.per_sample()
    ode_res, ode = None, all(v is not None and "ode_error" in v for v in (pa, pb)) and "ode_error" in metrics
    if ode:
        refs = [str(r.row.get("ode_reference", "")).split(" to ")[0] for r in (a, b)]
        if refs[0] != refs[1] or a.row.get("model") != b.row.get("model"):
            raise CompareError(f"runs {a.run_id} and {b.run_id} measured ode_error against different references "
                               f"({a.row.get('model')}: {refs[0]!r} vs {b.row.get('model')}: {refs[1]!r})")
        ode_res = stats.paired_mean(pa["ode_error"], pb["ode_error"], "ode_error", n_boot=n_boot, seed=seed,
                                    level=level, seeds_a=pa["seeds"], seeds_b=pb["seeds"], paired=paired)
    out = []
    ca, cb = a.clip(), b.clip()
    scored = any(k in metrics for k, _, _ in METRICS) and bool(
        a.row.get("feature_extractor") or b.row.get("feature_extractor") or not (ca and cb))
    if scored and ode and not ((a.dir / "features.npz").is_file() and (b.dir / "features.npz").is_file()):
        scored = False  # runs scored by ode_error alone (metrics=none)
    fa, fb = (a.features(), b.features()) if scored else ({}, {})  # a text-to-image run may have no FID features
    ref = ref if ref is not None or not scored else reference_features(a)
    seeds = dict(seeds_a=fa.get("seeds"), seeds_b=fb.get("seeds"), paired=paired)
    for key, _, fn in METRICS:
        if key not in metrics or not scored:
            continue
        layer = "isc" if key == "is" else "fid"
        without = [r for r, f in ((a, fa), (b, fb)) if layer not in f]
        if key == "is" and without:  # storage.logits=false (or an extractor without class logits)
            why = "; ".join(f"run {r.run_id} stored no IS logits (" + (
                "storage.logits=false" if _finite(r.row.get("is_mean")) else "its extractor gives none") + ")"
                for r in without)
            out.append({"metric": "is", "unavailable": f"{why}; the rows' own IS values stand, without a test"})
            continue
        args = (fa[layer], fb[layer]) if key == "is" else (fa[layer], fb[layer], ref["fid"])
        out.append(getattr(stats, fn)(*args, n_boot=n_boot, seed=seed, level=level, **seeds))
    if ca and cb:
        cseeds = dict(seeds_a=ca.get("seeds"), seeds_b=cb.get("seeds"), paired=paired)
        if "clip_score" in ca and "clip_score" in cb:
            out.append(stats.paired_clip_score(ca["clip_score"], cb["clip_score"], n_boot=n_boot, seed=seed,
                                               level=level, **cseeds))
        if "reference_embeddings" in ca and "reference_embeddings" in cb:
            if not np.array_equal(ca["reference_embeddings"], cb["reference_embeddings"]):
                raise CompareError(f"runs {a.run_id} and {b.run_id} computed CMMD against different reference sets "
                                   f"(metrics.cmmd_reference); their CMMDs are not comparable")
            out.append(stats.paired_cmmd(ca["image_embeddings"], cb["image_embeddings"], ca["reference_embeddings"],
                                         n_boot=n_boot, seed=seed, level=level, **cseeds))
    bits_a, bits_b = a.nll_bits(), b.nll_bits()
    if bits_a is not None and bits_b is not None:
        out.append(stats.paired_nll(bits_a, bits_b, n_boot=n_boot, seed=seed, level=level, paired=paired))
    return out + ([ode_res] if ode_res else [])


def _finite(v) -> bool:
    try:
        return v is not None and bool(np.isfinite(float(v)))
    except (TypeError, ValueError):
        return False


def rescore(run: Run) -> Path:
    """Recompute run.dir/features.npz from its samples.npz (for runs scored before features were stored)."""
    import torch

    from .run import score

    samples = run.dir / "samples.npz"
    if not samples.is_file():
        raise CompareError(f"run {run.run_id} has no samples.npz to re-score; run its point again (its config: "
                           f"{run.dir / 'config.yaml'}; force=true gives it a new run id)")
    with np.load(samples) as z:
        x = torch.from_numpy(z["samples"])
    score(x, run.point(), progress=False, features_path=run.dir / "features.npz")
    return run.dir / "features.npz"


def fmt(v: float) -> str:
    return f"{v:.4g}"


def describe(tag: str, run: Run) -> str:
    r = run.row
    return f"{tag}: {run.run_id} ({r.get('sampler')}, nfe {r.get('nfe')}, {r.get('num_samples')} samples, seed {r.get('seed')})"


def table(results: list[dict]) -> str:
    names = {"fid": "FID", "kid": "KID", "is": "IS", "nll": "NLL (bits/dim)", "ode_error": "ODE error",
             "clip_score": "CLIP score", "cmmd": "CMMD"}
    lines = [f"{'metric':<15} {'A':>10} {'B':>10} {'A - B':>10}  {'CI':<24} {'p':>7}"]
    for r in results:
        if "unavailable" in r:
            lines.append(f"{names[r['metric']]:<15} not compared: {r['unavailable']}")
            continue
        ci = f"[{fmt(r['ci_low'])}, {fmt(r['ci_high'])}]"
        verdict = "not significant" if r["ci_low"] <= 0 <= r["ci_high"] else "significant"
        lines.append(f"{names[r['metric']]:<15} {fmt(r['a']):>10} {fmt(r['b']):>10} {fmt(r['delta']):>10}  "
                     f"{ci:<24} {r['p_value']:>7.3g}  {verdict}")
    return "\n".join(lines)


def student_vs_teacher(results: Path, student: str, n_boot: int = 1000, seed: int = 0, level: float = 0.95,
                       sampler: str | None = None) -> list:
    """One dict per (student row, teacher row at the same nfe, seed and num_samples): paired FID student - solver,
    its CI and p-value, and p_holm (Holm-adjusted within each NFE). sampler: only the student's rows of this sampler."""
    from .leaderboard import read_leaderboard
    from .report import holm

    board = read_leaderboard(results / "leaderboard.csv")
    rows = board[(board["model"] == student) & ((board["sampler"] == sampler) if sampler else True)]
    if rows.empty:
        raise CompareError(f"no rows of model {student!r} in {results / 'leaderboard.csv'}")
    teachers = sorted({str(t) for t in rows["teacher"].dropna()})
    if len(teachers) != 1:
        raise CompareError(f"model {student!r} must name exactly one teacher (model.teacher); its rows name "
                           f"{teachers or 'none'}")
    out, ref = [], None
    for _, srow in rows.sort_values("nfe").iterrows():
        same = board[(board["model"] == teachers[0]) & (board["nfe"] == srow["nfe"]) & (board["seed"] == srow["seed"])
                     & (board["num_samples"] == srow["num_samples"])]
        a = find_run(str(srow["run_id"]), results)
        for _, trow in same.iterrows():
            b = find_run(str(trow["run_id"]), results)
            ref = ref if ref is not None else reference_features(a)
            r = compare_runs(a, b, n_boot, seed, level, metrics=("fid",), ref=ref)[0]
            out.append({"nfe": int(srow["nfe"]), "student": a.run_id, "student_sampler": srow["sampler"],
                        "solver": trow["sampler"], "solver_options": trow["sampler_options"], "solver_run": b.run_id,
                        **{k: r[k] for k in ("a", "b", "delta", "ci_low", "ci_high", "p_value")}})
    for nfe in {r["nfe"] for r in out}:  # Holm within each NFE: "at NFE k, is the student better than each solver?"
        group = [r for r in out if r["nfe"] == nfe]
        for r, p_adj in zip(group, holm([r["p_value"] for r in group])):
            r["p_holm"] = p_adj
    return sorted(out, key=lambda r: (r["nfe"], r["b"]))


def student_table(out: list, alpha: float = 0.05) -> str:
    """Markdown: one line per pair; significant = Holm-adjusted p < alpha (the CI is the unadjusted one)."""
    lines = ["| NFE | student FID | solver on the teacher | solver FID | student - solver [95% CI] "
             "| p (Holm, per NFE) |", "|---|---|---|---|---|---|"]
    for r in out:
        verdict = "tie" if r["p_holm"] >= alpha else ("student better" if r["delta"] < 0 else "solver better")
        opts = json.loads(r["solver_options"]) if isinstance(r["solver_options"], str) else {}
        how = "tuned grid" if opts.get("tuned_grid") else opts.get("spacing", "")
        lines.append(f"| {r['nfe']} | {fmt(r['a'])} | {r['solver']} ({how}) | {fmt(r['b'])} | "
                     f"{fmt(r['delta'])} [{fmt(r['ci_low'])}, {fmt(r['ci_high'])}] | {r['p_holm']:.3g} ({verdict}) |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m nfebench.compare", description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="*", metavar="RUN", help="two run ids or run directories (one with --rescore)")
    ap.add_argument("--student", metavar="MODEL", help="a few-step model: its rows beside its teacher's at each NFE")
    ap.add_argument("--sampler", help="with --student: only the student's rows of this sampler")
    ap.add_argument("--results", default="results", type=Path, help="results directory (default: results)")
    ap.add_argument("--n-boot", type=int, default=1000, help="bootstrap replicates (>= 100; default 1000)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the bootstrap's resampling (default 0)")
    ap.add_argument("--level", type=float, default=0.95, help="confidence level (default 0.95)")
    ap.add_argument("--unpaired", action="store_true", help="runs of different seeds: resample each on its own")
    ap.add_argument("--rescore", action="store_true", help="recompute features.npz of the given runs and exit")
    args = ap.parse_args(argv)
    from .metrics.fidelity import MetricsError
    from .point import ConfigError
    from .stats import StatsError

    try:
        if args.student:
            print(student_table(student_vs_teacher(args.results, args.student, args.n_boot, args.seed, args.level,
                                                 args.sampler)))
            return 0
        if args.rescore:
            for name in args.runs:
                print(f"wrote {rescore(find_run(name, args.results))}")
            return 0
        if len(args.runs) != 2:
            raise CompareError(f"give two runs to compare, got {len(args.runs)}")
        from .stats import MIN_BOOT

        if args.n_boot < MIN_BOOT:
            raise StatsError(f"n_boot must be an integer >= {MIN_BOOT}, got {args.n_boot}")
        a, b = (find_run(name, args.results) for name in args.runs)
        results = compare_runs(a, b, args.n_boot, args.seed, args.level, paired=not args.unpaired)
    except (CompareError, StatsError, MetricsError, ConfigError) as e:
        print(f"nfebench.compare: error: {e}", file=sys.stderr)
        return 2
    how = (f"unpaired ({a.row.get('num_samples')} and {b.row.get('num_samples')} samples)" if args.unpaired
           else f"paired over {a.row.get('num_samples')} shared seeds")
    print("\n".join([describe("A", a), describe("B", b),
                     f"protocol: {a.row.get('feature_extractor')} features, reference {a.row.get('reference')}; {how}; "
                     f"{args.n_boot} bootstrap replicates, {args.level:.0%} CI (nfebench.stats, docs/stats.md)", "",
                     table(results)]))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`python -m nfebench.recommend model=... nfe=10 [samplers=[ddim,dpmpp]] [tune=true] [num_samples=...]`

Which sampler should I use at this NFE on this model? Runs every candidate as an ordinary benchmark point through
nfebench.run (one leaderboard row each, resumable, skipped when already there): each sampler of `samplers` with its
conf/sampler defaults and, with tune=true, each one whose grid can be tuned (nfebench.tuning.check_tunable) also on
its tuned grid (`sampler.spacing=tuned`, made with nfebench.tuning.tune_point when none is cached; stochastic
samplers run at their defaults only). All candidates share one protocol (model, dataset, metrics, num_samples, seed:
the same per-sample noise), so their FIDs are compared paired, by the report's own test
(nfebench.report.fid_differences: nfebench.stats.paired_fid against the best, Holm-adjusted p-values, tied = the
95 % CI of the difference covers 0). Each FID's own CI is nfebench.stats.fid_ci.

Prints the ranked table and one line of advice, and writes them to results_dir/recommend-<model>-nfe<N>.md and .csv.
Bad input ends with a one-line `nfebench: error: ...` and exit code 2, before any candidate runs.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path

import hydra
import numpy as np
from omegaconf import DictConfig, OmegaConf

from .__main__ import exit_on_user_error, launch
from .paths import CONF_DIR

SETTINGS = ("samplers", "tune", "tuning", "n_boot")  # conf/recommend.yaml's own keys, not part of any run's config
CSV_COLUMNS = ["rank", "candidate", "sampler", "spacing", "fid", "fid_ci_low", "fid_ci_high", "delta", "delta_ci_low",
               "delta_ci_high", "p_holm", "verdict", "nfe_used", "sampling_seconds", "tuning_seconds", "run_id"]


def _sampler_defaults(name: str) -> dict:
    """The sampler's conf/sampler/<name>.yaml (its benchmark defaults), or just its name when it has none; a UI name
    `ui/NAME` is its conf/sampler/ui/NAME.yaml (docs/samplers.md, "Names people know")."""
    from .samplers import get_sampler

    path = CONF_DIR / "sampler" / f"{name}.yaml"
    if name.startswith("ui/") and path.is_file():
        return OmegaConf.to_container(OmegaConf.load(path))
    get_sampler(name)  # an unknown name: one line listing the registered samplers
    return OmegaConf.to_container(OmegaConf.load(path)) if path.is_file() else {"name": name}


def _settings(c: dict) -> tuple[list[str], bool, dict, int]:
    from .run import ConfigError
    from .stats import MIN_BOOT
    from .tuning import TUNE_DEFAULTS

    samplers, tune, tuning, n_boot = (c.pop(k, None) for k in SETTINGS)
    if isinstance(samplers, str):
        samplers = [samplers]
    if not isinstance(samplers, list) or not samplers or not all(isinstance(s, str) for s in samplers):
        raise ConfigError(f"samplers must be a non-empty list of sampler names, got {samplers!r}")
    if len(set(samplers)) != len(samplers):
        dup = next(s for s in samplers if samplers.count(s) > 1)
        raise ConfigError(f"samplers lists {dup!r} twice; give each candidate once")
    if not isinstance(tune, bool):
        raise ConfigError(f"tune must be true or false, got {tune!r}")
    tuning = {**TUNE_DEFAULTS, **(tuning or {})}
    unknown = sorted(set(tuning) - set(TUNE_DEFAULTS))
    if unknown:
        raise ConfigError(f"unknown tuning setting {unknown[0]!r}; allowed: {', '.join(TUNE_DEFAULTS)}")
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < MIN_BOOT:
        raise ConfigError(f"n_boot must be an integer >= {MIN_BOOT}, got {n_boot!r}")
    return samplers, tune, tuning, n_boot


def candidates(c: dict, samplers: list[str], tune: bool, method: str = "ld3") -> list[dict]:
    """One config per candidate: {"cfg": the run's config, "tuned": bool}; every one validated (nothing runs when
    one is bad). With tune, a tunable sampler comes twice: its default grid, then spacing=tuned (method gits:
    spacing=gits)."""
    from .tuning import SPACING_OF_METHOD

    from .run import validate
    from .samplers import SamplerError
    from .tuning import check_tunable

    out = []
    for name in samplers:
        cfg = {**c, "sampler": _sampler_defaults(name)}
        p = validate(cfg)  # a budget below the sampler's minimum fails here
        out.append({"cfg": cfg, "tuned": False})
        if not tune:
            continue
        try:
            check_tunable(p.sampler, p.nfe, p.sampler_options)
        except SamplerError:  # no explicit grid, or stochastic: the default only
            continue
        out.append({"cfg": {**cfg, "sampler": {**cfg["sampler"], "spacing": SPACING_OF_METHOD[method]}},
                    "tuned": True})
    return out


def run_candidate(cand: dict, tuning: dict, progress: bool) -> tuple[str, float | None]:
    """Run one candidate (tuning its grid first when asked and not cached); its run id and tuning seconds."""
    from .run import _done_ids, run, run_key, validate
    from .tuning import tune_point

    tuning_seconds = None
    if cand["tuned"]:
        default = {**cand["cfg"], "sampler": {**cand["cfg"]["sampler"]}}
        default["sampler"].pop("spacing")  # the sampler's default spacing: the grid the tuned one is compared with
        record = tune_point({**default, "tune": tuning, "force": False}, progress=progress)
        tuning_seconds = record["provenance"]["seconds"]
    run(cand["cfg"], progress=progress)
    p = validate(cand["cfg"])
    return _done_ids(p.results_dir / "leaderboard.csv", run_key(p))[-1], tuning_seconds


def advice(diffs: list[dict]) -> str:
    """One line from the paired tests: the best, those tied with it (CI of the difference covers 0), the rest."""
    def names(items):
        return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]

    def verb(items):
        return "is" if len(items) == 1 else "are"

    tied = [d["variant"] for d in diffs[1:] if d["tied"]]
    worse = [d["variant"] for d in diffs[1:] if not d["tied"] and np.isfinite(d["delta"])]
    untested = [d["variant"] for d in diffs[1:] if not np.isfinite(d["delta"])]
    parts = [f"use {diffs[0]['variant']}"]
    parts.append(f"{names(tied)} {verb(tied)} statistically tied with it" if tied else
                 "no other candidate is statistically tied with it")
    if worse:
        parts.append(f"{names(worse)} {verb(worse)} significantly worse")
    if untested:
        parts.append(f"{names(untested)} could not be tested (no stored features)")
    return "; ".join(parts)


def ranking(rows, results_dir: Path, n_boot: int, tuning_seconds: dict) -> list[dict]:
    """The ranked candidates: the report's paired differences to the best plus each FID's own CI."""
    from .compare import CompareError, find_run, reference_features
    from .report import fid_differences
    from .stats import fid_ci

    diffs = fid_differences(rows, results_dir, n_boot=n_boot)
    by_variant = rows.set_index("variant")

    def own_ci(run_id: str, ref) -> dict:  # NaN for a row whose run directory or features.npz is not here
        try:
            if ref is not None:
                return fid_ci(find_run(run_id, results_dir).features()["fid"], ref, n_boot=n_boot)
        except CompareError:
            pass
        return {"ci_low": np.nan, "ci_high": np.nan}

    try:
        ref = reference_features(find_run(by_variant.loc[diffs[0]["variant"], "run_id"], results_dir))["fid"]
    except CompareError:  # e.g. a fresh clone: the committed leaderboard without its runs/
        ref = None
    out = []
    for rank, d in enumerate(diffs, 1):
        row = by_variant.loc[d["variant"]]
        ci = own_ci(row["run_id"], ref)
        verdict = "best" if rank == 1 else "tied" if d["tied"] else "worse" if np.isfinite(d["delta"]) else "untested"
        out.append({"rank": rank, "candidate": d["variant"], "sampler": row["sampler"],
                    "spacing": row["options"].get("spacing", ""), "fid": d["fid"], "fid_ci_low": ci["ci_low"],
                    "fid_ci_high": ci["ci_high"], "delta": d["delta"], "delta_ci_low": d["ci_low"],
                    "delta_ci_high": d["ci_high"], "p_holm": d["p_holm"], "verdict": verdict,
                    "nfe_used": row["nfe_used"], "sampling_seconds": row["sampling_seconds"],
                    "tuning_seconds": tuning_seconds.get(row["run_id"]), "run_id": row["run_id"], "_diff": d})
    return out


def markdown(ranked: list[dict], line: str, title: str, protocol: str, command: str) -> str:
    from .report import fmt, md_table

    def g(v, spec=".3g"):
        return "–" if v is None or (isinstance(v, float) and not np.isfinite(v)) else format(v, spec)

    table = [[str(r["rank"]), r["candidate"], fmt(r["fid"]), f"[{g(r['fid_ci_low'])}, {g(r['fid_ci_high'])}]",
              "best" if r["rank"] == 1 else g(r["delta"], "+.3g"),
              "" if r["rank"] == 1 else f"[{g(r['delta_ci_low'], '+.3g')}, {g(r['delta_ci_high'], '+.3g')}]",
              "" if r["rank"] == 1 else g(r["p_holm"]), r["verdict"], g(r["nfe_used"], ".0f"),
              g(r["sampling_seconds"], ".1f"), g(r["tuning_seconds"], ".1f")] for r in ranked]
    headers = ["#", "Candidate", "FID", "95 % CI", "FID - best", "95 % CI", "p (Holm)", "verdict", "NFE used", "sampling s",
               "tuning s"]
    return "\n".join([f"### {title}", "", f"`{command}`", "", protocol, "", md_table(headers, table), "",
                      f"**Advice**: {line}.", ""])


def to_csv(ranked: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    w.writerows(ranked)
    return buf.getvalue()


def recommend(cfg: DictConfig | dict, progress: bool = True, command: str = "python -m nfebench.recommend") -> dict:
    """Run, rank and advise (module docstring). Returns {"ranked": [...], "advice": str, "markdown": path,
    "csv": path}."""
    from .leaderboard import atomic_write_text
    from .report import load_leaderboard
    from .run import ConfigError, check_writable

    c = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else json.loads(json.dumps(cfg))
    samplers, tune, tuning, n_boot = _settings(c)
    if not (c.get("metrics") or {}).get("fid"):
        raise ConfigError("recommend ranks by FID: metrics.fid must be true (metrics=default or inception)")
    cands = candidates(c, samplers, tune, tuning["method"])
    results_dir = Path(c.get("results_dir", "results"))
    check_writable(results_dir)
    ids, tuning_seconds = [], {}
    for cand in cands:
        run_id, secs = run_candidate(cand, tuning, progress)
        ids.append(run_id)
        if secs is not None:
            tuning_seconds[run_id] = secs
    df = load_leaderboard(results_dir / "leaderboard.csv")
    rows = df[df["run_id"].isin(ids)].copy()
    ranked = ranking(rows, results_dir, n_boot, tuning_seconds)
    line = advice([r.pop("_diff") for r in ranked])
    model, nfe = c["model"].get("name", "model"), c["nfe"]
    first = rows.iloc[0]
    protocol = (f"Model `{model}`, NFE {nfe}, {c['num_samples']} samples from seed {c['seed']} (the same noise for "
                f"every candidate), FID in `{first['feature_extractor']}` features against {first['reference']}. "
                f"FID 95 % CI: bootstrap over the samples (nfebench.stats.fid_ci); FID - best: paired bootstrap with "
                f"Holm-adjusted p (nfebench.stats.paired_fid, as the report's \"Is the difference real?\"), {n_boot} "
                f"replicates; tied: the CI of the difference covers 0. Sampling and tuning seconds on "
                f"{first['device']}.")
    stem = results_dir / f"recommend-{model}-nfe{nfe}"
    md = markdown(ranked, line, f"Which sampler at NFE {nfe} on `{model}`?", protocol, command)
    atomic_write_text(stem.with_suffix(".md"), md)
    atomic_write_text(stem.with_suffix(".csv"), to_csv(ranked))
    if progress:
        print("\n" + md + f"\n-> {stem}.md, {stem}.csv")
    return {"ranked": ranked, "advice": line, "markdown": stem.with_suffix(".md"), "csv": stem.with_suffix(".csv")}


def _list_override(arg: str) -> str:
    """samplers=a,b (which Hydra would read as a sweep) as the list samplers=[a,b]."""
    key, sep, value = arg.partition("=")
    if key == "samplers" and sep and "," in value and not value.startswith("["):
        return f"samplers=[{value}]"
    return arg


@hydra.main(config_path=str(CONF_DIR), config_name="recommend", version_base="1.3")
def _app(cfg: DictConfig) -> None:
    from .compare import CompareError
    from .stats import StatsError

    exit_on_user_error(lambda: recommend(cfg, command=" ".join(["python -m nfebench.recommend"] + sys.argv[1:])),
                       (CompareError, StatsError))


def main() -> None:
    launch(_app, _list_override)


if __name__ == "__main__":
    main()

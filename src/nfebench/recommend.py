"""`python -m nfebench.recommend model=... nfe=10 [samplers=[ddim,dpmpp]] [tune=true] [rank_by=ode_error]`

Which sampler should I use at this NFE on this model? Runs every candidate as an ordinary benchmark point through
nfebench.run (one leaderboard row each, resumable, skipped when already there): each sampler of `samplers` with its
conf/sampler defaults and, with tune=true, each one whose grid can be tuned (nfebench.tuning.check_tunable) also on
its tuned grid (`sampler.spacing=tuned`, made with nfebench.tuning.tune_point when none is cached; stochastic
samplers run at their defaults only). All candidates share one protocol (model, dataset, metrics, num_samples, seed:
the same per-sample noise), so their FIDs are compared paired, by the report's own test
(nfebench.report.fid_differences: nfebench.stats.paired_fid against the best, Holm-adjusted p-values, tied = the
95 % CI of the difference covers 0). A single run's FID is printed without an interval of its own: at small FIDs
its bootstrap (nfebench.stats.fid_ci) is biased by more than its width and can exclude the FID (docs/stats.md).

rank_by=ode_error (with metrics.ode_error=true) ranks by the distance to the ODE solution instead
(nfebench.report.ode_error_differences: nfebench.stats.paired_mean of the per-sample values, Holm), stochastic
candidates listed last as untested; its files are recommend-<model>-nfe<N>-ode_error.md/.csv.

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

SETTINGS = ("samplers", "tune", "tuning", "n_boot", "rank_by")  # conf/recommend.yaml's own keys, not part of any run's config
CSV_COLUMNS = ["rank", "candidate", "sampler", "spacing", "fid", "delta", "delta_ci_low", "delta_ci_high", "p_holm",
               "verdict", "nfe_used", "sampling_seconds", "tuning_seconds", "run_id"]  # delta*: of the rank_by metric
ODE_COLUMNS = ["rank_by", "ode_error", "ode_error_ci_low", "ode_error_ci_high"]  # appended when rank_by=ode_error
RANK_BY = ("fid", "ode_error")


def _sampler_defaults(name: str) -> dict:
    """The sampler's conf/sampler/<name>.yaml (its benchmark defaults), or just its name when it has none; a UI name
    `ui/NAME` is its conf/sampler/ui/NAME.yaml (docs/samplers.md, "Names people know")."""
    from .samplers import get_sampler

    path = CONF_DIR / "sampler" / f"{name}.yaml"
    if name.startswith("ui/") and path.is_file():
        return OmegaConf.to_container(OmegaConf.load(path))
    get_sampler(name)  # an unknown name: one line listing the registered samplers
    return OmegaConf.to_container(OmegaConf.load(path)) if path.is_file() else {"name": name}


def _settings(c: dict) -> tuple[list[str], bool, dict, int, str]:
    from .point import ConfigError
    from .stats import MIN_BOOT
    from .tuning import TUNE_DEFAULTS

    samplers, tune, tuning, n_boot, rank_by = (c.pop(k, None) for k in SETTINGS)
    rank_by = rank_by or "fid"
    if rank_by not in RANK_BY:
        raise ConfigError(f"rank_by must be one of {', '.join(RANK_BY)}, got {rank_by!r}")
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
    return samplers, tune, tuning, n_boot, rank_by


def candidates(c: dict, samplers: list[str], tune: bool, method: str = "ld3") -> list[dict]:
    """One config per candidate: {"cfg": the run's config, "tuned": bool}; every one validated (nothing runs when
    one is bad). With tune, a tunable sampler comes twice: its default grid, then spacing=tuned (method gits:
    spacing=gits)."""
    from .tuning import SPACING_OF_METHOD

    from .point import validate
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
    from .point import _done_ids, run_key, validate
    from .run import run
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
    whys = sorted({d.get("why") or "no stored features" for d in diffs[1:] if not np.isfinite(d["delta"])})
    parts = [f"use {diffs[0]['variant']}"]
    parts.append(f"{names(tied)} {verb(tied)} statistically tied with it" if tied else
                 "no other candidate is statistically tied with it")
    if worse:
        parts.append(f"{names(worse)} {verb(worse)} significantly worse")
    if untested:
        parts.append(f"{names(untested)} could not be tested ({'; '.join(whys)})")
    return "; ".join(parts)


def ranking(rows, results_dir: Path, n_boot: int, tuning_seconds: dict, rank_by: str = "fid") -> list[dict]:
    """The ranked candidates: the report's paired differences to the best (FID, or ode_error: then the stochastic
    candidates, which have none, last as untested) plus each value's own CI."""
    from .compare import CompareError, find_run
    from .report import _DIFFS, fid_differences, ode_error_differences
    from .stats import mean_ci

    _DIFFS.clear()  # this call's runs as they are now

    if rank_by == "ode_error":
        diffs = ode_error_differences(rows, results_dir, n_boot=n_boot)
        ranked = {d["variant"] for d in diffs}
        diffs += [{"variant": v, "delta": np.nan, "ci_low": np.nan, "ci_high": np.nan, "p_holm": np.nan,
                   "tied": False, "why": str(r) if isinstance(r, str) and r else "no ode_error"}
                  for v, r in zip(rows["variant"], rows["ode_reference"]) if v not in ranked]
        for d in diffs:
            d["fid"] = rows.set_index("variant").loc[d["variant"], "fid"]
    else:
        diffs = fid_differences(rows, results_dir, n_boot=n_boot)
    by_variant = rows.set_index("variant")

    def ode_ci(run_id: str) -> dict:
        try:
            per = find_run(run_id, results_dir).per_sample()
            if per is not None and "ode_error" in per:
                return mean_ci(per["ode_error"], n_boot=n_boot)
        except CompareError:
            pass
        return {"ci_low": np.nan, "ci_high": np.nan}

    out = []
    for rank, d in enumerate(diffs, 1):
        row = by_variant.loc[d["variant"]]
        oci = ode_ci(row["run_id"]) if rank_by == "ode_error" else {"ci_low": np.nan, "ci_high": np.nan}
        verdict = "best" if rank == 1 else "tied" if d["tied"] else "worse" if np.isfinite(d["delta"]) else "untested"
        out.append({"rank": rank, "candidate": d["variant"], "sampler": row["sampler"],
                    "spacing": row["options"].get("spacing", ""), "fid": d["fid"], "delta": d["delta"], "delta_ci_low": d["ci_low"],
                    "delta_ci_high": d["ci_high"], "p_holm": d["p_holm"], "verdict": verdict,
                    "nfe_used": row["nfe_used"], "sampling_seconds": row["sampling_seconds"],
                    "tuning_seconds": tuning_seconds.get(row["run_id"]), "run_id": row["run_id"], "rank_by": rank_by,
                    "ode_error": row.get("ode_error", np.nan), "ode_error_ci_low": oci["ci_low"],
                    "ode_error_ci_high": oci["ci_high"], "_diff": d})
    return out


def markdown(ranked: list[dict], line: str, title: str, protocol: str, command: str, rank_by: str = "fid") -> str:
    from .report import fmt, md_table

    def g(v, spec=".3g"):
        return "–" if v is None or (isinstance(v, float) and not np.isfinite(v)) else format(v, spec)

    if rank_by == "ode_error":
        table = [[str(r["rank"]), r["candidate"], g(r["ode_error"]),
                  f"[{g(r['ode_error_ci_low'])}, {g(r['ode_error_ci_high'])}]",
                  "best" if r["rank"] == 1 else g(r["delta"], "+.3g"),
                  "" if r["rank"] == 1 else f"[{g(r['delta_ci_low'], '+.3g')}, {g(r['delta_ci_high'], '+.3g')}]",
                  "" if r["rank"] == 1 else g(r["p_holm"]), r["verdict"], fmt(r["fid"]), g(r["nfe_used"], ".0f"),
                  g(r["sampling_seconds"], ".1f")] for r in ranked]
        headers = ["#", "Candidate", "ode_error", "95 % CI", "- best", "95 % CI", "p (Holm)", "verdict", "FID",
                   "NFE used", "sampling s"]
        return "\n".join([f"### {title}", "", f"`{command}`", "", protocol, "", md_table(headers, table), "",
                          f"**Advice**: {line}.", ""])

    table = [[str(r["rank"]), r["candidate"], fmt(r["fid"]),
              "best" if r["rank"] == 1 else g(r["delta"], "+.3g"),
              "" if r["rank"] == 1 else f"[{g(r['delta_ci_low'], '+.3g')}, {g(r['delta_ci_high'], '+.3g')}]",
              "" if r["rank"] == 1 else g(r["p_holm"]), r["verdict"], g(r["nfe_used"], ".0f"),
              g(r["sampling_seconds"], ".1f"), g(r["tuning_seconds"], ".1f")] for r in ranked]
    headers = ["#", "Candidate", "FID", "FID - best", "95 % CI", "p (Holm)", "verdict", "NFE used", "sampling s",
               "tuning s"]
    return "\n".join([f"### {title}", "", f"`{command}`", "", protocol, "", md_table(headers, table), "",
                      f"**Advice**: {line}.", ""])


def to_csv(ranked: list[dict], rank_by: str = "fid") -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, CSV_COLUMNS + (ODE_COLUMNS if rank_by == "ode_error" else []), extrasaction="ignore",
                       lineterminator="\n")
    w.writeheader()
    w.writerows(ranked)
    return buf.getvalue()


def recommend(cfg: DictConfig | dict, progress: bool = True, command: str = "python -m nfebench.recommend") -> dict:
    """Run, rank and advise (module docstring). Returns {"ranked": [...], "advice": str, "markdown": path,
    "csv": path}."""
    from .leaderboard import atomic_write_text
    from .report import load_leaderboard
    from .point import ConfigError, check_writable

    c = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else json.loads(json.dumps(cfg))
    samplers, tune, tuning, n_boot, rank_by = _settings(c)
    if rank_by == "fid" and not (c.get("metrics") or {}).get("fid"):
        raise ConfigError("recommend ranks by FID: metrics.fid must be true (metrics=default or inception)")
    if rank_by == "ode_error" and not (c.get("metrics") or {}).get("ode_error"):
        raise ConfigError("rank_by=ode_error needs metrics.ode_error=true")
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
    ranked = ranking(rows, results_dir, n_boot, tuning_seconds, rank_by)
    line = advice([r.pop("_diff") for r in ranked])
    model, nfe = c["model"].get("name", "model"), c["nfe"]
    first = rows.iloc[0]
    protocol = (f"Model `{model}`, NFE {nfe}, {c['num_samples']} samples from seed {c['seed']} (the same noise for "
                f"every candidate), FID in `{first['feature_extractor']}` features against {first['reference']}. "
                f"FID - best: paired bootstrap with "
                f"Holm-adjusted p (nfebench.stats.paired_fid, as the report's \"Is the difference real?\"), {n_boot} "
                f"replicates; tied: the CI of the difference covers 0 (a single FID gets no interval of its own: "
                f"docs/stats.md). Sampling and tuning seconds on "
                f"{first['device']}.")
    if rank_by == "ode_error":
        first = rows[rows["ode_error"].notna()].iloc[0] if rows["ode_error"].notna().any() else first
        protocol = (f"Model `{model}`, NFE {nfe}, {c['num_samples']} samples from seed {c['seed']} (the same noise for "
                    f"every candidate), ranked by ode_error: rms distance per dimension to the converged ODE solution "
                    f"from the same x_T ({str(first['ode_reference']).split(' to ')[0]}, to each sampler's own end "
                    f"point: t_min, or clean data by the denoising step at t_min; docs/metrics.md). 95 % CI: bootstrap of the mean "
                    f"over the samples (nfebench.stats.mean_ci); - best: paired bootstrap with Holm-adjusted p "
                    f"(nfebench.stats.paired_mean), {n_boot} replicates; tied: the CI of the difference covers 0. "
                    f"Stochastic candidates have no ODE solution (untested). FID as measured, for comparison.")
    stem = results_dir / (f"recommend-{model}-nfe{nfe}" + ("" if rank_by == "fid" else f"-{rank_by}"))
    md = markdown(ranked, line, f"Which sampler at NFE {nfe} on `{model}`?" + (
        "" if rank_by == "fid" else f" (ranked by {rank_by})"), protocol, command, rank_by)
    atomic_write_text(stem.with_suffix(".md"), md)
    atomic_write_text(stem.with_suffix(".csv"), to_csv(ranked, rank_by))
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

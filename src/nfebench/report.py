"""`python -m nfebench.report [--results DIR] [--latex]`: DIR/report.md, DIR/report.html (and with --latex
DIR/report.tex; nfebench.report_export) and DIR/figures/*.png from DIR/leaderboard.csv.

The report has, per model and dataset:
  - Sampler x NFE tables of FID, IS, KID (one set per measurement protocol: feature extractor, reference set,
    sample count; rows of different protocols are never put in one table) and of NLL (per NLL method and image count);
    several seeds of one point are shown as mean +- std (n = number of seeds);
  - the published numbers for the same algorithms at the same NFE (other models and datasets: CIFAR-10 etc. with
    Inception FID, so values are context, not targets), matched through nfebench.report_names;
  - rank agreement: Kendall tau between our FID ordering of samplers and one published table's, at each NFE where
    at least three samplers overlap;
  - figures: FID vs NFE as small multiples (one panel per sampler family, error bars the paired 95 % CI to the best
    at each NFE), NLL vs K, sample grids at the smallest and largest NFE of each sampler.
How to read it: docs/report.md.
"""

from __future__ import annotations

import argparse
import io
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .leaderboard import COLUMNS, atomic_write_bytes, atomic_write_text, read_leaderboard
from .report_names import RANK_REFERENCES, find_rule, nll_published_names

PUBLISHED_CSV = Path(__file__).resolve().parent / "data" / "published_results.csv"
NLL_COLUMNS = ["nll_method", "nll_variance", "nll_nfe", "nll_num_images"]  # added by the NLL work; may be absent
NUMERIC = ["guidance_scale", "class_accuracy", "network_passes",
           "nfe", "nfe_used", "num_samples", "seed", "fid", "is_mean", "is_std", "kid_mean", "kid_std", "nll_bpd",
           "sampling_seconds", "samples_per_second", "nll_nfe", "nll_num_images"]
QUALITY = [("fid", "FID", "lower is better"), ("is_mean", "IS", "higher is better"),
           ("kid_mean", "KID", "lower is better")]
PROTOCOL = ["feature_extractor", "reference", "num_samples"]
REQUIRED = ["run_id", "model", "dataset", "sampler", "nfe"]  # without these a file is not a leaderboard
MISSING = "–"
GRID_TILES = 6  # a sample grid is GRID_TILES x GRID_TILES samples


class ReportError(ValueError):
    """Bad input to the report (no leaderboard, unreadable file): reported in one line."""


# ---------------------------------------------------------------------------------------------- loading


def load_leaderboard(path: Path) -> pd.DataFrame:
    """The leaderboard with every column we use present (missing ones empty), numbers as floats, one row per run_id
    (the last, if a run was forced again), and `options` (dict) and `variant` (display label) added."""
    if not path.exists():
        raise ReportError(f"no leaderboard at {path} (run a benchmark first, or pass --results DIR)")
    try:
        df = read_leaderboard(path)
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as e:
        raise ReportError(f"cannot read {path}: {str(e).splitlines()[0]}") from None
    absent = [c for c in REQUIRED if c not in df.columns]
    if absent:
        raise ReportError(f"{path} is not an nfebench leaderboard: no column {absent[0]!r}")
    for c in COLUMNS + NLL_COLUMNS:
        if c not in df.columns:
            df[c] = np.nan
    for c in NUMERIC:
        df[c] = pd.to_numeric(df[c], errors="coerce")
    for c in ["run_id", "model", "dataset", "sampler", "feature_extractor", "reference", "nll_method", "nll_variance"]:
        df[c] = df[c].astype("string").fillna("").astype(str)
    if len(df):  # a run forced again keeps its run_id: count it once (NLL rows of one run differ in method/K)
        key = ["run_id", "nll_method", "nll_variance", "nll_nfe"]
        df = df.drop_duplicates(key, keep="last").reset_index(drop=True)
    df["options"] = [_parse_options(s) for s in df["sampler_options"]]
    df["variant"] = variant_labels(df)
    df["nfe_measured"] = measured_nfe(df)
    return df


ADAPTIVE_SAMPLERS = ("rk45", "ggf")  # and dpm with method=adaptive: their nfe is a cap


def measured_nfe(df: pd.DataFrame) -> pd.Series:
    """The NFE a row is plotted at: nfe_used for the adaptive samplers (what their controller spent), else nfe."""
    adaptive = [s in ADAPTIVE_SAMPLERS or (s == "dpm" and o.get("method") == "adaptive")
                for s, o in zip(df["sampler"], df["options"])]
    return df["nfe_used"].where(pd.Series(adaptive, index=df.index, dtype=bool), df["nfe"])


def _parse_options(text) -> dict:
    if not isinstance(text, str) or not text.strip():
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


INPUT_OPTIONS = {"moments", "tuned_grid", "elbo_costs"}  # options that name an input (Analytic-DPM's cached moments,
                                                        # a tuned grid's hash, spacing=elbo's costs), not a variant


def variant_labels(df: pd.DataFrame) -> list[str]:
    """A label per row: the sampler name, plus the options that differ between that sampler's rows (so `ddim` stays
    `ddim` in a plain sweep, and becomes `ddim (eta=0.0)` / `ddim (eta=1.0)` when both were run)."""
    varying: dict[str, list[str]] = {}
    for sampler, opts in df.groupby("sampler")["options"]:
        keys = sorted({k for o in opts for k in o} - INPUT_OPTIONS)
        # a key varies if the rows that have it disagree on it (an option added later is absent from older rows)
        varying[sampler] = [k for k in keys if len({json.dumps(o[k], sort_keys=True) for o in opts if k in o}) > 1]
    labels = []
    for sampler, opts, w in zip(df["sampler"], df["options"], df["guidance_scale"]):
        parts = [f"{k}={_short(opts.get(k))}" for k in varying.get(sampler, [])]
        parts += [f"w={w:g}"] if pd.notna(w) else []  # guided runs: one variant per guidance scale, never "seeds"
        labels.append(f"{sampler} ({', '.join(parts)})" if parts else sampler)
    return labels


def _short(value, limit: int = 24) -> str:
    text = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def load_published(path: Path = PUBLISHED_CSV) -> pd.DataFrame:
    df = pd.read_csv(path, dtype={"source": str, "dataset": str, "model_checkpoint": str, "sampler": str})
    for c in ["nfe", "fid", "is_mean", "nll_bpd"]:
        df[c] = pd.to_numeric(df[c], errors="coerce")
    return df


# ---------------------------------------------------------------------------------------------- aggregation


def aggregate(rows: pd.DataFrame, metric: str, x: str = "nfe", by: str = "variant") -> pd.DataFrame:
    """mean, std (over seeds, ddof=1; NaN for one seed) and n per (by, x), from the rows where `metric` is set."""
    rows = rows[rows[metric].notna() & rows[x].notna()]
    if rows.empty:
        return pd.DataFrame(columns=[by, x, "mean", "std", "n"])
    g = rows.groupby([by, x])[metric]
    out = pd.DataFrame({"mean": g.mean(), "std": g.std(ddof=1), "n": g.count()}).reset_index()
    return out.sort_values([by, x]).reset_index(drop=True)


def decimals(value: float) -> int:
    """Decimals for a table number: none from 100, 2 from 1, else 3 significant digits."""
    a = abs(value)
    if a >= 100:
        return 0
    if a >= 1 or a == 0:
        return 2
    return min(2 - int(np.floor(np.log10(a))), 8)


def fmt(value) -> str:
    if value is None or not np.isfinite(value):
        return MISSING
    return f"{value:.{decimals(value)}f}"


def fmt_cell(mean, std, n) -> str:
    """`mean` for one seed, `mean ± std (n=k)` for several (std with the mean's decimals)."""
    if n is None or n == 0 or not np.isfinite(mean):
        return MISSING
    if n > 1 and np.isfinite(std):
        d = decimals(mean)
        return f"{mean:.{d}f} ± {std:.{d}f} (n={int(n)})"
    return fmt(mean)


def fmt_nfe(value) -> str:
    return MISSING if not np.isfinite(value) else f"{value:g}"


# ---------------------------------------------------------------------------------------------- markdown


def md_table(headers: list[str], rows: list[list[str]]) -> str:
    def cell(v) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(h) for h in headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def pivot_table(agg: pd.DataFrame, x: str = "nfe", by: str = "variant", first: str = "Sampler",
                column: str = "NFE") -> str:
    """Rows `by`, columns `x` (ascending, headed `column` value), cells mean ± std (n)."""
    xs = sorted(agg[x].unique())
    headers = [first] + [f"{column} {fmt_nfe(v)}" for v in xs]
    cells = {(r[by], r[x]): fmt_cell(r["mean"], r["std"], r["n"]) for _, r in agg.iterrows()}
    rows = [[name] + [cells.get((name, v), MISSING) for v in xs] for name in sorted(agg[by].unique())]
    return md_table(headers, rows)


def slug(*parts) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", "_".join(str(p) for p in parts)).strip("-").lower() or "x"


# ---------------------------------------------------------------------------------------------- protocols


@dataclass(frozen=True)
class Protocol:
    feature_extractor: str
    reference: str
    num_samples: float

    def caption(self) -> str:
        n = MISSING if not np.isfinite(self.num_samples) else f"{self.num_samples:g}"
        return (f"feature extractor `{self.feature_extractor or MISSING}`, "
                f"reference set `{self.reference or MISSING}`, {n} samples per run")

    def slug(self) -> str:
        n = "na" if not np.isfinite(self.num_samples) else f"{self.num_samples:g}"
        return slug(self.feature_extractor, self.reference, n)


def protocol_groups(rows: pd.DataFrame):
    """(Protocol, rows) per measurement protocol, for the rows that have at least one of FID / IS / KID."""
    scored = rows[rows[[m for m, _, _ in QUALITY]].notna().any(axis=1)]
    # rows that differ only in their NLL settings scored the very same samples: count them once, not as seeds
    key = ["sampler", "sampler_options", "nfe", "seed", "guidance_scale", "num_samples", *PROTOCOL]
    scored = scored.drop_duplicates([c for c in key if c in scored])  # (guidance_scale: absent in old frames)
    for key, g in scored.groupby(PROTOCOL, dropna=False, sort=True):
        yield Protocol(key[0], key[1], float(key[2])), g


def nll_groups(rows: pd.DataFrame):
    """(caption, slug, rows) per NLL protocol (number of test images), rows with nll_bpd set; `nll_k` = K used."""
    rows = rows[rows["nll_bpd"].notna()].copy()
    if rows.empty:
        return
    rows["nll_k"] = rows["nll_nfe"].where(rows["nll_nfe"].notna(), rows["nfe"])
    rows["nll_label"] = [nll_label(r) for _, r in rows.iterrows()]
    for n, g in rows.groupby("nll_num_images", dropna=False):
        count = "an unrecorded number of" if not np.isfinite(n) else f"{n:g}"
        methods = ", ".join(sorted(set(g["nll_method"]) - {""})) or "unrecorded"
        yield f"NLL method(s) {methods}; {count} test images", slug("nll", "na" if not np.isfinite(n) else f"{n:g}"), g


def nll_label(row) -> str:
    method = "/".join(p for p in (row["nll_method"], row["nll_variance"]) if p)
    return f"{row['sampler']} {method}".strip() if method else row["sampler"]


# ---------------------------------------------------------------------------------------------- published


def published_matches(rows: pd.DataFrame, published: pd.DataFrame, metric: str = "fid") -> str | None:
    """A Sampler x NFE table of `metric` (fid | is_mean): per sampler a row of ours (mean over seeds) and below it one
    row per published method, source, dataset and checkpoint of the same algorithm (NAME_RULES), at our NFEs.
    None when nothing matches."""
    agg = aggregate(rows, metric)
    nfes = sorted(rows["nfe"].dropna().unique())
    table = []
    for variant, g in rows.groupby("variant"):
        rule = find_rule(g.iloc[0]["sampler"], g.iloc[0]["options"])
        if rule is None:
            continue
        pub = published[published["nfe"].isin(g["nfe"].dropna().unique()) & published[metric].notna()]
        pub = pd.concat([pub[(pub["source"] == s) & pub["sampler"].isin(n)] for s, n in rule.published.items()]
                        + [pub.iloc[:0]])
        if pub.empty:
            continue
        mine = {r["nfe"]: fmt_cell(r["mean"], r["std"], r["n"]) for _, r in agg[agg["variant"] == variant].iterrows()}
        table.append([f"**{variant}**", "**ours**", "", ours_description(g)]
                     + [f"**{mine.get(v, MISSING)}**" for v in nfes])
        for (source, method, dataset, ckpt), p in pub.groupby(["source", "sampler", "dataset", "model_checkpoint"],
                                                            sort=False):
            values = dict(zip(p["nfe"], p[metric]))
            table.append(["", method, f"`{source}`", f"{dataset}; {ckpt}"] + [fmt(values.get(v)) for v in nfes])
    if not table:
        return None
    return md_table(["Sampler", "Numbers from", "Source", "Dataset; checkpoint"] + [f"NFE {fmt_nfe(v)}" for v in nfes],
                    table)


def published_nll(rows: pd.DataFrame, published: pd.DataFrame) -> list[list[str]]:
    """Table rows: published NLLs of the methods our NLL rows used (any K: the published chains are long)."""
    seen, out = set(), []
    for _, r in rows.drop_duplicates(["nll_method", "nll_variance"]).iterrows():
        for source, names in nll_published_names(r["nll_method"], r["nll_variance"] or None).items():
            pub = published[(published["source"] == source) & published["sampler"].isin(names)
                            & published["nll_bpd"].notna()]
            for i, p in pub.iterrows():
                if i not in seen:
                    seen.add(i)
                    out.append([nll_label(r), p["sampler"], f"`{source}`", p["dataset"], p["model_checkpoint"],
                                fmt_nfe(p["nfe"]) if np.isfinite(p["nfe"]) else "adaptive", fmt(p["nll_bpd"])])
    return out


# ---------------------------------------------------------------------------------------------- rank agreement


def kendall(ours: dict, theirs: dict):
    """Kendall tau-b between two scorings of the samplers both have (keys), with its p-value and the count;
    (nan, nan, n) when fewer than three overlap."""
    from scipy.stats import kendalltau

    common = sorted(k for k in ours if k in theirs and np.isfinite(ours[k]) and np.isfinite(theirs[k]))
    if len(common) < 3:
        return float("nan"), float("nan"), len(common)
    res = kendalltau([ours[k] for k in common], [theirs[k] for k in common])
    return float(res.statistic), float(res.pvalue), len(common)


def order_text(scores: dict, stds: dict | None = None) -> str:
    """`a < b ≈ c`: best (lowest FID) first; `≈` where the gap is smaller than the two std over seeds combined,
    sqrt(s1^2 + s2^2). A sampler run with one seed gets the median std of those run with several (seed noise is
    mostly a matter of model and sample count); with no std at all, every gap is `<`."""
    ranked = sorted(scores.items(), key=lambda kv: (kv[1], kv[0]))
    known = [v for v in (stds or {}).values() if np.isfinite(v)]
    fallback = float(np.median(known)) if known else np.nan
    stds = {k: v if np.isfinite(v) else fallback for k, v in (stds or {}).items()}
    text = ranked[0][0] if ranked else ""
    for (a, va), (b, vb) in zip(ranked, ranked[1:]):
        noise = np.hypot(stds.get(a, np.nan), stds.get(b, np.nan))
        text += f" {'≈' if np.isfinite(noise) and vb - va < noise else '<'} {b}"
    return text


def rank_agreement(rows: pd.DataFrame, published: pd.DataFrame) -> list[tuple]:
    """(reference, [[NFE, n, our order, published order, tau, p], ...]) for each RANK_REFERENCE with >= 3 of our
    samplers matched at some NFE. Our score = mean FID over seeds."""
    agg = aggregate(rows, "fid")
    first = rows.drop_duplicates("variant").set_index("variant")
    out = []
    for ref in RANK_REFERENCES:
        ref_rows = ref.rows(published)
        table = []
        for nfe in sorted(agg["nfe"].unique()):
            ours, theirs, stds = {}, {}, {}
            at = ref_rows[(ref_rows["nfe"] == nfe) & ref_rows["fid"].notna()]
            for _, a in agg[agg["nfe"] == nfe].iterrows():
                rule = find_rule(first.loc[a["variant"], "sampler"], first.loc[a["variant"], "options"])
                names = [n for s in ref.sources for n in (rule.published.get(s, ()) if rule else ())]
                match = at[at["sampler"].isin(names)]
                if len(match):
                    ours[a["variant"]], theirs[a["variant"]] = a["mean"], float(match["fid"].iloc[0])
                    stds[a["variant"]] = a["std"]
            tau, p, n = kendall(ours, theirs)
            if n >= 3:
                table.append([fmt_nfe(nfe), str(n), order_text(ours, stds), order_text(theirs), f"{tau:+.2f}", fmt(p)])
        if table:
            out.append((ref, table))
    return out


# ---------------------------------------------------------------------------------------------- figures


def save_figure(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def _line_styles(n: int):
    import matplotlib.pyplot as plt

    colors = plt.get_cmap("tab10" if n <= 10 else "tab20")
    markers = "osD^v<>ph*"
    return [(colors(i % colors.N), markers[i % len(markers)]) for i in range(n)]


def plot_lines(agg: pd.DataFrame, x: str, by: str, xlabel: str, ylabel: str, title: str, path: Path,
               log_y: bool = False, log_x: bool = True) -> None:
    """One line per `by` (mean), error bars and a band of +- std where several seeds were run; log x unless
    log_x=False (and log y, if asked and the values span more than a factor 20)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    names = sorted(agg[by].unique())
    for name, (color, marker) in zip(names, _line_styles(len(names))):
        g = agg[agg[by] == name].sort_values(x)
        std = g["std"].fillna(0.0).to_numpy()
        label = name + (f" (n={int(g['n'].max())} seeds)" if g["n"].max() > 1 else "")
        ax.errorbar(g[x], g["mean"], yerr=std if std.any() else None, color=color, marker=marker, ms=5, lw=1.5,
                    capsize=3, label=label)
        if std.any():
            ax.fill_between(g[x], g["mean"] - std, g["mean"] + std, color=color, alpha=0.15, lw=0)
    if log_x:
        ax.set_xscale("log")
    if log_y and (agg["mean"] > 0).all() and agg["mean"].max() > 20 * agg["mean"].min():
        from matplotlib.ticker import FuncFormatter, LogLocator, NullLocator

        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_locator(NullLocator())
        ylabel += " (log scale)"
    xs = sorted(agg[x].unique())
    ax.set_xticks(xs)
    ax.set_xticklabels([f"{v:g}" for v in xs])
    ax.minorticks_off()
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, frameon=False)
    save_figure(fig, path)


FAMILIES = (  # the panels of the FID-vs-NFE figure: at most about 7 series each
    ("DDPM / DDIM chains", ("ddpm", "ddim", "fastdpm")),
    ("Analytic-DPM, SN-/NPR-DPM", ("analytic_ddpm", "analytic_ddim", "sn_ddpm", "sn_ddim", "npr_ddpm", "npr_ddim")),
    ("Linear multistep", ("pndm", "plms", "ipndm", "deis")),
    ("DPM-Solver family", ("dpm", "dpmpp", "unipc")),
    ("EDM and stochastic", ("euler", "heun", "edm_stochastic", "restart", "sde")),
    ("Adaptive step size", ("rk45", "ggf")),
    ("Ancestral and SDE DPM-Solver++ (k-diffusion)", ("euler_ancestral", "dpmpp_2s_ancestral", "dpmpp_sde",
                                                      "dpmpp_2m_sde", "dpmpp_3m_sde")),
    ("SA-Solver, ER-SDE, DPM2, LMS", ("sa_solver", "er_sde", "dpm_2", "lms")),
    ("Few-step samplers", ("consistency", "lcm", "tcd")),
)


def family(sampler: str) -> str:
    return next((name for name, members in FAMILIES if sampler in members), "Other")


def readable_ticks(values, priority=(), min_ratio: float = 1.25) -> list[float]:
    """Tick positions on a log axis from `values`, no two closer than a factor min_ratio (so their labels never
    overprint): the values in `priority` (the NFE grid) are placed first, then the others where they fit."""
    kept: list[float] = []
    pri = sorted({float(v) for v in priority if np.isfinite(v) and v > 0})
    rest = sorted({float(v) for v in values if np.isfinite(v) and v > 0} - set(pri))
    for v in pri + rest:
        if all(max(v, k) / min(v, k) >= min_ratio for k in kept):
            kept.append(v)
    return sorted(kept)


def fid_points(rows: pd.DataFrame, results_dir: Path) -> pd.DataFrame:
    """Per variant and NFE: the FID (mean over seeds) at the NFE spent, and its paired 95 % CI to the best at that NFE
    shifted onto the point (fid - delta + ci: a bar that reaches the best's FID means tied), else +- std over seeds."""
    out = []
    for nfe in sorted(rows.loc[rows["fid"].notna(), "nfe"].unique()):
        at = rows[(rows["nfe"] == nfe) & rows["fid"].notna()]
        diffs = {d["variant"]: d for d in fid_differences(at, results_dir)} if at["variant"].nunique() > 1 else {}
        for variant, g in at.groupby("variant"):
            fid, d = g["fid"].mean(), diffs.get(variant)
            lo = hi = np.nan
            if d is not None and np.isfinite(d["ci_low"]):
                lo, hi = fid - d["delta"] + d["ci_low"], fid - d["delta"] + d["ci_high"]
            elif len(g) > 1:
                lo, hi = fid - g["fid"].std(ddof=1), fid + g["fid"].std(ddof=1)
            out.append({"variant": variant, "sampler": g["sampler"].iloc[0], "nfe": nfe,
                        "x": g["nfe_measured"].mean(), "fid": fid, "lo": lo, "hi": hi, "n": len(g)})
    return pd.DataFrame(out)


def plot_fid_panels(points: pd.DataFrame, title: str, path: Path) -> None:
    """FID vs NFE as small multiples, one panel per sampler family (FAMILIES), shared log y; error bars: the paired
    95 % CI to the best at each NFE (fid_points); a grey dashed line: the lowest FID at each NFE over all samplers."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullLocator

    points = points.assign(family=[family(s) for s in points["sampler"]])
    order = [name for name, _ in FAMILIES if name in set(points["family"])] + \
        (["Other"] if "Other" in set(points["family"]) else [])
    ncols = min(3, len(order))
    nrows = int(np.ceil(len(order) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 3.5 * nrows + 0.6), squeeze=False, sharey=True)
    best = points.groupby("nfe")["fid"].min()
    grid_nfes = sorted(points.loc[points["x"] == points["nfe"], "nfe"].unique())
    positive = points["fid"] > 0
    log_y = bool(positive.all() and points["fid"].max() > 5 * points["fid"].min())
    # the FID axis spans the points and their bars, but a bar reaching 0 or below (a CI of a difference) is cut at
    # a third of the lowest FID, so that one long bar does not squash every panel
    floor = points["fid"].min() / 3 if log_y else min(0.0, float(points["lo"].min()))
    top = float(np.nanmax(np.r_[points["fid"].to_numpy(), points["hi"].to_numpy()]))
    for ax, name in zip(axes.flat, order):
        panel = points[points["family"] == name]
        ax.plot(best.index[best.index.isin(grid_nfes)], best[best.index.isin(grid_nfes)], ls="--", color="0.6",
                lw=1, marker="_", ms=16, zorder=1, label="lowest FID at this NFE, any sampler")
        variants = sorted(panel["variant"].unique())
        for i, (variant, (color, marker)) in enumerate(zip(variants, _line_styles(len(variants)))):
            g = panel[panel["variant"] == variant].sort_values("x")
            step = min(1.035, 1.25 ** (1 / max(len(variants) - 1, 1)))  # all of a panel's series within 1.25x
            dodge = step ** (i - (len(variants) - 1) / 2)  # series side by side at one NFE, their bars apart
            lo, hi = (g["fid"] - g["lo"].clip(lower=floor)).to_numpy(), (g["hi"] - g["fid"]).to_numpy()
            has = np.isfinite(lo) & np.isfinite(hi)
            adaptive = bool((g["x"] != g["nfe"]).any())
            label = variant + (f" (NFE {', '.join(f'{v:g}' for v in g['x'])} spent)" if adaptive else "") + \
                (f" (n={int(g['n'].max())} seeds)" if g["n"].max() > 1 else "")
            ax.errorbar(g["x"] * dodge, g["fid"], yerr=np.where(has, [lo, hi], 0.0) if has.any() else None, color=color,
                        marker=marker, ms=5, lw=1.4, capsize=3, elinewidth=1, label=label, zorder=3)
        ax.set_xscale("log")
        if log_y:
            ax.set_yscale("log")
            ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.yaxis.set_minor_locator(NullLocator())
        ticks = readable_ticks(panel["x"], priority=[v for v in grid_nfes if v in set(panel["nfe"])])
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_locator(NullLocator())
        lo_x, hi_x = panel["x"].min(), panel["x"].max()
        ax.set_xlim(lo_x / 1.3, hi_x * 1.3)
        ax.set_ylim(floor, top * (1.3 if log_y else 1.05))
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("NFE (log scale)", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(True, which="major", alpha=0.3)
        many = len(variants) > 6
        ax.legend(fontsize=5.5 if many else 6.5, frameon=many, framealpha=0.8, loc="upper right")  # inside its panel
    for ax in axes[:, 0]:
        ax.set_ylabel("FID" + (" (log scale)" if log_y else ""), fontsize=8)
    for ax in list(axes.flat)[len(order):]:
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)


def load_samples(results_dir: Path, run_id: str):
    """uint8 [N, C, H, W] samples of a run, or None when its run directory or samples.npz is missing/unreadable."""
    path = results_dir / "runs" / run_id / "samples.npz"
    if not path.is_file():
        return None
    try:
        with np.load(path) as z:
            samples = z["samples"]
    except (OSError, KeyError, ValueError):
        return None
    return samples if samples.ndim == 4 and len(samples) else None


def tile(samples: np.ndarray, k: int = GRID_TILES) -> np.ndarray:
    """The first k*k samples (uint8 [N, C, H, W]) as one [k*H, k*W] (grey) or [k*H, k*W, 3] image, 1 px gaps."""
    n, c, h, w = samples.shape
    k = min(k, int(np.ceil(np.sqrt(n))))
    canvas = np.full((k * (h + 1) - 1, k * (w + 1) - 1, c), 128, np.uint8)
    for i, s in enumerate(samples[: k * k]):
        r, q = divmod(i, k)
        canvas[r * (h + 1): r * (h + 1) + h, q * (w + 1): q * (w + 1) + w] = s.transpose(1, 2, 0)
    return canvas[..., 0] if c == 1 else canvas[..., :3]


def grid_runs(rows: pd.DataFrame) -> list[tuple[str, list[pd.Series]]]:
    """Per variant, the runs at its smallest and largest NFE (the lowest seed of each)."""
    out = []
    for variant, g in rows[rows["nfe"].notna()].groupby("variant"):
        g = g.sort_values(["nfe", "seed", "run_id"])
        picks = [g.iloc[0]]
        top = g[g["nfe"] == g["nfe"].max()].iloc[0]
        if top["nfe"] != picks[0]["nfe"]:
            picks.append(top)
        out.append((variant, picks))
    return out


def plot_grids(rows: pd.DataFrame, results_dir: Path, title: str, path: Path) -> tuple[bool, list[str]]:
    """One row per sampler, columns smallest / largest NFE. Returns (written, run_ids whose samples are missing)."""
    import matplotlib.pyplot as plt

    panels, missing = [], []
    for variant, picks in grid_runs(rows):
        images = []
        for run in picks:
            samples = load_samples(results_dir, run["run_id"])
            if samples is None:
                missing.append(run["run_id"])
            images.append((run, samples))
        if any(s is not None for _, s in images):
            panels.append((variant, images))
    if not panels:
        return False, missing
    fig, axes = plt.subplots(len(panels), 2, figsize=(4.4, 2.1 * len(panels) + 0.4), squeeze=False)
    for (variant, images), row_axes in zip(panels, axes):
        for ax in row_axes:
            ax.axis("off")
        for ax, (run, samples) in zip(row_axes, images):
            if samples is None:
                ax.text(0.5, 0.5, "samples missing", ha="center", va="center", fontsize=8, transform=ax.transAxes)
            else:
                ax.imshow(tile(samples), cmap="gray", vmin=0, vmax=255, interpolation="nearest")
            ax.set_title(f"{variant}, NFE {run['nfe']:g}, seed {_seed(run)}", fontsize=8)
        if len(images) == 1:
            row_axes[1].text(0.5, 0.5, "only one NFE run", ha="center", va="center", fontsize=8, color="0.4",
                             transform=row_axes[1].transAxes)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)
    return True, missing


def _seed(run) -> str:
    return MISSING if not np.isfinite(run["seed"]) else f"{run['seed']:g}"


# ---------------------------------------------------------------------------------------------- sections


def quality_section(model: str, dataset: str, proto: Protocol, rows: pd.DataFrame, published: pd.DataFrame,
                    figures: Path, index: int, results_dir: Path) -> list[str]:
    seeds = rows.groupby(["variant", "nfe"])["seed"].nunique().max()
    out = [f"### Protocol {index}: {proto.caption()}", ""]
    for metric, name, better in QUALITY:
        agg = aggregate(rows, metric)
        if agg.empty:
            out += [f"**{name}**: not measured under this protocol.", ""]
            continue
        spread = "mean ± std over seeds (n = seeds); " if seeds > 1 else ""
        out += [f"**{name}** ({better}). Model `{model}`, dataset `{dataset}`; {proto.caption()}; {spread}"
                f"{name} in the `{proto.feature_extractor}` feature space.", "", pivot_table(agg), ""]
    if rows["fid"].notna().any():  # adaptive samplers at the NFE they spent
        name = f"fid_vs_nfe_{slug(model, dataset)}_{proto.slug()}.png"
        plot_fid_panels(fid_points(rows, results_dir),
                        f"{model} on {dataset}: FID vs NFE ({proto.feature_extractor} features, {proto.reference}, "
                        f"{proto.num_samples:g} samples); bars: paired 95 % CI to the best at each NFE",
                        figures / name)
        out += [f"![FID vs NFE, {model}, protocol {index}](figures/{name})", ""]
        out += significance_section(rows, results_dir)
    out += ode_error_section(rows, results_dir)
    out += published_section(rows, published)
    out += rank_section(rows, published)
    return out


def holm(pvalues: list[float]) -> list[float]:
    """Holm's step-down adjustment (Holm 1979): the k-th smallest of m p-values times m - k + 1, made
    non-decreasing in that order, capped at 1; returned in the input order."""
    order = np.argsort(pvalues, kind="stable")
    adjusted, running = [0.0] * len(pvalues), 0.0
    for k, i in enumerate(order):
        running = max(running, min(1.0, (len(pvalues) - k) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def _why(e: Exception) -> str:
    """A table cell for a comparison that could not be made."""
    text = str(e)
    return "no stored features" if "stored features" in text or "no finished run" in text else text.split(";")[0][:80]


def fid_differences(rows: pd.DataFrame, results_dir: Path, n_boot: int = 1000) -> list[dict]:
    """At one NFE of one protocol: the best variant (lowest mean FID) and every other's FID difference to it from
    the runs' stored features (nfebench.stats.paired_fid, paired when both runs have the same seed), with
    Holm-adjusted p-values. One dict per variant, best first: variant, fid, delta, ci_low, ci_high, p_holm
    (NaN without stored features, and `why`), tied (CI covers 0; the best is tied with itself)."""
    from .compare import CompareError, compare_runs, reference_features

    key = (str(results_dir), n_boot, tuple(sorted(rows["run_id"])))
    if key in _DIFFS:
        return [dict(d) for d in _DIFFS[key]]
    agg = aggregate(rows, "fid").sort_values(["mean", "variant"])
    runs = rows.sort_values("seed").drop_duplicates("variant").set_index("variant")  # lowest seed of each
    out = [{"variant": v, "fid": m, "delta": np.nan, "ci_low": np.nan, "ci_high": np.nan, "p_holm": np.nan,
            "tied": False, "why": ""} for v, m in zip(agg["variant"], agg["mean"])]
    out[0].update(delta=0.0, tied=True)
    try:
        best = stored_run(runs.loc[out[0]["variant"], "run_id"], results_dir)
        best.features()
        ref = reference_features(best)
    except (CompareError, ValueError, OSError) as e:
        for r in out[1:]:
            r["why"] = f"best run: {_why(e)}"
        _DIFFS[key] = [dict(d) for d in out]
        return out
    tested = []
    for r in out[1:]:
        try:
            other = stored_run(runs.loc[r["variant"], "run_id"], results_dir)
            paired = other.row.get("seed") == best.row.get("seed")
            res = compare_runs(other, best, n_boot=n_boot, paired=paired, metrics=("fid",), ref=ref)[0]
        except (CompareError, ValueError, OSError) as e:
            r["why"] = _why(e)
            continue
        r.update(delta=res["delta"], ci_low=res["ci_low"], ci_high=res["ci_high"], tied=res["ci_low"] <= 0)
        tested.append((r, res["p_value"]))
    for (r, _), p in zip(tested, holm([p for _, p in tested])):
        r["p_holm"] = p
    _DIFFS[key] = [dict(d) for d in out]
    return out


def ode_error_differences(rows: pd.DataFrame, results_dir: Path, n_boot: int = 1000) -> list[dict]:
    """As fid_differences for ode_error (metrics.ode_error): the variant with the lowest mean ode_error and every
    other's difference to it, paired over the samples' per-sample values (per_sample.npz; nfebench.stats.paired_mean),
    Holm-adjusted. Rows without ode_error (stochastic samplers) are left out."""
    from .compare import CompareError, compare_runs, find_run

    rows = rows[rows["ode_error"].notna()] if "ode_error" in rows else rows.iloc[:0]
    agg = aggregate(rows, "ode_error").sort_values(["mean", "variant"])
    runs = rows.sort_values("seed").drop_duplicates("variant").set_index("variant")
    out = [{"variant": v, "ode_error": m, "delta": np.nan, "ci_low": np.nan, "ci_high": np.nan, "p_holm": np.nan,
            "tied": False, "why": ""} for v, m in zip(agg["variant"], agg["mean"])]
    if not out:
        return out
    out[0].update(delta=0.0, tied=True)
    try:
        best = find_run(runs.loc[out[0]["variant"], "run_id"], results_dir)
    except CompareError as e:
        for r in out[1:]:
            r["why"] = f"best run: {_why(e)}"
        return out
    tested = []
    for r in out[1:]:
        try:
            other = find_run(runs.loc[r["variant"], "run_id"], results_dir)
            paired = other.row.get("seed") == best.row.get("seed")
            res = [x for x in compare_runs(other, best, n_boot=n_boot, paired=paired, metrics=("ode_error",))
                   if x["metric"] == "ode_error"]
            if not res:
                raise CompareError("no stored per-sample ode_error")
        except (CompareError, ValueError, OSError) as e:
            r["why"] = _why(e)
            continue
        res = res[0]
        r.update(delta=res["delta"], ci_low=res["ci_low"], ci_high=res["ci_high"], tied=res["ci_low"] <= 0)
        tested.append((r, res["p_value"]))
    for (r, _), p in zip(tested, holm([p for _, p in tested])):
        r["p_holm"] = p
    return out


def ode_error_section(rows: pd.DataFrame, results_dir: Path) -> list[str]:
    """Per NFE: mean ode_error of each deterministic sampler, its difference to the best with a paired 95 % CI and
    Holm-adjusted p (tied in bold), as significance_section for FID."""
    if "ode_error" not in rows or rows["ode_error"].isna().all():
        return []
    ref = str(rows.loc[rows["ode_error"].notna(), "ode_reference"].iloc[0]).split(" to ")[0]
    out = ["#### Distance to the ODE solution (ode_error) and its difference to the best at each NFE", "",
           f"RMS distance per dimension of each sample to the converged ODE solution from the same x_T ({ref}, to "
           "each sampler's own end point, t_min or clean data; docs/metrics.md), mean over samples; difference paired over the samples (`nfebench.stats.paired_mean`, "
           "1000 replicates), Holm-adjusted p. Stochastic samplers have no ODE solution and are not listed.", ""]
    for nfe in sorted(rows.loc[rows["ode_error"].notna(), "nfe"].unique()):
        diffs = ode_error_differences(rows[(rows["nfe"] == nfe)], results_dir)
        table = []
        for d in diffs:
            bold = (lambda t: f"**{t}**") if d["tied"] else (lambda t: t)
            if d is diffs[0]:
                table.append([bold(d["variant"]), bold(f"{d['ode_error']:.3g}"), "best", "", ""])
            elif np.isfinite(d["delta"]):
                table.append([bold(d["variant"]), bold(f"{d['ode_error']:.3g}"), f"{d['delta']:+.3g}",
                              f"[{d['ci_low']:+.3g}, {d['ci_high']:+.3g}]", f"{d['p_holm']:.3g}"])
            else:
                table.append([d["variant"], f"{d['ode_error']:.3g}", MISSING, d["why"], MISSING])
        out += [f"NFE {fmt_nfe(nfe)}:", "", md_table(["Sampler", "ode_error", "- best", "95 % CI", "p (Holm)"], table),
                ""]
    return out

_DIFFS: dict = {}  # fid_differences by (results_dir, n_boot, run ids): the markdown, figures, HTML and LaTeX share them


def stored_run(run_id: str, results_dir: Path):
    """The finished run `run_id` under results_dir/runs/, its features.npz recomputed from its samples.npz when only
    the samples are there (the committed results keep samples.npz, config.yaml and metrics.json of each run)."""
    from .compare import find_run, rescore

    run = find_run(run_id, results_dir)
    if not (run.dir / "features.npz").is_file() and (run.dir / "samples.npz").is_file():
        rescore(run)
    return run


def significance_section(rows: pd.DataFrame, results_dir: Path) -> list[str]:
    """Per NFE: the best sampler by FID, every other's difference to it with a 95 % CI and Holm-adjusted p; the
    samplers tied with the best (CI covering 0) in bold."""
    out = ["#### Is the difference real? FID difference to the best sampler at each NFE", "",
           "How these tests are made: the report's first section. Bold: the best and the samplers tied with it.", ""]
    single = []
    for nfe in sorted(rows.loc[rows["fid"].notna(), "nfe"].unique()):
        at = rows[(rows["nfe"] == nfe) & rows["fid"].notna()]
        if at["variant"].nunique() < 2:  # one sampler at this NFE: nothing to compare
            single.append(fmt_nfe(nfe))
            continue
        diffs = fid_differences(at, results_dir)
        table = []
        for d in diffs:
            bold = (lambda t: f"**{t}**") if d["tied"] else (lambda t: t)
            if d is diffs[0]:
                cells = [bold(d["variant"]), bold(fmt(d["fid"])), "best", "", ""]
            elif np.isfinite(d["delta"]):
                cells = [bold(d["variant"]), bold(fmt(d["fid"])), f"{d['delta']:+.3g}",
                         f"[{d['ci_low']:+.3g}, {d['ci_high']:+.3g}]", f"{d['p_holm']:.3g}"]
            else:
                cells = [d["variant"], fmt(d["fid"]), MISSING, d["why"], MISSING]
            table.append(cells)
        best, tied = diffs[0]["variant"], [d["variant"] for d in diffs if d["tied"]]
        untested = sum(not np.isfinite(d["delta"]) for d in diffs[1:])
        verdict = (f"lowest FID {best}; no comparison (no stored features)" if untested == len(diffs) - 1 else
                   f"tied with the best: {', '.join(tied)}" if len(tied) > 1 else
                   f"{best} leads significantly" + (f" over the {len(diffs) - 1 - untested} samplers tested "
                                                    f"({untested} without stored features)" if untested else ""))
        out += [f"NFE {fmt_nfe(nfe)}: {verdict}.", "",
                md_table(["Sampler", "FID", "FID - best", "95 % CI", "p (Holm)"], table), ""]
    if single:
        out += [f"One sampler only at NFE {', '.join(single)}: nothing to compare.", ""]
    return out


def ours_description(rows: pd.DataFrame) -> str:
    """`dataset; model, feature-extractor features` of our rows (one model, dataset and protocol)."""
    first = rows.iloc[0]
    return f"{first['dataset']}; {first['model']}, {first['feature_extractor'] or 'no'} features"


def published_section(rows: pd.DataFrame, published: pd.DataFrame) -> list[str]:
    fid, inception = published_matches(rows, published, "fid"), published_matches(rows, published, "is_mean")
    head = ["#### Published numbers for the same algorithms at the same NFE", ""]
    if fid is None and inception is None:
        return head + ["None of these samplers has a published row at these NFEs (mapping: "
                       "`nfebench.report_names.NAME_RULES`).", ""]
    tables = [f"**{name}**, ours (bold) and published:\n\n{t}\n" for name, t in (("FID", fid), ("IS", inception))
              if t is not None]
    return head + [
        f"**Different models and datasets**: ours is `{rows['model'].iloc[0]}` on `{rows['dataset'].iloc[0]}`, scored "
        f"with `{rows['feature_extractor'].iloc[0]}` features on {fmt_nfe(rows['num_samples'].iloc[0])} samples; "
        "the published rows are CIFAR-10 / CelebA / ImageNet models scored with Inception features (FID on 50k "
        "samples, each paper its own FID code and time-step schedule). Compare orderings, not values.", ""] + tables


def rank_section(rows: pd.DataFrame, published: pd.DataFrame) -> list[str]:
    head = ["#### Rank agreement with published orderings (FID)", ""]
    results = rank_agreement(rows, published)
    if not results:
        return head + ["No published table has at least three of these samplers at one NFE: no rank comparison.",
                       ""]
    out = head + ["Kendall tau-b (`scipy.stats.kendalltau`) between our mean-FID ordering and the published one, "
                  "over the samplers both have at that NFE; +1 = same order, -1 = reversed. With 3-5 samplers "
                  "tau moves in large steps and the p-value is rarely small. In our order, `a ≈ b` marks a gap smaller "
                  "than the seed spread sqrt(std_a^2 + std_b^2) (a one-seed sampler borrows the median std of the "
                  "several-seed ones at that NFE; no `≈` without any several-seed run): a swap there against the "
                  "published order is noise, not disagreement. Our order is by point FID; which of its gaps to the best are "
                  "real is in the table above (`Is the difference real?`).", ""]
    for ref, table in results:
        caveat = f" Caveat: {ref.caveats}." if ref.caveats else ""
        out += [f"Compared with **{ref.title}** (source keys {', '.join(f'`{s}`' for s in ref.sources)}).{caveat}",
                "", md_table(["NFE", "samplers", "our order (best first)", "published order (best first)",
                              "Kendall tau", "p"], table), ""]
    return out


def nll_section(model: str, dataset: str, rows: pd.DataFrame, published: pd.DataFrame, figures: Path) -> list[str]:
    out = []
    for caption, tag, g in nll_groups(rows):
        agg = aggregate(g, "nll_bpd", x="nll_k", by="nll_label")
        seeds = agg["n"].max() > 1
        out += [f"### NLL ({caption})", "",
                f"**NLL** (bits/dim, lower is better). Model `{model}`, dataset `{dataset}` (test split); {caption}"
                f"{'; mean ± std over seeds (n = seeds)' if seeds else ''}. K = evaluations of the NLL computation "
                "(`nll_nfe`, else `nfe`).", "",
                pivot_table(agg, x="nll_k", by="nll_label", first="Sampler / method", column="K"), ""]
        name = f"nll_vs_k_{slug(model, dataset)}_{tag}.png"
        plot_lines(agg, "nll_k", "nll_label", "K (network evaluations of the NLL computation, log scale)",
                   "NLL (bits/dim)", f"{model} on {dataset}: NLL vs K ({caption})", figures / name, log_y=True)
        out += [f"![NLL vs K, {model}](figures/{name})", ""]
        pub = published_nll(g, published)
        if pub:
            out += ["Published NLLs of the same methods (**other models and datasets**, and definitions differ: "
                    "discrete bound vs dequantized ODE likelihood; see docs/report.md):", "",
                    md_table(["Ours", "Published method", "Source", "Dataset", "Checkpoint", "K", "NLL"], pub), ""]
    return out


def grids_section(model: str, dataset: str, rows: pd.DataFrame, results_dir: Path, figures: Path) -> list[str]:
    name = f"grids_{slug(model, dataset)}.png"
    written, missing = plot_grids(rows, results_dir, f"{model} on {dataset}: samples at the smallest and largest NFE",
                                  figures / name)
    out = ["### Samples", ""]
    if written:
        out += [f"![sample grids, {model}](figures/{name})", ""]
    else:
        out += ["No sample grid: no run directory with samples.npz was found.", ""]
    if missing:
        out += [f"Samples missing for {len(missing)} run(s): {', '.join(f'`{r}`' for r in missing[:5])}"
                f"{' …' if len(missing) > 5 else ''}.", ""]
    return out


GUIDED = (("fid", "FID", "lower is better"), ("class_accuracy", "Class accuracy", "higher is better"))


def guidance_section(model: str, dataset: str, rows: pd.DataFrame, figures: Path) -> list[str]:
    """FID and class accuracy against the guidance scale w, per NFE (one line per sampler), where w was swept."""
    rows = rows[rows["guidance_scale"].notna()]
    if rows["guidance_scale"].nunique() < 2:
        return []
    out = ["### Classifier-free guidance", "",
           "One guided evaluation counts as one NFE (it runs the network twice: `network_passes`); w = 0 is the "
           "unconditional model, w = 1 the conditional one. Class accuracy: the fraction of samples the dataset's "
           "classifier labels as the class they were asked for.", ""]
    for nfe, g in rows.groupby("nfe"):
        for metric, name, better in GUIDED:
            agg = aggregate(g, metric, x="guidance_scale", by="sampler")
            if agg.empty:
                continue
            tag = f"{metric}_vs_guidance_{slug(model, dataset)}_nfe{fmt_nfe(nfe)}.png"
            out += [f"**{name}** ({better}) at NFE {fmt_nfe(nfe)}, model `{model}`, dataset `{dataset}`, "
                    f"{fmt_nfe(g['num_samples'].iloc[0])} samples per run:", "",
                    pivot_table(agg, x="guidance_scale", by="sampler", column="w ="), ""]
            plot_lines(agg, "guidance_scale", "sampler", "guidance scale w", name,
                       f"{model} on {dataset}: {name} vs guidance, NFE {fmt_nfe(nfe)}", figures / tag, log_x=False)
            out += [f"![{name} vs guidance, {model}, NFE {fmt_nfe(nfe)}](figures/{tag})", ""]
    return out


def model_section(model: str, dataset: str, rows: pd.DataFrame, published: pd.DataFrame, results_dir: Path,
                  figures: Path) -> list[str]:
    out = [f"## Model `{model}`, dataset `{dataset}`", ""]
    groups = list(protocol_groups(rows))
    if len(groups) > 1:
        out += [f"These runs were scored under **{len(groups)} different protocols**; each has its own tables, "
                "figure and rank comparison, and numbers from different protocols must not be compared.", ""]
    unscored = rows[rows[["fid", "is_mean", "kid_mean", "nll_bpd"]].isna().all(axis=1)]
    if len(unscored):
        out += [f"{len(unscored)} run(s) have no metric (e.g. `metrics=none`): they appear only in the sample grids.",
                ""]
    for i, (proto, g) in enumerate(groups, 1):
        out += quality_section(model, dataset, proto, g, published, figures, i, results_dir)
    out += guidance_section(model, dataset, rows, figures)
    out += nll_section(model, dataset, rows, published, figures)
    out += grids_section(model, dataset, rows, results_dir, figures)
    return out


def overview(df: pd.DataFrame) -> list[str]:
    protos = df[df[["fid", "is_mean", "kid_mean"]].notna().any(axis=1)][PROTOCOL].drop_duplicates()
    return [
        "# nfebench report", "",
        f"{len(df)} run(s); models: {', '.join(f'`{m}`' for m in sorted(df['model'].unique())) or MISSING}; "
        f"{len(protos)} scoring protocol(s) (feature extractor, reference set, sample count). Tables are split by "
        "model, dataset and protocol; numbers in different tables are not comparable. How to read this report and "
        "its caveats: docs/report.md in the nfebench repository.", "",
        "**Is the difference real?** At each NFE every sampler's FID is compared with the lowest one by a paired "
        "bootstrap over the samples' shared seeds (`nfebench.stats.paired_fid`, 1000 replicates, reference held "
        "fixed; docs/stats.md): the difference, its 95 % CI and a two-sided p, Holm-adjusted over the comparisons of "
        "one NFE (with 1000 replicates the smallest unadjusted p is 2/1001). **Bold**: the best and the samplers "
        "whose CI covers 0 (tied with it). A run with `samples.npz` but no `features.npz` is re-scored from its "
        "samples; one with neither is listed without a test. A single run's FID gets no interval of its own "
        "(docs/stats.md: at small FIDs its bootstrap is biased by more than its width); the FID-vs-NFE figures draw "
        "each point's paired 95 % CI to the best at its NFE.", ""]


def build_report(results_dir: Path) -> str:
    """Write results_dir/figures/*.png and return the markdown of the report."""
    df = load_leaderboard(results_dir / "leaderboard.csv")
    figures = results_dir / "figures"
    _DIFFS.clear()  # the tests of this build (its figures, HTML and LaTeX reuse them)
    # report.md depends on the leaderboard and the runs' kept files only, not on the rest of the disk (features an
    # earlier report re-scored, caches): a fresh clone regenerates the committed report byte for byte. Its size line
    # counts the kept files; main() prints results_dir's whole size on disk
    from .storage import kept_size_line

    out = overview(df)
    if not df.empty:
        out += [kept_size_line(results_dir, df["run_id"]), ""]
    if df.empty:
        return "\n".join(out + ["The leaderboard has no runs yet.", ""])
    published = load_published()
    for (model, dataset), rows in df.groupby(["model", "dataset"], sort=True):
        out += model_section(model, dataset, rows, published, results_dir, figures)
    return "\n".join(out)


def write_report(results_dir: str | Path, latex: bool = False) -> Path:
    """results_dir/report.md, report.html (nfebench.report_export) and figures/; with latex also report.tex."""
    from .report_export import write_extras

    results_dir = Path(results_dir)
    text = build_report(results_dir)
    path = results_dir / "report.md"
    atomic_write_text(path, text)
    write_extras(results_dir, text, latex)
    return path


# ---------------------------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nfebench.report",
                                     description="Write DIR/report.md, DIR/report.html and DIR/figures/*.png from "
                                                 "DIR/leaderboard.csv.")
    parser.add_argument("--results", default="results", metavar="DIR", help="results directory (default: results)")
    parser.add_argument("--latex", action="store_true", help="also DIR/report.tex: booktabs tables for a paper")
    args = parser.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    try:
        path = write_report(args.results, latex=args.latex)
    except ReportError as e:
        print(f"nfebench.report: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # e.g. DIR not writable
        print(f"nfebench.report: error: cannot write the report: {e}", file=sys.stderr)
        return 2
    from .storage import size_line

    extra = ", report.tex" if args.latex else ""
    print(f"wrote {path}, {path.parent / 'report.html'}{extra} and {path.parent / 'figures'}/")
    print(size_line(Path(args.results)))  # how much disk the run directories take (local: not part of report.md)
    return 0


if __name__ == "__main__":  # run as the package's module: report_export imports nfebench.report, whose cache of the
    from nfebench.report import main as _main  # paired tests (_DIFFS) the LaTeX tables then share

    sys.exit(_main())

"""FID of each sampler's tuned grid against its default grid, paired over the shared seeds (docs/results.md, "Tuned
grids").

    PYTHONPATH=src OMP_NUM_THREADS=1 python studies/tuned_vs_default.py results/tuned

For every (sampler, NFE) with a default-grid row and a `spacing=tuned` row of the same model, seed and sample count in
the results directory's leaderboard, prints the two FIDs (no interval of their own: docs/stats.md) and the paired
difference tuned - default with its 95 % CI and p-value (nfebench.stats.paired_fid through
nfebench.compare.compare_runs, 1000 replicates), Holm-adjusted over all the pairs printed (nfebench.report.holm).
"""

from __future__ import annotations

import sys
from pathlib import Path

from nfebench.compare import compare_runs, reference_features
from nfebench.report import fmt, holm, load_leaderboard, md_table, stored_run


def pairs(results: Path):
    df = load_leaderboard(results / "leaderboard.csv")
    df = df[df["fid"].notna()]
    df["tuned"] = [o.get("spacing") == "tuned" for o in df["options"]]
    for (sampler, nfe), g in df.groupby(["sampler", "nfe"]):
        tuned, default = g[g["tuned"]], g[~g["tuned"]]
        if len(tuned) and len(default):
            yield sampler, int(nfe), default.iloc[-1], tuned.iloc[-1]


def main(results: Path) -> None:
    found, ref = list(pairs(results)), None
    rows, raw = [], []
    for sampler, nfe, default, tuned in found:
        a, b = stored_run(tuned["run_id"], results), stored_run(default["run_id"], results)
        ref = ref if ref is not None else reference_features(a)
        res = compare_runs(a, b, metrics=("fid",), ref=ref)[0]
        rows.append([sampler, str(nfe), default["options"].get("spacing", ""), fmt(default["fid"]), fmt(tuned["fid"]),
                     f"{res['delta']:+.3g}", f"[{res['ci_low']:+.3g}, {res['ci_high']:+.3g}]"])
        raw.append(res["p_value"])
    for row, p in zip(rows, holm(raw)):
        row.append(f"{p:.3g}")
    print(md_table(["sampler", "NFE", "default grid", "FID default", "FID tuned",
                    "tuned - default", "95 % CI (paired)", "p (Holm)"], rows))


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "results/tuned"))

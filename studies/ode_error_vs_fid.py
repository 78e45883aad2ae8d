"""Does ode_error rank samplers as FID does, and does it separate what FID ties? (docs/results.md, issue 23)

    OMP_NUM_THREADS=1 python studies/ode_error_vs_fid.py results/ode_error

For each NFE in the results directory's leaderboard, over the deterministic candidates (rows with ode_error and FID,
the same model, seed and sample count: nfebench.recommend ... metrics.ode_error=true):
- Kendall's tau between the ranking by FID and the ranking by mean ode_error, with a 95 % percentile bootstrap
  interval: each replicate resamples the samples (the same indices for every candidate: the pairing), recomputes
  every candidate's FID (exact Frechet distance of the resampled features to the fixed reference) and mean ode_error,
  and the tau of the two rankings;
- every pair of candidates: is the paired FID difference significant (95 % CI excludes 0, nfebench.stats.paired_fid)
  and is the paired ode_error difference (nfebench.stats.paired_mean)? Counts the pairs FID ties and ode_error
  separates, and the reverse.
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import numpy as np
import torch
from scipy.stats import kendalltau

from nfebench import stats
from nfebench.compare import compare_runs, find_run, reference_features
from nfebench.metrics.from_features import FLOAT, GaussianRef, as_tensor, frechet_to_reference
from nfebench.report import load_leaderboard, md_table

N_BOOT = 1000


def tau_with_ci(feats: list, errs: list, ref, n_boot=N_BOOT, seed=0, level=0.95):
    g = GaussianRef.of(as_tensor(ref))
    x = [as_tensor(f) for f in feats]
    e = [torch.as_tensor(v, dtype=FLOAT) for v in errs]
    n = x[0].shape[0]
    fid = [float(frechet_to_reference(f, g)[0]) for f in x]
    tau = kendalltau(fid, [float(v.mean()) for v in e]).statistic
    gen = torch.Generator().manual_seed(seed)
    taus = []
    for start in range(0, n_boot, 100):
        w = stats._weights(n, min(100, n_boot - start), gen, "cpu")
        f_b = torch.stack([frechet_to_reference(f, g, w) for f in x], 1).numpy()  # [B, candidates]
        e_b = torch.stack([w @ v / n for v in e], 1).numpy()
        taus += [kendalltau(a, b).statistic for a, b in zip(f_b, e_b)]
    lo, hi = np.quantile(taus, [(1 - level) / 2, (1 + level) / 2])
    return tau, lo, hi, fid


def main(results: Path) -> None:
    df = load_leaderboard(results / "leaderboard.csv")
    df = df[df["ode_error"].notna() & df["fid"].notna()]
    ref = None
    summary = []
    for nfe, g in df.groupby("nfe"):
        g = g.drop_duplicates("variant", keep="last").sort_values("ode_error")
        runs = [find_run(r, results) for r in g["run_id"]]
        ref = ref if ref is not None else reference_features(runs[0])["fid"]
        feats = [r.features()["fid"] for r in runs]
        errs = [r.per_sample()["ode_error"] for r in runs]
        tau, lo, hi, _ = tau_with_ci(feats, errs, ref)
        tied_fid_sep_ode = []
        sep_fid_tied_ode = []
        n_fid = n_ode = 0
        for (va, a), (vb, b) in itertools.combinations(zip(g["variant"], runs), 2):
            res = {r["metric"]: r for r in compare_runs(a, b, metrics=("fid", "ode_error"), ref={"fid": ref})}
            fid_sep = not res["fid"]["ci_low"] <= 0 <= res["fid"]["ci_high"]
            ode_sep = not res["ode_error"]["ci_low"] <= 0 <= res["ode_error"]["ci_high"]
            n_fid, n_ode = n_fid + fid_sep, n_ode + ode_sep
            if ode_sep and not fid_sep:
                tied_fid_sep_ode.append(f"{va} / {vb}")
            if fid_sep and not ode_sep:
                sep_fid_tied_ode.append(f"{va} / {vb}")
        pairs = len(runs) * (len(runs) - 1) // 2
        summary.append([str(int(nfe)), str(len(runs)), f"{tau:+.2f} [{lo:+.2f}, {hi:+.2f}]", str(pairs),
                        str(n_fid), str(n_ode), f"{len(tied_fid_sep_ode)}: " + ", ".join(tied_fid_sep_ode),
                        f"{len(sep_fid_tied_ode)}: " + ", ".join(sep_fid_tied_ode)])
        print(f"NFE {int(nfe)} done", file=sys.stderr, flush=True)
    print(md_table(["NFE", "candidates", "Kendall's tau (FID vs ode_error) [95 % CI]", "pairs",
                    "pairs FID tells apart", "pairs ode_error tells apart", "FID ties, ode_error separates",
                    "FID separates, ode_error ties"], summary))


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "results/ode_error"))

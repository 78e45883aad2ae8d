"""Calibration of nfebench.stats.paired_fid on the Gaussian set-up of tests/test_stats.py, with the numbers the
tests only bound: coverage, CI width against the estimator's spread, null rejection rate, power at one CI width.

    OMP_NUM_THREADS=1 PYTHONPATH=src python studies/stats_calibration.py [--reps 100]
"""

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests import test_stats as T  # noqa: E402  the set-up under test, one definition

ap = argparse.ArgumentParser()
ap.add_argument("--reps", type=int, default=100)
a = ap.parse_args()
T.REPS = a.reps
ref = torch.randn(20000, T.D, generator=torch.Generator().manual_seed(123), dtype=torch.float64)
truth = T.true_delta(0.0, ref)
res = T.replicate(ref, 0.0)
width = np.mean([r["ci_high"] - r["ci_low"] for r in res])
spread = np.std([r["delta"] for r in res])
unpaired = np.mean([(lambda u: u["ci_high"] - u["ci_low"])(T.paired_fid(*T.pair(r, 0.0), ref, n_boot=T.BOOT, seed=r,
                                                                       device="cpu", paired=False))
                    for r in range(20)])
print(f"N={T.N}, d={T.D}, {a.reps} replications, n_boot={T.BOOT}: true delta {truth:.4f}")
print(f"coverage of the 95% CI: {np.mean([r['ci_low'] <= truth <= r['ci_high'] for r in res]):.2f}")
print(f"mean CI width {width:.4f}; 2 x 1.96 x spread of delta over replications {3.92 * spread:.4f} "
      f"(ratio {width / (3.92 * spread):.2f}); unpaired CI width {unpaired:.4f} ({unpaired / width:.1f}x)")
rej = 0
for r in range(a.reps):
    gen = torch.Generator().manual_seed(5000 + r)
    z, e = (torch.randn(T.N, T.D, generator=gen, dtype=torch.float64) for _ in range(2))
    rej += T.paired_fid(z @ T.A.T + T.MEAN_A, (0.8 * z + 0.6 * e) @ T.A.T + T.MEAN_A, ref, n_boot=T.BOOT, seed=r,
                        device="cpu")["p_value"] < 0.05
print(f"null pair called significant (p < 0.05): {rej / a.reps:.2f}")
shift = 0.0
while abs(T.true_delta(shift, ref) - truth) < width:
    shift += 0.005
print(f"power at a true difference of one CI width (b's mean shifted {shift:.3f}): "
      f"{np.mean([r['p_value'] < 0.05 for r in T.replicate(ref, shift)]):.2f}")

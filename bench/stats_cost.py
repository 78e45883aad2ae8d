"""Cost of nfebench.stats' bootstrap: digits-sized features (1000 x 64) and Inception-sized ones (50k x 2048).

    OMP_NUM_THREADS=1 PYTHONPATH=src python bench/stats_cost.py [--device cpu|cuda] [--n 50000] [--d 2048]

Random Gaussian features stand in for real ones (the cost depends on the shapes only). For the large shape it times
the linearized bootstrap that method="auto" picks there, and extrapolates the exact one from a few replicates.
"""

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import timed  # noqa: E402
from nfebench.machine import machine, write_json  # noqa: E402

from nfebench.metrics.from_features import FLOAT, GaussianRef, frechet_to_reference  # noqa: E402
from nfebench.stats import paired_fid, paired_is, paired_kid  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
ap.add_argument("--n", type=int, default=50000)
ap.add_argument("--d", type=int, default=2048)
ap.add_argument("--json")
a = ap.parse_args()
gen = torch.Generator().manual_seed(0)


def feats(n, d):
    return torch.randn(n, d, generator=gen).to(a.device)  # float32, as stored


rows = []
x, y, r = feats(1000, 64), feats(1000, 64), feats(1500, 64)
for name, fn in (("paired_fid (exact)", lambda: paired_fid(x, y, r, device=a.device, method="exact")),
                 ("paired_kid", lambda: paired_kid(x, y, r, device=a.device)),
                 ("paired_is (10 logits)", lambda: paired_is(x[:, :10], y[:, :10], device=a.device))):
    rows.append(("1000 x 64", name, 1000, timed(fn, a.device)))

x, y, r = feats(a.n, a.d), feats(a.n, a.d), feats(a.n, a.d)
shape = f"{a.n} x {a.d}"
rows.append((shape, "paired_fid (auto: linear)",
             1000, timed(lambda: print(paired_fid(x, y, r, device=a.device)["method"]), a.device)))
xd, g = x.to(FLOAT), GaussianRef.of(r.to(FLOAT))
w = torch.ones(2, a.n, dtype=FLOAT, device=a.device)
per_replicate = timed(lambda: frechet_to_reference(xd, g, w), a.device) / 2
rows.append((shape, "paired_fid (exact), extrapolated from 2 replicates", 1000, 2 * 1000 * per_replicate))

print(f"machine: {machine()}, device {a.device}\n")
print("| features | call | replicates | seconds |\n|---|---|---|---|")
for shape_, name, boot, secs in rows:
    print(f"| {shape_} | {name} | {boot} | {secs:.2f} |")
if a.json:
    write_json(a.json, a, [dict(features=s, call=c, n_boot=b, seconds=t) for s, c, b, t in rows])

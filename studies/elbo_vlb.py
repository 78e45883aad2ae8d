"""The K-step bound on the uniform, quadratic and ELBO-optimal (Watson et al. 2021, spacing=elbo) chains, digits model.

    OMP_NUM_THREADS=1 PYTHONPATH=src python studies/elbo_vlb.py

All 297 test images, the vlb NLL (bits/dim, docs/nll.md) with the small and the analytic variance; the elbo chain
comes from the x0 errors cached beside the checkpoint (estimated on 500 train images on first use). Quadratic spacing
repeats integer timesteps at K = 50 (shown as -). Also prints the elbo chain's timesteps at K = 10.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

import nfebench
from nfebench.analytic_dpm import cached_moments, weights_digest
from nfebench.data import load_split
from nfebench.elbo_steps import cached_x0_errors
from nfebench.models import load_model

ROOT = Path(__file__).resolve().parents[1]


def main():
    torch.set_num_threads(1)
    m = load_model("diffusers", path=str(ROOT / "checkpoints" / "digits-ddpm"))
    train, test = load_split("digits", "train"), load_split("digits", "test")
    digest = weights_digest(m.source)
    costs = cached_x0_errors(m, m.betas, train, model_digest=digest, model_dir=m.source)[1]["path"]
    moments = cached_moments(m, m.betas, train, model_digest=digest, model_dir=m.source)[1]["path"]
    print("| K | variance | uniform | quadratic | elbo |\n|---|---|---|---|---|")
    for var in ("small", "analytic"):
        for K in (10, 20, 50):
            bpd = {}
            for sp in ("uniform", "quadratic", "elbo"):
                if sp == "quadratic" and K == 50:
                    bpd[sp] = math.nan
                    continue
                r = nfebench.nll(m, m.betas, test, method="vlb", nfe=K, generator=torch.Generator().manual_seed(0),
                                 variance=var, spacing=sp, elbo_costs=costs, moments=moments)
                bpd[sp] = r["bpd"]
                if sp == "elbo" and K == 10:
                    grid = [int(t) for t in r["timesteps"][:-1]]
            cells = " | ".join("-" if math.isnan(v) else f"{v:.3f}" for v in bpd.values())
            print(f"| {K} | {var} | {cells} |", flush=True)
            if K == 10:
                print(f"  (elbo chain at K = 10, {var}: {grid})")


if __name__ == "__main__":
    main()

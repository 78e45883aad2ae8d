"""Fixed-step (Heun) ODE NLL vs NFE on the digits test split, Hutchinson trace with one probe (docs/nll.md).

    OMP_NUM_THREADS=1 PYTHONPATH=src python studies/nll_ode_fixed_step.py checkpoints/digits-ddpm results/nll/ode_fixed.json
"""

import json
import sys
import time

import torch

from nfebench.data import load_split
from nfebench.metrics.nll import ode_nll
from nfebench.models import load_model
from nfebench.schedule import VPSchedule

model_dir, out_path = sys.argv[1], sys.argv[2]
m = load_model("diffusers", path=model_dir)
test = load_split("digits", "test")
out = []
for sp in ("logsnr", "uniform"):
    for nfe in (10, 20, 50, 100):
        t0 = time.time()
        r = ode_nll(m, VPSchedule(m.betas), test, nfe=nfe, spacing=sp, generator=torch.Generator().manual_seed(0),
                    divergence="hutchinson", probes=1, batch_size=512)
        print(sp, nfe, round(r["bpd"], 4), round(r["bpd_se"], 4), round(time.time() - t0, 1), flush=True)
        out.append({k: r[k] for k in ("bpd", "bpd_se", "nfe", "vjp", "solver", "spacing", "divergence", "probes")})
json.dump(out, open(out_path, "w"), indent=1)

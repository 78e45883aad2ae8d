"""Distance of each ODE sampler's x_0 to the exact ODE solution, vs NFE, on a real model.

FID mixes discretization error with model error; this isolates the first. The reference is DPM-Solver at a high NFE
from the same x_T (per-sample seeds). Used in README ("Results on the embedded model") to explain why DPM-Solver-fast
trails DDIM at 10 NFE on the digits model and leads from 15.

    OMP_NUM_THREADS=1 python studies/ode_error.py                      # digits model, 500 samples
    OMP_NUM_THREADS=1 python studies/ode_error.py --model gmm          # the exact-score oracle
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import nfebench
from nfebench.models import load_model
from nfebench.run import sample_seeds
from nfebench.samplers import PerSampleNoise

SAMPLERS = {  # label -> (sampler, options)
    "dpm (fast, logsnr)": ("dpm", {}),
    "dpm order 1 (logsnr)": ("dpm", {"order": 1}),
    "dpm (fast, uniform)": ("dpm", {"spacing": "uniform"}),
    "ddim (uniform)": ("ddim", {}),
    "dpmpp 2M": ("dpmpp", {}),
    "deis": ("deis", {}),
}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", choices=["digits", "gmm"], default="digits")
    ap.add_argument("--num-samples", type=int, default=500)
    ap.add_argument("--nfe", type=int, nargs="+", default=[10, 15, 20, 30])
    ap.add_argument("--reference-nfe", type=int, default=150)
    a = ap.parse_args()
    torch.set_num_threads(1)
    root = Path(__file__).resolve().parents[1]
    model = (load_model("diffusers", path=str(root / "checkpoints/digits-ddpm")) if a.model == "digits"
             else load_model("gmm", dtype="float32"))
    noise = PerSampleNoise(sample_seeds(0, a.num_samples))
    x_T = noise.randn(model.sample_shape)
    ref = nfebench.sample(model, model.betas, x_T, "dpm", a.reference_nfe)
    print(f"RMS distance of x_0 to the ODE solution (dpm at {a.reference_nfe} NFE), {a.model} model, "
          f"{a.num_samples} samples, seed 0\n")
    print("| sampler | " + " | ".join(f"NFE {n}" for n in a.nfe) + " |")
    print("|---|" + "---|" * len(a.nfe))
    for label, (name, opts) in SAMPLERS.items():
        errs = [(nfebench.sample(model, model.betas, x_T, name, n, **opts) - ref).pow(2).mean().sqrt().item()
                for n in a.nfe]
        print(f"| {label} | " + " | ".join(f"{e:.4f}" for e in errs) + " |", flush=True)


if __name__ == "__main__":
    main()

"""Why digits FID ranks DDIM ahead of DPM-Solver-fast at 10 NFE: each solver's bias on the spread around a mode.

The scores here are exact, so every difference is the sampler's. The data distribution is the 1500 digits train
images convolved with N(0, b^2 I): b = 0 is the empirical distribution (what a model that memorised its training
set converges to); larger b spreads each image into a Gaussian blob, as a smoother model does. For each bandwidth b
and seed the script samples dpm, ddim and ddpm at NFE 10 and the exact ODE solution (dpm at NFE 50) from the same
x_T, and prints

  - FID (digits-cnn, against the train split: the runner's metric), and
  - the spread: RMS per-pixel distance of each sample to its nearest train image (in [-1, 1] units; the exact ODE
    solution has about b, plus the noise left at t = 0).

A second table does the same for a single Gaussian N(0, b^2) per pixel, where the exact ODE is linear: the
ratio of each sampler's output to the exact solution from the same x_T (1 = exact, < 1 = the spread contracts).

With --model it adds the shipped digits model (checkpoints/digits-ddpm), to place it on the b axis. With
--diffusers it adds diffusers' DPMSolverSinglestepScheduler (dpmsolver, order 3) on the same 10 evaluation points
as nfebench's DPM-Solver-fast, to show that the effect is DPM-Solver-3's, not this implementation's.

    OMP_NUM_THREADS=2 python studies/spread_bias.py --model --diffusers            # about 2 minutes on 2 CPU cores
    OMP_NUM_THREADS=2 python studies/spread_bias.py --seeds 0 1 2 --bandwidths 0 0.02 0.05 0.1
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import nfebench
from nfebench.machine import machine, write_json
from dpm_fast_steps import empirical_eps
from nfebench.data import load_split
from nfebench.images import to_model_range, to_uint8
from nfebench.metrics.fidelity import compute_fidelity
from nfebench.models import load_model
from nfebench.run import sample_seeds
from nfebench.samplers import PerSampleNoise
from nfebench.samplers.dpm_solver import _Step, singlestep_orders
from nfebench.schedule import VPSchedule

ROOT = Path(__file__).resolve().parents[1]
CNN = str(ROOT / "checkpoints/digits-cnn/digits_cnn.pt")
RUNS = (("dpm", 10), ("ddim", 10), ("ddpm", 10), ("dpm", 50))


def fast_grid(sched: VPSchedule, nfe: int) -> list[float]:
    """Every timestep at which DPM-Solver-fast evaluates the model, plus the end: the logSNR-uniform outer grid with
    each order-k step's intermediate points at r = 1/k, ..., (k-1)/k (Lu et al. 2022, Alg. 1-2), as nfebench's
    sampler places them. diffusers' singlestep order list at the same nfe spends them in the same order."""
    orders = singlestep_orders(nfe, 3)
    outer = [float(t) for t in sched.timesteps(len(orders), "logsnr")]
    taus = []
    for s, t, k in zip(outer[:-1], outer[1:], orders):
        step = _Step(sched, s, t)
        taus += [s] + [step.point(i / k)[0] for i in range(1, k)]
    return taus + [outer[-1]]


def diffusers_singlestep(eps, sched: VPSchedule, x_T: torch.Tensor, nfe: int) -> torch.Tensor:
    """diffusers' DPMSolverSinglestepScheduler (order 3, its own order list [1, 2, 3] * k + [1]) on fast_grid."""
    import diffusers
    import numpy as np

    ts = fast_grid(sched, nfe)
    sch = diffusers.DPMSolverSinglestepScheduler(num_train_timesteps=len(sched.betas), trained_betas=sched.betas,
                                                 algorithm_type="dpmsolver", solver_order=3,
                                                 final_sigmas_type="sigma_min")
    sch.set_timesteps(nfe)
    sch.timesteps = torch.from_numpy(np.asarray(ts[:-1]))
    sch.sigmas = torch.from_numpy(sched.edm_sigma(np.asarray(ts)))
    x = x_T.clone()
    for t in sch.timesteps:
        x = sch.step(eps(x, torch.full((x.shape[0],), float(t), dtype=x.dtype)), t, x).prev_sample
    return x


def gaussian_ratios(sched: VPSchedule, bandwidths, runs) -> list[list[float]]:
    """Output / exact solution for data N(0, b^2) in one dimension: eps(x, t) = sigma x / (alpha^2 b^2 + sigma^2)."""
    a0, s0, aT, sT = (float(f(tau)) for tau in (0.0, len(sched.betas) - 1.0) for f in (sched.alpha, sched.sigma))
    x_T = torch.ones(1, 1, 1, 1, dtype=torch.float64)
    rows = []
    for b in bandwidths:
        def eps(x, t, b=b):
            a, s = float(sched.alpha(float(t[0]))), float(sched.sigma(float(t[0])))
            return s * x / (a * a * b * b + s * s)
        exact = ((a0 * b) ** 2 + s0 ** 2) ** 0.5 / ((aT * b) ** 2 + sT ** 2) ** 0.5
        rows.append([float(nfebench.sample(eps, sched, x_T, name, nfe)) / exact for name, nfe in runs])
    return rows


def spread(x: torch.Tensor, train: torch.Tensor) -> float:
    d = torch.cdist(x.reshape(len(x), -1).double(), train).min(1).values
    return float(d.pow(2).mean().sqrt()) / train.shape[1] ** 0.5


def fid(x: torch.Tensor, reference: torch.Tensor) -> float:
    return compute_fidelity(to_uint8(x.float()), reference, "digits-train", "digits-cnn", weights_path=CNN,
                            isc=False, kid=False, verbose=False)["frechet_inception_distance"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bandwidths", type=float, nargs="+", default=[0.0, 0.02, 0.05, 0.07, 0.1, 0.3])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--num-samples", type=int, default=1000)
    ap.add_argument("--model", action="store_true", help="add the shipped digits model")
    ap.add_argument("--diffusers", action="store_true", help="add diffusers' singlestep DPM-Solver-3 on the same grid")
    ap.add_argument("--json", help="also write the results to this JSON file")
    a = ap.parse_args()
    torch.set_num_threads(min(2, torch.get_num_threads()))
    model = load_model("diffusers", path=str(ROOT / "checkpoints/digits-ddpm"))
    sched = VPSchedule(model.betas)
    reference = load_split("digits", "train")
    train = to_model_range(reference).reshape(len(reference), -1).double()
    scores = [(f"b = {b:g}", empirical_eps(sched, train, b), torch.float64) for b in a.bandwidths]
    if a.model:
        scores.append(("shipped model", model, torch.float32))
    names = [f"{s}@{n}" for s, n in RUNS] + (["diffusers dpm@10"] if a.diffusers else [])
    print(f"# Exact scores of known spread: FID (digits-cnn) and spread at NFE 10\n\n{a.num_samples} samples per "
          f"cell; ddpm's step noise from seed + 1. Machine: {machine()}\n")
    print("| score | seed | " + " | ".join(f"FID {n}" for n in names) + " | " + " | ".join(f"spread {n}" for n in names)
          + " |")
    print("|---|---|" + "---|" * (2 * len(names)))
    results = []
    for label, eps, dtype in scores:
        for seed in a.seeds:
            x_T = PerSampleNoise(sample_seeds(seed, a.num_samples)).randn(model.sample_shape).to(dtype)
            xs = []
            for sampler, nfe in RUNS:
                noise = PerSampleNoise(sample_seeds(seed + 1, a.num_samples)) if sampler == "ddpm" else None
                xs.append(nfebench.sample(eps, model.betas, x_T.clone(), sampler, nfe, generator=noise))
            if a.diffusers:
                with torch.no_grad():
                    xs.append(diffusers_singlestep(eps, sched, x_T.clone(), 10))
            row = {"score": label, "seed": seed, "fid": [fid(x, reference) for x in xs],
                   "spread": [spread(x, train) for x in xs]}
            results.append(row)
            print(f"| {label} | {seed} | " + " | ".join(f"{v:.2f}" for v in row["fid"]) + " | "
                  + " | ".join(f"{v:.3f}" for v in row["spread"]) + " |", flush=True)
    runs = RUNS[:2] + (("dpmpp", 10), ("unipc", 10))
    print("\n# A single Gaussian N(0, b^2): output / exact ODE solution from the same x_T\n")
    print("| b | " + " | ".join(f"{s}@{n}" for s, n in runs) + " |\n|---|" + "---|" * len(runs))
    gauss = gaussian_ratios(sched, a.bandwidths, runs)
    for b, row in zip(a.bandwidths, gauss):
        print(f"| {b:g} | " + " | ".join(f"{v:.3f}" for v in row) + " |")
    if a.json:
        write_json(a.json, a, {"columns": names, "rows": results, "gaussian": {"columns": [f"{s}@{n}" for s, n in runs],
                                                                            "ratios": gauss}})


if __name__ == "__main__":
    main()

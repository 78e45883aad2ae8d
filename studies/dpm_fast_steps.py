"""Where DPM-Solver-fast loses its 10-NFE accuracy on the digits model: the local error of each outer step.

DPM-Solver-fast at NFE 10 takes 4 logSNR-uniform outer steps of orders 3, 3, 3, 1 (Lu et al. 2022, Sec. 3.4). For
each outer step s -> t this script starts from the same point of an accurately solved trajectory (40 order-3 substeps
per outer step), takes ONE step of order 1, 2 and 3, and prints its RMS distance to the accurate solution at t. It
does so for three score functions on the same x_T:

  model      the shipped digits model (checkpoints/digits-ddpm)
  gmm        the exact-score oracle (a 20-component Gaussian mixture fitted to the digits train split)
  empirical  the exact score of the 1500 train images themselves (a mixture of deltas: what a model that
             memorises its training set converges to)

A higher order should give a smaller error where the model output is smooth in lambda. Then it prints the model's
error at high noise: the held-out eps-MSE beside an upper bound on the optimum (alpha^2/sigma^2 * mean data
variance), and the RMS distance of its x0-prediction to the data mean (where the exact x0-prediction sits at such
low signal-to-noise ratios).

    OMP_NUM_THREADS=2 python studies/dpm_fast_steps.py          # about 2 minutes on 2 CPU cores
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from nfebench.machine import machine
from nfebench.data import load_split
from nfebench.images import to_model_range
from nfebench.models import load_model
from nfebench.run import sample_seeds
from nfebench.samplers import PerSampleNoise
from nfebench.samplers.dpm_solver import _Step, dpm_solver_step, singlestep_orders
from nfebench.schedule import VPSchedule

ROOT = Path(__file__).resolve().parents[1]


def model_eps(model):
    return lambda x, tau: model(x, torch.full((x.shape[0],), float(tau), dtype=x.dtype))


def empirical_eps(sched: VPSchedule, data: torch.Tensor, bandwidth: float = 0.0):
    """Exact eps of the train images `data` [N, D] convolved with N(0, bandwidth^2 I); bandwidth 0: the empirical
    distribution itself. Posterior over the images: softmax of -|x - alpha d|^2 / (2 v), v = alpha^2 b^2 + sigma^2.
    tau: a number, or a tensor holding one timestep for the whole batch (as every sampler calls it)."""
    b2 = bandwidth ** 2

    def eps(x, tau):
        tau = float(tau[0]) if torch.is_tensor(tau) else float(tau)
        a, s = float(sched.alpha(tau)), float(sched.sigma(tau))
        v = a * a * b2 + s * s
        xf = x.reshape(x.shape[0], -1).double()
        d_hat = torch.softmax(-torch.cdist(xf, a * data).pow(2) / (2 * v), 1) @ data
        x0 = d_hat + (a * b2 / v) * (xf - a * d_hat)
        return ((xf - a * x0) / s).reshape(x.shape).to(x.dtype)
    return eps


def local_errors(eps, sched: VPSchedule, x_T: torch.Tensor, nfe: int, substeps: int) -> list[tuple]:
    """[(lambda_s, lambda_t, order used by DPM-Solver-fast, [err order 1, 2, 3])] per outer step."""
    orders = singlestep_orders(nfe, 3)
    grid = [float(t) for t in sched.timesteps(len(orders), "logsnr")]
    rows, x = [], x_T
    with torch.no_grad():
        for (s, t), used in zip(zip(grid[:-1], grid[1:]), orders):
            lams = np.linspace(float(sched.lambda_(s)), float(sched.lambda_(t)), substeps + 1)
            taus = [float(sched.tau_from_lambda(v)) for v in lams]
            ref = x
            for a, b in zip(taus[:-1], taus[1:]):
                ref = dpm_solver_step(eps, _Step(sched, a, b), ref, eps(ref, a), 3)
            e_s = eps(x, s)
            errs = [(dpm_solver_step(eps, _Step(sched, s, t), x, e_s, k) - ref).pow(2).mean().sqrt().item()
                    for k in (1, 2, 3)]
            rows.append((float(sched.lambda_(s)), float(sched.lambda_(t)), used, errs))
            x = ref
    return rows


def high_noise_error(model, data: torch.Tensor, timesteps=(999, 950, 900, 800, 700, 500)) -> list[tuple]:
    ab = torch.tensor(np.cumprod(1 - np.asarray(model.betas)), dtype=torch.float32)
    g = torch.Generator().manual_seed(0)
    var, mean = data.var(0).mean().item(), data.mean(0)
    rows = []
    with torch.no_grad():
        for t in timesteps:
            e = torch.randn(data.shape, generator=g)
            a = ab[t]
            x_t = a.sqrt() * data + (1 - a).sqrt() * e
            e_hat = model(x_t, torch.full((data.shape[0],), float(t)))
            x0_hat = (x_t - (1 - a).sqrt() * e_hat) / a.sqrt()
            rows.append((t, (e_hat - e).pow(2).mean().item(), (a / (1 - a)).item() * var,
                         (x0_hat - mean).pow(2).mean().sqrt().item()))
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--num-samples", type=int, default=300)
    ap.add_argument("--nfe", type=int, default=10)
    ap.add_argument("--substeps", type=int, default=40, help="order-3 substeps of the accurate solution per step")
    a = ap.parse_args()
    torch.set_num_threads(min(2, torch.get_num_threads()))
    model = load_model("diffusers", path=str(ROOT / "checkpoints/digits-ddpm"))
    sched = VPSchedule(model.betas)
    train = to_model_range(load_split("digits", "train"))
    x_T = PerSampleNoise(sample_seeds(0, a.num_samples)).randn(model.sample_shape)
    scores = {
        "model": (model_eps(model), x_T),
        "gmm": (model_eps(load_model("gmm", dtype="float64")), x_T.double()),
        "empirical": (empirical_eps(sched, train.reshape(len(train), -1).double()), x_T.double()),
    }
    print(f"# Local error of one DPM-Solver step per outer step of DPM-Solver-fast at NFE {a.nfe}\n")
    print(f"{a.num_samples} samples (seed 0), accurate solution: {a.substeps} order-3 substeps per step. "
          f"Machine: {machine()}\n")
    print("| score | step | lambda | fast uses | order 1 | order 2 | order 3 |")
    print("|---|---|---|---|---|---|---|")
    for name, (eps, x) in scores.items():
        for i, (ls, lt, used, errs) in enumerate(local_errors(eps, sched, x, a.nfe, a.substeps)):
            cells = " | ".join(f"{e:.4f}" for e in errs)
            print(f"| {name} | {i} | {ls:.2f} -> {lt:.2f} | {used} | {cells} |", flush=True)
    print("\n# The model at high noise (1500 train images, one noise draw)\n")
    print("| timestep | eps-MSE | bound on the optimum | RMS(x0-prediction - data mean) |")
    print("|---|---|---|---|")
    for t, mse, bound, x0_err in high_noise_error(model, train):
        print(f"| {t} | {mse:.2e} | {bound:.2e} | {x0_err:.3f} |")


if __name__ == "__main__":
    main()

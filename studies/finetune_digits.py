"""Fine-tune the shipped digits model towards high noise and score it: the experiments of docs/dpm_fast_digits.md.

Starts from checkpoints/digits-ddpm (its EMA weights; with --from-scratch from random weights), trains `--steps` Adam steps (batch 128, lr cosine-decayed from
`--lr`, grad-norm clip 1) on the digits train split with one of these changes to L_simple, and keeps an EMA:

  --t-min M --t-frac F   a fraction F of each batch draws its timestep from U{M..999} (the rest from U{0..999})
  --weight-cap W         each sample's eps-MSE is weighted by clip(sigma^2 / alpha^2, 1, W) (x0-MSE, truncated)

Then it prints, for the fine-tuned EMA weights (and with --baseline for the shipped ones): the eps-MSE at t = 999,
the local error of DPM-Solver-fast's outer steps 0 and 2 at NFE 10 (studies/dpm_fast_steps.py), and FID (digits-cnn)
of dpm, ddim and ddpm at 10 NFE from the same 1000 x_T (seed 0; ddpm's step noise from seed 1). Nothing is
written to checkpoints/; the weights go to --out.

    OMP_NUM_THREADS=2 python studies/finetune_digits.py --baseline --steps 0
    OMP_NUM_THREADS=2 python studies/finetune_digits.py --steps 2000 --weight-cap 1000 --ema 0.99 --out /tmp/ft
    OMP_NUM_THREADS=2 python studies/finetune_digits.py --steps 0 --score DIR    # score a model trained elsewhere
"""

from __future__ import annotations

import argparse
import copy
import math
from pathlib import Path

import numpy as np
import torch

import nfebench
from dpm_fast_steps import high_noise_error, local_errors, model_eps
from nfebench.data import load_split
from nfebench.images import to_model_range, to_uint8
from nfebench.metrics.fidelity import compute_fidelity
from nfebench.models import load_model
from nfebench.run import sample_seeds
from nfebench.samplers import PerSampleNoise
from nfebench.schedule import VPSchedule
from nfebench.train import digits_unet_config, high_noise_weights

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "checkpoints/digits-ddpm"


def finetune(a, data: torch.Tensor) -> None:
    from diffusers import UNet2DModel

    torch.manual_seed(a.seed)
    if a.from_scratch:  # the shipped architecture, random weights (plus dropout, if asked)
        net = UNet2DModel(**digits_unet_config(), dropout=a.dropout).train()
    else:
        net = UNet2DModel.from_pretrained(SHIPPED, dropout=a.dropout).train()
    ema = copy.deepcopy(net).eval().requires_grad_(False)
    ab = torch.tensor(np.cumprod(1 - np.asarray(load_model("diffusers", path=str(SHIPPED)).betas)),
                      dtype=torch.float32)
    opt = torch.optim.Adam(net.parameters(), lr=a.lr)
    for step in range(a.steps):
        for g in opt.param_groups:
            g["lr"] = a.lr * 0.5 * (1 + math.cos(math.pi * step / a.steps))
        x0 = data[torch.randint(0, len(data), (128,))]
        n = torch.randint(0, 1000, (128,))
        if a.t_frac > 0:
            n = torch.where(torch.rand(128) < a.t_frac, torch.randint(a.t_min, 1000, (128,)), n)
        eps = torch.randn_like(x0)
        abn = ab[n].view(-1, 1, 1, 1)
        per_sample = (net(abn.sqrt() * x0 + (1 - abn).sqrt() * eps, n).sample - eps).pow(2).mean((1, 2, 3))
        w = high_noise_weights(abn.view(-1), a.weight_cap) if a.weight_cap > 1 else torch.ones(128)
        loss = (w * per_sample).sum() / w.sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            for pe, pm in zip(ema.parameters(), net.parameters()):
                pe.lerp_(pm, 1 - (min(a.ema, (1 + step) / (10 + step)) if a.from_scratch else a.ema))
        if (step + 1) % 500 == 0:
            print(f"step {step + 1}: loss {loss.item():.4f}", flush=True)
    a.out.mkdir(parents=True, exist_ok=True)
    ema.save_pretrained(a.out)
    (a.out / "scheduler_config.json").write_text((SHIPPED / "scheduler_config.json").read_text())


def evaluate(path: Path, data: torch.Tensor, label: str) -> None:
    model = load_model("diffusers", path=str(path))
    sched = VPSchedule(model.betas)
    x_T = PerSampleNoise(sample_seeds(0, 1000)).randn(model.sample_shape)
    steps = local_errors(model_eps(model), sched, x_T[:300], 10, 40)
    fids = []
    for name in ("dpm", "ddim", "ddpm"):
        noise = PerSampleNoise(sample_seeds(1, 1000)) if name == "ddpm" else None
        x = nfebench.sample(model, model.betas, x_T.clone(), name, 10, generator=noise)
        fids.append(compute_fidelity(to_uint8(x), load_split("digits", "train"), "digits-train", "digits-cnn",
                                     weights_path=str(ROOT / "checkpoints/digits-cnn/digits_cnn.pt"),
                                     isc=False, kid=False, verbose=False)["frechet_inception_distance"])
    mse999 = high_noise_error(model, data, timesteps=(999,))[0][1]
    print(f"| {label} | {mse999:.1e} | {steps[0][3][2]:.3f} | {steps[2][3][2]:.3f} | "
          + " / ".join(f"{f:.2f}" for f in fids) + " |", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--ema", type=float, default=0.999, help="EMA decay of the fine-tuned weights")
    ap.add_argument("--t-min", type=int, default=0)
    ap.add_argument("--t-frac", type=float, default=0.0)
    ap.add_argument("--weight-cap", type=float, default=1.0, help="1 = L_simple")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--from-scratch", action="store_true", help="train the shipped architecture from random weights")
    ap.add_argument("--dropout", type=float, default=0.0, help="dropout in the ResNet blocks")
    ap.add_argument("--baseline", action="store_true", help="also score the shipped weights")
    ap.add_argument("--out", type=Path, default=Path("/tmp/nfebench-finetune"))
    ap.add_argument("--score", type=Path, action="append", default=[], metavar="DIR",
                    help="also score this saved model directory (e.g. one written by python -m nfebench.train)")
    a = ap.parse_args()
    torch.set_num_threads(min(2, torch.get_num_threads()))
    data = to_model_range(load_split("digits", "train"))
    print("| weights | eps-MSE at t=999 | step 0 order 3 | step 2 order 3 | FID dpm / ddim / ddpm at 10 |")
    print("|---|---|---|---|---|")
    if a.baseline:
        evaluate(SHIPPED, data, "shipped")
    for d in a.score:
        evaluate(d, data, str(d))
    if a.steps > 0:
        finetune(a, data)
        evaluate(a.out, data, f"{'from scratch, ' if a.from_scratch else ''}{a.steps} steps, lr {a.lr:g}, "
                              f"t-min {a.t_min} x {a.t_frac}, weight cap {a.weight_cap:g}, EMA {a.ema}, "
                              f"dropout {a.dropout:g}")


if __name__ == "__main__":
    main()

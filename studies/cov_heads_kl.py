"""The K-step bound with SN/NPR's per-pixel covariance against Analytic-DPM's isotropic one, on the digits test split.

    OMP_NUM_THREADS=1 PYTHONPATH=src python studies/cov_heads_kl.py                  # checkpoints/digits-ddpm
    OMP_NUM_THREADS=1 PYTHONPATH=src python studies/cov_heads_kl.py --model gmm      # the oracle: exact moments

For the DDPM chain of K uniform steps, each step's KL term E KL(q(x_t | x_s, x_0) || p(x_t | x_s)) (Bao et al. 2022b,
Eq. 4) is measured with the reverse variance of Analytic-DPM (its cached moments) and of the `sn` and `npr` heads
(checkpoints/digits-ddpm/cov_heads), all on the same x_s samples and the same mean: the differences are the
covariances'. Prints bits/dim of the summed KL terms (prior and decoder are the same for all three and left out).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch

from nfebench.analytic_dpm import cached_moments, gmm_digest, optimal_variance, weights_digest
from nfebench.cov_heads import attach_heads
from nfebench.data import load_split
from nfebench.images import to_model_range
from nfebench.models import load_model
from nfebench.samplers.analytic import head_variance
from nfebench.samplers.common import chain_grid
from nfebench.schedule import VPSchedule

ROOT = Path(__file__).resolve().parents[1]


def step_kl(v, post, c0, x0, x0_hat):
    v = torch.as_tensor(v, dtype=torch.float64).expand_as(x0)
    return (0.5 * (torch.log(v / post) + post / v + c0**2 * (x0 - x0_hat) ** 2 / v - 1)).flatten(1).sum(1).mean()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=str(ROOT / "checkpoints" / "digits-ddpm"), help="a checkpoint dir, or gmm")
    ap.add_argument("--steps", type=int, nargs="+", default=[10, 20, 50])
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    model = load_model("gmm") if a.model == "gmm" else load_model("diffusers", path=a.model)
    digest = gmm_digest(model.gmm) if a.model == "gmm" else weights_digest(model.source)
    gamma, _ = cached_moments(model, model.betas, load_split("digits", "train"), model_digest=digest,
                              model_dir=model.source)
    heads = {k: attach_heads(model, k) for k in ("sn", "npr")}
    sched = VPSchedule(model.betas)
    x0 = to_model_range(load_split("digits", "test")).double()
    dims = x0[0].numel()
    print(f"| K | analytic | sn | npr |  (bits/dim of the KL terms, {x0.shape[0]} test images, {model.name})")
    print("|---|---|---|---|")
    for K in a.steps:
        ts = chain_grid(sched, K, "uniform")
        total = {"analytic": 0.0, "sn": 0.0, "npr": 0.0}
        gen = torch.Generator().manual_seed(K)
        for s, t in zip(ts[:-2], ts[1:-1]):
            a_s, s_s = float(sched.alpha(s)), float(sched.sigma(s))
            a_t, s_t = float(sched.alpha(t)), float(sched.sigma(t))
            x_s = a_s * x0 + s_s * torch.randn(x0.shape, generator=gen, dtype=torch.float64)
            tt = torch.full((x0.shape[0],), float(s), dtype=model.dtype)
            with torch.no_grad():
                out = {k: h.fn(x_s.to(model.dtype), tt) for k, h in heads.items()}
            e = out["sn"][0].double()
            x0_hat = (x_s - s_s * e) / a_s
            beta = 1 - (a_s / a_t) ** 2
            post, c0 = beta * s_t**2 / s_s**2, a_t * beta / s_s**2
            v = {"analytic": optimal_variance(sched, float(s), float(t), float(gamma[int(s)]), post)}
            for k in ("sn", "npr"):
                v[k] = head_variance(sched, float(s), float(t), post, e, out[k][1].double(), k)
            for k in total:
                total[k] += step_kl(v[k], post, c0, x0, x0_hat).item()
        bits = {k: t / (dims * math.log(2)) for k, t in total.items()}
        print(f"| {K} | {bits['analytic']:.4f} | {bits['sn']:.4f} | {bits['npr']:.4f} |", flush=True)


if __name__ == "__main__":
    main()

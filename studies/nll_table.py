"""NLL tables for docs/nll.md: the K-step bound for small / large / analytic variance and the ODE likelihood.

    OMP_NUM_THREADS=2 PYTHONPATH=src python studies/nll_table.py --model checkpoints/digits-ddpm --out results/nll
    OMP_NUM_THREADS=2 PYTHONPATH=src python studies/nll_table.py --model gmm --out results/nll

Everything on the digits test split (297 images) unless --ode-images limits the (expensive, exact-trace) ODE run.
All bounds of one K come from one set of network evaluations (vlb_terms evaluates every (variance, clip) choice on
the same x_t samples), so their differences carry no Monte-Carlo noise of their own. Writes <out>/<model>.json and
prints markdown tables.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from nfebench.analytic_dpm import cached_moments, gmm_digest, weights_digest
from nfebench.data import load_split
from nfebench.metrics.nll import (LN2, decoder_variance, discretized_gaussian_log_likelihood, ode_nll, vlb_result,
                                  vlb_terms)
from nfebench.models import load_model
from nfebench.schedule import VPSchedule


def oracle_limit_bpd(model, images, samples, seed):
    """K -> infinity limit of the bound with the oracle's exact score: KL(q(x_0|x0) || p_0) + decoder (docs/nll.md)."""
    sched = VPSchedule(model.betas)
    a, s = float(sched.alpha(0.0)), float(sched.sigma(0.0))
    x0 = images.double() / 127.5 - 1.0
    n, g = x0.shape[0], torch.Generator().manual_seed(seed)
    tot = torch.zeros(n, dtype=torch.float64)
    for _ in range(samples):
        x1 = a * x0 + s * torch.randn(x0.shape, generator=g, dtype=torch.float64)
        t = torch.zeros(n, dtype=torch.float64)
        logq = (-0.5 * ((x1 - a * x0) / s).pow(2) - math.log(s) - 0.5 * math.log(2 * math.pi)).flatten(1).sum(1)
        x0_hat = (x1 - s * model.gmm.eps(x1, t)) / a
        tot += logq - model.gmm.log_prob(x1, t)
        tot -= discretized_gaussian_log_likelihood(images, x0_hat, decoder_variance(sched, 0.0)).flatten(1).sum(1)
    v = tot / samples / (x0[0].numel() * LN2)
    return v.mean().item(), v.std().item() / math.sqrt(n)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="a diffusers model directory, or 'gmm' (the oracle)")
    p.add_argument("--ks", type=int, nargs="+", default=[10, 25, 50, 100, 200, 1000])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=300)
    p.add_argument("--moment-images", type=int, default=500)
    p.add_argument("--ode-images", type=int, default=None, help="first n test images for the exact-trace ODE")
    p.add_argument("--hutchinson-probes", type=int, default=1, help="also a Hutchinson ODE run on all images; 0: skip")
    p.add_argument("--skip-ode", action="store_true")
    p.add_argument("--skip-vlb", action="store_true")
    p.add_argument("--out", default="results/nll")
    a = p.parse_args(argv)
    torch.manual_seed(a.seed)
    test = load_split("digits", "test")
    train = load_split("digits", "train")
    if a.model == "gmm":
        model, model_dir, tag = load_model("gmm"), None, "gmm"
        digest = gmm_digest(model.gmm)
    else:
        model, model_dir, tag = load_model("diffusers", path=a.model), a.model, Path(a.model).name
        digest = weights_digest(a.model)
    sched = VPSchedule(model.betas)
    report = {"model": a.model, "seed": a.seed, "num_test_images": int(test.shape[0]), "torch": torch.__version__}
    log = lambda *x: print(*x, flush=True)  # noqa: E731

    t0 = time.time()
    gamma, info = cached_moments(model, sched, train, model_digest=digest, model_dir=model_dir,
                                 num_images=a.moment_images, batch_size=a.batch_size, seed=a.seed)
    report["moments"] = {**info, "load_or_estimate_seconds": round(time.time() - t0, 1)}
    log(f"moments: {info}")

    rows = []
    for k in ([] if a.skip_vlb else a.ks):
        t0 = time.time()
        terms = vlb_terms(model, sched, test, k, variances=("small", "large", "analytic"), clips=(False, True),
                          gamma=gamma, batch_size=a.batch_size, generator=torch.Generator().manual_seed(a.seed))
        secs = time.time() - t0
        for (var, clip) in terms["terms"]:
            r = vlb_result(terms, var, clip, int(test.shape[0]), "uniform")
            r.pop("per_image_bpd")
            r.pop("timesteps")
            r["kl_steps_bpd"] = [round(x, 5) for x in r["kl_steps_bpd"]] if k <= 50 else None
            r["seconds_all_variances"] = round(secs, 1)
            rows.append(r)
        best = {v: vlb_result(terms, v, False, 1, "uniform")["bpd"] for v in ("small", "large", "analytic")}
        log(f"K={k}: " + ", ".join(f"{v}={b:.4f}" for v, b in best.items()) + f" ({secs:.0f}s)")
    report["vlb"] = rows
    if a.model == "gmm" and not a.skip_vlb:
        report["oracle_limit_bpd"] = oracle_limit_bpd(model, test, 16, a.seed)
        log(f"oracle K->inf limit: {report['oracle_limit_bpd']}")

    if not a.skip_ode:
        ode = []
        n = a.ode_images or int(test.shape[0])
        t0 = time.time()
        r = ode_nll(model, sched, test[:n], generator=torch.Generator().manual_seed(a.seed), batch_size=512)
        r.pop("per_image_bpd")
        r["seconds"] = round(time.time() - t0, 1)
        ode.append(r)
        log(f"ode exact ({n} images): {r}")
        if a.model == "gmm":
            u = torch.rand(test[:n].shape, generator=torch.Generator().manual_seed(a.seed), dtype=torch.float64)
            z = 2.0 * (test[:n].double() + u) / 256.0 - 1.0
            for t, key in ((0.0, "exact_tau0_bpd"), (-1.0, "exact_clean_bpd")):
                lp = model.gmm.log_prob(z, torch.full((n,), t, dtype=torch.float64))
                r[key] = (-lp / (64 * LN2) + 7.0).mean().item()
            log(f"exact at tau=0: {r['exact_tau0_bpd']:.5f} (gap {r['bpd'] - r['exact_tau0_bpd']:+.5f}); "
                f"clean mixture: {r['exact_clean_bpd']:.5f}")
        if a.hutchinson_probes:
            t0 = time.time()
            r = ode_nll(model, sched, test, generator=torch.Generator().manual_seed(a.seed), batch_size=512,
                        divergence="hutchinson", probes=a.hutchinson_probes)
            r.pop("per_image_bpd")
            r["seconds"] = round(time.time() - t0, 1)
            ode.append(r)
            log(f"ode hutchinson ({test.shape[0]} images): {r}")
        report["ode"] = ode

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    suffix = "_ode" if a.skip_vlb else ("_vlb" if a.skip_ode else "")
    (out / f"{tag}{suffix}.json").write_text(json.dumps(report, indent=1))
    # markdown
    log("\n| K | small | large | analytic | small (clip) | large (clip) | analytic (clip) |")
    log("|---|---|---|---|---|---|---|")
    for k in ([] if a.skip_vlb else a.ks):
        cell = {(r["variance"], r["clip"]): r for r in rows if r["nfe"] == k}
        log(f"| {k} | " + " | ".join(f"{cell[(v, c)]['bpd']:.3f}" for c in (False, True)
                                     for v in ("small", "large", "analytic")) + " |")
    return report


if __name__ == "__main__":
    sys.exit(0 if main() else 1)

"""Cost of tuning one (sampler, nfe) grid on the embedded digits model: wall time, evaluations, error before/after.

    PYTHONPATH=src python bench/tune_digits.py --sampler dpmpp --nfe 10          # the figure of docs/benchmarks.md
    PYTHONPATH=src python bench/tune_digits.py --sampler ipndm --nfe 5 --json bench/results/tune_digits.json

The same call as `python -m nfebench.tune model=digits_ddpm sampler=... nfe=...` (nfebench.tune on tune.num_noise
noise samples with seeds (1, i), the teacher at 200 NFE), without the cache. The cost in network evaluations of
single samples is (teacher_nfe + tuning_nfe) x num_noise; one FID-50k evaluation at the same budget costs 50000 x nfe.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch

import nfebench
from nfebench.models import load_model
from nfebench.run import sample_seeds
from nfebench.samplers import PerSampleNoise
from nfebench.tuning import TUNE_DEFAULTS

from nfebench.machine import machine, write_json


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sampler", default="dpmpp")
    ap.add_argument("--nfe", type=int, default=10)
    ap.add_argument("--num-noise", type=int, default=TUNE_DEFAULTS["num_noise"])
    ap.add_argument("--teacher-nfe", type=int, default=TUNE_DEFAULTS["teacher_nfe"])
    ap.add_argument("--evals-per-point", type=int,
                    default=TUNE_DEFAULTS["evals_per_point"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", help="also write the result here")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    root = Path(__file__).resolve().parents[1]
    model = load_model("diffusers", path=str(root / "checkpoints/digits-ddpm"))
    x_T = PerSampleNoise(sample_seeds(TUNE_DEFAULTS["seed"], a.num_noise)).randn(model.sample_shape)
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    grid, info = nfebench.tune(model, model.betas, sampler=a.sampler, nfe=a.nfe, x_T=x_T, teacher_nfe=a.teacher_nfe,
                               evals_per_point=a.evals_per_point, return_info=True)
    seconds = time.perf_counter() - t0
    evals = (info["teacher_nfe"] + info["tuning_nfe"]) * a.num_noise
    res = {"sampler": a.sampler, "nfe": a.nfe, "seconds": round(seconds, 1), "load_average_before": load,
           "grids_tried": info["grids_tried"], "teacher_nfe": info["teacher_nfe"], "tuning_nfe": info["tuning_nfe"],
           "num_noise": a.num_noise, "sample_evaluations": evals, "fraction_of_fid50k": evals / (50000 * a.nfe),
           "error_default": info["error_default"], "error_best_spacing": info["error_spacings"][info["best_spacing"]],
           "best_spacing": info["best_spacing"], "error_tuned": info["error_tuned"], "grid": grid.tolist()}
    print(machine(), f"load average {load:.2f} at start")
    print(f"{a.sampler} nfe={a.nfe}: {seconds:.0f} s, {info['grids_tried']} grids, teacher {info['teacher_nfe']} + "
          f"search {info['tuning_nfe']} evaluations x {a.num_noise} samples = {evals} "
          f"({res['fraction_of_fid50k']:.1%} of one FID-50k at this NFE); rms to the teacher "
          f"{info['error_default']:.4f} default -> {res['error_best_spacing']:.4f} best spacing "
          f"({info['best_spacing']}) -> {info['error_tuned']:.4f} tuned")
    if a.json:
        write_json(a.json, a, res)


if __name__ == "__main__":
    main()

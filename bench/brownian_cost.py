"""Benchmark: the cost of noise_sampler=brownian (one Brownian tree per sample) against Gaussian noise, relative to
the network time, for an SDE solver at batch 512 on the digits UNet, 20 NFE (issue 28; target: under 10 % of the
network time).

For each repeat (interleaved, median reported; the machine is shared): the bare network (nfe_used forwards on the
batch), the noise alone (the solver's per-step draws on its grid: per-sample Gaussian generators, or the batch's
Brownian trees built and queried at every grid point), and the whole sampler through the runner's path with each
noise.

    OMP_NUM_THREADS=1 PYTHONPATH=src python bench/brownian_cost.py --repeats 3 --json bench/results/brownian_cost_cpu.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import median, timed  # noqa: E402
from nfebench.machine import machine, write_json  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=str(Path(__file__).resolve().parents[1] / "checkpoints" / "digits-ddpm"))
    ap.add_argument("--sampler", default="dpmpp_2m_sde")
    ap.add_argument("--nfe", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", help="also write the results here")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)

    from nfebench import api
    from nfebench.models import load_model
    from nfebench.run import sample_seeds
    from nfebench.samplers.brownian import StepNoise
    from nfebench.samplers.common import PerSampleNoise
    from nfebench.samplers.edm import edm_grid

    model = load_model("diffusers", device=a.device, path=a.model)
    sched = model.schedule
    seeds = sample_seeds(0, a.batch_size)
    x = PerSampleNoise(seeds).randn(model.sample_shape).to(a.device)
    t = torch.full((a.batch_size,), 500.0, device=a.device)
    taus = edm_grid(sched, a.nfe, "karras", None)
    sig = [float(sched.edm_sigma(v)) for v in taus[:-1]] + [0.0]

    def bare():
        with torch.no_grad():
            for _ in range(a.nfe):
                model.fn(x, t)

    def noise_only(kind):
        def go():
            z = StepNoise(PerSampleNoise(seeds), x, min(v for v in sig if v > 0), max(sig), kind)
            for s, s_next in zip(sig[:-2], sig[1:-1]):  # the solver draws on every step but the last
                z(s, s_next)
        return go

    def sampler(kind):
        return lambda: api.sample(model, sched, x, a.sampler, a.nfe, generator=PerSampleNoise(seeds),
                                  noise_sampler=kind)

    bare()
    rows = {k: [] for k in ("bare", "gaussian_noise", "brownian_noise", "gaussian_sampler", "brownian_sampler")}
    for _ in range(a.repeats):
        rows["bare"].append(timed(bare, a.device))
        rows["gaussian_noise"].append(timed(noise_only("gaussian"), a.device))
        rows["brownian_noise"].append(timed(noise_only("brownian"), a.device))
        rows["gaussian_sampler"].append(timed(sampler("gaussian"), a.device))
        rows["brownian_sampler"].append(timed(sampler("brownian"), a.device))
    med = {k: median(v) for k, v in rows.items()}
    out = {"machine": machine(), "model": a.model, "sampler": a.sampler, "nfe": a.nfe, "batch_size": a.batch_size,
           "threads": a.threads, "device": a.device, "repeats": a.repeats, "seconds_median": med,
           "brownian_noise_over_network": med["brownian_noise"] / med["bare"],
           "gaussian_noise_over_network": med["gaussian_noise"] / med["bare"]}
    print(f"# machine: {out['machine']}\n# {a.sampler}, nfe {a.nfe}, batch {a.batch_size}, {a.repeats} repeats, "
          f"{a.threads} thread(s), {a.device}")
    print("| network (nfe forwards) s | gaussian noise s | brownian noise s | brownian / network | "
          "sampler, gaussian s | sampler, brownian s |")
    print("|---|---|---|---|---|---|")
    print(f"| {med['bare']:.2f} | {med['gaussian_noise']:.3f} | {med['brownian_noise']:.3f} | "
          f"{out['brownian_noise_over_network']:.1%} | {med['gaussian_sampler']:.2f} | {med['brownian_sampler']:.2f} |")
    if a.json:
        write_json(a.json, a, out)


if __name__ == "__main__":
    main()

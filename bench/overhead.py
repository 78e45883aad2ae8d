"""Benchmark 1: harness overhead = sampling time / (nfe_used x one bare forward of the same network on the same batch).

Sampling time is nfebench's own generate() (the runner's path: per-sample noise, counted model calls, the
sampler's arithmetic, uint8 conversion); the bare forward is the UNet's forward on the same batch with no harness
around it. Repeats are interleaved (bare, sampler, bare, sampler, ...) and the median ratio is reported, because the
reference machine is shared and noisy. A second, steadier estimate times generate() with the network replaced by
a table lookup (the harness alone) and reports 1 + harness / bare. Target: <= 1.05.

    OMP_NUM_THREADS=1 PYTHONPATH=src python bench/overhead.py --repeats 5
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import median, timed  # noqa: E402
from nfebench.machine import machine, write_json  # noqa: E402

SAMPLERS = ["ddpm", "ddim", "dpm", "dpmpp", "unipc", "deis", "ipndm", "plms", "pndm", "euler", "heun"]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=str(Path(__file__).resolve().parents[1] / "checkpoints" / "digits-ddpm"))
    ap.add_argument("--samplers", default=",".join(SAMPLERS))
    ap.add_argument("--nfe", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=500)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--null-repeats", type=int, default=7)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", help="also write the results here")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)

    from nfebench.models import load_model
    from nfebench.run import generate, sample_seeds, validate

    model = load_model("diffusers", device=a.device, path=a.model)
    x = torch.randn(a.batch_size, *model.sample_shape, generator=torch.Generator().manual_seed(0)).to(a.device)
    t = torch.full((a.batch_size,), 500.0, device=a.device)
    seeds = sample_seeds(0, a.batch_size)

    def bare():
        with torch.no_grad():
            for _ in range(a.nfe):
                model.fn(x, t)

    bare()  # warm-up
    with torch.no_grad():
        eps_out = model.fn(x, t)
    print(f"# machine: {machine()}\n# model {a.model}, batch {a.batch_size}, nfe {a.nfe}, {a.repeats} repeats")
    print("| sampler | nfe | bare nfe_used x forward (s) | sampling (s) | overhead ratio (median) | harness alone (s) |"
          " 1 + harness/bare |")
    print("|---|---|---|---|---|---|---|")
    results = []
    for name in a.samplers.split(","):
        nfe = max(a.nfe, 12) if name == "pndm" else a.nfe  # pndm's minimum budget is 12
        p = validate({"model": {"kind": "diffusers", "path": a.model}, "sampler": {"name": name},
                      "dataset": {"name": "digits"}, "metrics": {}, "nfe": nfe, "num_samples": a.batch_size,
                      "batch_size": a.batch_size, "device": a.device})
        _, used, _ = generate(model, p, seeds, progress=False)  # warm-up; `used` = evaluations actually spent
        ratios, bares, samps = [], [], []
        for _ in range(a.repeats):
            tb = timed(bare, a.device) * used / a.nfe  # bare() runs a.nfe forwards
            ts = timed(lambda: generate(model, p, seeds, progress=False), a.device)
            bares.append(tb), samps.append(ts), ratios.append(ts / tb)
        # the harness alone: the same generate() with the network replaced by a lookup of a precomputed output.
        # Its time is small and far less exposed to the shared machine's noise than the ratio of two large times.
        null = dataclasses.replace(model, fn=lambda xx, tt: eps_out[: xx.shape[0]])
        harness = median([timed(lambda: generate(null, p, seeds, progress=False), a.device)
                          for _ in range(a.null_repeats)])
        r = {"sampler": name, "nfe": nfe, "nfe_used": used, "bare_s": median(bares), "sampling_s": median(samps),
             "ratio": median(ratios), "ratios": ratios, "harness_only_s": harness,
             "implied_ratio": 1 + harness / median(bares)}
        results.append(r)
        print(f"| {name} | {nfe} ({used} used) | {r['bare_s']:.3f} | {r['sampling_s']:.3f} | {r['ratio']:.3f} | "
              f"{harness:.3f} | {r['implied_ratio']:.3f} |", flush=True)
    if a.json:
        write_json(a.json, a, results)


if __name__ == "__main__":
    main()

"""Benchmark 2: nfebench's sampler loop vs diffusers' scheduler loop, same UNet, same algorithm, same NFE.

Each pair is a combination the conformance tests (tests/test_conformance_diffusers.py) show to give the same x_0:
DDIM (eta 0, diffusers' leading spacing), DPM-Solver++(2M) and UniPC-bh1 order 3 (linspace, final sigma_min), and
DDPM ancestral (linspace). Both loops call the same network function with the same batch; repeats are
interleaved and medians reported. Target: ours not slower (ratio ours/diffusers <= 1).

    OMP_NUM_THREADS=1 PYTHONPATH=src python bench/vs_diffusers.py --repeats 5
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import median, timed  # noqa: E402
from nfebench.machine import machine, write_json  # noqa: E402


def cases(nfe):
    """(label, diffusers class, its kwargs, our sampler, our options given the diffusers timesteps)."""
    return [
        ("DDIM eta=0", "DDIMScheduler", dict(clip_sample=False, set_alpha_to_one=True), "ddim",
         lambda ts: dict(eta=0.0, timesteps=ts + [-1.0])),
        ("DPM-Solver++(2M)", "DPMSolverMultistepScheduler",
         dict(algorithm_type="dpmsolver++", solver_order=2, timestep_spacing="linspace", final_sigmas_type="sigma_min"),
         "dpmpp", lambda ts: dict(variant="2M", timesteps=ts + [0.0])),
        ("UniPC-bh1 order 3", "UniPCMultistepScheduler",
         dict(solver_order=3, solver_type="bh1", timestep_spacing="linspace", final_sigmas_type="sigma_min"),
         "unipc", lambda ts: dict(order=3, variant="bh1", timesteps=ts + [0.0])),
        ("DDPM ancestral", "DDPMScheduler", dict(clip_sample=False, variance_type="fixed_small",
                                                 timestep_spacing="linspace"), "ddpm", lambda ts: {}),
    ]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=str(Path(__file__).resolve().parents[1] / "checkpoints" / "digits-ddpm"))
    ap.add_argument("--nfe", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=500)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)

    import diffusers

    from nfebench import api
    from nfebench.models import load_model

    model = load_model("diffusers", device=a.device, path=a.model)
    x_T = torch.randn(a.batch_size, *model.sample_shape, generator=torch.Generator().manual_seed(0)).to(a.device)
    sched_cfg = json.loads((Path(a.model) / "scheduler_config.json").read_text())
    base = {k: sched_cfg[k] for k in ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule") if k in sched_cfg}

    def eps(x, t):
        return model.fn(x, t)

    def diffusers_loop(sch):
        x = x_T * sch.init_noise_sigma
        g = torch.Generator(device=a.device).manual_seed(1)
        with torch.no_grad():
            for t in sch.timesteps:
                e = eps(sch.scale_model_input(x, t), torch.full((x.shape[0],), float(t), device=a.device))
                kw = {"generator": g} if isinstance(sch, diffusers.DDPMScheduler) else {}
                x = sch.step(e, t, x, **kw).prev_sample
        return x

    def our_loop(sampler, opts):
        with torch.no_grad():
            return api.sample(eps, model.betas, x_T, sampler, a.nfe, generator=torch.Generator().manual_seed(1), **opts)

    print(f"# machine: {machine()}\n# model {a.model}, batch {a.batch_size}, nfe {a.nfe}, {a.repeats} repeats")
    print("| algorithm | diffusers loop (s) | nfebench loop (s) | ratio ours/diffusers (median) | max abs diff x_0 |")
    print("|---|---|---|---|---|")
    results = []
    for label, cls, kw, sampler, opts_of in cases(a.nfe):
        sch = getattr(diffusers, cls)(**base, **kw)
        sch.set_timesteps(a.nfe)
        opts = opts_of([float(t) for t in sch.timesteps])
        diff = float((our_loop(sampler, opts).float() - diffusers_loop(sch).float()).abs().max())  # also warm-up
        td, to, ratios = [], [], []
        for _ in range(a.repeats):
            sch.set_timesteps(a.nfe)
            d = timed(lambda: diffusers_loop(sch), a.device)
            o = timed(lambda: our_loop(sampler, opts), a.device)
            td.append(d), to.append(o), ratios.append(o / d)
        r = {"algorithm": label, "diffusers_s": median(td), "ours_s": median(to), "ratio": median(ratios),
             "ratios": ratios, "max_abs_diff": diff}
        results.append(r)
        print(f"| {label} | {r['diffusers_s']:.3f} | {r['ours_s']:.3f} | {r['ratio']:.3f} | {diff:.1e} |",
              flush=True)
    if a.json:
        write_json(a.json, a, results)


if __name__ == "__main__":
    main()

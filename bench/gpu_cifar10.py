"""Benchmark 3 (GPU): 50k samples of the google/ddpm-cifar10-32 architecture at NFE 10, then the Inception
features of the 50k, in fp32/TF32 and in bf16: images/s and seconds end to end. Target: under 60 s on one H100.

Random weights run at the same speed as the real checkpoint (pass --path google/ddpm-cifar10-32 or a directory to
use it). Sampling goes through nfebench's runner path (run.generate with per-sample seeds, runtime.prepare_model for
TF32 / bf16 autocast / channels_last / torch.compile, the OOM backoff); the Inception pass is torch-fidelity's
inception-v3-compat on the uint8 samples (random weights unless the real file is in the torch hub cache or given
with --inception-weights; the speed is the same).

    PYTHONPATH=src python bench/gpu_cifar10.py                       # fp32/TF32 and bf16, 50k, NFE 10
    PYTHONPATH=src python bench/gpu_cifar10.py --channels-last --compile
    PYTHONPATH=src python bench/gpu_cifar10.py --smoke               # CPU: 8 samples, checks the script runs
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from _common import sync  # noqa: E402
from nfebench.machine import machine, write_json  # noqa: E402


def inception_extractor(weights: str | None, device: str):
    import torch_fidelity
    from gpu_helpers import save_random_inception

    from nfebench.metrics.fidelity import INCEPTION_URL

    if weights is None:
        hub = Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_URL.rsplit("/", 1)[1]
        if hub.is_file():
            weights = str(hub)
        else:
            weights = str(save_random_inception(Path(tempfile.mkdtemp()) / "inception-random.pth"))
            print(f"# Inception: random weights in the real format ({weights}); same speed as the real ones")
    ext = torch_fidelity.feature_extractor_inceptionv3.FeatureExtractorInceptionV3(
        "inception-v3-compat", ["2048", "logits_unbiased"], feature_extractor_weights_path=weights)
    return ext.to(device)


def features(ext, samples: torch.Tensor, batch: int, device: str):
    out = []
    with torch.no_grad():
        for i in range(0, samples.shape[0], batch):
            f, _ = ext(samples[i:i + batch].to(device, non_blocking=True))
            out.append(f.cpu())
    return torch.cat(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--path", help="a UNet2DModel directory or cached hub id (default: random weights)")
    ap.add_argument("--num-samples", type=int, default=50_000)
    ap.add_argument("--nfe", type=int, default=10)
    ap.add_argument("--sampler", default="dpm")
    ap.add_argument("--batch-size", type=int, default=2000)
    ap.add_argument("--inception-batch", type=int, default=500)
    ap.add_argument("--precisions", default="tf32,bf16", help="comma list of fp32, tf32, bf16")
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--inception-weights")
    ap.add_argument("--smoke", action="store_true", help="tiny CPU run that checks the script, not a measurement")
    ap.add_argument("--json")
    a = ap.parse_args(argv)
    if a.smoke:
        a.num_samples, a.batch_size, a.inception_batch, device = 8, 4, 4, "cpu"
        torch.set_num_threads(1)
    elif not torch.cuda.is_available():
        sys.exit("gpu_cifar10.py: no CUDA GPU on this machine (use --smoke to check the script on CPU)")
    else:
        device = "cuda"

    from gpu_helpers import save_cifar10_unet

    from nfebench.models import load_model
    from nfebench.run import generate, sample_seeds, validate
    from nfebench.runtime import RuntimeOptions, generate_with_backoff, prepare_model

    path = a.path or str(save_cifar10_unet(Path(tempfile.mkdtemp()) / "ddpm-cifar10-arch"))
    seeds = sample_seeds(0, a.num_samples)
    ext = inception_extractor(a.inception_weights, device)
    print(f"# machine: {machine()}")
    print(f"# {a.num_samples} samples, {a.sampler} nfe={a.nfe}, batch {a.batch_size}, channels_last={a.channels_last}, "
          f"compile={a.compile}, model {a.path or 'random weights, google/ddpm-cifar10-32 architecture'}")
    print("| precision | sampling (s) | sampling images/s | Inception features (s) | end to end (s) | peak GPU MB |"
          " batch used |")
    print("|---|---|---|---|---|---|---|")
    results = []
    for prec in a.precisions.split(","):
        opts = RuntimeOptions(tf32=(prec != "fp32"), autocast="bf16" if prec == "bf16" else None,
                              channels_last=a.channels_last, compile=a.compile)
        p = validate({"model": {"kind": "diffusers", "path": path}, "sampler": {"name": a.sampler},
                      "dataset": {"name": "cifar10"}, "metrics": {}, "nfe": a.nfe, "num_samples": a.num_samples,
                      "batch_size": a.batch_size, "device": device})
        model = prepare_model(load_model("diffusers", device=device, path=path), opts, device)
        generate(model, validate({**p.cfg, "num_samples": min(a.batch_size, a.num_samples)}),  # warm-up (+ compile)
                 seeds[: min(a.batch_size, a.num_samples)], progress=False)
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        sync(device)
        t0 = time.perf_counter()
        samples, nfe_used, secs, bs = generate_with_backoff(lambda q, s: generate(model, q, s, progress=False), p,
                                                            seeds, opts)
        sync(device)
        t1 = time.perf_counter()
        feats = features(ext, samples, a.inception_batch, device)
        sync(device)
        t2 = time.perf_counter()
        peak = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else float("nan")
        r = {"precision": opts.precision(device), "sampling_s": t1 - t0, "images_per_s": a.num_samples / (t1 - t0),
             "inception_s": t2 - t1, "end_to_end_s": t2 - t0, "peak_gpu_mb": peak, "batch_size_used": bs,
             "nfe_used": nfe_used, "features": list(feats.shape)}
        results.append(r)
        print(f"| {r['precision']} | {r['sampling_s']:.1f} | {r['images_per_s']:.0f} | {r['inception_s']:.1f} | "
              f"{r['end_to_end_s']:.1f} | {peak:.0f} | {bs} |", flush=True)
    if a.json:
        write_json(a.json, a, results)


if __name__ == "__main__":
    main()

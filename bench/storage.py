"""Storage of one 50k-sample CIFAR-10-shaped run directory, and the FID from float16 vs float32 stored features.

The files are written by nfebench's own code (run._save_npz, storage.feature_arrays) at the real shapes: samples
[50000, 3, 32, 32] uint8 (zlib), FID features [50000, 2048], IS logits [50000, 1008]. The features' sizes do not
depend on their values (stored uncompressed); the samples' compressed size does, so two stand-ins bound it: uniform
noise (incompressible, the worst case) and the embedded digits model's real samples tiled to 32x32x3 (smooth images).
The features are a random-weight stand-in for Inception's pool3: non-negative, correlated, with Inception's scale
(softplus of a random linear map of a Gaussian latent); "samples" and "reference" differ by a shift and a scaling of
the latent, giving FIDs of a few units to tens. FID from float16 vs float32 storage: nfebench.metrics.from_features
(float64 arithmetic) of the same samples' features stored either way, against float32 reference statistics
(as nfebench.compare uses them).

    OMP_NUM_THREADS=1 PYTHONPATH=src python bench/storage.py --json bench/results/storage_cpu.json
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nfebench.machine import machine, write_json  # noqa: E402
from nfebench.metrics.from_features import GaussianRef, as_tensor, frechet_to_reference  # noqa: E402
from nfebench.run import _save_npz  # noqa: E402
from nfebench.storage import feature_arrays, human, tree_bytes  # noqa: E402


def inception_like(n: int, d: int, latent: int, shift: float, scale: float, seed: int, proj: np.ndarray) -> torch.Tensor:
    z = np.random.default_rng(seed).standard_normal((n, latent), dtype=np.float32) * scale + shift
    return torch.from_numpy(np.logaddexp(0, z @ proj).astype(np.float32))  # softplus: >= 0, pool3-like scale


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--num-samples", type=int, default=50000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", help="also write the results here")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    n, results = a.num_samples, {}

    # -- sizes of the files of one run directory, written as nfebench writes them
    proj = np.random.default_rng(0).standard_normal((256, 2048)).astype(np.float32) / 16
    feats = {"fid": inception_like(n, 2048, 256, 0.05, 1.0, 1, proj),
             "isc": torch.from_numpy(np.random.default_rng(2).standard_normal((n, 1008), dtype=np.float32) * 3)}
    from nfebench.data import load_split

    digits = load_split("digits", "train")  # [N, 1, 8, 8] uint8: real images of the embedded model's data
    smooth = digits[np.arange(n) % digits.shape[0]].repeat_interleave(4, 2).repeat_interleave(4, 3).repeat(1, 3, 1, 1)
    noise = torch.from_numpy(np.random.default_rng(3).integers(0, 256, (n, 3, 32, 32), dtype=np.uint8))
    seeds = np.arange(n, dtype=np.uint32)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for dtype in ("float32", "float16"):
            _save_npz(tmp / f"features-{dtype}.npz", compress=False, seeds=seeds,
                      **feature_arrays({"storage": {"features": dtype}}, feats))
            results[f"features_{dtype}_bytes"] = (tmp / f"features-{dtype}.npz").stat().st_size
            only_fid = feature_arrays({"storage": {"features": dtype}}, {"fid": feats["fid"]})
            _save_npz(tmp / f"fidonly-{dtype}.npz", compress=False, seeds=seeds, **only_fid)
            results[f"fid_features_only_{dtype}_bytes"] = (tmp / f"fidonly-{dtype}.npz").stat().st_size
        for name, x in (("noise", noise), ("digits", smooth)):
            _save_npz(tmp / f"samples-{name}.npz", samples=x.numpy(), seeds=seeds)
            results[f"samples_{name}_zlib_bytes"] = (tmp / f"samples-{name}.npz").stat().st_size
        results["samples_raw_bytes"] = int(noise.numel())
        results["tree_bytes_check"] = tree_bytes(tmp)

    # -- FID from float16-stored vs float32-stored features, for a few distances
    ref = GaussianRef.of(as_tensor(inception_like(n, 2048, 256, 0.0, 1.0, 10, proj).numpy()))  # float32, once
    for shift, scale in ((0.0, 1.0), (0.02, 1.0), (0.2, 1.1)):
        gen = inception_like(n, 2048, 256, shift, scale, 11, proj).numpy()
        f32 = float(frechet_to_reference(as_tensor(gen), ref)[0])
        f16 = float(frechet_to_reference(as_tensor(gen.astype(np.float16)), ref)[0])
        results[f"fid_shift{shift}_scale{scale}"] = {"float32": f32, "float16": f16, "rel_diff": abs(f16 - f32) / f32}
    print(f"machine: {machine()}")
    for k, v in results.items():
        print(f"  {k}: {human(v) if k.endswith('bytes') else v}")
    if a.json:
        write_json(a.json, a, results)


if __name__ == "__main__":
    main()

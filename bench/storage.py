"""Storage of one 50k-sample CIFAR-10-shaped run directory per storage.* combination, and the FID from float16 vs
float32 stored features.

The files are written by nfebench's own code (run._save_npz, run.save_grid, storage.feature_arrays) at the real
shapes: samples [50000, 3, 32, 32] uint8 (zlib), FID features [50000, 2048], IS logits [50000, 1008]. The features'
sizes do not depend on their values (stored uncompressed); the samples' compressed size does, so two stand-ins bound
it: uniform noise (incompressible, the worst case) and the embedded digits model's real samples tiled to 32x32x3
(smooth images). A run directory is features.npz + samples.npz (unless storage.samples=false) + grid.png + its small
files (config.yaml as composed for model=ddpm_cifar10, a metrics.json stand-in with every leaderboard column,
sampling.json); for each combination of storage.features x storage.logits x storage.samples x the two image
stand-ins (which also set grid.png's size) one directory is assembled from those files and measured (tree_bytes).
The features are a random-weight stand-in for Inception's pool3: non-negative, correlated, with Inception's scale
(softplus of a random linear map of a Gaussian latent); "samples" and "reference" differ by a shift and a scaling of
the latent, giving FIDs of a few units to tens. FID from float16 vs float32 storage: nfebench.metrics.from_features
(float64 arithmetic) of the same samples' features stored either way, against float32 reference statistics
(as nfebench.compare uses them).

    OMP_NUM_THREADS=1 PYTHONPATH=src python bench/storage.py --json bench/results/storage_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nfebench.machine import machine, write_json  # noqa: E402
from nfebench.metrics.from_features import GaussianRef, as_tensor, frechet_to_reference  # noqa: E402
from nfebench.run import _save_npz, save_grid  # noqa: E402
from nfebench.storage import feature_arrays, human, tree_bytes  # noqa: E402


def inception_like(n: int, d: int, latent: int, shift: float, scale: float, seed: int, proj: np.ndarray) -> torch.Tensor:
    z = np.random.default_rng(seed).standard_normal((n, latent), dtype=np.float32) * scale + shift
    return torch.from_numpy(np.logaddexp(0, z @ proj).astype(np.float32))  # softplus: >= 0, pool3-like scale


def small_files(d: Path) -> int:
    """config.yaml as nfebench writes it for a 50k-sample CIFAR-10 point (composed, float16 features, no logits), a
    metrics.json stand-in (every leaderboard column with a float or a 60-character string, the timings), and
    sampling.json; their total bytes."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    import nfebench.__main__ as entry
    from nfebench.leaderboard import COLUMNS
    from nfebench.paths import portable

    d.mkdir()
    with initialize_config_dir(config_dir=str(entry.CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["model=ddpm_cifar10", "num_samples=50000",
                                                       "storage.features=float16", "storage.logits=false"])
    resolved = portable(OmegaConf.to_container(cfg, resolve=True))  # as run._run_locked writes it
    (d / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(resolved)))
    row = {c: 1234.5678901234 if i % 2 else "x" * 60 for i, c in enumerate(COLUMNS)}
    row["timings"] = {k: 12.345 for k in ("load_seconds", "sampling_seconds", "scoring_seconds")}
    (d / "metrics.json").write_text(json.dumps(row, indent=2) + "\n")
    (d / "sampling.json").write_text(json.dumps({"nfe_used": 10, "sampling_seconds": 1234.567, "gpu_row": {
        "precision": "fp32", "channels_last": False, "compiled": False, "peak_gpu_mem_mb": 1234.5,
        "batch_size_used": 500, "world_size": 1}}))
    return tree_bytes(d)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--num-samples", type=int, default=50000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", help="also write the results here")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    n, results, load = a.num_samples, {}, [round(v, 2) for v in os.getloadavg()]

    # -- sizes of the files of one run directory, written as nfebench writes them
    proj = np.random.default_rng(0).standard_normal((256, 2048)).astype(np.float32) / 16
    feats = {"fid": inception_like(n, 2048, 256, 0.05, 1.0, 1, proj),
             "isc": torch.from_numpy(np.random.default_rng(2).standard_normal((n, 1008), dtype=np.float32) * 3)}
    from nfebench.data import load_split

    digits = load_split("digits", "train")  # [N, 1, 8, 8] uint8: real images of the embedded model's data
    smooth = digits[np.arange(n) % digits.shape[0]].repeat_interleave(4, 2).repeat_interleave(4, 3).repeat(1, 3, 1, 1)
    noise = torch.from_numpy(np.random.default_rng(3).integers(0, 256, (n, 3, 32, 32), dtype=np.uint8))
    seeds = np.arange(n, dtype=np.uint32)
    sizes = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for dtype in ("float32", "float16"):
            for logits in (True, False):
                name = f"features-{dtype}-logits_{str(logits).lower()}.npz"
                _save_npz(tmp / name, compress=False, seeds=seeds,
                          **feature_arrays({"storage": {"features": dtype, "logits": logits}}, feats))
                sizes[name] = (tmp / name).stat().st_size
        for name, x in (("noise", noise), ("digits", smooth)):
            _save_npz(tmp / f"samples-{name}.npz", samples=x.numpy(), seeds=seeds)
            sizes[f"samples-{name}.npz"] = (tmp / f"samples-{name}.npz").stat().st_size
            save_grid(x, tmp / f"grid-{name}.png")
            sizes[f"grid-{name}.png"] = (tmp / f"grid-{name}.png").stat().st_size
        small = small_files(tmp / "small")
        results["file_bytes"] = {**sizes, "small files (config.yaml, metrics.json, sampling.json)": small}
        results["samples_raw_bytes"] = int(noise.numel())
        table = {}
        for dtype in ("float32", "float16"):
            for logits in (True, False):
                for kept in (True, False):
                    for images in ("noise", "digits"):
                        key = (f"features={dtype} logits={str(logits).lower()} samples={str(kept).lower()} "
                               f"images={images}")
                        files = [f"features-{dtype}-logits_{str(logits).lower()}.npz", f"grid-{images}.png"] + \
                            ([f"samples-{images}.npz"] if kept else [])
                        d = tmp / "runs" / key.replace(" ", "_").replace("=", "-")
                        d.mkdir(parents=True)
                        for f in files:  # one run directory per combination, assembled from the files (hard links)
                            os.link(tmp / f, d / f)
                        for f in (tmp / "small").iterdir():
                            os.link(f, d / f.name)
                        table[key] = tree_bytes(d)
                        assert table[key] == sum(sizes[f] for f in files) + small
        results["run_directory_bytes"] = table

    # -- FID from float16-stored vs float32-stored features, for a few distances
    ref = GaussianRef.of(as_tensor(inception_like(n, 2048, 256, 0.0, 1.0, 10, proj).numpy()))  # float32, once
    for shift, scale in ((0.0, 1.0), (0.02, 1.0), (0.2, 1.1)):
        gen = inception_like(n, 2048, 256, shift, scale, 11, proj).numpy()
        f32 = float(frechet_to_reference(as_tensor(gen), ref)[0])
        f16 = float(frechet_to_reference(as_tensor(gen.astype(np.float16)), ref)[0])
        results[f"fid_shift{shift}_scale{scale}"] = {"float32": f32, "float16": f16, "rel_diff": abs(f16 - f32) / f32}
    results["command"] = "OMP_NUM_THREADS=1 PYTHONPATH=src python bench/storage.py " + " ".join(argv or sys.argv[1:])
    results["load_average_at_start"] = load
    print(f"machine: {machine()}; load average at start {load}")
    for k, v in results.items():
        if isinstance(v, dict) and k.endswith("bytes"):
            print(f"  {k}:")
            for name, b in v.items():
                print(f"    {name}: {human(b)}")
        else:
            print(f"  {k}: {human(v) if k.endswith('bytes') else v}")
    if a.json:
        write_json(a.json, a, results)


if __name__ == "__main__":
    main()

"""How a run directory stores its files (`storage.*`, not part of the run key), and how big results_dir is.

features.npz holds per-sample features for later comparisons (nfebench.compare, stats); in float16 they take half the
space of float32 (50k x 2048 Inception features: 205 MB instead of 410 MB), and the FID recomputed from them is the
float32 FID within a few 1e-5 relative (bench/storage.py). The row's own FID is always computed from the float32
features in memory. samples.npz (uint8, zlib) can be dropped once the point is scored (storage.samples=false).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

FEATURE_DTYPES = {"float16": np.float16, "float32": np.float32}


class StorageError(ValueError):
    """A bad storage.* value."""


def options(cfg: dict) -> dict:
    """storage.* with its defaults, validated (features: float16 | float32; samples: true | false)."""
    s = {"features": "float32", "samples": True, **(cfg.get("storage") or {})}
    if s["features"] not in FEATURE_DTYPES:
        raise StorageError(f"storage.features={s['features']!r}; allowed: {', '.join(FEATURE_DTYPES)}")
    if not isinstance(s["samples"], bool):
        raise StorageError(f"storage.samples={s['samples']!r}; allowed: true, false")
    unknown = sorted(set(s) - {"features", "samples"})
    if unknown:
        raise StorageError(f"unknown storage option {unknown[0]!r}; allowed: features, samples")
    return s


def feature_arrays(cfg: dict, feats: dict) -> dict:
    """The feature tensors as the numpy arrays features.npz stores (storage.features' dtype)."""
    dtype = FEATURE_DTYPES[options(cfg)["features"]]
    return {k: v.numpy().astype(dtype) for k, v in feats.items()}


def tree_bytes(path: Path) -> int:
    """Bytes of the regular files under path (0 if it does not exist)."""
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_size
            except OSError:
                pass
    return total


def human(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"


def size_line(results_dir: Path) -> str:
    """One report line: the size of results_dir on disk, of its run directories, and the largest run."""
    runs = [d for d in (Path(results_dir) / "runs").iterdir() if d.is_dir()] if (Path(results_dir) / "runs").is_dir() \
        else []
    sizes = sorted(((tree_bytes(d), d.name) for d in runs), reverse=True)
    total = tree_bytes(Path(results_dir))
    largest = f"; largest {sizes[0][1]}: {human(sizes[0][0])}" if sizes else ""
    return (f"results_dir on disk: {human(total)} ({len(sizes)} run director{'y' if len(sizes) == 1 else 'ies'}: "
            f"{human(sum(s for s, _ in sizes))}{largest}; features stored as docs/cluster.md describes).")

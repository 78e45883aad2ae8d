"""How a run directory stores its files (`storage.*`, not part of the run key), and how big results_dir is.

features.npz holds per-sample features for later comparisons (nfebench.compare, stats, the report's paired tests):
`fid` (the FID/KID layer), `isc` (the IS logits) and the per-sample `seeds`. At 50k samples with Inception
(2048 features, 1008 logits) it takes 611 MB in float32 (the default) and 306 MB in float16
(storage.features=float16); storage.logits=false leaves the logits out: 410 MB in float32, 205 MB in float16, and
nfebench.compare then reports paired IS as not compared (one line) while FID and KID are tested as before. The FID
recomputed from float16 features is the float32 FID within about 1e-6 relative; the row's own metrics always come
from the float32 features in memory. samples.npz (uint8, zlib; 4-154 MB at 50k CIFAR-10-sized samples, by how well
they compress) can be dropped once the point is scored (storage.samples=false). float16 features without logits
and without samples make a 50k-sample run directory about 206 MB. Figures: bench/storage.py,
bench/results/storage_cpu.json; docs/cluster.md.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

FEATURE_DTYPES = {"float16": np.float16, "float32": np.float32}


class StorageError(ValueError):
    """A bad storage.* value."""


DEFAULTS = {"features": "float32", "logits": True, "samples": True}


def options(cfg: dict) -> dict:
    """storage.* with its defaults, validated (features: float16 | float32; logits, samples: true | false)."""
    s = {**DEFAULTS, **(cfg.get("storage") or {})}
    unknown = sorted(set(s) - set(DEFAULTS))
    if unknown:
        raise StorageError(f"unknown storage option {unknown[0]!r}; allowed: {', '.join(DEFAULTS)}")
    if s["features"] not in FEATURE_DTYPES:
        raise StorageError(f"storage.features={s['features']!r}; allowed: {', '.join(FEATURE_DTYPES)}")
    for key in ("logits", "samples"):
        if not isinstance(s[key], bool):
            raise StorageError(f"storage.{key}={s[key]!r}; allowed: true, false")
    return s


def save_npz(path: Path, compress: bool = True, **arrays) -> None:
    """arrays as an .npz file (zlib-compressed unless compress=False), written atomically."""
    import io

    from .leaderboard import atomic_write_bytes

    buf = io.BytesIO()
    (np.savez_compressed if compress else np.savez)(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def feature_arrays(cfg: dict, feats: dict) -> dict:
    """The feature tensors as the numpy arrays features.npz stores: in storage.features' dtype, the IS logits
    (`isc`) only with storage.logits=true."""
    opts = options(cfg)
    return {k: v.numpy().astype(FEATURE_DTYPES[opts["features"]]) for k, v in feats.items()
            if k != "isc" or opts["logits"]}


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


KEPT_FILES = ("samples.npz", "config.yaml", "metrics.json", "per_sample.npz")  # of a run: what git keeps (.gitignore)


def kept_size_line(results_dir: Path, run_ids) -> str:
    """The report's size line: the leaderboard's runs and the bytes of the files git keeps of them, the same in every
    clone (features, grids and caches are regenerable and vary with what ran on a machine: size_line counts them)."""
    runs = Path(results_dir) / "runs"
    sizes = {name: 0 for name in KEPT_FILES}
    for run_id in sorted(set(map(str, run_ids))):
        for name in KEPT_FILES:
            f = runs / run_id / name
            sizes[name] += f.stat().st_size if f.is_file() else 0
    parts = ", ".join(f"{name.split('.')[0]} {human(n)}" for name, n in sizes.items() if n)
    return (f"results_dir: {len(set(map(str, run_ids)))} runs; their kept files take {human(sum(sizes.values()))}"
            f"{f' ({parts})' if parts else ''}. Features, grids and caches are regenerable and not counted here: "
            f"`python -m nfebench.report` prints the whole directory's size.")


def size_line(results_dir: Path) -> str:
    """One report line: the size of results_dir on disk, of its run directories, and the largest run."""
    runs = [d for d in (Path(results_dir) / "runs").iterdir() if d.is_dir()] if (Path(results_dir) / "runs").is_dir() \
        else []
    sizes = sorted(((tree_bytes(d), d.name) for d in runs), reverse=True)
    total = tree_bytes(Path(results_dir))
    largest = f"; largest {sizes[0][1]}: {human(sizes[0][0])}" if sizes else ""
    return (f"results_dir on disk: {human(total)} ({len(sizes)} run director{'y' if len(sizes) == 1 else 'ies'}: "
            f"{human(sum(s for s, _ in sizes))}{largest}; features stored as docs/cluster.md describes).")

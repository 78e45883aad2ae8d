"""CIFAR-10 (60k 32x32 RGB images) from its python-version pickles (`cifar-10-batches-py/`), as torchvision lays it out.

train split (data_batch_1..5, 50 000 images) = the FID/IS/KID reference; test split (test_batch, 10 000) = NLL.

With download=true, torchvision's CIFAR10 fetches and md5-checks the archive into `root` when it is not there yet.
The pickles are then read here directly (the same files torchvision reads), which also accepts a partial or
re-packed copy in the same layout; the leaderboard row records the reference size, so a partial copy shows.
"""

from __future__ import annotations

import pickle
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from .errors import DataError

BASE = "cifar-10-batches-py"
FILES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
DEFAULT_ROOT = "~/.cache/nfebench/datasets"
URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"


def _missing(root: Path, split: str) -> list[Path]:
    return [root / BASE / f for f in FILES[split] if not (root / BASE / f).is_file()]


def _download(root: Path, split: str) -> None:
    try:
        from torchvision.datasets import CIFAR10

        CIFAR10(str(root), train=(split == "train"), download=True)
    except Exception as e:  # offline, disk full, bad archive
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise DataError(f"CIFAR-10 is not under {str(root / BASE)!r} and could not be downloaded ({reason}); "
                        f"extract {URL} there (dataset.root=DIR names the parent of {BASE}/)") from None


@lru_cache(maxsize=4)
def _read(root: str, split: str, stamp: tuple = ()) -> torch.Tensor:  # stamp: (size, mtime) of the files
    chunks = []
    for f in FILES[split]:
        path = Path(root) / BASE / f
        try:
            with path.open("rb") as fh:
                d = pickle.load(fh, encoding="latin1")
            data = np.asarray(d["data"], dtype=np.uint8)
        except Exception as e:
            raise DataError(f"cannot read CIFAR-10 file {str(path)!r} ({type(e).__name__}); expected the python "
                            f"pickle with a 'data' array [N, 3072] from {URL}") from None
        if data.ndim != 2 or data.shape[1] != 3072:
            raise DataError(f"CIFAR-10 file {str(path)!r} has data of shape {data.shape}; expected [N, 3072]")
        chunks.append(data.reshape(-1, 3, 32, 32))
    x = torch.from_numpy(np.concatenate(chunks))
    x.requires_grad_(False)
    return x


def load_cifar10_split(split: str, root: str | None = None, download: bool = True) -> torch.Tensor:
    """uint8 [N, 3, 32, 32]: train = the 50 000 training images (FID reference), test = the 10 000 test images."""
    if not isinstance(download, bool):
        raise DataError(f"dataset.download must be true or false, got {download!r}")
    r = Path(root or DEFAULT_ROOT).expanduser().resolve()
    missing = _missing(r, split)
    if missing and download:
        _download(r, split)
        missing = _missing(r, split)
    if missing:
        raise DataError(f"CIFAR-10 {split} split not found: {str(missing[0])!r} is missing; extract {URL} under "
                        f"{str(r)!r} (it creates {BASE}/), pass dataset.root=DIR, or set dataset.download=true")
    stamp = tuple((f.stat().st_size, f.stat().st_mtime_ns) for f in (r / BASE / n for n in FILES[split]))
    return _read(str(r), split, stamp)

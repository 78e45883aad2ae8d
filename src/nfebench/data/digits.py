"""scikit-learn's digits (1797 8x8 grayscale images, 17 grey levels, shipped inside scikit-learn).

Pixel values 0..16 are mapped to uint8 by round(v * 255 / 16). The held-out test split is fixed by a seeded
permutation (SPLIT_SEED, TEST_SIZE) and is the same for training, FID reference and NLL everywhere in nfebench.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

SPLIT_SEED = 0
TEST_SIZE = 297  # 1797 = 1500 train + 297 test


def _digits_table() -> np.ndarray:
    """scikit-learn's digits.csv.gz as load_digits reads it ([1797, 65] float64: 64 pixels, then the label), read
    from the file scikit-learn ships without importing sklearn.datasets (half a second of imports, paid by the first
    point of every digits sweep); load_digits itself where the file is not at that place."""
    import gzip
    from importlib.util import find_spec

    spec = find_spec("sklearn")  # locates the package without importing it
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz" if spec else None
    if path is None or not path.is_file():
        from sklearn.datasets import load_digits

        d = load_digits()
        return np.concatenate([d.data, d.target[:, None]], 1)
    with gzip.open(path, mode="rt", encoding="utf-8") as f:
        return np.loadtxt(f, delimiter=",")


@lru_cache(maxsize=None)
def _digits_arrays():
    table = _digits_table()
    images = np.rint(table[:, :-1].reshape(-1, 8, 8) * (255.0 / 16.0)).astype(np.uint8)[:, None]  # [1797, 1, 8, 8]
    perm = np.random.RandomState(SPLIT_SEED).permutation(len(images))
    test_idx, train_idx = np.sort(perm[:TEST_SIZE]), np.sort(perm[TEST_SIZE:])
    return images, table[:, -1].astype(int).astype(np.int64), train_idx, test_idx


def load_digits_split(split: str, with_labels: bool = False):
    """uint8 tensor [N, 1, 8, 8] of the train (1500) or test (297) split; labels too if asked."""
    images, labels, train_idx, test_idx = _digits_arrays()
    idx = train_idx if split == "train" else test_idx
    x = torch.from_numpy(images[idx].copy())
    if with_labels:
        return x, torch.from_numpy(labels[idx].copy())
    return x


"""Datasets as uint8 image tensors [N, C, H, W] with a fixed train / test split.

The train split is the FID/IS/KID reference set; the test split is held out for NLL.
"""

from __future__ import annotations

from .cifar10 import load_cifar10_split
from .digits import load_digits_split
from .errors import DataError
from .folder import load_folder_split

DATASETS = {"digits": load_digits_split, "cifar10": load_cifar10_split, "folder": load_folder_split}


def load_split(name: str, split: str, **options):
    """Return the uint8 tensor [N, C, H, W] of dataset `name`, split 'train' or 'test'."""
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; allowed: {', '.join(sorted(DATASETS))}")
    if split not in ("train", "test"):
        raise DataError(f"unknown split {split!r}; allowed: train, test")
    return DATASETS[name](split, **options)

"""A directory of images as a dataset: `dataset=folder dataset.path=DIR [dataset.test_path=DIR2]`.

All image files under the directory (recursively; .png .jpg .jpeg .webp .bmp .tif .tiff), in sorted path order,
converted to RGB (or grey with dataset.channels=1). Images must share one size unless dataset.resolution=R is set:
then each is resized (shorter side to R, bicubic) and center-cropped to R x R, as the DDPM/ADM LSUN and CelebA-HQ
pipelines do. train = `path` (the FID reference), test = `test_path` (held out for NLL).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from .errors import DataError

EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


def _load(path: Path, mode: str, resolution: int | None) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            im = im.convert(mode)
            if resolution:
                w, h = im.size
                s = resolution / min(w, h)
                im = im.resize((max(resolution, round(w * s)), max(resolution, round(h * s))), Image.BICUBIC)
                w, h = im.size
                left, top = (w - resolution) // 2, (h - resolution) // 2
                im = im.crop((left, top, left + resolution, top + resolution))
            a = np.asarray(im, dtype=np.uint8)
    except Exception as e:
        raise DataError(f"cannot read image {str(path)!r} ({type(e).__name__})") from None
    return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)


def _listing(directory: str) -> tuple:
    """(path, size, mtime) of every image file: the cache key, so an edited folder is read again."""
    files = sorted(p for p in Path(directory).rglob("*") if p.suffix.lower() in EXTENSIONS and p.is_file())
    if not files:
        raise DataError(f"no images ({', '.join(EXTENSIONS)}) under {directory!r}")
    return tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files)


@lru_cache(maxsize=4)
def _read_dir(listing: tuple, channels: int, resolution: int | None) -> torch.Tensor:
    files = [Path(f) for f, _, _ in listing]
    mode = "L" if channels == 1 else "RGB"
    arrays = [_load(f, mode, resolution) for f in files]
    shape0 = arrays[0].shape
    for f, a in zip(files, arrays):
        if a.shape != shape0:
            raise DataError(f"image {str(f)!r} is {a.shape[2]}x{a.shape[1]} but {str(files[0])!r} is "
                            f"{shape0[2]}x{shape0[1]}; pass dataset.resolution=R to resize and center-crop all")
    return torch.from_numpy(np.stack(arrays))


def load_folder_split(split: str, path: str | None = None, test_path: str | None = None, channels: int = 3,
                      resolution: int | None = None) -> torch.Tensor:
    """uint8 [N, C, H, W] of the images under `path` (train) or `test_path` (test)."""
    key = "path" if split == "train" else "test_path"
    directory = path if split == "train" else test_path
    if directory is None:
        raise DataError(f"dataset.{key} is not set; pass dataset.{key}=DIR (a directory of images)")
    if channels not in (1, 3):
        raise DataError(f"dataset.channels must be 1 or 3, got {channels!r}")
    if resolution is not None and (isinstance(resolution, bool) or not isinstance(resolution, int) or resolution <= 0):
        raise DataError(f"dataset.resolution must be a positive integer or null, got {resolution!r}")
    d = Path(directory).expanduser().resolve()
    if not d.is_dir():
        raise DataError(f"dataset.{key}={directory!r} is not a directory; pass a directory of images")
    return _read_dir(_listing(str(d)), channels, resolution)

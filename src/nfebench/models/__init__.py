"""Model loaders: each returns an EpsModel, the only thing samplers and metrics see of a network.

kinds: `diffusers` (any UNet2DModel directory or hub id) and `gmm` (the exact-score Gaussian-mixture oracle).
"""

from __future__ import annotations

from .base import EpsModel, ModelError
from .diffusers_unet import load_diffusers
from .gmm import load_gmm

LOADERS = {"diffusers": load_diffusers, "gmm": load_gmm}


def load_model(kind: str, device="cpu", **options) -> EpsModel:
    if kind not in LOADERS:
        raise ModelError(f"unknown model kind {kind!r}; allowed: {', '.join(sorted(LOADERS))}")
    return LOADERS[kind](device=device, **options)


__all__ = ["EpsModel", "ModelError", "LOADERS", "load_model"]

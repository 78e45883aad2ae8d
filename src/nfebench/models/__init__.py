"""Model loaders: each returns an EpsModel, the only thing samplers and metrics see of a network.

kinds: `diffusers` (any UNet2DModel directory or hub id), `pipeline` (a text-to-image diffusers pipeline:
SD 1.x/2.x, SDXL, SD3, Flux), `python` (a user's factory function) and `gmm` (the exact-score Gaussian-mixture
oracle). What the network predicts and its schedule are resolved by the one adapter,
nfebench.models.parametrization.
"""

from __future__ import annotations

from .base import EpsModel, ModelError
from .diffusers_unet import load_diffusers
from .gmm import load_gmm
from .python_factory import load_python


def load_pipeline(**options) -> EpsModel:
    """model=pipeline (nfebench.models.pipeline, imported on use: it registers the text_embeddings need)."""
    from .pipeline import load_pipeline as load

    return load(**options)


LOADERS = {"diffusers": load_diffusers, "gmm": load_gmm, "pipeline": load_pipeline, "python": load_python}


def schedule_kind(model: dict) -> str | None:
    """The schedule kind (nfebench.schedules.KINDS) a model config loads with, told without loading the model (for
    spacing=default in the run key): model.schedule if set, the oracle's discrete default, a diffusers directory's
    scheduler config; None where it cannot be told here (the loader then says what is wrong)."""
    from .diffusers_unet import _resolve, scheduler_config, scheduler_kind

    schedule = model.get("schedule")
    if schedule is not None:
        return schedule if isinstance(schedule, str) else dict(schedule).get("kind")
    if model.get("kind") == "gmm":
        return "discrete"
    if model.get("kind") in ("diffusers", "pipeline"):
        try:
            root, _ = _resolve(model.get("path"))
        except ModelError:
            return None
        return scheduler_kind(scheduler_config(root))
    return None


def load_model(kind: str, device="cpu", **options) -> EpsModel:
    if kind not in LOADERS:
        raise ModelError(f"unknown model kind {kind!r}; allowed: {', '.join(sorted(LOADERS))}")
    return LOADERS[kind](device=device, **options)


__all__ = ["EpsModel", "ModelError", "LOADERS", "load_model", "schedule_kind"]

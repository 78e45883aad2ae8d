"""Factories for checkpoints in other code bases' formats, for `model=python model.factory=...` (docs/models.md).

sit, rectified_flow: flow-matching checkpoints (SiT; Liu et al.'s rectified flow) in their authors' code, which must be
on PYTHONPATH; both use the data_at_1 convention of nfebench.schedules.Flow (their docstrings).

edm_pickle: an EDM network pickle (Karras et al. 2022, NVlabs/edm): the published edm-*.pkl or a training
snapshot. Its network is the preconditioned denoiser D(x; sigma) (EDM Eq. 7, Table 1), so it is prediction_type
`sample` on a VE schedule (EDM samples sigma in 0.002..80), its forward unchanged. Unpickling needs EDM's own
packages (torch_utils, dnnlib, training): put a checkout of NVlabs/edm on PYTHONPATH. Class-conditional pickles need
class labels, which nfebench does not pass yet: only unconditional ones run.
"""

from __future__ import annotations

import pickle
from pathlib import Path

from .base import ModelError


def edm_pickle(path: str | None = None, key: str = "ema"):
    """The network stored under `key` of an EDM pickle (a dict with "ema", as EDM saves it), as network(x, sigma)."""
    if not path:
        raise ModelError("model.kwargs.path is not set; pass model.kwargs.path=/path/to/edm-cifar10-32x32-uncond-vp.pkl")
    p = Path(str(path)).expanduser()
    if not p.is_file():
        raise ModelError(f"EDM pickle {str(p)!r} not found (model.kwargs.path); download it, e.g. "
                         f"https://nvlabs-fi-cdn.nvidia.com/edm/pretrained/edm-cifar10-32x32-uncond-vp.pkl")
    try:
        with p.open("rb") as f:
            obj = pickle.load(f)
    except ModuleNotFoundError as e:
        raise ModelError(f"unpickling {str(p)!r} needs EDM's code ({e.name}); put a checkout of NVlabs/edm on "
                         f"PYTHONPATH") from None
    net = obj.get(key) if isinstance(obj, dict) else obj
    if net is None:
        raise ModelError(f"EDM pickle {str(p)!r} has no {key!r} entry; has: {', '.join(map(str, obj))}")
    if getattr(net, "label_dim", 0):
        raise ModelError(f"EDM pickle {str(p)!r} is class-conditional (label_dim={net.label_dim}); nfebench runs "
                         f"unconditional EDM pickles only (EDM's one-hot labels have no null label for guidance)")
    return net


def _import_authors(module: str, repo: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ModelError(f"this factory needs {repo}'s code ({module!r}: {e}); put a checkout of it on PYTHONPATH") \
            from None


def _state_dict(path, what: str):
    import torch

    if not path:
        raise ModelError(f"model.kwargs.path is not set; pass model.kwargs.path=/path/to/{what}")
    p = Path(str(path)).expanduser()
    if not p.is_file():
        raise ModelError(f"{what} {str(p)!r} not found (model.kwargs.path)")
    return torch.load(p, map_location="cpu", weights_only=False)


def sit(path: str | None = None, model: str = "SiT-XL/2", image_size: int = 256, num_classes: int = 1000):
    """A SiT checkpoint (Ma et al. 2024, willisma/SiT; e.g. SiT-XL-2-256x256.pt) as network(z, t, y).

    SiT's Linear path is x_t = t x_data + (1 - t) eps with t in [0, 1] (data at t = 1) and its network predicts
    data - eps: Flow(time_scale=1, convention=data_at_1), flow_prediction (conf/model/sit_xl2_256.yaml). It samples
    4 x (image_size / 8)^2 latents of Stable Diffusion's VAE (scaling 0.18215). Labels 0..999, the null label 1000
    (its label table's extra row, as DiT). SiT's forward already drops the learned-sigma half of its outputs.
    """
    models = _import_authors("models", "willisma/SiT")
    net = models.SiT_models[model](input_size=image_size // 8, num_classes=num_classes)
    state = _state_dict(path, "SiT-XL-2-256x256.pt")
    net.load_state_dict(state.get("ema", state) if isinstance(state, dict) else state)
    return net  # forward(x, t, y), as nfebench calls a class-conditional network


def rectified_flow(path: str | None = None, config: str | None = None):
    """Liu et al.'s rectified-flow CIFAR-10 checkpoint (gnobitab/RectifiedFlow, ImageGeneration/; score_sde's NCSN++
    code) as network(x, t). Its flow is Z_t = t X_1 + (1 - t) X_0 with X_0 noise and X_1 data in [-1, 1], its network
    called at 999 t and predicting X_1 - X_0: Flow(time_scale=999, convention=data_at_1), flow_prediction
    (conf/model/rectified_flow_cifar10.yaml). config: the module path of its config (e.g.
    configs.rectified_flow.cifar10_rf_gaussian_ddpmpp); the EMA weights are used, as the paper samples."""
    mutils = _import_authors("models.utils", "gnobitab/RectifiedFlow (ImageGeneration/)")
    _import_authors("models.ncsnpp", "gnobitab/RectifiedFlow (ImageGeneration/)")
    ema_mod = _import_authors("models.ema", "gnobitab/RectifiedFlow (ImageGeneration/)")
    if not config:
        raise ModelError("model.kwargs.config is not set; e.g. configs.rectified_flow.cifar10_rf_gaussian_ddpmpp")
    cfg = _import_authors(config, "gnobitab/RectifiedFlow (ImageGeneration/)").get_config()
    cfg.device = "cpu"
    net = mutils.create_model(cfg)
    state = _state_dict(path, "checkpoint.pth")
    ema = ema_mod.ExponentialMovingAverage(net.parameters(), decay=cfg.model.ema_rate)
    net.load_state_dict(state["model"], strict=False)
    ema.load_state_dict(state["ema"])
    ema.copy_to(net.parameters())
    return net


"""Any diffusers UNet2DModel (a directory saved with save_pretrained, or a hub id in the local cache) as an EpsModel.

The betas come from scheduler_config.json beside the weights (DDPMScheduler's linear / scaled_linear /
squaredcos_cap_v2 schedules) or, without one, Ho et al.'s linear 1e-4..0.02 over T=1000.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ..schedule import linear_betas
from .base import EpsModel, ModelError


def betas_from_scheduler_config(cfg: dict) -> np.ndarray:
    """The training betas a DDPMScheduler config describes, computed by diffusers itself (float64)."""
    from diffusers import DDPMScheduler

    if cfg.get("prediction_type", "epsilon") != "epsilon":
        raise ModelError(f"prediction_type {cfg['prediction_type']!r} is not supported; allowed: epsilon")
    keys = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas")
    sched = DDPMScheduler(**{k: cfg[k] for k in keys if k in cfg})
    return sched.betas.double().numpy()


def _resolve(path: str) -> tuple[Path, str | None]:
    """A local directory (with an optional `unet/` subfolder, as pipelines save it) or a hub id in the cache."""
    if not isinstance(path, str) or not path:
        raise ModelError(f"model.path is not set (got {path!r}); pass model.path=DIR (a UNet2DModel saved with "
                         f"save_pretrained) or a hub id like google/ddpm-cifar10-32")
    p = Path(path).expanduser()
    if p.exists():
        if not p.is_dir():
            raise ModelError(f"model path {str(p)!r} is a file; expected a directory saved with save_pretrained")
        sub = "unet" if (p / "unet" / "config.json").exists() and not (p / "config.json").exists() else None
        return p, sub
    if path.count("/") == 1 and not path.startswith((".", "/", "~")):
        try:
            from huggingface_hub import snapshot_download

            local = Path(snapshot_download(path, local_files_only=True))
        except Exception:
            from huggingface_hub.constants import HF_HUB_CACHE

            raise ModelError(
                f"model {path!r} is neither a local directory nor in the Hugging Face cache {HF_HUB_CACHE!r} "
                f"(offline or not downloaded); run `huggingface-cli download {path}` on a machine with internet and "
                f"copy its cache folder models--{path.replace('/', '--')} into that directory, or pass "
                f"model.path=/dir/saved/with/save_pretrained") from None
        return _resolve(str(local))
    raise ModelError(f"model path {path!r} does not exist; pass model.path=DIR (a UNet2DModel saved with "
                     f"save_pretrained) or a hub id like google/ddpm-cifar10-32")


def load_diffusers(path: str | None = None, device="cpu", name: str | None = None, dtype: str = "float32", dataset: str | None = None,
                   **_unused) -> EpsModel:
    """Load a UNet2DModel as an EpsModel. `dataset` names what it was trained on (checked by runtime.preflight)."""
    from diffusers import UNet2DModel
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()

    if _unused:
        raise ModelError(f"unknown model option {sorted(_unused)[0]!r}; allowed: path, name, dtype, dataset")
    if dtype not in ("float32", "float64"):
        raise ModelError(f"unknown model dtype {dtype!r}; allowed: float32, float64")
    torch_dtype = {"float32": torch.float32, "float64": torch.float64}[dtype]
    root, sub = _resolve(path)
    cfg_dir = root / sub if sub else root
    if not (cfg_dir / "config.json").exists():
        raise ModelError(f"no config.json in {str(cfg_dir)!r}: not a diffusers model directory")
    if not any(cfg_dir.glob("diffusion_pytorch_model.*")):
        raise ModelError(f"no weights (diffusion_pytorch_model.safetensors or .bin) in {str(cfg_dir)!r}")
    try:
        unet = UNet2DModel.from_pretrained(root, subfolder=sub, low_cpu_mem_usage=False, torch_dtype=torch_dtype)
    except Exception as e:  # corrupted or mismatched weights
        msg = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise ModelError(f"cannot load the UNet in {str(cfg_dir)!r}: {msg}") from None
    sched_file = next((f for f in (root / "scheduler_config.json", root / "scheduler" / "scheduler_config.json")
                       if f.exists()), None)
    betas = betas_from_scheduler_config(json.loads(sched_file.read_text())) if sched_file else linear_betas()
    unet = unet.to(device=device).eval().requires_grad_(False)
    c = unet.config

    def eps_fn(x, t):
        return unet(x, t).sample

    return EpsModel(name=name or Path(path).name, fn=eps_fn, betas=betas,
                    sample_shape=(c.in_channels, c.sample_size, c.sample_size) if isinstance(c.sample_size, int)
                    else (c.in_channels, *c.sample_size), dtype=torch_dtype, device=torch.device(device),
                    source=str(cfg_dir), module=unet)

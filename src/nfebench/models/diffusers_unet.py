"""Any diffusers UNet2DModel (a directory saved with save_pretrained, or a hub id in the local cache) as an EpsModel.

What the network is comes from scheduler_config.json beside the weights:
- DDPM, DDIM, PNDM, DPMSolver*, Euler*, UniPC, DEIS, Heun, ... configs (anything with betas): the Discrete schedule
  of their training betas (DDPMScheduler's linear / scaled_linear / squaredcos_cap_v2 / trained_betas, computed by
  diffusers itself), their prediction_type (epsilon | sample | v_prediction) and variance_type (learned /
  learned_range: 2C output channels). The network gets the integer-valued timestep tau in [0, T-1].
- ScoreSdeVeScheduler (the google/ncsnpp-* models): a VE score model; the network gets the VE sigma as its time
  input (UNet2DModel's Fourier embedding of log sigma) and x_0 + sigma eps as its input. score_sde trains its VE
  models on data in [0, 1] (not centered; ScoreSdeVePipeline clamps to [0, 1]), so with nfebench's data range
  [-1, 1] its noise levels double: schedule VE(2 sigma_min, 2 sigma_max), and the network sees
  x_net = (x + 1) / 2 at sigma_net = sigma / 2, its score halved (the score of x = 2 x_net - 1).
Without a scheduler config: Ho et al.'s linear 1e-4..0.02 over T=1000, epsilon. model.prediction_type,
model.variance_type and model.schedule override what the config says (for checkpoints whose config is wrong).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ..schedules import VE, Discrete, from_config, linear_betas
from .base import EpsModel, ModelError
from .parametrization import EpsAdapter, check_prediction_type, check_variance_type


def betas_from_scheduler_config(cfg: dict) -> np.ndarray:
    """The training betas a DDPM-style scheduler config describes, computed by diffusers itself (float64)."""
    from diffusers import DDPMScheduler

    keys = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas")
    try:
        sched = DDPMScheduler(**{k: cfg[k] for k in keys if k in cfg and cfg[k] is not None})
    except (NotImplementedError, ValueError) as e:
        raise ModelError(f"cannot build the training betas from the scheduler config: {e}") from None
    return sched.betas.double().numpy()


def read_scheduler_config(cfg: dict | None) -> tuple:
    """(schedule, prediction_type, variance_type) a diffusers scheduler config describes (module docstring)."""
    if cfg is None:
        return Discrete(linear_betas()), "epsilon", None
    if cfg.get("_class_name") == "ScoreSdeVeScheduler":  # data in [0, 1]: noise levels doubled in [-1, 1]
        return VE(2 * cfg.get("sigma_min", 0.01), 2 * cfg.get("sigma_max", 1348.0)), "score", None
    return (Discrete(betas_from_scheduler_config(cfg)), cfg.get("prediction_type", "epsilon"),
            cfg.get("variance_type"))


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


def load_diffusers(path: str | None = None, device="cpu", name: str | None = None, dtype: str = "float32",
                   dataset: str | None = None, prediction_type: str | None = None, variance_type: str | None = None,
                   schedule=None, **_unused) -> EpsModel:
    """Load a UNet2DModel as an EpsModel. `dataset` names what it was trained on (checked by runtime.preflight);
    prediction_type, variance_type, schedule: None = what the scheduler config says."""
    from diffusers import UNet2DModel
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()

    if _unused:
        raise ModelError(f"unknown model option {sorted(_unused)[0]!r}; allowed: path, name, dtype, dataset, "
                         f"prediction_type, variance_type, schedule")
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
    sched_cfg = json.loads(sched_file.read_text()) if sched_file else None
    sched, ptype, vtype = read_scheduler_config(sched_cfg)
    unit_range = (sched_cfg or {}).get("_class_name") == "ScoreSdeVeScheduler"
    sched = sched if schedule is None else from_config(schedule)
    ptype = check_prediction_type(ptype if prediction_type is None else prediction_type)
    vtype = check_variance_type(vtype if variance_type is None else variance_type)
    unet = unet.to(device=device).eval().requires_grad_(False)
    c = unet.config
    expected = c.in_channels * (2 if vtype in ("learned", "learned_range") else 1)
    if c.out_channels != expected:
        raise ModelError(f"the UNet in {str(cfg_dir)!r} outputs {c.out_channels} channels but variance_type "
                         f"{vtype!r} with {c.in_channels} input channels needs {expected}")

    def network(x, t):
        if unit_range:  # score_sde's VE data range [0, 1] (module docstring)
            return 0.5 * unet(0.5 * (x + 1.0), 0.5 * t).sample
        return unet(x, t).sample

    return EpsModel(name=name or Path(path).name, fn=EpsAdapter(network, sched, ptype, vtype),
                    betas=sched.betas if sched.discrete else None,
                    sample_shape=(c.in_channels, c.sample_size, c.sample_size) if isinstance(c.sample_size, int)
                    else (c.in_channels, *c.sample_size), dtype=torch_dtype, device=torch.device(device),
                    source=str(cfg_dir), module=unet, schedule=sched, prediction_type=ptype, variance_type=vtype)

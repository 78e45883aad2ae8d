"""Any diffusers UNet2DModel (a directory saved with save_pretrained, or a hub id in the local cache) as an EpsModel.

What the network is comes from scheduler_config.json beside the weights:
- DDPM, DDIM, PNDM, DPMSolver*, Euler*, UniPC, DEIS, Heun, ... configs (anything with betas): the Discrete schedule
  of their training betas (DDPMScheduler's linear / scaled_linear / squaredcos_cap_v2 / trained_betas, computed by
  diffusers itself), their prediction_type (epsilon | sample | v_prediction) and variance_type (learned /
  learned_range: 2C output channels). The network gets the integer-valued timestep tau in [0, T-1].
- CMStochasticIterativeScheduler (consistency models, e.g. openai/diffusers-cd_*): VE(sigma_min, sigma_max) with the
  network wrapped in its c_skip / c_out / c_in scalings (nfebench.models.consistency.cm_network): an x_0 prediction
  D(x; sigma), sampled by sampler=consistency.
- ScoreSdeVeScheduler (the google/ncsnpp-* models): a VE score model; the network gets the VE sigma as its time
  input (UNet2DModel's Fourier embedding of log sigma) and x_0 + sigma eps as its input. score_sde trains its VE
  models on data in [0, 1] (not centered; ScoreSdeVePipeline clamps to [0, 1]), so with nfebench's data range
  [-1, 1] its noise levels double: schedule VE(2 sigma_min, 2 sigma_max), and the network sees
  x_net = (x + 1) / 2 at sigma_net = sigma / 2, its score halved (the score of x = 2 x_net - 1).
- FlowMatchEulerDiscreteScheduler, FlowMatchHeunDiscreteScheduler, and DPMSolverMultistep / UniPC configs with
  use_flow_sigmas (flow-matching models: SD3, Flux, SANA, ...): the Flow schedule (nfebench.schedules.Flow) with
  time_scale = num_train_timesteps (the network gets tau = 1000 s, as diffusers' pipelines call it), shift = the
  config's `shift` (FlowMatch*) or `flow_shift` (use_flow_sigmas), or with use_dynamic_shifting the shift e^mu of
  Flux's resolution rule (nfebench.schedules.dynamic_shift; base_shift, max_shift, base_image_seq_len,
  max_image_seq_len from the config; the image's token count from model.image_seq_len, else the network's
  sample_size / patch_size); prediction_type flow_prediction. The config's grid options (shift_terminal,
  use_karras_sigmas, ...) are a sampler's choice, not the model's, and are not read.
Without a scheduler config: Ho et al.'s linear 1e-4..0.02 over T=1000, epsilon. model.prediction_type,
model.variance_type and model.schedule override what the config says (for checkpoints whose config is wrong).

Pipeline directories (as CompVis/ldm-celebahq-256 and facebook/DiT-XL-2-256 are laid out): the denoiser in `unet/`
(UNet2DModel) or `transformer/` (DiTTransformer2DModel), the scheduler in `scheduler/`, and for latent models the
autoencoder in `vae/` (AutoencoderKL) or `vqvae/` (VQModel). Sampling runs in latent space; the samples are decoded
as diffusers' pipelines decode them: AutoencoderKL with its scaling factor, vae.decode(z / scaling_factor) (DiTPipeline,
Stable Diffusion), VQModel unscaled, vqvae.decode(z) with quantization (LDMPipeline); the decode time is kept apart.
DiT's 2C outputs (learned sigma) are variance_type learned_range unless the scheduler config says otherwise.

Class-conditional denoisers (UNet2DModel with num_class_embeds = E, or DiT): labels 0..num_classes-1 and the null
label of classifier-free guidance. UNet: num_classes = E - 1 and null = E - 1 by default (a model trained on K
classes + a null label has E = K + 1); DiT: 1000 classes and null 1000 (its label table's extra row, as DiTPipeline
uses it). model.num_classes / model.null_class override them (num_classes = E: no null label).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from ..schedules import DYNAMIC_SHIFT_KEYS, VE, Discrete, Flow, ScheduleError, dynamic_shift, from_config, linear_betas
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


FLOW_SCHEDULERS = ("FlowMatchEulerDiscreteScheduler", "FlowMatchHeunDiscreteScheduler")


def flow_schedule_from_config(cfg: dict, image_seq_len=None) -> Flow:
    """The Flow schedule of a flow-matching scheduler config (module docstring); image_seq_len: the image's token
    count, needed with use_dynamic_shifting only."""
    shift = cfg.get("shift", 1.0) if cfg.get("_class_name") in FLOW_SCHEDULERS else cfg.get("flow_shift", 1.0)
    try:
        if cfg.get("use_dynamic_shifting"):
            shift = dynamic_shift(image_seq_len, **{k: cfg[k] for k in DYNAMIC_SHIFT_KEYS if cfg.get(k) is not None})
        return Flow(shift=shift, time_scale=cfg.get("num_train_timesteps", 1000))
    except ScheduleError as e:
        raise ModelError(f"scheduler config {cfg.get('_class_name')}: {e}") from None


def scheduler_kind(cfg: dict | None) -> str:
    """The schedule kind (nfebench.schedules.KINDS) read_scheduler_config gives for a scheduler config, read without
    building it (run keys resolve spacing=default before any model is loaded)."""
    if cfg is None:
        return "discrete"
    if cfg.get("_class_name") in FLOW_SCHEDULERS or cfg.get("use_flow_sigmas"):
        return "flow"
    if cfg.get("_class_name") in ("CMStochasticIterativeScheduler", "ScoreSdeVeScheduler"):
        return "ve"
    return "discrete"


def scheduler_config(root: Path) -> dict | None:
    """The scheduler config of a model or pipeline directory (scheduler_config.json or scheduler/...), or None."""
    found = next((f for f in (root / "scheduler_config.json", root / "scheduler" / "scheduler_config.json")
                  if f.exists()), None)
    return json.loads(found.read_text()) if found else None


def read_scheduler_config(cfg: dict | None, image_seq_len=None) -> tuple:
    """(schedule, prediction_type, variance_type) a diffusers scheduler config describes (module docstring)."""
    if cfg is None:
        return Discrete(linear_betas()), "epsilon", None
    if cfg.get("_class_name") in FLOW_SCHEDULERS or cfg.get("use_flow_sigmas"):
        ptype = cfg.get("prediction_type") or "flow_prediction"
        if cfg.get("_class_name") not in FLOW_SCHEDULERS and ptype != "flow_prediction":
            raise ModelError(f"scheduler config {cfg.get('_class_name')} has use_flow_sigmas with prediction_type "
                             f"{ptype!r}; flow sigmas need prediction_type flow_prediction")
        return flow_schedule_from_config(cfg, image_seq_len), "flow_prediction", None
    if cfg.get("_class_name") == "CMStochasticIterativeScheduler":  # consistency models: D(x; sigma) after wrapping
        return VE(cfg.get("sigma_min", 0.002), cfg.get("sigma_max", 80.0)), "sample", None
    if cfg.get("_class_name") == "ScoreSdeVeScheduler":  # data in [0, 1]: noise levels doubled in [-1, 1]
        return VE(2 * cfg.get("sigma_min", 0.01), 2 * cfg.get("sigma_max", 1348.0)), "score", None
    return (Discrete(betas_from_scheduler_config(cfg)), cfg.get("prediction_type", "epsilon"),
            cfg.get("variance_type"))


DENOISERS = ("unet", "transformer")  # pipeline subfolders: UNet2DModel, DiTTransformer2DModel
DECODERS = ("vae", "vqvae")  # AutoencoderKL, VQModel


def _resolve(path: str) -> tuple[Path, str | None]:
    """A local directory (with an optional `unet/` or `transformer/` subfolder, as pipelines save it) or a hub id
    in the cache."""
    if not isinstance(path, str) or not path:
        raise ModelError(f"model.path is not set (got {path!r}); pass model.path=DIR (a UNet2DModel saved with "
                         f"save_pretrained) or a hub id like google/ddpm-cifar10-32")
    p = Path(path).expanduser()
    if p.exists():
        if not p.is_dir():
            raise ModelError(f"model path {str(p)!r} is a file; expected a directory saved with save_pretrained")
        subs = [d for d in DENOISERS if (p / d / "config.json").exists() and not (p / "config.json").exists()]
        return p, (subs[0] if subs else None)
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


class LatentDecoder:
    """A pipeline's autoencoder: latents -> images in [-1, 1], as its diffusers pipeline decodes (module docstring).
    `seconds` accumulates the decode time, recorded apart from the sampling time."""

    def __init__(self, autoencoder, kind: str):
        self.autoencoder, self.kind, self.seconds = autoencoder, kind, 0.0
        self.scale = autoencoder.config.scaling_factor if kind == "vae" else 1.0
        self.shift = (getattr(autoencoder.config, "shift_factor", None) or 0.0) if kind == "vae" else 0.0  # SD3, Flux

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        t0 = time.perf_counter()
        with torch.no_grad():
            ae = self.autoencoder
            x = ae.decode(z.to(device=ae.device, dtype=ae.dtype) / self.scale + self.shift).sample.to(z.dtype)
        self.seconds += time.perf_counter() - t0
        return x


def _decoder_dir(root: Path, sub: str | None) -> str | None:
    """vae/ or vqvae/ of a pipeline directory; None for a pixel-space model. A DiT, or a pipeline whose
    model_index.json names an autoencoder, without its folder is an error."""
    found = [d for d in DECODERS if (root / d / "config.json").exists()]
    if found:
        return found[0]
    index = root / "model_index.json"
    named = [d for d in DECODERS if index.exists() and d in json.loads(index.read_text())]
    if named or sub == "transformer":
        why = f"its model_index.json names {named[0]!r}" if named else "a DiT transformer samples latents"
        raise ModelError(f"pipeline directory {str(root)!r} has no {(named or ['vae'])[0]}/ folder with a config.json "
                         f"({why}); a latent pipeline needs its autoencoder: AutoencoderKL in vae/ or VQModel in vqvae/")
    return None


def _load_decoder(root: Path, kind: str, latent_channels: int, torch_dtype, device) -> LatentDecoder:
    from diffusers import AutoencoderKL, VQModel

    cls = {"vae": AutoencoderKL, "vqvae": VQModel}[kind]
    try:
        ae = cls.from_pretrained(root, subfolder=kind, low_cpu_mem_usage=False, torch_dtype=torch_dtype)
    except Exception as e:
        msg = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise ModelError(f"cannot load the {cls.__name__} in {str(root / kind)!r}: {msg}") from None
    c = ae.config
    channels = getattr(c, "vq_embed_dim", None) or c.latent_channels
    if channels != latent_channels:
        raise ModelError(f"the {cls.__name__} in {str(root / kind)!r} has {channels} latent channels but the denoiser "
                         f"takes {latent_channels} input channels: they are not one pipeline")
    return LatentDecoder(ae.to(device=device).eval().requires_grad_(False), kind)


def class_setup(embeddings: int | None, num_classes, null_class, where: str) -> tuple:
    """(num_classes, null_class) of a denoiser with `embeddings` class embeddings (module docstring)."""
    if embeddings is None:
        if num_classes is not None or null_class is not None:
            raise ModelError(f"model.num_classes / model.null_class given but the denoiser in {where!r} has no class "
                             f"embeddings (it is unconditional)")
        return None, None
    k = embeddings - 1 if num_classes is None else num_classes
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= embeddings:
        raise ModelError(f"model.num_classes={num_classes!r}: the denoiser in {where!r} has {embeddings} class "
                         f"embeddings; allowed: 1..{embeddings}")
    null = (embeddings - 1 if k < embeddings else None) if null_class is None else null_class
    if null is not None and (isinstance(null, bool) or not isinstance(null, int) or not k <= null < embeddings):
        raise ModelError(f"model.null_class={null_class!r}: allowed: {k}..{embeddings - 1} (an embedding that is "
                         f"not one of the {k} classes)")
    return k, null


def load_diffusers(path: str | None = None, device="cpu", name: str | None = None, dtype: str = "float32",
                   dataset: str | None = None, prediction_type: str | None = None, variance_type: str | None = None,
                   schedule=None, num_classes: int | None = None, null_class: int | None = None,
                   image_seq_len: int | None = None, **_unused) -> EpsModel:
    """Load a UNet2DModel or DiTTransformer2DModel (with its autoencoder, for a latent pipeline) as an EpsModel.
    `dataset` names what it was trained on (checked by runtime.preflight); prediction_type, variance_type,
    schedule: None = what the scheduler config says; num_classes, null_class: None = the denoiser's own;
    image_seq_len: the token count of a dynamic-shift flow config (None: from sample_size / patch_size)."""
    from diffusers import DiTTransformer2DModel, UNet2DModel
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()

    if _unused:
        raise ModelError(f"unknown model option {sorted(_unused)[0]!r}; allowed: path, name, dtype, dataset, "
                         f"prediction_type, variance_type, schedule, num_classes, null_class, image_seq_len")
    if dtype not in ("float32", "float64"):
        raise ModelError(f"unknown model dtype {dtype!r}; allowed: float32, float64")
    torch_dtype = {"float32": torch.float32, "float64": torch.float64}[dtype]
    root, sub = _resolve(path)
    cfg_dir = root / sub if sub else root
    if not (cfg_dir / "config.json").exists():
        raise ModelError(f"no config.json in {str(cfg_dir)!r}: not a diffusers model directory")
    if not any(cfg_dir.glob("diffusion_pytorch_model.*")):
        raise ModelError(f"no weights (diffusion_pytorch_model.safetensors or .bin) in {str(cfg_dir)!r}")
    decoder_kind = _decoder_dir(root, sub)
    cls = DiTTransformer2DModel if sub == "transformer" else UNet2DModel
    try:
        net = cls.from_pretrained(root, subfolder=sub, low_cpu_mem_usage=False, torch_dtype=torch_dtype)
    except Exception as e:  # corrupted or mismatched weights
        msg = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise ModelError(f"cannot load the {cls.__name__} in {str(cfg_dir)!r}: {msg}") from None
    sched_cfg = scheduler_config(root)
    c = net.config
    if image_seq_len is None and isinstance(c.get("sample_size"), (int, list, tuple)):
        h, w = (c.sample_size, c.sample_size) if isinstance(c.sample_size, int) else c.sample_size
        p = c.get("patch_size") or 1
        image_seq_len = (h // p) * (w // p)
    sched, ptype, vtype = read_scheduler_config(sched_cfg, image_seq_len)
    unit_range = (sched_cfg or {}).get("_class_name") == "ScoreSdeVeScheduler"
    dit = cls is DiTTransformer2DModel
    if dit and vtype is None and c.out_channels == 2 * c.in_channels:
        vtype = "learned_range"  # DiT's learned sigma (Peebles & Xie 2023, Sec. 3.1, after Nichol & Dhariwal 2021)
    sched = sched if schedule is None else from_config(schedule)
    ptype = check_prediction_type(ptype if prediction_type is None else prediction_type)
    vtype = check_variance_type(vtype if variance_type is None else variance_type)
    net = net.to(device=device).eval().requires_grad_(False)
    expected = c.in_channels * (2 if vtype in ("learned", "learned_range") else 1)
    if c.out_channels != expected:
        raise ModelError(f"the {cls.__name__} in {str(cfg_dir)!r} outputs {c.out_channels} channels but variance_type "
                         f"{vtype!r} with {c.in_channels} input channels needs {expected}")
    embeddings = (c.num_embeds_ada_norm + 1) if dit else c.num_class_embeds  # DiT: 1000 classes + the null row
    num_classes, null_class = class_setup(embeddings, num_classes, null_class, str(cfg_dir))

    def network(x, t, *class_labels):
        y = class_labels[0] if class_labels else None
        if unit_range:  # score_sde's VE data range [0, 1] (module docstring)
            return 0.5 * net(0.5 * (x + 1.0), 0.5 * t, class_labels=y).sample
        return (net(x, timestep=t, class_labels=y) if dit else net(x, t, class_labels=y)).sample

    if (sched_cfg or {}).get("_class_name") == "CMStochasticIterativeScheduler":  # the consistency model's own
        from .consistency import cm_network  # boundary scalings around the raw network (models/consistency.py)

        network = cm_network(network, float(sched.t_min), float(sched_cfg.get("sigma_data", 0.5)))
    decoder = None if decoder_kind is None else _load_decoder(root, decoder_kind, c.in_channels, torch_dtype, device)
    size = c.sample_size
    return EpsModel(name=name or Path(path).name, fn=EpsAdapter(network, sched, ptype, vtype),
                    betas=sched.betas if sched.discrete else None,
                    sample_shape=(c.in_channels, size, size) if isinstance(size, int) else (c.in_channels, *size),
                    dtype=torch_dtype, device=torch.device(device), source=str(cfg_dir), module=net, schedule=sched,
                    prediction_type=ptype, variance_type=vtype, num_classes=num_classes, null_class=null_class,
                    decoder=decoder)

"""Text-to-image diffusers pipelines as EpsModels: `model=pipeline model.path=DIR|HUB_ID`.

Supported (model_index.json's `_class_name`):
    StableDiffusionPipeline     SD 1.x / 2.x: one CLIP text encoder, a UNet2DConditionModel, epsilon or v_prediction
    StableDiffusionXLPipeline   two text encoders (penultimate hidden states concatenated), the second's pooled
                                embedding and the size micro-conditioning (time_ids: original size, crop, target size)
    StableDiffusion3Pipeline    two CLIPs + T5, an SD3Transformer2DModel, flow_prediction on Flow(shift, 1000)
    FluxPipeline                CLIP + T5, a FluxTransformer2DModel on 2x2-packed latents, called at s = tau / 1000;
                                its guidance is an input of the transformer (guidance-distilled: one pass per step)

The loader builds what the issue calls the model's three parts and nothing else:
- the denoiser network(x_model, t_net, condition) in its own terms; its schedule and prediction type come from the
  pipeline's scheduler config (nfebench.models.diffusers_unet.read_scheduler_config: scaled_linear betas for SD,
  Flow with the config's shift for SD3/Flux); the one adapter (models.parametrization.EpsAdapter) turns it into eps and
  applies guidance;
- the text encoder, as the pipeline's own `encode_prompt` (so every prompt, and the negative / unconditional prompt,
  is encoded exactly as the pipeline encodes it: SD and SD3 encode the empty string, SDXL uses zeros unless a
  negative prompt is given (force_zeros_for_empty_prompt));
- the decoder: vae.decode(z / scaling_factor + shift_factor), timed apart (decode_seconds).

The model declares the need `text_embeddings` (nfebench.needs): its resolver (below) reads `prompts=FILE|builtin`,
assigns sample i the caption i mod len, checks the guidance settings and returns the model with its per-sample
conditioning (PromptConditioning: each batch's distinct prompts encoded once, outside the NFE and the sampling time:
encode_seconds), the row's prompts label and the exact network_passes.
"""

from __future__ import annotations

import dataclasses
import json
import time

import numpy as np
import torch

from ..needs import Resolution, resolver
from .base import EpsModel, ModelError
from .diffusers_unet import LatentDecoder, _resolve, read_scheduler_config
from .parametrization import EpsAdapter, check_prediction_type, guidance_passes

SUPPORTED = {"StableDiffusionPipeline": "sd", "StableDiffusionXLPipeline": "sdxl",
             "StableDiffusion3Pipeline": "sd3", "FluxPipeline": "flux"}
EMBEDDED_GUIDANCE = ("flux",)  # families whose guidance is an input of the network (no unconditional branch)


def _cat(a: dict, b: dict) -> dict:
    return {k: torch.cat([a[k], b[k]]) for k in a}


class TextEncoder:
    """A pipeline's own prompt encoding: encode(prompts) -> per-prompt condition dict; negative(text) -> the
    unconditional / negative condition (one row). Tensors are [N, ...] in the model's dtype, on its device."""

    def __init__(self, pipe, family: str, height: int, width: int):
        self.pipe, self.family, self.height, self.width = pipe, family, height, width

    def encode(self, prompts: list[str]) -> dict:
        return self._encode(prompts, negative=None)[0]

    def negative(self, text: str | None) -> dict:
        return self._encode([""], negative=[text] if text is not None else None)[1]

    def _encode(self, prompts, negative):
        pipe, dev = self.pipe, self.pipe.device
        with torch.no_grad():
            if self.family == "sd":
                pe, ne = pipe.encode_prompt(prompts, dev, 1, True, negative_prompt=negative)
                return {"prompt_embeds": pe}, {"prompt_embeds": ne}
            if self.family == "sdxl":
                pe, ne, pp, npp = pipe.encode_prompt(prompts, device=dev, num_images_per_prompt=1,
                                                     do_classifier_free_guidance=True, negative_prompt=negative)
                proj = pipe.text_encoder_2.config.projection_dim if pipe.text_encoder_2 is not None else None
                size = (self.height, self.width)
                ids = pipe._get_add_time_ids(size, (0, 0), size, dtype=pe.dtype, text_encoder_projection_dim=proj)
                ids = ids.to(dev)
                return ({"prompt_embeds": pe, "text_embeds": pp, "time_ids": ids.expand(pe.shape[0], -1)},
                        {"prompt_embeds": ne, "text_embeds": npp, "time_ids": ids.expand(ne.shape[0], -1)})
            if self.family == "sd3":
                pe, ne, pp, npp = pipe.encode_prompt(prompts, None, None, device=dev, num_images_per_prompt=1,
                                                     do_classifier_free_guidance=True, negative_prompt=negative)
                return {"prompt_embeds": pe, "pooled": pp}, {"prompt_embeds": ne, "pooled": npp}
            pe, pp, _ = pipe.encode_prompt(prompts, None, device=dev, num_images_per_prompt=1)  # flux
            return {"prompt_embeds": pe, "pooled": pp}, None


def _network(pipe, family: str, latent_shape: tuple):
    """network(x_model, t_net, condition) -> the denoiser's raw prediction, called as the pipeline calls it."""
    if family in ("sd", "sdxl"):
        unet = pipe.unet

        def network(x, t, cond):
            extra = {"added_cond_kwargs": {"text_embeds": cond["text_embeds"], "time_ids": cond["time_ids"]}} \
                if family == "sdxl" else {}
            return unet(x, t, encoder_hidden_states=cond["prompt_embeds"], **extra).sample
        return network
    net = pipe.transformer
    if family == "sd3":
        def network(x, t, cond):
            return net(hidden_states=x, timestep=t, encoder_hidden_states=cond["prompt_embeds"],
                       pooled_projections=cond["pooled"]).sample
        return network
    c, h, w = latent_shape
    vsf = pipe.vae_scale_factor

    def network(x, t, cond):  # flux: 2x2-packed tokens, time s = t / 1000, guidance as an input
        b = x.shape[0]
        ids = pipe._prepare_latent_image_ids(b, h // 2, w // 2, x.device, x.dtype)
        txt_ids = torch.zeros(cond["prompt_embeds"].shape[1], 3, device=x.device, dtype=x.dtype)
        out = net(hidden_states=pipe._pack_latents(x, b, c, h, w), timestep=t / 1000.0,
                  guidance=cond.get("guidance"), pooled_projections=cond["pooled"],
                  encoder_hidden_states=cond["prompt_embeds"], txt_ids=txt_ids, img_ids=ids).sample
        return pipe._unpack_latents(out, h * vsf, w * vsf, vsf)
    return network


@dataclasses.dataclass
class PipelineModel(EpsModel):
    """An EpsModel with its pipeline's text encoder (what the text_embeddings resolver needs)."""

    needs: tuple = ("text_embeddings",)
    text: TextEncoder | None = None
    family: str = ""
    pipeline_class: str = ""
    pipeline: object = None


def _not_prepared(seeds):
    raise ModelError("a pipeline model conditions each sample on its prompt: resolve its needs first "
                     "(nfebench.needs.prepare(model, point))")


def load_pipeline(path: str | None = None, device="cpu", name: str | None = None, dtype: str = "float32",
                  height: int | None = None, width: int | None = None, prediction_type: str | None = None,
                  schedule=None, dataset: str | None = None, **_unused) -> EpsModel:
    """A text-to-image diffusers pipeline directory or cached hub id as an EpsModel (module docstring).
    height, width: the image size in pixels (None: the pipeline's default); prediction_type, schedule: None = what
    the scheduler config says."""
    import diffusers
    from diffusers.utils import logging as diffusers_logging

    from ..schedules import from_config

    diffusers_logging.set_verbosity_error()
    try:
        from transformers.utils import logging as tf_logging

        tf_logging.set_verbosity_error()
    except ImportError:
        pass
    if _unused:
        raise ModelError(f"unknown model option {sorted(_unused)[0]!r}; allowed: path, name, dtype, height, width, "
                         f"prediction_type, schedule, dataset")
    if dtype not in ("float32", "float64", "bfloat16", "float16"):
        raise ModelError(f"unknown model dtype {dtype!r}; allowed: float32, float64, bfloat16, float16")
    torch_dtype = getattr(torch, dtype)
    root, _ = _resolve(path)
    index = root / "model_index.json"
    if not index.exists():
        raise ModelError(f"no model_index.json in {str(root)!r}: model=pipeline needs a diffusers pipeline directory "
                         f"(supported: {', '.join(SUPPORTED)})")
    components = json.loads(index.read_text())
    cls = components.get("_class_name")
    if cls not in SUPPORTED:
        raise ModelError(f"pipeline class {cls!r} in {str(index)!r} is not supported by model=pipeline; supported: "
                         f"{', '.join(SUPPORTED)}")
    family = SUPPORTED[cls]
    extra = {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False} \
        if family == "sd" else {}
    if family == "sd3":  # SD3 without T5 (saved without text_encoder_3): the pipeline uses zeros for its part
        extra = {k: None for k in ("text_encoder_3", "tokenizer_3") if components.get(k, [None])[0] is None}
    try:
        pipe = getattr(diffusers, cls).from_pretrained(root, torch_dtype=torch_dtype, **extra)
    except Exception as e:
        msg = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise ModelError(f"cannot load the {cls} in {str(root)!r}: {msg}") from None
    pipe = pipe.to(device=device, dtype=torch_dtype)  # some modules load in float32 whatever torch_dtype says
    pipe.set_progress_bar_config(disable=True)
    if torch_dtype == torch.float16 and getattr(pipe.vae.config, "force_upcast", False):
        pipe.vae.to(torch.float32)  # SDXL's VAE overflows in float16; its pipeline decodes in float32 too
    denoiser = pipe.unet if family in ("sd", "sdxl") else pipe.transformer
    denoiser.eval().requires_grad_(False)
    vsf = pipe.vae_scale_factor
    cfg = denoiser.config
    if family in ("sd", "sdxl", "sd3"):
        default = cfg.sample_size * vsf
        channels = cfg.in_channels
    else:
        default = pipe.default_sample_size * vsf
        channels = cfg.in_channels // 4
    height, width = height or default, width or default
    step = vsf * (2 if family == "flux" else (cfg.get("patch_size") or 1))  # whole latent pixels (Flux: 2x2 packs)
    for key, v in (("height", height), ("width", width)):
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0 or v % step:
            raise ModelError(f"model.{key}={v!r}: {cls} needs a positive multiple of {step} pixels")
    if family == "flux":
        shape = (channels, 2 * (height // (vsf * 2)), 2 * (width // (vsf * 2)))
        seq_len = (shape[1] // 2) * (shape[2] // 2)
    else:
        shape = (channels, height // vsf, width // vsf)
        seq_len = (shape[1] // (cfg.get("patch_size") or 1)) * (shape[2] // (cfg.get("patch_size") or 1))
    sched, ptype, _ = read_scheduler_config(dict(pipe.scheduler.config), seq_len)
    sched = sched if schedule is None else from_config(schedule)
    ptype = check_prediction_type(ptype if prediction_type is None else prediction_type)
    return PipelineModel(name=name or root.name, fn=EpsAdapter(_network(pipe, family, shape), sched, ptype),
                         betas=sched.betas if sched.discrete else None, sample_shape=shape, dtype=torch_dtype,
                         device=torch.device(device), source=str(root), module=denoiser, schedule=sched,
                         prediction_type=ptype, decoder=LatentDecoder(pipe.vae, "vae"), conditioning=_not_prepared,
                         text=TextEncoder(pipe, family, height, width), family=family, pipeline_class=cls,
                         pipeline=pipe)


# --- the need: prompts -> per-sample text conditioning ----------------------------------------------------------

def check_interval(interval, schedule):
    """guidance_interval=[lo, hi] in EDM sigma (sigma / alpha): a one-line error unless 0 <= lo < hi and the
    interval meets the schedule's sigma range."""
    from ..point import ConfigError

    if interval is None:
        return None
    ok = isinstance(interval, (list, tuple)) and len(interval) == 2 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) for v in interval)
    if not ok or not 0 <= interval[0] < interval[1]:
        raise ConfigError(f"guidance_interval must be [lo, hi] with 0 <= lo < hi (EDM sigma = sigma / alpha), got "
                          f"{interval!r}")
    s_min, s_max = float(schedule.edm_sigma(schedule.t_min)), float(schedule.edm_sigma(schedule.t_max))
    if interval[1] < s_min or interval[0] >= s_max:
        raise ConfigError(f"guidance_interval {list(interval)} is outside the schedule's noise levels: sigma in "
                          f"[{s_min:.4g}, {s_max:.4g}] ({schedule.describe()}); no step would be guided")
    return (float(interval[0]), float(interval[1]))


def evaluation_times(p, schedule, level: float = 0.0) -> list[float]:
    """The timesteps at which p's sampler evaluates the model: its grid, replayed from x_T = 0 on the constant model
    eps = level (0: a zero model; an adaptive sampler's grid changes with the level)."""
    from ..samplers import get_sampler
    from ..samplers.common import CountedEps, Noise
    from ..point import sampler_call_options

    taus = []

    def zeros(x, t):
        taus.append(float(t[0]))
        return torch.full_like(x, level)

    x = torch.zeros(1, 1, 1, 1, dtype=torch.float64)
    get_sampler(p.sampler).fn(CountedEps(zeros, budget=p.nfe), schedule, x, p.nfe,
                              Noise(torch.Generator().manual_seed(0)), **sampler_call_options(p))
    return taus


class PromptConditioning:
    """conditioning(seeds) of a pipeline model: each sample's prompt, the batch's distinct prompts encoded once (per
    batch: a COCO-30k table of T5 embeddings would not fit in memory), the negative / unconditional prompt once per
    run. `seconds` accumulates the encoding time (the row's encode_seconds; the runner calls this before its
    sampling clock starts)."""

    def __init__(self, model, prompt_of: dict, negative: dict | None, w, interval, embedded: bool, seconds: float):
        self.model, self.prompt_of, self.negative = model, prompt_of, negative
        self.w, self.interval, self.embedded, self.seconds = w, interval, embedded, seconds

    def __call__(self, seeds) -> dict:
        t0 = time.perf_counter()
        texts = [self.prompt_of[s] for s in seeds]
        distinct = list(dict.fromkeys(texts))
        table = self.model.text.encode(distinct)
        ids = torch.tensor([distinct.index(t) for t in texts], device=table["prompt_embeds"].device)
        cond = {k: v[ids] for k, v in table.items()}
        if self.embedded and self.w is not None:  # Flux: the guidance scale is an input of the network
            cond["guidance"] = torch.full((len(seeds),), float(self.w), dtype=self.model.dtype,
                                          device=table["prompt_embeds"].device)
        self.seconds += time.perf_counter() - t0
        if self.negative is None:
            return {"condition": cond}
        neg = {k: v.expand(len(seeds), *v.shape[1:]) for k, v in self.negative.items()}
        return {"condition": cond, "negative": neg, "guidance_scale": self.w, "guidance_interval": self.interval}


def _replay(p, schedule, level):
    """evaluation_times, or None where the replay itself fails (an adaptive sampler over its budget)."""
    from ..samplers import SamplerError
    from ..samplers.common import BudgetExceeded

    try:
        return evaluation_times(p, schedule, level)
    except (SamplerError, BudgetExceeded):
        return None


@resolver("text_embeddings")
def text_embeddings(model, p, progress=True) -> Resolution:
    """Each sample's prompt and the guidance settings, checked before sampling (module docstring)."""
    from ..prompts import assign, load_prompts
    from ..point import ConfigError, sample_seeds

    w, interval = p.guidance_scale, p.cfg.get("guidance_interval")
    negative_text = p.cfg.get("negative_prompt")
    embedded = model.family in EMBEDDED_GUIDANCE
    if embedded and (interval is not None or negative_text is not None):
        what = "guidance_interval" if interval is not None else "negative_prompt"
        raise ConfigError(f"{what} needs an unconditional branch; {model.pipeline_class} has none (its guidance is "
                          f"an input of the transformer, one pass per evaluation): leave {what} unset")
    if embedded and w is None and model.module.config.get("guidance_embeds"):
        raise ConfigError(f"{model.pipeline_class} is guidance-distilled: set guidance_scale (FLUX.1-dev: 3.5)")
    interval = check_interval(interval, model.schedule)
    if interval is not None and (w is None or w == 1):
        raise ConfigError(f"guidance_interval={list(interval)} needs classifier-free guidance: set guidance_scale "
                          f"(e.g. 7.5), not {w!r}")
    if negative_text is not None and (embedded or w is None or w == 1):
        raise ConfigError(f"negative_prompt needs classifier-free guidance: set guidance_scale (e.g. 7.5), not {w!r}")
    prompts, label = load_prompts(p.cfg.get("prompts"))
    per_sample = assign(prompts, p.num_samples)
    t0 = time.perf_counter()
    cfg = not embedded and w is not None and w != 1
    negative = model.text.negative(negative_text) if cfg else None  # w = 0 too: the unconditional branch alone
    conditioning = PromptConditioning(model, dict(zip(sample_seeds(p.seed, p.num_samples), per_sample)), negative,
                                      w, interval, embedded, time.perf_counter() - t0)
    taus = evaluation_times(p, model.schedule)
    passes = sum(guidance_passes(model.schedule, t, None if embedded else w, interval) for t in taus)
    varying = interval is not None or (embedded and w not in (None, 0, 1))  # passes per evaluation != network_passes(w)
    if varying and taus != _replay(p, model.schedule, level=0.5):
        raise ConfigError(f"sampler {p.sampler!r} chooses its steps from the model's outputs (adaptive), so the "
                          f"network passes of {'a guidance interval' if interval is not None else 'embedded guidance'}"
                          f" cannot be counted before sampling; use a fixed-grid sampler")
    if progress:
        print(f"[nfebench] prompts {label}: {len(set(per_sample))} distinct of {p.num_samples}, each encoded once "
              f"per batch (encode_seconds, not counted in NFE)")
    return Resolution(model=dataclasses.replace(model, conditioning=conditioning),
                      row={"prompts": label, **({"network_passes": passes} if varying else {})},
                      stored={"prompts": np.array(per_sample)})

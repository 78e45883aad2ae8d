"""Tiny random-weight text-to-image pipelines and a stand-in CLIP, built from configs (no downloads).

A CLIP tokenizer is made here from a character vocabulary (vocab.json + merges.txt); every network has a few layers
and 8-32 channels. The pipelines are saved with save_pretrained, so nfebench loads them as it loads real ones.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

CHARS = "abcdefghijklmnopqrstuvwxyz0123456789.,'-"


def make_tokenizer(root: Path):
    """A CLIPTokenizer over single characters (each with and without CLIP's end-of-word mark)."""
    from transformers import CLIPTokenizer

    root.mkdir(parents=True, exist_ok=True)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1, "!": 2}
    for ch in CHARS:
        vocab.setdefault(ch, len(vocab))
        vocab.setdefault(ch + "</w>", len(vocab))
    (root / "vocab.json").write_text(json.dumps(vocab))
    (root / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(root / "vocab.json"), str(root / "merges.txt"), pad_token="!",
                         model_max_length=77)


def text_config(vocab_size: int, hidden: int = 16, projection: int = 16):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
                          num_attention_heads=2, max_position_embeddings=77, projection_dim=projection,
                          bos_token_id=0, eos_token_id=1, pad_token_id=2, hidden_act="gelu")


def _vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 8, 16),
                         down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
                         layers_per_block=1, norm_num_groups=8, sample_size=32)  # 3 blocks: 32 px <-> 8x8 latents


def _unet(cross_dim: int, **extra):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
                                block_out_channels=(16, 32), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=cross_dim,
                                attention_head_dim=4, norm_num_groups=8, **extra)


SD_SCHEDULER = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                    clip_sample=False, set_alpha_to_one=True, steps_offset=1, prediction_type="epsilon")


def build_sd(root: Path, prediction_type: str = "epsilon") -> Path:
    """An SD 1.x-style StableDiffusionPipeline (one CLIP text encoder, 8x8x4 latents, 32 px images)."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline
    from transformers import CLIPTextModel

    torch.manual_seed(0)
    tok = make_tokenizer(root / "_tok")
    te = CLIPTextModel(text_config(len(tok), hidden=16)).eval()
    pipe = StableDiffusionPipeline(vae=_vae(), text_encoder=te, tokenizer=tok, unet=_unet(16),
                                   scheduler=DDIMScheduler(**{**SD_SCHEDULER, "prediction_type": prediction_type}),
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(root)
    return root


def build_sdxl(root: Path) -> Path:
    """An SDXL-style StableDiffusionXLPipeline: two text encoders (hidden states concatenated, 16 + 16), pooled
    embeddings of the second and size micro-conditioning (text_time), zeros for the empty negative prompt."""
    from diffusers import DDIMScheduler, StableDiffusionXLPipeline
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(0)
    tok = make_tokenizer(root / "_tok")
    te1 = CLIPTextModel(text_config(len(tok), hidden=16)).eval()
    te2 = CLIPTextModelWithProjection(text_config(len(tok), hidden=16, projection=16)).eval()
    unet = _unet(32, addition_embed_type="text_time", addition_time_embed_dim=8,
                 projection_class_embeddings_input_dim=16 + 6 * 8, transformer_layers_per_block=1)
    pipe = StableDiffusionXLPipeline(vae=_vae(), text_encoder=te1, text_encoder_2=te2, tokenizer=tok, tokenizer_2=tok,
                                     unet=unet, scheduler=DDIMScheduler(**SD_SCHEDULER),
                                     force_zeros_for_empty_prompt=True)
    pipe.save_pretrained(root)
    return root


def build_clip(root: Path) -> Path:
    """A random stand-in CLIP (CLIPModel + CLIPProcessor on 32 px images) saved in transformers' format."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    torch.manual_seed(1)
    tok = make_tokenizer(root / "_tok")
    cfg = CLIPConfig(text_config=text_config(len(tok)).to_dict(),
                     vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                        num_attention_heads=2, image_size=32, patch_size=8),
                     projection_dim=16)
    CLIPModel(cfg).eval().save_pretrained(root)
    proc = CLIPProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 32},
                                                            crop_size={"height": 32, "width": 32}), tokenizer=tok)
    proc.save_pretrained(root)
    return root


def _flow_vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 8, 16),
                         down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
                         layers_per_block=1, norm_num_groups=8, sample_size=32, scaling_factor=1.5,
                         shift_factor=0.1)  # SD3 / Flux decode z / scaling_factor + shift_factor


def build_sd3(root: Path, shift: float = 3.0) -> Path:
    """An SD3-style StableDiffusion3Pipeline: two CLIPs with projection (pooled 16 + 16), no T5 (the pipeline then
    uses zeros for its part, as SD3 without text_encoder_3), an SD3Transformer2DModel on 8x8x4 latents (patch 1),
    FlowMatchEulerDiscreteScheduler with shift 3 (SD3-medium's)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
    from transformers import CLIPTextModelWithProjection

    torch.manual_seed(0)
    tok = make_tokenizer(root / "_tok")
    te1 = CLIPTextModelWithProjection(text_config(len(tok))).eval()
    te2 = CLIPTextModelWithProjection(text_config(len(tok))).eval()
    net = SD3Transformer2DModel(sample_size=8, patch_size=1, in_channels=4, out_channels=4, num_layers=1,
                                attention_head_dim=8, num_attention_heads=2, joint_attention_dim=32,
                                caption_projection_dim=16, pooled_projection_dim=32, pos_embed_max_size=16)
    pipe = StableDiffusion3Pipeline(transformer=net, scheduler=FlowMatchEulerDiscreteScheduler(shift=shift),
                                    vae=_flow_vae(), text_encoder=te1, tokenizer=tok, text_encoder_2=te2,
                                    tokenizer_2=tok, text_encoder_3=None, tokenizer_3=None)
    pipe.save_pretrained(root)
    return root


def build_flux(root: Path) -> Path:
    """A Flux-style FluxPipeline: a CLIP (pooled 16) and a tiny T5 encoder (over the same character tokenizer), a
    guidance-distilled FluxTransformer2DModel (guidance_embeds) on 2x2-packed 8x8x4 latents, the dynamic-shift
    FlowMatchEulerDiscreteScheduler of FLUX.1-dev."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextModel, T5Config, T5EncoderModel

    torch.manual_seed(0)
    tok = make_tokenizer(root / "_tok")
    te1 = CLIPTextModel(text_config(len(tok))).eval()
    t5 = T5EncoderModel(T5Config(vocab_size=len(tok), d_model=32, d_kv=8, d_ff=32, num_layers=1, num_heads=2,
                                 pad_token_id=2, eos_token_id=1, decoder_start_token_id=0)).eval()
    net = FluxTransformer2DModel(patch_size=1, in_channels=16, num_layers=1, num_single_layers=1,
                                 attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32,
                                 pooled_projection_dim=16, guidance_embeds=True, axes_dims_rope=(4, 4, 8))
    sched = FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                                            base_image_seq_len=256, max_image_seq_len=4096)
    pipe = FluxPipeline(transformer=net, scheduler=sched, vae=_flow_vae(), text_encoder=te1, tokenizer=tok,
                        text_encoder_2=t5, tokenizer_2=tok)
    pipe.save_pretrained(root)
    return root

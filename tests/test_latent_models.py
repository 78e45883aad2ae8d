"""Latent and transformer pipelines (issue 14): random-weight stand-ins saved in diffusers' pipeline layouts
(unet/ or transformer/, vae/ or vqvae/, scheduler/), run with guidance through the CLI; conformance of the guided
field with diffusers' DiTPipeline; the loaders' one-line errors."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from nfebench.models import ModelError, load_model

from .test_cli import error_lines
from .test_model_loaders import run_cli

LATENT = 4  # latent channels of every stand-in; the autoencoders downsample 8x8 latents... by 2: 3x16x16 images


def _scheduler(d):
    from diffusers import DDIMScheduler

    DDIMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
                  clip_sample=False, set_alpha_to_one=True).save_pretrained(d / "scheduler")


def _vae(d, latent=LATENT):
    from diffusers import AutoencoderKL

    torch.manual_seed(1)
    AutoencoderKL(in_channels=3, out_channels=3, latent_channels=latent, block_out_channels=(8, 16),
                  down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                  layers_per_block=1, norm_num_groups=8, sample_size=16).save_pretrained(d / "vae")


def _vqvae(d):
    from diffusers import VQModel

    torch.manual_seed(2)
    VQModel(in_channels=3, out_channels=3, latent_channels=LATENT, num_vq_embeddings=32, block_out_channels=(8, 16),
            down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
            layers_per_block=1, norm_num_groups=8, sample_size=16).save_pretrained(d / "vqvae")


def _unet(d, classes=5):
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    UNet2DModel(sample_size=8, in_channels=LATENT, out_channels=LATENT, layers_per_block=1,
                block_out_channels=(16, 32), down_block_types=("DownBlock2D",) * 2, up_block_types=("UpBlock2D",) * 2,
                norm_num_groups=8, add_attention=False, num_class_embeds=classes + 1).save_pretrained(d / "unet")


def _dit(d):
    from diffusers import DiTTransformer2DModel

    torch.manual_seed(0)
    DiTTransformer2DModel(num_attention_heads=2, attention_head_dim=8, in_channels=LATENT, out_channels=2 * LATENT,
                          num_layers=1, sample_size=8, patch_size=2, num_embeds_ada_norm=1000,
                          norm_num_groups=8).save_pretrained(d / "transformer")


def make_pipeline(root, name, denoiser, decoder):
    d = root / name
    {"unet": _unet, "dit": _dit}[denoiser](d)
    {"vae": _vae, "vqvae": _vqvae}[decoder](d)
    _scheduler(d)
    (d / "model_index.json").write_text(json.dumps({"_class_name": "DiTPipeline" if denoiser == "dit" else
                                                    "LDMPipeline", decoder: ["diffusers", "AutoencoderKL"]}))
    return d


@pytest.fixture(scope="module")
def pipelines(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipelines")
    return {"unet_vae": make_pipeline(root, "unet_vae", "unet", "vae"),
            "unet_vqvae": make_pipeline(root, "unet_vqvae", "unet", "vqvae"),
            "dit_vae": make_pipeline(root, "dit_vae", "dit", "vae")}


def test_loaders_read_the_pipeline_layouts(pipelines):
    unet = load_model("diffusers", path=str(pipelines["unet_vae"]))
    assert (unet.num_classes, unet.null_class, unet.sample_shape) == (5, 5, (LATENT, 8, 8))
    assert unet.decoder.kind == "vae" and unet.decoder.scale == pytest.approx(0.18215)
    assert load_model("diffusers", path=str(pipelines["unet_vqvae"])).decoder.scale == 1.0  # as LDMPipeline: unscaled
    dit = load_model("diffusers", path=str(pipelines["dit_vae"]))
    assert (dit.num_classes, dit.null_class, dit.variance_type) == (1000, 1000, "learned_range")
    x = torch.randn(2, LATENT, 8, 8)
    img = dit.decoder(x)
    assert img.shape == (2, 3, 16, 16) and dit.decoder.seconds > 0
    e = dit(x, torch.tensor([500.0, 500.0]), class_labels=torch.tensor([1, 2]), guidance_scale=3.0, null_class=1000)
    assert e.shape == x.shape and e.variance_values.shape == x.shape  # learned sigma travels beside eps


@pytest.mark.parametrize("which", ["unet_vae", "unet_vqvae", "dit_vae"])
def test_latent_pipelines_run_with_guidance_through_the_cli(pipelines, which, tmp_path):
    res = tmp_path / "res"
    r = run_cli("model=diffusers", f"model.path={pipelines[which]}", "metrics=none", f"results_dir={res}", "num_samples=6",
                "batch_size=4", "sampler=ddim", "nfe=4", "guidance_scale=3.0", "device=cpu")
    assert r.returncode == 0, r.stderr[-2000:]
    row = pd.read_csv(res / "leaderboard.csv").iloc[0]
    assert row.guidance_scale == 3.0 and row.nfe_used == 4 and row.network_passes == 8
    run = res / "runs" / row.run_id
    with np.load(run / "samples.npz") as z:
        assert z["samples"].dtype == np.uint8 and z["samples"].shape == (6, 3, 16, 16)  # decoded by the autoencoder
        labels = z["class_labels"]
    k = 1000 if which == "dit_vae" else 5
    assert labels.shape == (6,) and labels.min() >= 0 and labels.max() < k and len(set(labels)) > 1
    timings = json.loads((run / "metrics.json").read_text())["timings"]
    assert timings["decode_seconds"] > 0 and row.sampling_seconds > 0

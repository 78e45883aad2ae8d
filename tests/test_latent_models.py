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


def _ddim():
    from diffusers import DDIMScheduler

    sch = DDIMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
                        clip_sample=False, set_alpha_to_one=True)
    sch.set_timesteps(6)
    return sch


def _ours(m, x_T, labels, w, sch):
    """nfebench's guided DDIM on diffusers' DDIM grid (its timesteps, then clean data), decoded to [0, 1]."""
    import nfebench

    x0 = nfebench.sample(m.fn.network, m.schedule, x_T, "ddim", len(sch.timesteps), None, m.prediction_type,
                         variance_type=m.variance_type, timesteps=[float(t) for t in sch.timesteps] + [-1.0], class_labels=labels,
                         guidance_scale=w, null_class=m.null_class)
    return (m.decoder(x0) / 2 + 0.5).clamp(0, 1)


def test_guidance_matches_diffusers_dit_pipeline(pipelines):
    """DiTPipeline's CFG (guidance on the eps channels, learned sigma dropped, null class 1000) under DDIM."""
    from diffusers import AutoencoderKL, DiTPipeline, DiTTransformer2DModel
    from diffusers.utils.torch_utils import randn_tensor

    d, labels, w = pipelines["dit_vae"], [3, 999], 4.0
    pipe = DiTPipeline(DiTTransformer2DModel.from_pretrained(d / "transformer"),
                       AutoencoderKL.from_pretrained(d / "vae"), _ddim())
    theirs = pipe(class_labels=labels, guidance_scale=w, generator=torch.Generator().manual_seed(0),
                  num_inference_steps=6, output_type="pt").images
    m = load_model("diffusers", path=str(d))
    x_T = randn_tensor((2, LATENT, 8, 8), generator=torch.Generator().manual_seed(0))
    mine = _ours(m, x_T, labels, w, _ddim())
    assert float((mine - theirs).norm() / theirs.norm()) < 1e-4
    unguided = _ours(m, x_T, labels, 1.0, _ddim())
    assert float((unguided - theirs).norm() / theirs.norm()) > 1e-3  # guidance mattered


def test_guidance_matches_a_diffusers_loop_for_a_class_conditional_unet(pipelines):
    """The convention of diffusers' guided pipelines, noise_pred_uncond + w (noise_pred_cond - noise_pred_uncond)
    on a 2B batch, under DDIMScheduler, decoded by vae.decode(z / scaling_factor), for a UNet2DModel with classes."""
    from diffusers import AutoencoderKL, UNet2DModel

    d, labels, w = pipelines["unet_vae"], torch.tensor([0, 4]), 2.5
    unet, vae, sch = UNet2DModel.from_pretrained(d / "unet"), AutoencoderKL.from_pretrained(d / "vae"), _ddim()
    x_T = torch.randn(2, LATENT, 8, 8, generator=torch.Generator().manual_seed(1))
    z = x_T
    with torch.no_grad():
        for t in sch.timesteps:
            out = unet(torch.cat([z, z]), t, class_labels=torch.cat([labels, torch.full_like(labels, 5)])).sample
            cond, uncond = out.chunk(2)
            z = sch.step(uncond + w * (cond - uncond), t, z).prev_sample
        theirs = (vae.decode(z / vae.config.scaling_factor).sample / 2 + 0.5).clamp(0, 1)
    mine = _ours(load_model("diffusers", path=str(d)), x_T, labels, w, _ddim())
    assert float((mine - theirs).norm() / theirs.norm()) < 1e-4


def test_pipeline_errors_are_one_line(pipelines, tmp_path):
    no_vae = tmp_path / "no_vae"
    shutil.copytree(pipelines["dit_vae"], no_vae)
    shutil.rmtree(no_vae / "vae")
    with pytest.raises(ModelError, match=r"has no vae/ folder with a config.json .*needs its autoencoder"):
        load_model("diffusers", path=str(no_vae))
    mismatch = tmp_path / "mismatch"
    shutil.copytree(pipelines["unet_vae"], mismatch)
    shutil.rmtree(mismatch / "vae")
    _vae(mismatch, latent=3)
    with pytest.raises(ModelError, match="has 3 latent channels but the denoiser takes 4 input channels"):
        load_model("diffusers", path=str(mismatch))
    with pytest.raises(ModelError, match=r"model.num_classes=7: .* has 6 class embeddings; allowed: 1..6"):
        load_model("diffusers", path=str(pipelines["unet_vae"]), num_classes=7)
    no_null = load_model("diffusers", path=str(pipelines["unet_vae"]), num_classes=6)  # every embedding a class
    assert no_null.null_class is None


def test_cli_conditioning_errors_are_one_line_exit_2(pipelines, tmp_path):
    base = ["model=diffusers", f"model.path={pipelines['unet_vae']}", "metrics=none", f"results_dir={tmp_path}",
            "num_samples=2", "nfe=2", "sampler=ddim", "device=cpu"]
    for extra, needle in [(["class_labels=[1,7]"], "class_labels: label 7 is out of range; allowed: 0..4"),
                          (["guidance_scale=2", "model.num_classes=6"], "guidance_scale=2.0 needs a model with a "
                                                                        "null label")]:
        r = run_cli(*base, *extra)
        assert r.returncode == 2 and len(error_lines(r)) == 1 and needle in error_lines(r)[0], r.stderr[-1500:]
        assert "Traceback" not in r.stderr and not (tmp_path / "leaderboard.csv").exists()

"""Text-to-image pipelines (model=pipeline): rows through the CLI, conformance with diffusers' pipelines, counted
guidance, prompt sets, CLIP score against torchmetrics, CMMD against the paper's formula, one-line errors.

Everything runs on tiny random-weight pipelines built here from configs (tests/t2i_helpers.py).
"""

from __future__ import annotations

import json
import sys
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
import t2i_helpers  # noqa: E402

from nfebench.api import to_vp_frame  # noqa: E402
from nfebench.models.parametrization import network_passes  # noqa: E402
from nfebench.models import load_model  # noqa: E402
from nfebench.needs import prepare  # noqa: E402
from nfebench.prompts import PromptsError, assign, load_prompts  # noqa: E402
from nfebench.run import ConfigError, sample_seeds, validate  # noqa: E402
from nfebench.samplers import CountedEps, PerSampleNoise, get_sampler  # noqa: E402

CONF = Path(__file__).resolve().parents[1] / "conf"


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("t2i")
    return {"sd": t2i_helpers.build_sd(root / "sd"), "sdxl": t2i_helpers.build_sdxl(root / "sdxl"),
            "sdv": t2i_helpers.build_sd(root / "sdv", prediction_type="v_prediction"),  # SD 2.x-style
            "sd3": t2i_helpers.build_sd3(root / "sd3"), "flux": t2i_helpers.build_flux(root / "flux"),
            "clip": t2i_helpers.build_clip(root / "clip"), "root": root}


def compose(*overrides):
    from hydra import compose as _compose, initialize_config_dir

    import nfebench.__main__  # noqa: F401  (registers the config's resolvers)

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return _compose(config_name="config", overrides=list(overrides))


def point(path, sampler="dpmpp", nfe=4, num_samples=2, guidance_scale=7.5, dtype="float64", **top):
    cfg = {"model": {"kind": "pipeline", "name": "t", "path": str(path), "dtype": dtype, "height": 32, "width": 32},
           "sampler": {"name": sampler, **top.pop("sampler_options", {})}, "dataset": {"name": "digits"},
           "metrics": {}, "nfe": nfe, "num_samples": num_samples, "batch_size": num_samples, "seed": 0,
           "device": "cpu", "guidance_scale": guidance_scale, **top}
    return validate(cfg)


def sample_latents(model, p):
    """nfebench's latents for p (what generate() computes before decoding), and the evaluations spent."""
    prepared = prepare(model, p, progress=False)
    m, seeds = prepared.model, sample_seeds(p.seed, p.num_samples)
    noise = PerSampleNoise(seeds)
    x = noise.randn(model.sample_shape, dtype=model.dtype)  # x_T in the model's space, from each sample's seed
    eps = CountedEps(partial(m, **m.conditioning(seeds)), budget=p.nfe)
    with torch.no_grad():
        x0 = get_sampler(p.sampler).fn(eps, model.schedule, to_vp_frame(x, model.schedule), p.nfe, noise,
                                       **prepared.options)
    return x0, x, eps.calls, prepared


# --- 1. rows through the CLI ------------------------------------------------------------------------------------

@pytest.mark.parametrize("family,w,passes", [("sd", 7.5, 8), ("sdxl", 7.5, 8), ("sd3", 7.5, 8), ("flux", 3.5, 4)])
def test_cli_rows_count_guided_evaluations_and_passes(dirs, family, w, passes, tmp_path):
    """CFG: 2 passes per evaluation; Flux's guidance is an input of the transformer: 1."""
    from nfebench.run import run

    cfg = compose("model=pipeline", f"model.path={dirs[family]}", "model.height=32", "model.width=32",
                  "sampler=dpmpp", "nfe=4", f"guidance_scale={w}",
                  "prompts=builtin", "metrics=t2i", f"metrics.clip_model={dirs['clip']}", "num_samples=3",
                  "batch_size=2", "device=cpu", f"results_dir={tmp_path}")
    row = run(cfg, progress=False)
    assert row["nfe"] == 4 and row["nfe_used"] == 4 and row["network_passes"] == passes
    captions, label = load_prompts("builtin")
    assert row["prompts"] == label and label.startswith("builtin@")
    assert row["clip_model"] == str(dirs["clip"]) and 0.0 <= row["clip_score"] <= 100.0
    run_dir = tmp_path / "runs" / row["run_id"]
    with np.load(run_dir / "samples.npz") as z:
        assert z["samples"].shape == (3, 3, 32, 32) and z["samples"].dtype == np.uint8
        assert list(z["prompts"]) == captions[:3] and len(z["seeds"]) == 3
    with np.load(run_dir / "clip.npz") as z:
        assert z["clip_score"].shape == (3,)
        assert row["clip_score"] == pytest.approx(max(float(z["clip_score"].astype(np.float64).mean()), 0.0),
                                                  abs=1e-4)
    timings = json.loads((run_dir / "metrics.json").read_text())["timings"]
    assert "encode_seconds" in timings and "decode_seconds" in timings and row["encode_seconds"] > 0


def test_each_batch_encodes_its_distinct_prompts_once(dirs, tmp_path, monkeypatch):
    from nfebench.models.pipeline import TextEncoder
    from nfebench.run import run

    calls, encode = [], TextEncoder.encode
    monkeypatch.setattr(TextEncoder, "encode",
                        lambda self, prompts: calls.append(list(prompts)) or encode(self, prompts))
    (tmp_path / "p.txt").write_text("a cat\na dog\n")
    row = run(compose("model=pipeline", f"model.path={dirs['sd']}", "sampler=ddim", "nfe=2", "guidance_scale=7.5",
                      f"prompts={tmp_path / 'p.txt'}", "metrics=none", "num_samples=6", "batch_size=3", "device=cpu",
                      f"results_dir={tmp_path}"), progress=False)
    assert calls == [["a cat", "a dog"], ["a dog", "a cat"]]  # samples 0-2: cat dog cat; 3-5: dog cat dog
    with np.load(tmp_path / "runs" / row["run_id"] / "samples.npz") as z:
        assert list(z["prompts"]) == ["a cat", "a dog"] * 3


def test_t2i_metrics_need_no_dataset_and_fid_only_with_reference_stats():
    from omegaconf import OmegaConf

    def metrics(*o):
        return OmegaConf.to_container(compose("model=pipeline", "metrics=t2i", *o), resolve=True)["metrics"]

    m = metrics()
    assert m["clip_score"] and not (m["fid"] or m["isc"] or m["kid"])
    assert metrics("metrics.reference_stats=/x/coco30k.npz")["fid"] is True


# --- 2. conformance with the diffusers pipelines ----------------------------------------------------------------

@pytest.fixture(scope="module")
def models(dirs):
    return {f: load_model("pipeline", path=str(dirs[f]), dtype="float64") for f in ("sd", "sdxl", "sdv")}


@pytest.mark.parametrize("family,sampler,negative", [
    ("sd", "ddim", None), ("sd", "dpmpp", None), ("sdxl", "ddim", None), ("sdxl", "dpmpp", None),
    ("sdv", "dpmpp", None),  # SD 2.x-style v-prediction
    ("sd", "ddim", "a blurry photo"), ("sdxl", "dpmpp", "a blurry photo")])  # SDXL: a negative prompt replaces zeros
def test_latents_match_the_diffusers_pipeline(models, family, sampler, negative):
    """Same initial latents, same prompts (each pipeline's own encoding), CFG 7.5: nfebench's ddim / dpmpp and the
    pipeline with DDIMScheduler / DPMSolverMultistepScheduler (output_type="latent") agree to 1e-4 relative."""
    import diffusers

    model = models[family]
    pipe = model.pipeline
    if sampler == "ddim":
        sch = diffusers.DDIMScheduler.from_config(pipe.scheduler.config)
        sch.set_timesteps(5)
        grid = [float(t) for t in sch.timesteps] + [-1.0]  # set_alpha_to_one: the last step lands on clean data
    else:
        sch = diffusers.DPMSolverMultistepScheduler.from_config(
            pipe.scheduler.config, algorithm_type="dpmsolver++", solver_order=2, timestep_spacing="linspace",
            final_sigmas_type="sigma_min")
        sch.set_timesteps(5)
        grid = [float(t) for t in sch.timesteps] + [0.0]
    p = point(model.source, sampler, nfe=5, sampler_options={"timesteps": grid}, negative_prompt=negative)
    mine, x_T, used, _ = sample_latents(model, p)
    assert used == 5
    captions = assign(load_prompts("builtin")[0], 2)
    original, pipe.scheduler = pipe.scheduler, sch
    try:
        theirs = pipe(prompt=captions, num_inference_steps=5, guidance_scale=7.5, latents=x_T.clone(),
                      negative_prompt=None if negative is None else [negative] * 2, output_type="latent").images
    finally:
        pipe.scheduler = original
    rel = float((mine - theirs).norm() / theirs.norm())
    assert rel < 1e-4, rel


@pytest.fixture(scope="module")
def flow_models(dirs):
    return {f: load_model("pipeline", path=str(dirs[f]), dtype="float64", height=32, width=32)
            for f in ("sd3", "flux")}


@pytest.mark.parametrize("family,w", [("sd3", 7.5), ("flux", 3.5)])
def test_flow_euler_matches_flowmatch_euler_pipeline(flow_models, family, w):
    """SD3 (CFG 7.5, shift 3) and Flux (embedded guidance 3.5, dynamic shift): nfebench's euler on the Flow
    schedule's grid, then to clean data, equals the pipeline with FlowMatchEulerDiscreteScheduler given the same
    sigmas (passed unshifted: the scheduler shifts them) and the same initial latents, 1e-4 relative."""
    from nfebench.schedules import flow_time_unshift

    model = flow_models[family]
    pipe, sched = model.pipeline, model.schedule
    ts = sched.timesteps(4, "uniform")  # 5 values from t_max = 1000 shift(0.999) down to t_min
    p = point(model.source, "euler", nfe=5, guidance_scale=w, sampler_options={"timesteps": list(ts) + [-1.0]})
    mine, x_T, used, _ = sample_latents(model, p)
    assert used == 5
    sigmas = flow_time_unshift(ts / sched.time_scale, sched.shift).tolist()
    captions = assign(load_prompts("builtin")[0], 2)
    kw = dict(prompt=captions, num_inference_steps=5, guidance_scale=w, sigmas=sigmas, height=32, width=32,
              output_type="latent")
    if family == "flux":
        b, c, h, wd = x_T.shape
        out = pipe(latents=pipe._pack_latents(x_T.clone(), b, c, h, wd), **kw).images
        theirs = pipe._unpack_latents(out, 32, 32, pipe.vae_scale_factor)
    else:
        theirs = pipe(latents=x_T.clone(), **kw).images
    rel = float((mine - theirs).norm() / theirs.norm())
    assert rel < 1e-4, rel


# --- guidance, counted ------------------------------------------------------------------------------------------

def test_guidance_interval_passes_are_the_forward_passes_spent(models):
    """With guidance_interval only the steps with EDM sigma in (lo, hi] run both halves: the row's network_passes
    equals the batch rows the UNet actually saw, per sample; without guidance one pass per evaluation."""
    model = models["sd"]
    unet, rows = model.module, []
    handle = unet.register_forward_pre_hook(lambda mod, args: rows.append(args[0].shape[0]))
    try:
        for w, interval, expected_mixed in [(7.5, [0.5, 3.0], True), (7.5, None, False), (None, None, False)]:
            rows.clear()
            p = point(model.source, "dpmpp", nfe=6, guidance_scale=w, guidance_interval=interval)
            _, _, used, prepared = sample_latents(model, p)
            passes = prepared.row.get("network_passes", used * network_passes(w))  # run.py's rule without interval
            assert passes == sum(rows) // p.num_samples
            if expected_mixed:
                assert used < passes < 2 * used
            else:
                assert passes == used * (2 if w else 1)
    finally:
        handle.remove()


def test_guidance_zero_is_the_unconditional_branch_alone(models):
    model = models["sd"]
    a, *_ = sample_latents(model, point(model.source, "ddim", nfe=3, guidance_scale=0.0))
    b, *_ = sample_latents(model, point(model.source, "ddim", nfe=3, guidance_scale=1.0))
    c, *_ = sample_latents(model, point(model.source, "ddim", nfe=3, guidance_scale=0.0, negative_prompt="a dog"))
    assert not torch.allclose(a, b) and not torch.allclose(a, c)


# --- prompts ----------------------------------------------------------------------------------------------------

def test_prompt_files_txt_csv_jsonl_cycle_and_hash(tmp_path):
    (tmp_path / "a.txt").write_text("a cat\n\n a dog \n")
    (tmp_path / "b.csv").write_text("image_id,caption\n1,a cat\n2,a dog\n")
    (tmp_path / "c.jsonl").write_text('{"caption": "a cat"}\n{"caption": "a dog"}\n')
    for name in ("a.txt", "b.csv", "c.jsonl"):
        caps, label = load_prompts(str(tmp_path / name))
        assert caps == ["a cat", "a dog"] and label.startswith(name + "@") and len(label) == len(name) + 13
    assert assign(["x", "y"], 5) == ["x", "y", "x", "y", "x"]
    assert load_prompts(str(tmp_path / "a.txt"))[1] != load_prompts(str(tmp_path / "b.csv"))[1].replace("b.csv",
                                                                                                     "a.txt")


def test_prompt_file_errors(tmp_path):
    (tmp_path / "empty.txt").write_text("\n \n")
    (tmp_path / "nocap.csv").write_text("image_id,text\n1,a cat\n")
    with pytest.raises(PromptsError, match="does not exist"):
        load_prompts(str(tmp_path / "missing.txt"))
    with pytest.raises(PromptsError, match="no captions"):
        load_prompts(str(tmp_path / "empty.txt"))
    with pytest.raises(PromptsError, match="no 'caption' column"):
        load_prompts(str(tmp_path / "nocap.csv"))


# --- CLIP score and CMMD ----------------------------------------------------------------------------------------

def test_clip_score_equals_torchmetrics(dirs):
    from torchmetrics.functional.multimodal.clip_score import _clip_score_update
    from torchmetrics.multimodal.clip_score import CLIPScore

    from nfebench.metrics.clip import clip_metrics, load_clip

    model, processor = load_clip(str(dirs["clip"]))

    class Features(torch.nn.Module):  # transformers 5 returns ModelOutputs; torchmetrics needs the feature tensors
        def __init__(self, m):
            super().__init__()
            self.m, self.config = m, m.config

        def get_image_features(self, *a):
            return self.m.get_image_features(*a).pooler_output

        def get_text_features(self, *a):
            return self.m.get_text_features(*a).pooler_output

    images = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    captions = assign(load_prompts("builtin")[0], 6)
    tm = CLIPScore(model_name_or_path=lambda: (Features(model), processor))
    tm.update(list(images), captions)
    row = clip_metrics(images, captions, {"clip_score": True, "clip_model": str(dirs["clip"])}, "cpu", None, False)
    assert row["clip_score"] == pytest.approx(float(tm.compute()), abs=1e-4)
    per_tm, _ = _clip_score_update(list(images), captions, Features(model), processor)
    from nfebench.metrics.clip import image_embeddings, text_embeddings

    per = 100 * (image_embeddings(images, model, processor) * text_embeddings(captions, model, processor)).sum(-1)
    assert torch.allclose(per, per_tm.double(), atol=1e-4) and per.abs().max() > 1e-2  # values, not only the floor


def test_cmmd_is_the_papers_formula():
    from nfebench.metrics.clip import cmmd

    g = torch.Generator().manual_seed(0)
    x = torch.nn.functional.normalize(torch.randn(7, 5, generator=g, dtype=torch.float64), dim=1)
    y = torch.nn.functional.normalize(torch.randn(4, 5, generator=g, dtype=torch.float64) + 0.5, dim=1)

    def k(a, b):  # Gaussian RBF, sigma = 10
        return float(np.exp(-np.sum((a - b) ** 2) / (2 * 10.0**2)))

    xs, ys = x.numpy(), y.numpy()
    kxx = np.mean([[k(a, b) for b in xs] for a in xs])
    kyy = np.mean([[k(a, b) for b in ys] for a in ys])
    kxy = np.mean([[k(a, b) for b in ys] for a in xs])
    assert cmmd(x, y) == pytest.approx(1000 * (kxx + kyy - 2 * kxy), rel=1e-9)
    assert cmmd(x, x) == pytest.approx(0.0, abs=1e-9) and cmmd(x, y) > 0


def test_cmmd_in_a_run_against_an_image_folder(dirs, tmp_path):
    from PIL import Image

    from nfebench.metrics.clip import clip_metrics, cmmd, image_embeddings, load_clip

    g = torch.Generator().manual_seed(1)
    ref = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8, generator=g)
    for i, im in enumerate(ref):
        Image.fromarray(im.permute(1, 2, 0).numpy()).save(tmp_path / f"{i}.png")
    samples = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8, generator=g)
    row = clip_metrics(samples, None, {"cmmd": True, "cmmd_reference": str(tmp_path),
                                       "clip_model": str(dirs["clip"])}, "cpu", None, False)
    model, proc = load_clip(str(dirs["clip"]))
    assert row["cmmd"] == pytest.approx(cmmd(image_embeddings(samples, model, proc), image_embeddings(ref, model,
                                                                                                     proc)))


def test_compare_gives_paired_cis_for_clip_score_and_cmmd(dirs, tmp_path, capsys):
    """Two text-to-image runs (same seeds and prompts, two samplers) compared by nfebench.compare: CLIP score and
    CMMD with their paired intervals, from clip.npz alone (no FID features)."""
    from PIL import Image

    from nfebench import compare, stats
    from nfebench.run import run

    ref = tmp_path / "ref"
    ref.mkdir()
    for i in range(3):
        Image.new("RGB", (32, 32), (40 * i, 200 - 30 * i, 90)).save(ref / f"{i}.png")
    rows = [run(compose("model=pipeline", f"model.path={dirs['sd']}", f"sampler={s}", "nfe=3", "guidance_scale=7.5",
                        "metrics=t2i", f"metrics.clip_model={dirs['clip']}", "metrics.cmmd=true",
                        f"metrics.cmmd_reference={ref}", "num_samples=4", "batch_size=4", "device=cpu",
                        f"results_dir={tmp_path}"), progress=False) for s in ("ddim", "dpmpp")]
    a, b = (compare.find_run(r["run_id"], tmp_path) for r in rows)
    res = {r["metric"]: r for r in compare.compare_runs(a, b, n_boot=200)}
    assert set(res) == {"clip_score", "cmmd"}
    assert res["cmmd"]["a"] == pytest.approx(rows[0]["cmmd"], rel=1e-6)
    assert res["cmmd"]["b"] == pytest.approx(rows[1]["cmmd"], rel=1e-6)
    assert res["clip_score"]["a"] == pytest.approx(rows[0]["clip_score"], abs=1e-4)
    assert res["cmmd"]["ci_low"] <= res["cmmd"]["delta"] <= res["cmmd"]["ci_high"]
    with np.load(a.dir / "clip.npz") as za, np.load(b.dir / "clip.npz") as zb:  # the statistic is a function of rows
        w = torch.ones(1, 4, dtype=torch.float64)
        assert float(stats._cmmd_stat(torch.from_numpy(za["image_embeddings"]).double(),
                                      torch.from_numpy(za["reference_embeddings"]).double())(w)[0]) == \
            pytest.approx(rows[0]["cmmd"], rel=1e-5)
        assert (za["seeds"] == zb["seeds"]).all()
    assert compare.main([rows[0]["run_id"], rows[1]["run_id"], "--results", str(tmp_path), "--n-boot", "200"]) == 0
    out = capsys.readouterr().out
    assert "CLIP score" in out and "CMMD" in out


# --- one-line errors --------------------------------------------------------------------------------------------

def test_errors(dirs, models, tmp_path):
    from nfebench.metrics.fidelity import MetricsError
    from nfebench.models import ModelError

    bad = tmp_path / "kandinsky"
    bad.mkdir()
    (bad / "model_index.json").write_text(json.dumps({"_class_name": "KandinskyPipeline"}))
    with pytest.raises(ModelError, match="'KandinskyPipeline'.*supported: StableDiffusionPipeline, "
                                         "StableDiffusionXLPipeline, StableDiffusion3Pipeline, FluxPipeline"):
        load_model("pipeline", path=str(bad))
    model = models["sd"]
    with pytest.raises(ConfigError, match=r"guidance_interval \[100.0, 200.0\] is outside the schedule"):
        prepare(model, point(model.source, guidance_interval=[100.0, 200.0]), progress=False)
    with pytest.raises(ConfigError, match="'rk45' chooses its steps from the model's outputs"):
        prepare(model, point(model.source, "rk45", nfe=200, guidance_interval=[0.5, 3.0]), progress=False)
    with pytest.raises(ConfigError, match="needs classifier-free guidance"):
        prepare(model, point(model.source, guidance_scale=None, guidance_interval=[0.5, 3.0]), progress=False)
    with pytest.raises(PromptsError, match="does not exist"):
        prepare(model, point(model.source, prompts=str(tmp_path / "nope.txt")), progress=False)
    with pytest.raises(ModelError, match="model.height=36: FluxPipeline needs a positive multiple of 8 pixels"):
        load_model("pipeline", path=str(dirs["flux"]), height=36, width=32)
    flux = load_model("pipeline", path=str(dirs["flux"]), height=32, width=32)
    with pytest.raises(ConfigError, match="guidance_interval needs an unconditional branch; FluxPipeline has none"):
        prepare(flux, point(flux.source, guidance_scale=3.5, guidance_interval=[0.5, 3.0]), progress=False)
    with pytest.raises(ConfigError, match="guidance-distilled: set guidance_scale"):
        prepare(flux, point(flux.source, guidance_scale=None), progress=False)
    with pytest.raises(MetricsError, match="nor in the Hugging Face cache.*huggingface-cli download"):
        from nfebench.metrics.clip import load_clip

        load_clip("nobody/no-such-clip")


def test_text_options_on_a_model_without_text_are_errors(tiny_unet_dir, tmp_path):
    from nfebench.run import run

    for override in ("prompts=builtin", "guidance_interval=[0.5,3.0]"):
        cfg = compose("model=diffusers", f"model.path={tiny_unet_dir}", "metrics=none", "nfe=2", "num_samples=2",
                      "device=cpu", f"results_dir={tmp_path}", override)
        with pytest.raises(ConfigError, match="needs a text-to-image model"):
            run(cfg, progress=False)
    cfg = compose("model=diffusers", f"model.path={tiny_unet_dir}", "metrics=none", "nfe=2", "num_samples=2",
                  "device=cpu", f"results_dir={tmp_path}", "guidance_scale=7.5")
    with pytest.raises(ConfigError, match="guidance_scale need a class-conditional model"):  # no unconditional branch
        run(cfg, progress=False)


def test_cli_error_is_one_line(dirs, tmp_path):
    from test_cli import error_lines, run_cli

    r = run_cli("model=pipeline", f"model.path={dirs['sd']}", "nfe=2", f"prompts={tmp_path / 'missing.txt'}",
                "metrics=none", f"results_dir={tmp_path}", "device=cpu")
    assert r.returncode == 2 and len(error_lines(r)) == 1 and "missing.txt" in error_lines(r)[0]
    assert "Traceback" not in r.stderr and not (tmp_path / "leaderboard.csv").exists()

    from nfebench.data import DataError
    from nfebench.metrics.fidelity import MetricsError
    from nfebench.run import run

    cfg = compose("model=pipeline", f"model.path={dirs['sd']}", "nfe=2", "metrics=t2i", "device=cpu",
                  "metrics.clip_model=nobody/no-such-clip", f"results_dir={tmp_path}")
    with pytest.raises(MetricsError, match="huggingface-cli download nobody/no-such-clip"):
        run(cfg, progress=False)
    assert not (tmp_path / "runs").exists()  # refused before sampling (runtime.preflight)
    cfg = compose("model=pipeline", f"model.path={dirs['sd']}", "nfe=2", "device=cpu", f"results_dir={tmp_path}")
    with pytest.raises(DataError, match="score it with metrics=t2i"):  # metrics=default: a digits FID
        run(cfg, progress=False)

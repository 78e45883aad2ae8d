"""Loaders for any model: diffusers directories of every parametrization (and NCSN++-style VE score models), user
factories (`model=python`), and their one-line errors. Stand-ins are random-weight networks saved in the real
formats; the CLI runs them, counts their NFE and records prediction_type and schedule in the row."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pandas as pd
import pytest
import torch

from nfebench.models import ModelError, load_model
from nfebench.schedules import VE, Discrete, ScheduleError

from .test_cli import SRC, error_lines


def run_cli(*args, extra_path=None):
    """python -m nfebench with this checkout first on the path (and the factory module's folder)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(p for p in (SRC, extra_path) if p)}
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run([sys.executable, "-m", "nfebench", *args], capture_output=True, text=True, env=env,
                          timeout=300)

UNET = dict(sample_size=8, in_channels=1, layers_per_block=1, block_out_channels=(16, 32), norm_num_groups=8,
            down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
            add_attention=False)


def _unet_dir(root, name, scheduler, out_channels=1, **unet):
    from diffusers import UNet2DModel

    d = root / name
    torch.manual_seed(0)
    UNet2DModel(**{**UNET, **unet}, out_channels=out_channels).save_pretrained(d)
    scheduler.save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def stand_ins(tmp_path_factory):
    """v_prediction (DDIM config), sample (DPM-Solver config), learned_range (DDPM config, 2C outputs) UNets and an
    NCSN++-style VE score model (Fourier embedding of the sigma it gets, a ScoreSdeVeScheduler config)."""
    from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, ScoreSdeVeScheduler

    root = tmp_path_factory.mktemp("stand-ins")
    return {
        "v_prediction": _unet_dir(root, "v", DDIMScheduler(prediction_type="v_prediction")),
        "sample": _unet_dir(root, "x0", DPMSolverMultistepScheduler(prediction_type="sample",
                                                                    beta_schedule="squaredcos_cap_v2")),
        "learned_range": _unet_dir(root, "lr", DDPMScheduler(variance_type="learned_range"), out_channels=2),
        "score": _unet_dir(root, "ve", ScoreSdeVeScheduler(sigma_min=0.01, sigma_max=50.0),
                           time_embedding_type="fourier"),
    }


FACTORY = '''
import torch


class Net(torch.nn.Module):
    """An EDM-style denoiser D(x; sigma) = c_skip x + c_out F(c_in x, c_noise) with a 1x1-conv F (Karras et al.
    2022, Eq. 7 / Table 1), or a 2C-output epsilon network."""

    def __init__(self, channels, out_factor=1):
        super().__init__()
        self.f = torch.nn.Conv2d(channels + 1, channels * out_factor, 1)

    def forward(self, x, sigma):
        s = sigma.view(-1, 1, 1, 1).to(x.dtype)
        c_in, c_skip, c_out = 1 / (s**2 + 0.25).sqrt(), 0.25 / (s**2 + 0.25), 0.5 * s / (s**2 + 0.25).sqrt()
        f = self.f(torch.cat([c_in * x, torch.log1p(s).expand_as(x[:, :1])], 1))
        return c_skip * x.repeat(1, f.shape[1] // x.shape[1], 1, 1) + c_out * f


def edm(channels=1):
    torch.manual_seed(0)
    return Net(channels)


def learned(channels=1):
    torch.manual_seed(0)
    return Net(channels, out_factor=2)


def wrong_shape():
    return lambda x, t: x[:, :, :4]


NOT_CALLABLE = 3
'''


@pytest.fixture(scope="module")
def factory_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("factory")
    (d / "my_nets.py").write_text(textwrap.dedent(FACTORY))
    return d


def test_diffusers_configs_give_parametrization_schedule_and_variance(stand_ins):
    v = load_model("diffusers", path=str(stand_ins["v_prediction"]))
    assert (v.prediction_type, v.variance_type, v.schedule.describe()) == ("v_prediction", None, "discrete(T=1000)")
    x0 = load_model("diffusers", path=str(stand_ins["sample"]))
    assert x0.prediction_type == "sample" and x0.betas[-1] == pytest.approx(0.999)  # squaredcos_cap_v2's clip
    lr = load_model("diffusers", path=str(stand_ins["learned_range"]))
    assert lr.variance_type == "learned_range" and lr.sample_shape == (1, 8, 8)
    ve = load_model("diffusers", path=str(stand_ins["score"]))
    assert ve.prediction_type == "score" and isinstance(ve.schedule, VE) and ve.schedule.sigma_max == 100.0
    assert ve.betas is None
    over = load_model("diffusers", path=str(stand_ins["v_prediction"]), prediction_type="epsilon", schedule="ve")
    assert over.prediction_type == "epsilon" and isinstance(over.schedule, VE)


def test_ve_score_model_gets_sigma_and_ve_scaled_input(stand_ins):
    """The adapter feeds the network x_ve = x_vp / alpha at tau = sigma, and eps = -sigma * score; score_sde's VE
    data range [0, 1] makes that x_net = (x_ve + 1) / 2 at sigma_net = sigma / 2 with score = score_net / 2."""
    from diffusers import UNet2DModel

    m = load_model("diffusers", path=str(stand_ins["score"]), dtype="float64")
    unet = UNet2DModel.from_pretrained(stand_ins["score"]).double()
    x_vp, s = torch.randn(2, 1, 8, 8, dtype=torch.float64), 3.0
    tau = torch.full((2,), s, dtype=torch.float64)
    with torch.no_grad():
        score_net = unet((x_vp * (1 + s**2) ** 0.5 + 1) / 2, tau / 2).sample
        torch.testing.assert_close(m(x_vp, tau), -s * score_net / 2, rtol=1e-10, atol=1e-10)


def test_python_factory_builds_the_users_network(factory_dir, monkeypatch):
    monkeypatch.syspath_prepend(str(factory_dir))
    m = load_model("python", factory="my_nets:edm", kwargs={"channels": 1}, prediction_type="sample",
                   schedule={"kind": "ve", "sigma_min": 0.002, "sigma_max": 80}, sample_shape=[1, 8, 8])
    assert m.prediction_type == "sample" and m.schedule.describe() == "ve(sigma_min=0.002,sigma_max=80)"
    assert m.sample_shape == (1, 8, 8) and isinstance(m.module, torch.nn.Module)


@pytest.mark.parametrize("options, needle", [
    (dict(factory="no_such_pkg.nets:edm"), "cannot import model.factory 'no_such_pkg.nets:edm': ModuleNotFoundError"),
    (dict(factory="my_nets"), "model.factory must be 'package.module:function', got 'my_nets'"),
    (dict(factory="my_nets:nope"), "module 'my_nets' has no attribute 'nope'"),
    (dict(factory="my_nets:NOT_CALLABLE"), "model.factory 'my_nets:NOT_CALLABLE' is not callable (a int)"),
    (dict(factory="my_nets:wrong_shape"), "returned shape (1, 1, 4, 8) for input (1, 1, 8, 8); expected (1, 1, 8, 8)"),
    (dict(factory="my_nets:edm", variance_type="learned_range"), "expected (1, 2, 8, 8)"),
    (dict(factory="my_nets:edm", sample_shape=[8, 8]), "model.sample_shape must be [C, H, W]"),
    (dict(factory="my_nets:edm", prediction_type="x0"), "unknown prediction_type 'x0'; allowed: epsilon, sample"),
    (dict(factory="my_nets:edm", variance_type="big"), "unknown variance_type 'big'; allowed: learned"),
    (dict(factory="my_nets:edm", schedule=None), "model.schedule is not set"),
])
def test_factory_errors_name_what_is_wrong(factory_dir, monkeypatch, options, needle):
    monkeypatch.syspath_prepend(str(factory_dir))
    opts = {"schedule": "ve", "sample_shape": [1, 8, 8], "prediction_type": "sample", **options}
    with pytest.raises(ModelError) as e:
        load_model("python", **opts)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_diffusers_config_errors(stand_ins):
    with pytest.raises(ScheduleError, match="unknown schedule kind 'cosine'"):
        load_model("diffusers", path=str(stand_ins["sample"]), schedule="cosine")
    with pytest.raises(ModelError, match="outputs 2 channels but variance_type None with 1 input channels needs 1"):
        load_model("diffusers", path=str(stand_ins["learned_range"]), variance_type="fixed_small")
    cfg = stand_ins["sample"] / "scheduler_config.json"
    bad = json.loads(cfg.read_text())
    assert isinstance(load_model("diffusers", path=str(stand_ins["sample"])).schedule, Discrete)
    bad["prediction_type"] = "flow"
    d = stand_ins["sample"].parent / "bad"
    if not d.exists():
        import shutil

        shutil.copytree(stand_ins["sample"], d)
    (d / "scheduler_config.json").write_text(json.dumps(bad))
    with pytest.raises(ModelError, match="unknown prediction_type 'flow'"):
        load_model("diffusers", path=str(d))


def test_stand_ins_run_through_the_cli_and_record_what_they_are(tmp_path, stand_ins, factory_dir):
    """One sweep over the four diffusers stand-ins, one factory run (2C outputs, ddpm variance=learned): each runs,
    spends its NFE and records prediction_type and schedule."""
    paths = ",".join(str(stand_ins[k]) for k in ("v_prediction", "sample", "learned_range", "score"))
    r = run_cli("-m", "model=diffusers", f"model.path={paths}", "sampler=ddim", "nfe=4", "num_samples=4",
                "metrics=none", f"results_dir={tmp_path}")
    assert r.returncode == 0, r.stderr[-2000:]
    r = run_cli("model=python", "model.factory=my_nets:learned", "model.kwargs={channels:1}",
                "model.variance_type=learned_range", "model.schedule=discrete", "model.sample_shape=[1,8,8]",
                "sampler=ddpm", "sampler.variance=learned", "nfe=5", "num_samples=4", "metrics=none",
                f"results_dir={tmp_path}", extra_path=str(factory_dir))
    assert r.returncode == 0, r.stderr[-2000:]
    df = pd.read_csv(tmp_path / "leaderboard.csv")
    got = sorted(zip(df.prediction_type, df.schedule, df.nfe_used))
    assert got == sorted([("v_prediction", "discrete(T=1000)", 4), ("sample", "discrete(T=1000)", 4),
                          ("epsilon", "discrete(T=1000)", 4), ("score", "ve(sigma_min=0.02,sigma_max=100)", 4),
                          ("epsilon", "discrete(T=1000)", 5)])


@pytest.mark.parametrize("args, needle", [
    (["model=gmm_digits", "model.schedule=cosine"], "unknown schedule kind 'cosine'; allowed: discrete, vp_linear, ve"),
    (["model=python", "model.factory=no_such_pkg:net", "model.schedule=ve", "model.sample_shape=[1,8,8]"],
     "cannot import model.factory 'no_such_pkg:net'"),
])
def test_model_errors_through_the_cli_are_one_line_exit_2_no_row(tmp_path, args, needle):
    r = run_cli(*args, "num_samples=4", "metrics=none", f"results_dir={tmp_path}")
    assert r.returncode == 2, r.stderr[-1500:]
    err = error_lines(r)
    assert len(err) == 1 and needle in err[0] and "Traceback" not in r.stderr + r.stdout
    assert not (tmp_path / "leaderboard.csv").exists() and not (tmp_path / "runs").exists()


def test_edm_pickle_factory_is_the_denoiser_unchanged(factory_dir, monkeypatch, tmp_path):
    """nfebench.models.external:edm_pickle on a stand-in pickle ({"ema": network}, as EDM saves it): the model's
    eps is (x_ve - D(x_ve; sigma)) / sigma, D the pickled network's forward."""
    import pickle

    monkeypatch.syspath_prepend(str(factory_dir))
    import my_nets

    net = my_nets.edm()
    (tmp_path / "edm.pkl").write_bytes(pickle.dumps({"ema": net}))
    m = load_model("python", factory="nfebench.models.external:edm_pickle", kwargs={"path": str(tmp_path / "edm.pkl")},
                   prediction_type="sample", schedule={"kind": "ve", "sigma_min": 0.002, "sigma_max": 80},
                   sample_shape=[1, 8, 8], dtype="float64")
    x_ve, s = torch.randn(2, 1, 8, 8, dtype=torch.float64), 2.5
    sigma = torch.full((2,), s, dtype=torch.float64)
    with torch.no_grad():
        want = (x_ve - net.double()(x_ve, sigma)) / s
        torch.testing.assert_close(m(x_ve / (1 + s**2) ** 0.5, sigma), want, rtol=1e-10, atol=1e-10)
    net.label_dim = 10
    (tmp_path / "cond.pkl").write_bytes(pickle.dumps({"ema": net}))
    with pytest.raises(ModelError, match="is class-conditional"):
        load_model("python", factory="nfebench.models.external:edm_pickle", kwargs={"path": str(tmp_path / "cond.pkl")},
                   schedule="ve", sample_shape=[1, 8, 8])
    with pytest.raises(ModelError, match="model.kwargs.path is not set"):
        load_model("python", factory="nfebench.models.external:edm_pickle", schedule="ve", sample_shape=[1, 8, 8])


def test_new_model_keys_at_their_default_leave_the_run_key_unchanged():
    """Rows recorded before prediction_type / variance_type / schedule existed keep their run_id (make reproduce
    skips them); setting one of them gives a new point."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    import nfebench.__main__ as entry
    from nfebench.run import run_key, validate

    with initialize_config_dir(config_dir=str(entry.CONF_DIR), version_base="1.3"):
        cfg = OmegaConf.to_container(compose(config_name="config", overrides=["model=gmm_digits", "device=cpu"]))
    old = {**cfg, "model": {k: v for k, v in cfg["model"].items() if k not in ("prediction_type", "schedule")}}
    assert run_key(validate(cfg)) == run_key(validate(old))
    assert run_key(validate({**cfg, "model": {**cfg["model"], "schedule": "ve"}})) != run_key(validate(cfg))

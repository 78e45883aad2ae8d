"""Default grids per schedule kind (issue 26, point 3): `spacing: default` is a sampler's paper grid on VP models and
what the schedule makes of it elsewhere (VE: Karras; Flow: uniform in s, and logsnr for DEIS's quadratic); an explicit
spacing keeps its literal meaning, and VP run keys are the ones recorded before `default` existed."""

from __future__ import annotations

import json

import pytest
import torch
from hydra import compose, initialize_config_dir

import nfebench
import nfebench.__main__ as entry
from nfebench.models import schedule_kind
from nfebench.models.diffusers_unet import read_scheduler_config, scheduler_kind
from nfebench.models.gmm import load_gmm
from nfebench.run import ConfigError, check_default_grid, run_key, validate
from nfebench.samplers import SAMPLERS, get_sampler
from nfebench.schedules import KINDS, VE, Discrete, Flow, Truncated, VPLinear, default_spacing, linear_betas

# the samplers whose paper grid is uniform or quadratic in the model's time, configured as spacing: default
TIME_GRID = ["ddim", "ipndm", "deis", "ddpm", "pndm", "plms", "sa_solver", "sde", "analytic_ddim", "analytic_ddpm",
             "sn_ddim", "sn_ddpm", "npr_ddim", "npr_ddpm"]


def test_default_spacing_per_schedule():
    vp = [Discrete(linear_betas()), VPLinear()]
    for paper in ("uniform", "quadratic", "logsnr", "karras", "lcm"):
        assert all(default_spacing(paper, s) == paper for s in vp)  # VP: the paper's grid
        assert default_spacing(paper, None) == paper  # kind unknown: the paper's
    assert [default_spacing(p, VE()) for p in ("uniform", "quadratic", "logsnr", "karras")] == \
        ["karras", "karras", "logsnr", "karras"]
    assert [default_spacing(p, Flow(3.0)) for p in ("uniform", "quadratic", "logsnr", "karras")] == \
        ["uniform", "logsnr", "logsnr", "karras"]
    assert default_spacing("uniform", Truncated(VE(), 10.0)) == "karras"  # a truncated chain keeps its base's
    assert default_spacing("quadratic", "flow") == "logsnr" and set(KINDS) >= {"discrete", "ve", "flow"}


def test_api_default_is_the_schedules_and_explicit_is_literal():
    """On VE, ddim with no spacing runs the Karras grid; spacing="uniform" is still uniform in sigma."""
    m = load_gmm(n_components=4, schedule="ve")
    x = m.schedule.prior_std * torch.randn(2, *m.sample_shape, generator=torch.Generator().manual_seed(0),
                                           dtype=torch.float64)
    run = lambda **o: nfebench.sample(m.network, m.schedule, x, "ddim", 8, prediction_type=m.prediction_type, **o)
    default, karras, uniform = run(), run(spacing="karras"), run(spacing="uniform")
    assert torch.equal(default, karras) and torch.equal(run(spacing="default"), karras)
    assert not torch.allclose(default, uniform)


def compose_point(*overrides):
    with initialize_config_dir(config_dir=str(entry.CONF_DIR), version_base="1.3"):
        return validate(compose(config_name="config", overrides=["num_samples=4", *overrides]))


@pytest.mark.parametrize("sampler", TIME_GRID)
def test_configs_default_and_vp_keys_unchanged(sampler):
    """Every such sampler config says `default`; on a VP model it resolves to the literal the config said before,
    so the run key (and every recorded run id) equals that of the explicit literal."""
    paper = get_sampler(sampler).options["spacing"]
    nfe = ["nfe=13"] if sampler == "pndm" else []
    with initialize_config_dir(config_dir=str(entry.CONF_DIR), version_base="1.3"):
        assert compose(config_name="config", overrides=[f"sampler={sampler}"]).sampler.spacing == "default"
    for model in (["model=digits_ddpm"], ["model=gmm_digits"]):
        p, q = compose_point(*model, f"sampler={sampler}", *nfe), \
            compose_point(*model, f"sampler={sampler}", f"sampler.spacing={paper}", *nfe)
        assert p.sampler_options["spacing"] == paper and run_key(p) == run_key(q)
        assert p.default_grid == ("discrete", paper) and q.default_grid is None
    ve = compose_point("model=gmm_digits", "+model.schedule=ve", f"sampler={sampler}", *nfe)
    assert ve.sampler_options["spacing"] == "karras" and ve.default_grid == ("ve", paper)
    flow = compose_point("model=digits_flow", f"sampler={sampler}", *nfe)
    assert flow.sampler_options["spacing"] == {"uniform": "uniform", "quadratic": "logsnr"}[paper]


def test_other_samplers_keep_their_spacing():
    """Samplers whose default is defined in lambda or EDM sigma are the same grid on every schedule."""
    for name in ("dpm", "dpmpp", "unipc", "heun", "euler"):
        for model in (["model=gmm_digits", "+model.schedule=ve"], ["model=digits_flow"]):
            p = compose_point(*model, f"sampler={name}")
            assert p.sampler_options["spacing"] == SAMPLERS[name].options["spacing"]


SCHEDULER_CONFIGS = [
    {"_class_name": "DDPMScheduler", "num_train_timesteps": 1000},
    {"_class_name": "DDIMScheduler", "num_train_timesteps": 1000, "prediction_type": "v_prediction"},
    {"_class_name": "FlowMatchEulerDiscreteScheduler", "shift": 3.0, "num_train_timesteps": 1000},
    {"_class_name": "DPMSolverMultistepScheduler", "use_flow_sigmas": True, "prediction_type": "flow_prediction",
     "flow_shift": 3.0},
    {"_class_name": "CMStochasticIterativeScheduler", "sigma_min": 0.002, "sigma_max": 80.0},
    {"_class_name": "ScoreSdeVeScheduler", "sigma_min": 0.01, "sigma_max": 50.0},
]


@pytest.mark.parametrize("cfg", SCHEDULER_CONFIGS, ids=[c["_class_name"] for c in SCHEDULER_CONFIGS])
def test_scheduler_kind_agrees_with_the_loader(cfg, tmp_path):
    """The kind read without loading (run keys) is the kind of the schedule the loader builds."""
    sched, _, _ = read_scheduler_config(cfg)
    assert isinstance(sched, KINDS[scheduler_kind(cfg)])
    (tmp_path / "scheduler").mkdir()
    (tmp_path / "scheduler" / "scheduler_config.json").write_text(json.dumps(cfg))
    assert schedule_kind({"kind": "diffusers", "path": str(tmp_path)}) == scheduler_kind(cfg)
    assert schedule_kind({"kind": "diffusers", "path": str(tmp_path), "schedule": {"kind": "ve"}}) == "ve"


def test_schedule_kind_unknown_and_mismatch():
    assert schedule_kind({"kind": "diffusers", "path": "/no/such/dir"}) is None  # the loader reports it later
    assert schedule_kind({"kind": "python", "factory": "x:y"}) is None
    p = compose_point("model=gmm_digits", "sampler=ddim")
    check_default_grid(p, load_gmm(n_components=2))  # agrees: no error
    with pytest.raises(ConfigError, match="spacing=default: the model config reads as a 'discrete' schedule"):
        check_default_grid(p, load_gmm(n_components=2, schedule="ve"))

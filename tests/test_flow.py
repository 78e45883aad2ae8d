"""Flow-matching models (issue 26): the Flow schedule, the flow_prediction parametrization and its conventions, the
diffusers flow-scheduler configs, and the flow oracle's exactness across parametrizations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import nfebench
from nfebench.models import ModelError, load_model
from nfebench.models.diffusers_unet import read_scheduler_config
from nfebench.models.gmm import load_gmm
from nfebench.samplers import SAMPLERS
from nfebench.schedules import Flow, ScheduleError, dynamic_shift, flow_time_shift, from_config


@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_flow_schedule_maths(shift):
    f = Flow(shift)
    tau = np.linspace(f.t_min, f.t_max, 9)
    s = tau / 1000.0
    assert np.allclose(f.model_alpha(tau), 1 - s) and np.allclose(f.model_sigma(tau), s)
    assert np.allclose(f.lambda_(tau), np.log((1 - s) / s))
    assert np.allclose(f.alpha(tau) ** 2 + f.sigma(tau) ** 2, 1.0)
    assert np.allclose(f.alpha(tau) * f.input_scale(tau), 1 - s)
    assert np.allclose(f.tau_from_lambda(f.lambda_(tau)), tau, rtol=1e-12)
    assert np.allclose(f.tau_from_log_alpha_bar(f.log_alpha_bar_at(tau)), tau, rtol=1e-9)
    assert np.allclose(f.tau_from_edm_sigma(f.edm_sigma(tau)), tau, rtol=1e-12)
    # the range: shift(0.001) .. shift(0.999), never s = 1 (lambda = -inf)
    assert np.isclose(f.t_max, 1000 * flow_time_shift(0.999, shift)) and f.t_max < 1000
    assert np.isclose(f.t_min, 1000 * flow_time_shift(0.001, shift))
    assert f.prior_std == 1.0 and not f.discrete


def test_flow_shift_grids():
    """uniform is the shifted uniform grid in s (FlowMatchEulerDiscreteScheduler's); a shift offsets lambda by -log k,
    so the logsnr grid of the shifted range is the shifted logsnr grid."""
    f1, f3 = Flow(1.0), Flow(3.0)
    u = np.linspace(0.999, 0.001, 11)
    assert np.allclose(f3.timesteps(10, "uniform") / 1000, flow_time_shift(u, 3.0), rtol=1e-12)
    assert np.allclose(f3.lambda_(f3.timesteps(10, "logsnr")), f1.lambda_(f1.timesteps(10, "logsnr")) - np.log(3))
    assert np.allclose(f3.lambda_(f3.timesteps(10, "karras")), f1.lambda_(f1.timesteps(10, "karras")) - np.log(3))
    assert Flow(1.0, time_scale=1.0).timesteps(4, "uniform")[0] == pytest.approx(0.999)


def test_dynamic_shift_matches_diffusers():
    from diffusers import FlowMatchEulerDiscreteScheduler

    sch = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True)
    seq = 1024
    m = (1.15 - 0.5) / (4096 - 256)
    mu = seq * m + 0.5 - m * 256
    sch.set_timesteps(10, mu=mu)
    k = dynamic_shift(seq)
    assert k == pytest.approx(np.exp(mu))
    ours = flow_time_shift(np.linspace(1.0, 1 / 1000, 10), k)  # diffusers' unshifted grid: 1 .. sigma_min
    assert np.allclose(sch.sigmas[:-1].double().numpy(), ours, rtol=1e-5)
    assert from_config({"kind": "flow", "use_dynamic_shifting": True, "image_seq_len": seq}).shift == pytest.approx(k)


def _oracle(schedule, prediction_type, conditional=False):
    return load_gmm(n_components=8, reg_covar=1e-2, schedule=schedule, prediction_type=prediction_type,
                    dtype="float64", conditional=conditional)


@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_flow_oracle_same_x0_across_parametrizations(shift):
    """Every sampler (the stochastic ones with the same generator) gives the same x_0 whatever parametrization the
    flow oracle presents itself as, and in the data_at_1 convention (SiT / rectified flow)."""
    presentations = [({"kind": "flow", "shift": shift}, p) for p in
                     ("flow_prediction", "epsilon", "sample", "v_prediction")]
    presentations.append(({"kind": "flow", "shift": shift, "convention": "data_at_1"}, "flow_prediction"))
    models = [_oracle(s, p) for s, p in presentations]
    x_T = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    # the samplers defined on a discrete VP schedule's integer timesteps, the diffusers bridge, and those needing
    # covariance heads refuse Flow with a one-line error; every other sampler runs here
    skip = {"analytic_ddpm", "analytic_ddim", "fastdpm", "diffusers", "sn_ddpm", "sn_ddim", "npr_ddpm", "npr_ddim",
            "lcm", "tcd"}  # LCM's default grid (spacing=lcm) is a discrete schedule's; consistency runs everywhere
    for name, spec in SAMPLERS.items():
        if name in skip:
            continue
        nfe = 400 if name in ("rk45", "ggf") else max(spec.min_nfe, 12)  # adaptive: nfe is a cap
        outs = [nfebench.sample(m, m.schedule, x_T, name, nfe, generator=torch.Generator().manual_seed(5))
                for m in models]
        ref = outs[0]
        for m, o in zip(models[1:], outs[1:]):
            err = float((o - ref).norm() / ref.norm())
            assert err < 1e-6, (name, m.prediction_type, m.schedule.describe(), err)


def test_data_at_1_convention_is_sit():
    """A network written the SiT way (t = 1 - s, x_t = t x_0 + (1 - t) eps, output x_0 - eps, called at t) loads as
    flow_prediction on Flow(convention=data_at_1, time_scale=1) and gives diffusers' convention's x_0."""
    ref = _oracle({"kind": "flow", "shift": 1.0}, "flow_prediction")
    gmm, sched_ref = ref.gmm, ref.schedule

    def sit_network(x, t):  # t: SiT time, data at t = 1
        s = 1.0 - t.double()
        tau = 1000.0 * s
        k = torch.as_tensor(sched_ref.input_scale(tau.numpy())).view(-1, 1, 1, 1)
        a = torch.as_tensor(sched_ref.alpha(tau.numpy())).view(-1, 1, 1, 1)
        sg = torch.as_tensor(sched_ref.sigma(tau.numpy())).view(-1, 1, 1, 1)
        x_vp = x.double() / k
        eps = gmm.eps(x_vp, tau).double()
        x0 = (x_vp - sg * eps) / a
        return x0 - eps

    sit = Flow(1.0, time_scale=1.0, convention="data_at_1")
    x_T = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    a = nfebench.sample(sit_network, sit, x_T, "heun", 15, prediction_type="flow_prediction")
    b = nfebench.sample(ref, sched_ref, x_T, "heun", 15)
    assert float((a - b).norm() / b.norm()) < 1e-6


def _save_flow_unet(d, scheduler):
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    UNet2DModel(sample_size=8, in_channels=1, out_channels=1, layers_per_block=1, block_out_channels=(16, 32),
                down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                norm_num_groups=8, add_attention=False).save_pretrained(d)
    scheduler.save_pretrained(d)
    return d


def test_diffusers_flow_configs_load_as_flow(tmp_path):
    from diffusers import (DPMSolverMultistepScheduler, FlowMatchEulerDiscreteScheduler,
                           FlowMatchHeunDiscreteScheduler, UniPCMultistepScheduler)

    cases = [(FlowMatchEulerDiscreteScheduler(shift=3.0), 3.0),
             (FlowMatchHeunDiscreteScheduler(shift=2.0), 2.0),
             (DPMSolverMultistepScheduler(use_flow_sigmas=True, flow_shift=3.0, prediction_type="flow_prediction"),
              3.0),
             (UniPCMultistepScheduler(use_flow_sigmas=True, flow_shift=5.0, prediction_type="flow_prediction"), 5.0)]
    for sch, shift in cases:
        sched, ptype, vtype = read_scheduler_config(dict(sch.config, _class_name=type(sch).__name__))
        assert isinstance(sched, Flow) and sched.shift == shift and sched.time_scale == 1000
        assert (ptype, vtype) == ("flow_prediction", None)
    d = _save_flow_unet(tmp_path / "flux-like", FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True))
    m = load_model("diffusers", path=str(d))
    assert m.schedule.shift == pytest.approx(dynamic_shift(64))  # 8 x 8 pixels, patch 1: 64 tokens
    assert load_model("diffusers", path=str(d), image_seq_len=4096).schedule.shift == pytest.approx(np.exp(1.15))
    assert m.prediction_type == "flow_prediction"


def test_flow_errors(tmp_path):
    for cfg, needle in [({"kind": "flow", "shift": 0}, "flow shift must be a finite number > 0, got 0"),
                        ({"kind": "flow", "time_scale": -1}, "flow time_scale must be a finite number > 0, got -1"),
                        ({"kind": "flow", "convention": "sit"}, "unknown flow convention 'sit'; allowed: noise_at_1"),
                        ({"kind": "flow", "use_dynamic_shifting": True}, "needs image_seq_len")]:
        with pytest.raises(ScheduleError, match=needle):
            from_config(cfg)
    with pytest.raises(ModelError, match="flow_prediction needs a flow schedule"):
        load_gmm(n_components=4, prediction_type="flow_prediction")
    with pytest.raises(ModelError, match="use_flow_sigmas with prediction_type 'epsilon'"):
        read_scheduler_config({"_class_name": "DPMSolverMultistepScheduler", "use_flow_sigmas": True,
                               "prediction_type": "epsilon"})
    cfg = {"_class_name": "FlowMatchEulerDiscreteScheduler", "use_dynamic_shifting": True}
    with pytest.raises(ModelError, match="needs image_seq_len"):
        read_scheduler_config(cfg)


def test_ode_nll_on_the_flow_oracle_matches_its_exact_density():
    """method=ode on Flow: within 0.01 bits/dim of the mixture's exact log-density of the same dequantized points in
    the model's space at s_min (x_f = k x_vp: log p_f(z) = log p_vp(z / k) - D log k)."""
    import math

    from nfebench.data import load_split

    m = load_model("gmm", n_components=8, reg_covar=1e-2, schedule="flow", prediction_type="flow_prediction")
    x = load_split("digits", "test")[:6]
    r = nfebench.nll(m, m.schedule, x, method="ode", generator=torch.Generator().manual_seed(3))
    u = torch.rand(x.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    z = 2.0 * (x.double() + u) / 256.0 - 1.0
    t0 = m.schedule.t_min
    k = float(m.schedule.input_scale(t0))
    logp = m.gmm.log_prob(z / k, torch.full((6,), t0, dtype=torch.float64)) - 64 * math.log(k)
    exact = float((-logp / (64 * math.log(2)) + 7.0).mean())
    assert abs(r["bpd"] - exact) < 0.01, (r["bpd"], exact)


def conditional_flow_factory(shift: float = 3.0):
    """A conditional stand-in for model=python (a SiT-like class-conditional velocity network with a null label):
    the exact class-conditional flow oracle's network, network(x, tau, labels)."""
    return load_gmm(reg_covar=1e-2, schedule={"kind": "flow", "shift": shift}, prediction_type="flow_prediction",
                    conditional=True).network


def test_python_factory_with_class_labels_and_guidance():
    ref = load_gmm(reg_covar=1e-2, schedule={"kind": "flow", "shift": 3.0}, prediction_type="flow_prediction",
                   conditional=True)
    m = load_model("python", factory="tests.test_flow:conditional_flow_factory", kwargs={"shift": 3.0},
                   schedule={"kind": "flow", "shift": 3.0}, prediction_type="flow_prediction",
                   sample_shape=[1, 8, 8], num_classes=10, null_class=10)
    assert (m.num_classes, m.null_class) == (10, 10)
    x_T = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    y = [3, 7, 0, 9]
    outs = {}
    for w in (1.0, 0.0, 2.5):
        a = nfebench.sample(m, m.schedule, x_T, "dpmpp", 8, class_labels=y, guidance_scale=w, null_class=10)
        b = nfebench.sample(ref, ref.schedule, x_T, "dpmpp", 8, class_labels=y, guidance_scale=w, null_class=10)
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)
        outs[w] = a
    assert float((outs[1.0] - outs[0.0]).abs().max()) > 0.1 and float((outs[2.5] - outs[1.0]).abs().max()) > 0.1
    for bad, needle in [(dict(num_classes=0), "num_classes must be a positive integer"),
                        (dict(num_classes=10, null_class=3), "null_class=3")]:
        with pytest.raises(ModelError, match=needle):
            load_model("python", factory="tests.test_flow:conditional_flow_factory", schedule="flow",
                       prediction_type="flow_prediction", sample_shape=[1, 8, 8], **bad)


def test_cli_runs_a_flow_match_unet_directory(tmp_path):
    """A random-weight UNet2DModel with a FlowMatchEulerDiscreteScheduler config (shift 3) runs through the CLI with
    ddim, dpmpp, unipc and heun; the rows record flow_prediction and the flow schedule with its shift."""
    import pandas as pd
    from diffusers import FlowMatchEulerDiscreteScheduler

    from tests.test_cli import run_cli

    d = _save_flow_unet(tmp_path / "flow-unet", FlowMatchEulerDiscreteScheduler(shift=3.0))
    res = tmp_path / "res"
    r = run_cli("-m", "model=diffusers", f"model.path={d}", "sampler=ddim,dpmpp,unipc,heun", "nfe=6",
                "num_samples=8", "batch_size=8", "metrics=none", f"results_dir={res}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = pd.read_csv(res / "leaderboard.csv")
    assert sorted(rows["sampler"]) == ["ddim", "dpmpp", "heun", "unipc"]
    assert set(rows["prediction_type"]) == {"flow_prediction"}
    assert set(rows["schedule"]) == {"flow(shift=3,time_scale=1000)"}


BAD_FLOW = [(["model.schedule={kind:flow,shift:0}"], "flow shift must be"),
            (["model.schedule={kind:flow,time_scale:-1}"], "flow time_scale must be"),
            (["model.schedule={kind:flow,convention:sit}"], "unknown flow convention"),
            (["model.prediction_type=flow_prediction"], "needs a flow schedule"),
            (["model.schedule={kind:flow,use_dynamic_shifting:true}"], "needs image_seq_len")]


@pytest.mark.parametrize("args, needle", BAD_FLOW, ids=[n for _, n in BAD_FLOW])
def test_bad_flow_input_is_a_user_error_before_any_row(tmp_path, args, needle):
    """In process: each bad flow input raises one of the errors the CLI prints as one line with exit 2
    (nfebench.__main__.user_errors), naming the bad value, and writes no row (the CLI check is in make test-slow)."""
    from hydra import compose, initialize_config_dir

    import nfebench.__main__ as entry
    from nfebench.run import run

    with initialize_config_dir(config_dir=str(entry.CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["model=gmm_digits", *args, "nfe=5", "num_samples=4", "metrics=none",
                                           f"results_dir={tmp_path}"])
    with pytest.raises(entry.user_errors()) as e:
        run(cfg, progress=False)
    assert needle in str(e.value) and "\n" not in str(e.value) and not (tmp_path / "leaderboard.csv").exists()


@pytest.mark.slow
def test_bad_flow_input_through_the_cli_is_one_line_exit_2_no_row(tmp_path):
    from tests.test_cli import error_lines, run_cli

    for args, needle in [(["model=gmm_digits", *a], n) for a, n in BAD_FLOW]:
        bad = tmp_path / "bad"
        r = run_cli(*args, "nfe=5", "num_samples=4", "metrics=none", f"results_dir={bad}", cwd=tmp_path)
        lines = error_lines(r)
        assert r.returncode == 2 and len(lines) == 1 and needle in lines[0], (args, r.stderr[-500:])
        assert "Traceback" not in r.stderr and not (bad / "leaderboard.csv").exists()


def test_tune_on_flow():
    """tune works on Flow (it refused non-discrete schedules before issue 26): the tuned grid starts at t_max, ends at
    t_min (then clean data for ddim), and is never worse than the best built-in spacing on its tuning noise."""
    m = _oracle({"kind": "flow", "shift": 3.0}, "flow_prediction")
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for sampler in ("unipc", "ddim"):
        grid, info = nfebench.tune(m, m.schedule, sampler, 5, x, evals_per_point=3, teacher_nfe=60, return_info=True)
        assert grid[0] == pytest.approx(m.schedule.t_max) and m.schedule.t_min in (grid[-1], grid[-2])
        assert info["error_tuned"] <= min(info["error_spacings"].values()) + 1e-12
        x0 = nfebench.sample(m, m.schedule, x, sampler, 5, timesteps=grid)
        assert torch.isfinite(x0).all()

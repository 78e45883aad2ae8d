"""Few-step samplers (consistency, lcm, tcd), consistency preconditioning, truncated diffusion and the DDGAN path:
on the exact oracle, against diffusers' schedulers on the same timesteps and noise, and their one-line errors."""

import math

import numpy as np
import pytest
import torch

import nfebench
from nfebench.models.base import EpsModel
from nfebench.models.consistency import cm_network, precondition
from nfebench.models.ddgan import ddgan_betas, ddgan_schedule
from nfebench.models.gmm import GaussianMixtureVP
from nfebench.models.parametrization import EpsAdapter
from nfebench.samplers import Noise, SamplerError
from nfebench.schedules import VE, Discrete, Truncated, linear_betas

# --- a small mixture in 2 dimensions: exact samples, moments and ODE solutions in milliseconds -------------------

W = [0.3, 0.5, 0.2]
MU = [[-1.0, 0.5], [0.8, -0.2], [0.2, 1.2]]
COV = [[[0.05, 0.01], [0.01, 0.08]], [[0.10, -0.03], [-0.03, 0.04]], [[0.02, 0.0], [0.0, 0.03]]]


def mixture(sched):
    return GaussianMixtureVP(W, MU, COV, sched, (2, 1, 1))


def ode_x0(gmm, x_vp, tau, nfe=90):
    """The exact consistency function: the probability-flow ODE from tau to clean data (a 3rd-order solver at 90
    steps on the exact eps; its error is far below the tests' tolerances), from a VP state x_vp."""
    sched = gmm.sched
    if tau >= sched.t_max:
        tau = sched.t_max
    x_model = x_vp * float(sched.input_scale(tau))
    return nfebench.sample(gmm.eps, sched, x_model, "dpm", nfe, t_start=tau, order=3)


def exact_cm(gmm):
    """eps(x, tau) whose x_0 estimate is the exact consistency function, as a raw network (epsilon)."""

    def eps(x_vp, tau):
        t = float(tau[0])
        a, s = float(gmm.sched.alpha(t)), float(gmm.sched.sigma(t))
        return (x_vp - a * ode_x0(gmm, x_vp, t)) / s

    return eps


def check_moments(x, gmm, n_sigma=5.0):
    m, c = gmm.mean_cov()
    x = x.reshape(x.shape[0], -1).double()
    se = (c.diagonal() / x.shape[0]).sqrt()
    assert torch.all((x.mean(0) - m).abs() < n_sigma * se), (x.mean(0), m)
    cov = torch.cov(x.T)
    assert torch.allclose(cov, c, atol=n_sigma * float(c.diagonal().max()) * math.sqrt(2 / x.shape[0])), (cov, c)


def test_one_step_consistency_is_the_ode_solution_from_x_T():
    sched = Discrete(linear_betas())
    gmm = mixture(sched)
    x_T = torch.randn(64, 2, 1, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    out = nfebench.sample(exact_cm(gmm), sched, x_T, "consistency", 1)
    ref = nfebench.sample(gmm.eps, sched, x_T, "dpm", 150, order=3)  # an independent, finer ODE solution
    assert torch.allclose(out, ode_x0(gmm, x_T, sched.t_max), atol=1e-9)
    assert (out - ref).abs().max() < 2e-3


@pytest.mark.parametrize("nfe", [2, 4])
def test_multistep_consistency_with_the_exact_function_samples_the_mixture(nfe):
    sched = Discrete(linear_betas())
    gmm = mixture(sched)
    x_T = torch.randn(3000, 2, 1, 1, generator=torch.Generator().manual_seed(nfe), dtype=torch.float64)
    out = nfebench.sample(exact_cm(gmm), sched, x_T, "consistency", nfe, spacing="uniform",
                          generator=torch.Generator().manual_seed(10 + nfe))
    check_moments(out, gmm)


def posterior_sampler(gmm, generator):
    """The DDGAN generator's exact twin: G(x_t, t) = a draw of x_0 ~ p(x_0 | x_t) under the mixture."""

    def G(x_model, tau):
        a, s = gmm._a_s(tau)
        x = x_model.reshape(x_model.shape[0], -1).double()
        logp, _ = gmm._component_terms(x_model, tau)
        k = torch.multinomial(torch.softmax(logp, 1), 1, generator=generator)[:, 0]
        out = torch.empty_like(x)
        for i in range(x.shape[0]):
            C = gmm.u[k[i]] @ torch.diag(gmm.d[k[i]]) @ gmm.u[k[i]].T
            P = torch.linalg.inv(torch.linalg.inv(C) + (a[i] / s[i]) ** 2 * torch.eye(gmm.D, dtype=torch.float64))
            mean = P @ (torch.linalg.solve(C, gmm.mu[k[i]]) + a[i] * x[i] / s[i] ** 2)
            z = torch.randn(gmm.D, generator=generator, dtype=torch.float64)
            out[i] = mean + torch.linalg.cholesky(P) @ z
        return out.reshape(x_model.shape)

    return G


@pytest.mark.parametrize("nfe", [2, 4, 8])
def test_ddgan_path_with_the_exact_posterior_sampler_samples_the_mixture(nfe):
    # DDGAN's own few-step discrete schedule (Xiao et al. 2022, T = 8 here), x_0 prediction, posterior sampling
    sched = ddgan_schedule(8)
    gmm = mixture(sched)
    g = torch.Generator().manual_seed(nfe)
    x_T = torch.randn(1500, 2, 1, 1, generator=g, dtype=torch.float64)
    out = nfebench.sample(posterior_sampler(gmm, g), sched, x_T, "ddpm", nfe, generator=g, prediction_type="sample")
    check_moments(out, gmm)


def test_truncated_sampling_from_the_exact_prior_gives_the_mixture_and_a_biased_prior_gains_with_t_start():
    sched = Discrete(linear_betas())
    gmm = mixture(sched)
    g = torch.Generator().manual_seed(3)
    errors = []
    for t_start in (100, 300, 600, 999):
        x0 = gmm.sample(3000, generator=g)
        for bias, out_errors in ((0.0, None), (0.5, errors)):
            prior = x0 + bias  # the exact prior, or one shifted by 0.5 in every pixel
            a, s = float(sched.alpha(t_start)), float(sched.sigma(t_start))
            x = a * prior + s * torch.randn(prior.shape, generator=g, dtype=torch.float64)
            out = nfebench.sample(gmm.eps, sched, x, "dpm", 30, t_start=t_start, order=3)
            if out_errors is None:
                check_moments(out, gmm)
            else:
                out_errors.append(float((out.reshape(3000, -1).mean(0) - gmm.mean_cov()[0]).norm()))
    assert errors == sorted(errors, reverse=True) and errors[-1] < 0.02 < errors[0], errors


# --- diffusers conformance: same timesteps, same noise, 1e-5 relative ---------------------------------------------

def toy_net(x, t):
    return torch.tanh(0.7 * x + 0.001 * t.view(-1, 1, 1, 1).to(x.dtype)) + 0.05 * x


def close(a, b):
    assert torch.allclose(a.double(), b.double(), rtol=1e-5, atol=1e-5 * float(b.abs().max())), \
        float((a.double() - b.double()).abs().max())


class Float32Noise(Noise):
    """diffusers' float32 draws, handed to a float64 state."""

    def randn_like(self, x):
        return torch.randn(x.shape, generator=self.generator).to(x.dtype)


@pytest.mark.parametrize("timesteps", [[0], [22, 0], [30, 17, 5, 0]])  # diffusers: ramp index, 0 = sigma_max
def test_consistency_matches_cm_stochastic_iterative_scheduler(timesteps):
    from diffusers import CMStochasticIterativeScheduler

    sch = CMStochasticIterativeScheduler(num_train_timesteps=40, sigma_min=0.002, sigma_max=80.0, clip_denoised=True)
    sch.set_timesteps(timesteps=timesteps)
    x_T = torch.randn(4, 1, 4, 4, generator=torch.Generator().manual_seed(0)) * sch.init_noise_sigma
    x, g = x_T.clone(), torch.Generator().manual_seed(1)
    for t in sch.timesteps:
        x = sch.step(toy_net(sch.scale_model_input(x, t), t.expand(4)), t, x, generator=g).prev_sample
    # ours in float64: the VP frame divides x_T by ~sigma_max and the adapter multiplies back, which costs float32
    # about sigma_max * 1e-7 absolute, more than the 1e-5 relative asked
    ours = nfebench.sample(cm_network(toy_net, 0.002), VE(0.002, 80.0), x_T.double(), "consistency", len(timesteps),
                           generator=Float32Noise(torch.Generator().manual_seed(1)), prediction_type="sample",
                           clip=True,
                           timesteps=sch.sigmas[:-1].double().tolist())
    close(ours, x)


def diffusers_discrete(cls, **kwargs):
    sch = cls(**kwargs)
    sched = Discrete(sch.betas.double().numpy())
    model = EpsModel(name="toy", fn=EpsAdapter(toy_net, sched), betas=None, sample_shape=(1, 4, 4), schedule=sched)
    return sch, sched, model


@pytest.mark.parametrize("nfe", [1, 2, 4])
def test_lcm_matches_lcm_scheduler(nfe):
    from diffusers import LCMScheduler

    sch, sched, model = diffusers_discrete(LCMScheduler)
    sch.set_timesteps(nfe)
    x_T = torch.randn(4, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    x, g, denoised = x_T.clone(), torch.Generator().manual_seed(1), None
    for t in sch.timesteps:
        x, denoised = sch.step(toy_net(x, t.expand(4)), t, x, generator=g, return_dict=False)
    wrapped = precondition(model, {"kind": "lcm"})  # LCM's c_skip, c_out (sigma_data 0.5, timestep_scaling 10)
    ours = nfebench.sample(wrapped, sched, x_T, "lcm", nfe, generator=torch.Generator().manual_seed(1))
    close(ours, denoised)


@pytest.mark.parametrize("gamma", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("nfe", [1, 4])
def test_tcd_matches_tcd_scheduler(gamma, nfe):
    from diffusers import TCDScheduler

    sch, sched, model = diffusers_discrete(TCDScheduler)
    sch.set_timesteps(nfe)
    x_T = torch.randn(4, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    x, g = x_T.clone(), torch.Generator().manual_seed(1)
    for t in sch.timesteps:
        x = sch.step(toy_net(x, t.expand(4)), t, x, eta=gamma, generator=g).prev_sample
    ours = nfebench.sample(model, sched, x_T, "tcd", nfe, gamma=gamma, generator=torch.Generator().manual_seed(1))
    close(ours, x)


def test_tcd_gamma_zero_is_ddim_on_the_levels_and_ends_at_timestep_0():
    sched = Discrete(linear_betas())
    x_T = torch.randn(4, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    ts = [999, 500, 100]
    tcd0 = nfebench.sample(toy_net, sched, x_T, "tcd", 3, gamma=0.0, timesteps=ts)
    x = x_T.clone()
    for s, t in zip(ts, ts[1:] + [0]):  # DDIM from each level to the next, the last to timestep 0 (not clean data)
        a, sg = float(sched.alpha(s)), float(sched.sigma(s))
        e = toy_net(x, torch.full((4,), float(s)))
        x = float(sched.alpha(t)) * (x - sg * e) / a + float(sched.sigma(t)) * e
    close(tcd0, x)
    clean = nfebench.sample(toy_net, sched, x_T, "ddim", 3, timesteps=ts + [-1])
    assert (tcd0 - clean).abs().max() > 1e-4  # the last target is timestep 0, alpha_bar_0 = 1 - beta_1


# --- errors: one line, the bad value and what is allowed ---------------------------------------------------------

@pytest.mark.parametrize("kwargs, match", [
    (dict(sampler="consistency", timesteps=[500, 700]), "strictly decreasing"),
    (dict(sampler="consistency", timesteps=[1200, 500]), r"within the schedule's \[0, 999\]"),
    (dict(sampler="consistency", timesteps=[999, 500, 100]), "3 levels for nfe=2"),
    (dict(sampler="tcd", gamma=1.5), r"gamma must be a number in \[0, 1\], got 1.5"),
    (dict(sampler="tcd", gamma=-0.1), r"gamma must be a number in \[0, 1\]"),
    (dict(sampler="lcm", spacing="nope"), "unknown spacing 'nope'"),
    (dict(sampler="dpm", t_start=1500), r"t_start=1500 is outside the schedule's \(0, 999\]"),
    (dict(sampler="dpm", t_start=0), r"outside the schedule's \(0, 999\]"),
])
def test_errors(kwargs, match):
    sampler = kwargs.pop("sampler")
    with pytest.raises(SamplerError, match=match):
        nfebench.sample(toy_net, linear_betas(), torch.zeros(1, 1, 2, 2), sampler, 2, **kwargs)


def test_lcm_grid_needs_a_discrete_schedule_and_truncated_hides_the_betas():
    with pytest.raises(SamplerError, match="spacing 'lcm' is LCM's grid of a discrete schedule"):
        nfebench.sample(toy_net, VE(0.002, 80.0), torch.zeros(1, 1, 2, 2), "lcm", 2, prediction_type="sample")
    assert Truncated(Discrete(linear_betas()), 500).betas is None
    with pytest.raises(SamplerError, match="needs a discrete VP schedule"):
        nfebench.sample(toy_net, linear_betas(), torch.zeros(1, 1, 2, 2), "fastdpm", 4, t_start=500)


def test_named_fewstep_configs():
    from omegaconf import OmegaConf

    from nfebench.schedules import from_config

    root = __import__("pathlib").Path(__file__).resolve().parents[1] / "conf" / "model"
    ddgan = OmegaConf.to_container(OmegaConf.load(root / "ddgan_cifar10.yaml"))
    sched = from_config(ddgan["schedule"])
    assert np.allclose(sched.betas, ddgan_betas(4, 0.1, 20.0), rtol=1e-9)
    assert (ddgan["prediction_type"], ddgan["default_sampler"]) == ("sample", "ddpm")
    pd = OmegaConf.load(root / "pd_cifar10.yaml")
    assert (pd.prediction_type, pd.default_sampler) == ("v_prediction", "ddim")


# --- through the runner: needs resolved in nfebench.needs, rows record them -------------------------------------

def wrong_shape_prior(seeds):
    return torch.zeros(len(seeds), 3)


def zero_prior(seeds):
    return torch.zeros(len(seeds), 1, 8, 8)


def compose_run(tmp_path, *overrides):
    from hydra import compose, initialize_config_dir

    import nfebench.__main__ as entry

    with initialize_config_dir(config_dir=str(entry.CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=["model=gmm_digits", "metrics=none", "num_samples=6",
                                                        "device=cpu", f"results_dir={tmp_path}", *overrides])


def test_runner_rows_record_teacher_prior_and_truncation(tmp_path):
    from nfebench.run import run

    row = run(compose_run(tmp_path, "sampler=consistency", "nfe=2", "+model.consistency={kind: lcm}",
                          "+model.teacher=gmm_digits", "+model.training_cost='3 CPU-min'"), progress=False)
    assert (row["teacher"], row["training_cost"], row["nfe_used"]) == ("gmm_digits", "3 CPU-min", 2)
    row = run(compose_run(tmp_path, "sampler=ddim", "nfe=3", "t_start=200",
                          "+model.prior=tests.test_fewstep:zero_prior"), progress=False)
    assert row["t_start"] == 200.0 and row["prior_seconds"] >= 0 and row["nfe_used"] == 3


@pytest.mark.parametrize("overrides, match", [
    (["t_start=2000", "+model.prior=tests.test_fewstep:zero_prior"], r"t_start=2000 is outside the schedule's"),
    (["t_start=200", "+model.prior=tests.nope:fn"], "cannot import model.prior 'tests.nope:fn'"),
    (["t_start=200", "+model.prior=tests.test_fewstep:wrong_shape_prior"],
     r"returned \(6, 3\); expected a tensor of shape \(6, 1, 8, 8\)"),
    (["t_start=200"], "truncated diffusion needs both t_start and model.prior"),
    (["+model.consistency={kind: cm}"], "kind cm is defined on a VE schedule"),
])
def test_runner_errors_are_config_errors_before_any_sample(tmp_path, overrides, match):
    from nfebench.run import ConfigError, run

    with pytest.raises(ConfigError, match=match):
        run(compose_run(tmp_path, "sampler=ddim", "nfe=3", *overrides), progress=False)
    assert not (tmp_path / "leaderboard.csv").exists()


def test_compare_student_beside_every_solver_on_its_teacher_at_the_same_nfe(tmp_path):
    from nfebench.compare import CompareError, student_table, student_vs_teacher
    from nfebench.run import run

    base = ("metrics=default", "num_samples=40")
    run(compose_run(tmp_path, *base, "model.name=gmm_teacher", "sampler=ddim", "nfe=2"), progress=False)
    run(compose_run(tmp_path, *base, "model.name=gmm_teacher", "sampler=dpmpp", "nfe=2"), progress=False)
    run(compose_run(tmp_path, *base, "model.name=gmm_teacher", "sampler=ddim", "nfe=3"), progress=False)
    student = run(compose_run(tmp_path, *base, "+model.teacher=gmm_teacher", "sampler=consistency", "nfe=2"),
                  progress=False)
    out = student_vs_teacher(tmp_path, "gmm_digits", n_boot=200)
    assert sorted(r["solver"] for r in out) == ["ddim", "dpmpp"]  # nfe 2 only; the nfe-3 row is not beside it
    for r in out:
        assert r["a"] == pytest.approx(student["fid"], rel=1e-6) and r["delta"] == pytest.approx(r["a"] - r["b"])
        assert r["ci_low"] <= r["ci_high"] and r["p_holm"] >= r["p_value"]
    assert out[0]["b"] <= out[1]["b"] and student_table(out).count("\n| 2 |") == 2
    with pytest.raises(CompareError, match="no rows of model 'nope'"):
        student_vs_teacher(tmp_path, "nope")


def test_a_diffusers_consistency_checkpoint_loads_with_its_scalings_and_matches_the_cm_pipeline_loop(tmp_path,
                                                                                                     tiny_unet_dir):
    import shutil

    from diffusers import CMStochasticIterativeScheduler, UNet2DModel

    from nfebench.models import load_model

    d = tmp_path / "cm"
    shutil.copytree(tiny_unet_dir, d)
    (d / "scheduler_config.json").unlink()
    sch = CMStochasticIterativeScheduler(num_train_timesteps=40, sigma_min=0.002, sigma_max=80.0, clip_denoised=True)
    sch.save_pretrained(d)
    model = load_model("diffusers", path=str(d), dtype="float64")
    assert (model.prediction_type, model.schedule.describe()) == ("sample", "ve(sigma_min=0.002,sigma_max=80)")
    unet = UNet2DModel.from_pretrained(d).double()
    sch.set_timesteps(timesteps=[22, 0])
    x_T = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * sch.init_noise_sigma
    x, g = x_T.double(), torch.Generator().manual_seed(1)  # diffusers' CM pipeline loop, in float64
    with torch.no_grad():
        for t in sch.timesteps:
            out = unet(sch.scale_model_input(x, t), t.expand(3)).sample
            x = sch.step(out, t, x, generator=g).prev_sample
    ours = nfebench.sample(model, model.schedule, x_T.double(), "consistency", 2, clip=True,
                           generator=torch.Generator().manual_seed(1),  # float64 draws, as diffusers' here
                           timesteps=sch.sigmas[:-1].double().tolist())
    close(ours, x)

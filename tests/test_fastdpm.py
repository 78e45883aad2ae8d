"""FastDPM (Kong & Ping 2021): its STEP and VAR schedules, and its reverse process as DDIM on them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import nfebench
from nfebench.models.gmm import GaussianMixtureVP
from nfebench.samplers import SamplerError
from nfebench.samplers.fastdpm import fastdpm_timesteps, var_betas
from nfebench.schedule import VPSchedule, linear_betas

BETAS = linear_betas()
SCHED = VPSchedule(BETAS)
GMM = GaussianMixtureVP([0.4, 0.6], [[0.3, -0.2], [-0.4, 0.1]], [(0.05 * np.eye(2)).tolist(),
                                                                   (0.02 * np.eye(2)).tolist()], BETAS, (2,))


def x_T(n=64, seed=0):
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("variant,schedule", [("step", "linear"), ("step", "quadratic"), ("var", "linear"),
                                              ("var", "quadratic")])
def test_kappa_0_is_ddim_on_the_same_timesteps(variant, schedule):
    """FastDPM's DDIM-rev (kappa = 0) is DDIM on FastDPM's grid, bit for bit, and draws no noise."""
    ts = fastdpm_timesteps(SCHED, 10, variant, schedule)
    a, used = nfebench.sample(GMM.eps, BETAS, x_T(), "fastdpm", 10, return_nfe=True, variant=variant,
                              schedule=schedule, kappa=0.0)
    b = nfebench.sample(GMM.eps, BETAS, x_T(), "ddim", 10, timesteps=ts)
    assert used == 10 and torch.equal(a, b)
    c = nfebench.sample(GMM.eps, BETAS, x_T(), "ddim", 10)  # DDIM's own uniform grid: only step-linear's at S = 10
    assert torch.equal(a, c) == ((variant, schedule) == ("step", "linear"))  # (999/9 is an integer)


def test_step_schedules_are_the_papers():
    lin = fastdpm_timesteps(SCHED, 5, "step", "linear")
    np.testing.assert_array_equal(lin, [999, 749, 499, 249, 0, -1])
    quad = fastdpm_timesteps(SCHED, 5, "step", "quadratic")
    np.testing.assert_array_equal(quad, [800, 450, 200, 50, 0, -1])  # floor((i sqrt(800) / 4)^2)


@pytest.mark.parametrize("schedule", ["linear", "quadratic"])
@pytest.mark.parametrize("S", [2, 10, 100])
def test_var_schedule_ends_at_the_training_noise_level_and_maps_onto_it(schedule, S):
    """VAR's betas keep the training schedule's end level; the fractional timesteps carry their alpha_bar."""
    b = var_betas(BETAS[0], np.log1p(-BETAS).sum(), S, schedule)
    assert b[0] == pytest.approx(BETAS[0], rel=1e-12) and np.all(np.diff(b) > 0) and b[-1] < 1
    gamma_bar = np.cumprod(1 - b)
    assert gamma_bar[-1] == pytest.approx(SCHED.alphas_cumprod[-1], rel=1e-9)
    ts = fastdpm_timesteps(SCHED, S, "var", schedule)[:-1][::-1]
    np.testing.assert_allclose(SCHED.alpha_bar(ts), gamma_bar, rtol=1e-9)
    if schedule == "linear":
        np.testing.assert_allclose(np.diff(b), b[1] - b[0], rtol=1e-9)
    else:
        np.testing.assert_allclose(np.diff(np.sqrt(b / b[0])), np.sqrt(b[1] / b[0]) - 1, rtol=1e-9)


def test_kappa_1_is_stochastic_and_reproducible():
    g = lambda s: torch.Generator().manual_seed(s)  # noqa: E731
    a = nfebench.sample(GMM.eps, BETAS, x_T(), "fastdpm", 10, generator=g(1), kappa=1.0)
    b = nfebench.sample(GMM.eps, BETAS, x_T(), "fastdpm", 10, generator=g(1), kappa=1.0)
    c = nfebench.sample(GMM.eps, BETAS, x_T(), "fastdpm", 10, generator=g(2), kappa=1.0)
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("opts,nfe,match", [
    ({"kappa": 1.5}, 10, r"kappa must be in \[0, 1\], got 1.5"),
    ({"kappa": -0.1}, 10, "kappa must be in"),
    ({"variant": "steps"}, 10, "unknown variant 'steps' for fastdpm; allowed: step, var"),
    ({"schedule": "cosine"}, 10, "unknown schedule 'cosine' for fastdpm; allowed: linear, quadratic"),
    ({"variant": "step"}, 50, "repeats integer timesteps at nfe=50; use schedule=linear or variant=var"),
    ({}, 1, "nfe=1 is below the minimum of sampler 'fastdpm': 2"),
])
def test_bad_options_are_one_line_errors(opts, nfe, match):
    with pytest.raises(SamplerError, match=match):
        nfebench.sample(GMM.eps, BETAS, x_T(), "fastdpm", nfe, **opts)


def test_refuses_a_schedule_without_training_betas():
    class Continuous:  # a stand-in for a continuous-time schedule (no integer training timesteps)
        t_max = 1.0

    with pytest.raises(SamplerError, match="fastdpm needs a discrete VP schedule"):
        fastdpm_timesteps(Continuous(), 10, "var", "linear")

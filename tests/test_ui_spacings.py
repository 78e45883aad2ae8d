"""Issue 28: the step schedules of the UIs and their papers (exponential, kl_optimal, sgm_uniform, simple, beta, ays)
against their formulas, AYS against diffusers' AysSchedules on SD1.5's schedule, the grid an explicit sigma list
gives, and every new spacing on every schedule kind (through alpha / sigma / lambda and the inverse only)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import beta as beta_dist

from nfebench import api
from nfebench.samplers.common import CLEAN, eval_points, sigmas_to_timesteps
from nfebench.samplers.edm import edm_grid
from nfebench.schedules import AYS_SIGMAS, UI_SPACINGS, VE, Discrete, Spacing, VPLinear, linear_betas

DIGITS = Discrete(linear_betas())
SD15 = Discrete(np.linspace(0.00085**0.5, 0.012**0.5, 1000) ** 2)  # diffusers' scaled_linear, SD1.5 and SDXL


def test_exponential_is_uniform_in_log_sigma_and_equals_logsnr():
    ts = DIGITS.timesteps(12, "exponential")
    ls = np.log(DIGITS.edm_sigma(ts))
    assert np.allclose(np.diff(ls), np.diff(ls)[0], rtol=1e-9)
    assert np.allclose(ts, DIGITS.timesteps(12, "logsnr"), rtol=0, atol=1e-9)


def test_kl_optimal_is_uniform_in_arctan_sigma():
    ts = SD15.timesteps(9, "kl_optimal")
    g = np.arctan(SD15.edm_sigma(ts))
    assert np.allclose(np.diff(g), np.diff(g)[0], rtol=1e-9)


def test_sgm_uniform_and_simple_are_comfyuis():
    """sgm_uniform: N + 1 levels uniform in t (the same points as uniform); simple: ComfyUI's
    sigmas[-(1 + int(i * T / N))] of the training table, i < N; samplers ending at clean data use the first N."""
    assert np.array_equal(SD15.timesteps(10, "sgm_uniform"), SD15.timesteps(10, "uniform"))
    assert SD15.timesteps(10, "simple").tolist() == [999 - int(i * 1000 / 10) for i in range(10)] + [0]
    assert SD15.timesteps(7, "simple").tolist() == [999 - int(i * 1000 / 7) for i in range(7)] + [0]
    assert eval_points(SD15, 10, "simple").tolist() == [999 - 100 * i for i in range(10)]
    assert edm_grid(SD15, 10, "sgm_uniform", None) == list(np.linspace(999, 0, 11)[:-1]) + [CLEAN]
    assert len(edm_grid(SD15, 10, "karras", None)) == 11  # N points ending at t_min, then clean (EDM, k-diffusion)


def test_beta_is_lee_et_al_quantiles_in_timesteps():
    n = 10
    ts = SD15.timesteps(n, "beta")
    assert np.allclose(ts / 999, beta_dist.ppf(1 - np.arange(n + 1) / n, 0.6, 0.6), rtol=0, atol=1e-12)
    # ComfyUI's beta scheduler rounds the same quantiles to training timesteps (and drops repeats)
    comfy = np.rint(beta_dist.ppf(1 - np.linspace(0, 1, n, endpoint=False), 0.6, 0.6) * 999)
    assert np.array_equal(np.rint(eval_points(SD15, n, "beta")), comfy)


@pytest.mark.parametrize("model,key", [("sd15", "StableDiffusionSigmas"), ("sdxl", "StableDiffusionXLSigmas")])
def test_ays_on_sd15_schedule_is_diffusers_ays_schedules(model, key):
    """10 steps on SD1.5's schedule: the 10 evaluation levels and the final 0 are diffusers' AysSchedules list; the
    published top 14.615 sits a hair (3e-5) above the schedule's own 14.6146, which the grid keeps."""
    from diffusers.schedulers import AysSchedules

    ref = np.array(AysSchedules[key])
    taus = edm_grid(SD15, 10, Spacing("ays", ays_model=model), None)
    sig = np.array([float(SD15.edm_sigma(t)) for t in taus[:-1]] + [0.0])
    assert taus[-1] == CLEAN and sig.size == ref.size
    assert np.allclose(sig[1:], ref[1:], rtol=1e-12, atol=0)
    assert abs(sig[0] / ref[0] - 1) < 1e-4 and sig[0] == pytest.approx(float(SD15.edm_sigma(999)), rel=1e-15)
    # the samplers ending at t_min see the same 10 levels, then sigma_min (the published last level, 0.029)
    ode = SD15.edm_sigma(SD15.timesteps(10, Spacing("ays", ays_model=model)))
    assert np.allclose(ode[1:10], ref[1:10], rtol=1e-12) and abs(ode[10] / 0.029 - 1) < 6e-3


def test_ays_other_step_counts_interpolate_log_linearly():
    """NVIDIA's loglinear_interp: log sigma of the reversed list interpolated linearly on [0, 1]."""
    lv = np.array(AYS_SIGMAS["sd15"])
    xs, new = np.linspace(0, 1, lv.size), np.linspace(0, 1, 21)
    ref = np.exp(np.interp(new, xs, np.log(lv[::-1])))[::-1]
    got = SD15.edm_sigma(SD15.timesteps(20, Spacing("ays", ays_model="sd15")))
    assert np.allclose(got[1:-1], ref[1:-1], rtol=1e-12)


def test_ays_svd_on_a_ve_schedule():
    ve = VE(0.002, 700.0)
    got = ve.edm_sigma(ve.timesteps(10, Spacing("ays", ays_model="svd")))
    assert np.allclose(got, AYS_SIGMAS["svd"], rtol=1e-12)


@pytest.mark.parametrize("sched", [DIGITS, VPLinear(), VE(0.002, 80.0), SD15],
                         ids=["discrete", "vp_linear", "ve", "sd15"])
@pytest.mark.parametrize("spacing", [s for s in UI_SPACINGS if s != "ays"])
def test_every_new_spacing_on_every_schedule_kind(sched, spacing):
    ts = sched.timesteps(8, spacing)
    assert ts[0] == sched.t_max and ts[-1] == sched.t_min and np.all(np.diff(ts) < 0)


@pytest.mark.parametrize("spacing", UI_SPACINGS)
@pytest.mark.parametrize("sampler", ["dpmpp", "ddim", "euler", "dpmpp_2m_sde", "unipc"])
def test_every_spacing_pairs_with_samplers(sampler, spacing):
    """Each spacing runs with samplers of every grid layout (ending at t_min; the DDIM chain; ending at sigma = 0)."""
    from tests.test_samplers_suite import Counting

    m = Counting()
    sched = SD15 if spacing == "ays" else DIGITS
    m.gmm.sched = sched
    x, used = api.sample(m, sched, torch.zeros(2, 4, dtype=torch.float64), sampler, 10, return_nfe=True,
                         generator=torch.Generator().manual_seed(0), spacing=spacing)
    assert used == 10 and torch.isfinite(x).all()


def test_sigmas_option_gives_that_grid():
    sig = [14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963, 0.652, 0.399, 0.152, 0.0]
    taus = sigmas_to_timesteps(SD15, sig)
    assert taus[0] == 999 and taus[-1] == CLEAN
    assert np.allclose(SD15.edm_sigma(taus[1:-1]), sig[1:-1], rtol=1e-12)
    a = api.sample(lambda x, t: x * 0.1, SD15, torch.ones(1, 2, dtype=torch.float64), "euler", 10, sigmas=sig)
    b = api.sample(lambda x, t: x * 0.1, SD15, torch.ones(1, 2, dtype=torch.float64), "euler", 10,
                   spacing=Spacing("ays", ays_model="sd15"))
    assert torch.allclose(a, b, rtol=1e-12)


def test_sigmas_from_a_file(tmp_path):
    f = tmp_path / "s.txt"
    f.write_text("14.615, 6.475, 3.861\n1.886 0.963 0.399 0.152 0")
    taus = sigmas_to_timesteps(SD15, str(f))
    assert taus.size == 8 and taus[-1] == CLEAN


def test_time_maps_of_k_diffusion_and_nfebench_differ_as_documented():
    """docs/samplers.md (issue 28, point 6): k-diffusion's sigma -> t (log-sigma interpolation) and ours (log
    alpha_bar) differ by up to ~0.1 timestep near t = 0.44 over the whole range, by ~0.03 on a 20-step Karras grid."""
    import os
    import sys

    from tests.kdiffusion_ref import kdiffusion_sampling

    kdiffusion_sampling()
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "studies"))
    import time_maps

    r = time_maps.compare(DIGITS)
    assert 0.08 < r["max_dense"] < 0.12 and 0.3 < r["at_t"] < 0.6 and 0.02 < r["max_karras20"] < 0.04, r

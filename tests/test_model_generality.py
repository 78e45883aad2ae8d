"""Any model a researcher brings: schedules (Discrete, VPLinear, VE), parametrizations (epsilon, sample,
v_prediction, score) and learned variances, all checked on the exact-score oracle presented through each of them."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import nfebench
from nfebench.models.gmm import load_gmm
from nfebench.models.parametrization import PARAMETRIZATIONS
from nfebench.samplers import SAMPLERS, SamplerError
from nfebench.samplers.common import CLEAN, chain_grid
from nfebench.schedules import TUNE_SPACINGS as SPACINGS, VE, Discrete, ScheduleError, VPLinear, from_config, linear_betas

SCHEDULES = {"discrete": None, "vp_linear": "vp_linear", "ve": "ve"}
# every registered sampler but those that need a discrete schedule's extras (moments at integers, diffusers' betas,
# covariance heads: tests/test_sn_npr.py); FastDPM is defined on integer timesteps, so only on the discrete schedule
SAMPLER_NAMES = sorted(n for n in SAMPLERS if not n.startswith(("analytic_", "sn_", "npr_")) and n != "diffusers")
DISCRETE_ONLY = ("fastdpm", "lcm", "tcd")  # their default grids are a discrete schedule's (spacing=lcm)
NFE = {"pndm": 13, "restart": 12, "rk45": 400, "ggf": 400}  # others: 8 (for rk45 and ggf a cap)


def oracle(schedule=None, prediction_type="epsilon"):
    return load_gmm(n_components=8, reg_covar=1e-2, schedule=schedule, prediction_type=prediction_type)


def x_T(m, n=3):
    z = torch.randn(n, *m.sample_shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return m.schedule.prior_std * z


# --- schedules ----------------------------------------------------------------------------------------------------
def test_ve_schedule_is_the_vp_frame_of_x0_plus_sigma_eps():
    sch, s = VE(0.002, 80.0), np.array([0.002, 0.5, 3.0, 80.0])
    np.testing.assert_allclose(sch.alpha(s), 1 / np.sqrt(1 + s**2), rtol=1e-14)
    np.testing.assert_allclose(sch.sigma(s), s / np.sqrt(1 + s**2), rtol=1e-14)
    np.testing.assert_allclose(sch.edm_sigma(s), s, rtol=1e-14)
    np.testing.assert_allclose(sch.input_scale(s) * sch.alpha(s), 1.0, rtol=1e-14)
    np.testing.assert_allclose(sch.tau_from_lambda(sch.lambda_(s)), s, rtol=1e-14)
    assert sch.prior_std == 80.0 and not sch.discrete


def test_vp_linear_follows_score_sde_and_inverts():
    sch, t = VPLinear(0.1, 20.0, 1e-3), np.array([1e-3, 0.01, 0.3, 1.0])
    np.testing.assert_allclose(np.log(sch.alpha(t)), -(20.0 - 0.1) * t**2 / 4 - 0.1 * t / 2, rtol=1e-13)
    np.testing.assert_allclose(sch.alpha(t) ** 2 + sch.sigma(t) ** 2, 1.0, rtol=1e-13)
    np.testing.assert_allclose(sch.tau_from_lambda(sch.lambda_(t)), t, rtol=1e-10)
    np.testing.assert_allclose(sch.tau_from_edm_sigma(sch.edm_sigma(t)), t, rtol=1e-10)


@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("sch", [VE(0.002, 80.0), VPLinear(), Discrete(linear_betas())], ids=["ve", "vpl", "disc"])
def test_every_spacing_spans_the_schedule(sch, spacing):
    ts = sch.timesteps(6, spacing)
    assert ts[0] == sch.t_max and ts[-1] == sch.t_min and np.all(np.diff(ts) < 0)


def test_chains_round_only_on_discrete_schedules_and_end_at_clean_data():
    ve = chain_grid(VE(), 6, "karras")
    assert ve[-1] == CLEAN and ve[-2] == 0.002 and np.any(ve[:-1] != np.rint(ve[:-1]))
    disc = chain_grid(Discrete(linear_betas()), 6, "karras")
    assert disc[-1] == CLEAN and np.all(disc[:-1] == np.rint(disc[:-1]))


def test_schedule_config_errors_name_the_bad_value():
    assert isinstance(from_config("ve"), VE) and from_config({"kind": "vp_linear", "beta_max": 10}).beta_max == 10
    assert from_config({"kind": "discrete", "num_train_timesteps": 500}).T == 500
    with pytest.raises(ScheduleError, match="unknown schedule kind 'cosine'; allowed: discrete, vp_linear, ve"):
        from_config("cosine")
    with pytest.raises(ScheduleError, match="unknown parameter 'sigma_mx' for schedule ve"):
        from_config({"kind": "ve", "sigma_mx": 3})
    with pytest.raises(ScheduleError, match="sigma_min < sigma_max"):
        VE(5.0, 1.0)


def test_the_old_schedule_module_is_the_discrete_schedule():
    from nfebench.schedule import VPSchedule

    assert VPSchedule is Discrete


# --- parametrizations ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("schedule", SCHEDULES)
def test_every_sampler_gives_the_same_x0_whatever_the_parametrization(schedule):
    """The exactness claim: on the oracle, presenting it as sample / v_prediction / score instead of epsilon changes
    no sampler's x_0 beyond 1e-6 relative (float64; stochastic samplers with the same generator)."""
    ref = oracle(SCHEDULES[schedule])
    xT = x_T(ref)
    names = [n for n in SAMPLER_NAMES if schedule == "discrete" or n not in DISCRETE_ONLY]
    base = {n: nfebench.sample(ref.network, ref.schedule, xT, n, NFE.get(n, 8),
                               generator=torch.Generator().manual_seed(1)) for n in names}
    for ptype in ("sample", "v_prediction", "score"):
        m = oracle(SCHEDULES[schedule], ptype)
        for n in names:
            x0, used = nfebench.sample(m.network, m.schedule, xT, n, NFE.get(n, 8), prediction_type=ptype,
                                       generator=torch.Generator().manual_seed(1), return_nfe=True)
            assert used <= NFE.get(n, 8)
            rel = ((x0 - base[n]).norm() / base[n].norm()).item()
            assert rel < 1e-6, (schedule, ptype, n, rel)


def test_presented_networks_output_their_own_parametrization():
    """The oracle as `sample` outputs x_0-hat = E[x_0 | x], as `score` the VE score: checked against the eps the
    oracle gives directly, with x_ve = x_vp / alpha (so a wrong input scaling or sign would show)."""
    eps_m = oracle("ve")
    s = 1.7
    tau = torch.full((3,), s, dtype=torch.float64)
    x_ve = x_T(eps_m) / 80.0 * s + 0.3
    x_vp = x_ve / math.sqrt(1 + s**2)
    e = eps_m(x_vp, tau)
    torch.testing.assert_close(oracle("ve", "sample").network(x_ve, tau), x_ve - s * e, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(oracle("ve", "score").network(x_ve, tau), -e / s, rtol=1e-12, atol=1e-12)
    a, sg = 1 / math.sqrt(1 + s**2), s / math.sqrt(1 + s**2)
    x0 = x_ve - s * e
    torch.testing.assert_close(oracle("ve", "v_prediction").network(x_ve, tau), a * e - sg * x0, rtol=1e-12,
                               atol=1e-12)


def test_unknown_parametrization_and_variance_type_are_one_line_errors():
    m = oracle()
    with pytest.raises(ValueError, match="unknown prediction_type 'x0'; allowed: " + ", ".join(PARAMETRIZATIONS)):
        nfebench.sample(m.network, m.schedule, x_T(m), "ddim", 4, prediction_type="x0")
    with pytest.raises(ValueError, match="unknown variance_type 'big'"):
        nfebench.sample(m.network, m.schedule, x_T(m), "ddim", 4, variance_type="big")


# --- EDM on VE ----------------------------------------------------------------------------------------------------
def test_edm_heun_on_ve_matches_the_mixture_moments():
    """The oracle as an EDM denoiser D(x; sigma) (prediction_type sample on VE(0.002, 80)), sampled by heun with EDM's
    defaults (18 steps = 35 NFE, Karras rho = 7): mean and covariance of 1000 samples agree with the mixture's exact
    ones as closely as 1000 exact samples do (within 1.5x of their error, plus 0.01)."""
    m = oracle({"kind": "ve", "sigma_min": 0.002, "sigma_max": 80.0}, "sample")
    n = 1000
    xT = 80.0 * torch.randn(n, *m.sample_shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x0, used = nfebench.sample(m.network, m.schedule, xT, "heun", 35, prediction_type="sample", return_nfe=True)
    assert used == 35
    mean, cov = m.gmm.mean_cov()
    exact = m.gmm.sample(n, torch.Generator().manual_seed(1)).reshape(n, -1)

    def errors(x):
        x = x.reshape(n, -1)
        return (x.mean(0) - mean).norm().item(), ((torch.cov(x.T) - cov).norm() / cov.norm()).item()

    (em, ec), (rm, rc) = errors(x0), errors(exact)
    assert em < 1.5 * rm + 0.01 and ec < 1.5 * rc + 0.01, (em, rm, ec, rc)


# --- learned variance ---------------------------------------------------------------------------------------------
def _with_variance(network, value):
    """A 2C-channel network: the prediction, then constant variance values."""
    return lambda x, t: torch.cat([network(x, t), torch.full_like(x, value)], dim=1)


def test_ddpm_learned_range_interpolates_between_the_fixed_variances():
    """Improved DDPM Eq. 15: v = +1 is beta (variance=large), v = -1 is beta-tilde (small), same noise draws."""
    m = oracle()
    xT = x_T(m)

    def run(net, **kw):
        return nfebench.sample(net, m.schedule, xT, "ddpm", 6, generator=torch.Generator().manual_seed(3), **kw)

    for v, fixed in ((1.0, "large"), (-1.0, "small")):
        learned = run(_with_variance(m.network, v), variance_type="learned_range", variance="learned")
        torch.testing.assert_close(learned, run(m.network, variance=fixed), rtol=1e-12, atol=1e-12)
    mid = run(_with_variance(m.network, 0.0), variance_type="learned_range", variance="learned")
    assert not torch.allclose(mid, run(m.network, variance="small"))
    with pytest.raises(SamplerError, match="variance=learned needs a model with variance_type"):
        run(m.network, variance="learned")


def test_vlb_learned_variance_reduces_to_the_fixed_ones():
    m = oracle()
    from nfebench.data import load_split

    x = load_split("digits", "test")[:6]

    def bound(net, **kw):
        return nfebench.nll(net, m.schedule, x, method="vlb", nfe=5, generator=torch.Generator().manual_seed(4), **kw)

    small = bound(m.network, variance="small")
    learned = bound(_with_variance(m.network, -1.0), variance_type="learned_range", variance="learned")
    assert learned["bpd"] == pytest.approx(small["bpd"], rel=1e-10)
    large = bound(m.network, variance="large")
    learned = bound(_with_variance(m.network, 1.0), variance_type="learned_range", variance="learned")
    assert learned["kl_bpd"] == pytest.approx(large["kl_bpd"], rel=1e-10)
    assert learned["variance"] == "learned"


def test_a_loaded_model_is_taken_as_eps_with_its_own_schedule():
    """nfebench.sample(model, model.schedule, ...) on a loaded VE model equals sampling its raw network through the
    adapter; a loaded model with a prediction_type or another schedule is an error, not a double conversion."""
    m = oracle("ve", "score")
    xT = x_T(m)
    a = nfebench.sample(m, m.schedule, xT, "dpmpp", 6)
    b = nfebench.sample(m.network, m.schedule, xT, "dpmpp", 6, prediction_type="score")
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    with pytest.raises(SamplerError, match="is a loaded EpsModel"):
        nfebench.sample(m, m.schedule, xT, "dpmpp", 6, prediction_type="score")
    with pytest.raises(SamplerError, match="is a loaded EpsModel"):
        nfebench.sample(m, linear_betas(), xT, "dpmpp", 6)

import numpy as np
import pytest

from nfebench.schedule import TUNE_SPACINGS as SPACINGS, VPSchedule, linear_betas


@pytest.fixture(scope="module")
def sched():
    return VPSchedule(linear_betas())


def test_integer_timesteps_match_the_discrete_alpha_bar(sched):
    n = np.arange(1000)
    np.testing.assert_allclose(sched.alpha_bar(n), np.cumprod(1 - linear_betas()), rtol=1e-12)
    np.testing.assert_allclose(sched.alpha(n) ** 2 + sched.sigma(n) ** 2, 1.0, rtol=1e-12)


def test_between_integers_log_alpha_bar_is_linear(sched):
    lab = np.log(np.cumprod(1 - linear_betas()))
    assert sched.log_alpha_bar_at(10.25) == pytest.approx(0.75 * lab[10] + 0.25 * lab[11], rel=1e-12)


@pytest.mark.parametrize("tau", [0.0, 0.5, 3.3, 250.0, 998.7, 999.0])
def test_inverse_maps_round_trip(sched, tau):
    assert sched.tau_from_lambda(sched.lambda_(tau)) == pytest.approx(tau, abs=1e-6)
    assert sched.tau_from_edm_sigma(sched.edm_sigma(tau)) == pytest.approx(tau, abs=1e-6)
    assert sched.to_discrete(sched.to_continuous(tau)) == pytest.approx(tau, abs=1e-9)


@pytest.mark.parametrize("spacing", SPACINGS)
def test_spacings_are_decreasing_from_T_minus_1_to_0(sched, spacing):
    ts = sched.timesteps(10, spacing)
    assert ts.shape == (11,) and ts[0] == 999 and ts[-1] == 0 and np.all(np.diff(ts) < 0)


def test_logsnr_spacing_is_uniform_in_lambda(sched):
    lam = sched.lambda_(sched.timesteps(8, "logsnr"))
    np.testing.assert_allclose(np.diff(lam), np.diff(lam)[0], rtol=1e-6)


def test_bad_inputs_raise(sched):
    with pytest.raises(ValueError, match="spacing"):
        sched.timesteps(5, "cosine")
    with pytest.raises(ValueError, match="outside"):
        sched.alpha(1000.5)
    with pytest.raises(ValueError, match="betas"):
        VPSchedule([0.5, 1.5])

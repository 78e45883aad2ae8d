"""Analytic-DPM: the optimal variance, the moment estimate and its cache, the two samplers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import nfebench
from nfebench.analytic_dpm import (analytic_moments, cached_moments, gmm_digest, load_moments, optimal_variance,
                                    variance_bounds)
from nfebench.data import load_split
from nfebench.models import load_model
from nfebench.samplers import SamplerError
from nfebench.samplers.common import chain_grid
from nfebench.schedule import VPSchedule, linear_betas

SCHED = VPSchedule(linear_betas())


@pytest.fixture(scope="module")
def gmm():
    return load_model("gmm")


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


class GaussianData:
    """eps-model of data N(0, c^2 I) (independent dims): the exact E[eps | x_t] = sigma x / (a^2 c^2 + sigma^2)."""

    dtype = torch.float64

    def __init__(self, c):
        self.c = c

    def __call__(self, x, t):
        a, s = SCHED.alpha(t.numpy()), SCHED.sigma(t.numpy())
        k = torch.from_numpy(s / (a**2 * self.c**2 + s**2)).view(-1, *[1] * (x.dim() - 1))
        return k * x


@pytest.mark.parametrize("s,t", [(999, 899), (500, 400), (40, 20), (1, 0), (300, 0)])
@pytest.mark.parametrize("eta", [1.0, 0.0, 0.5])
def test_optimal_variance_is_the_exact_reverse_variance_for_gaussian_data(s, t, eta):
    """For Gaussian data the optimal Gaussian reverse of the DDIM family is exact, so sigma*^2 from Gamma (Bao et al.
    Thm 1) must equal Var[x_t | x_s] of the chain q_lambda: lambda^2 + c0^2 Var[x0 | x_s], computed from the joint
    Gaussian of (x0, x_s) rather than from Gamma."""
    c = 0.4
    a_s, s_s = float(SCHED.alpha(s)), float(SCHED.sigma(s))
    a_t, s_t = float(SCHED.alpha(t)), float(SCHED.sigma(t))
    var_xs = a_s**2 * c**2 + s_s**2
    gamma = s_s**2 / var_xs  # E eps_hat^2 with eps_hat = s x / var_xs
    post = (1 - (a_s / a_t) ** 2) * s_t**2 / s_s**2
    lam2 = eta**2 * post
    # x_t = a_t x0 + sqrt(s_t^2 - lam2) (x_s - a_s x0) / s_s + lam eps'  ->  its variance given x_s
    k = math.sqrt(s_t**2 - lam2) / s_s
    coef_x0 = a_t - k * a_s
    var_x0_given_xs = c**2 - (a_s * c**2) ** 2 / var_xs
    exact = lam2 + coef_x0**2 * var_x0_given_xs
    assert optimal_variance(SCHED, s, t, gamma, lam2) == pytest.approx(exact, rel=1e-9)
    if eta == 1.0 and t > 0:  # the DDPM case: also the marginal reverse conditional of the Gaussian process
        var_xt = a_t**2 * c**2 + s_t**2
        cov = (a_s / a_t) * var_xt
        assert optimal_variance(SCHED, s, t, gamma, lam2) == pytest.approx(var_xt - cov**2 / var_xs, rel=1e-9)


def test_variance_is_clipped_into_the_theorem_2_bounds():
    post = 0.01
    assert optimal_variance(SCHED, 500, 400, 1.3, post) == pytest.approx(post)  # Gamma > 1: no extra variance
    c02, upper = variance_bounds(SCHED, 999, 900, post)
    assert upper == 1.0  # at tau = 999, sigma^2 / alpha^2 >> 1: the data range [-1, 1] bounds Var[x0 | x_s]
    assert optimal_variance(SCHED, 999, 900, -5.0, post) == pytest.approx(post + c02 * 1.0)


def test_moments_estimate_gaussian_model_and_do_not_depend_on_batch_size():
    """Gamma_n of the Gaussian eps-model on real images: E[k^2 (a x0 + s eps)^2] = k^2 (a^2 E x0^2 + s^2)."""
    imgs = load_split("digits", "train")[:200]
    model = GaussianData(0.5)
    ts = [0, 250, 999]
    g1 = analytic_moments(model, SCHED, imgs, num_images=200, batch_size=200, generator=gen(1), timesteps=ts)
    g2 = analytic_moments(model, SCHED, imgs, num_images=200, batch_size=33, generator=gen(1), timesteps=ts)
    np.testing.assert_allclose(g1[ts], g2[ts], rtol=1e-12)
    assert np.isnan(g1[1]) and np.isfinite(g1[ts]).all()
    x0 = imgs.double() / 127.5 - 1
    for n in ts:
        a, s = float(SCHED.alpha(n)), float(SCHED.sigma(n))
        k = s / (a**2 * 0.25 + s**2)
        expected = k**2 * (a**2 * x0.pow(2).mean().item() + s**2)
        assert g1[n] == pytest.approx(expected, rel=0.02)


def test_cache_is_written_beside_the_weights_and_read_back(tmp_path):
    imgs = load_split("digits", "train")[:20]
    model = GaussianData(0.5)
    kw = dict(model_digest="abc", num_images=20, batch_size=20, seed=0)
    g, info = cached_moments(model, SCHED, imgs, model_dir=tmp_path / "ckpt", cache_dir=tmp_path / "user", **kw)
    assert not info["cached"] and info["path"].startswith(str(tmp_path / "ckpt"))
    assert info["per_sample_evals"] == 1000 and info["calls"] == 1000 and info["num_images"] == 20
    g2, info2 = cached_moments(model, SCHED, imgs, model_dir=tmp_path / "ckpt", cache_dir=tmp_path / "user", **kw)
    assert info2["cached"] and info2["path"] == info["path"]
    np.testing.assert_array_equal(g, g2)
    np.testing.assert_array_equal(load_moments(info["path"], 1000), g)
    # another model digest is another file
    _, info3 = cached_moments(model, SCHED, imgs, model_dir=tmp_path / "ckpt", cache_dir=tmp_path / "user",
                              **{**kw, "model_digest": "abd"})
    assert info3["path"] != info["path"] and not info3["cached"]


def test_cache_falls_back_to_the_user_dir_when_the_checkpoint_dir_is_not_writable(tmp_path):
    imgs = load_split("digits", "train")[:10]
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    _, info = cached_moments(GaussianData(0.5), SCHED, imgs, model_digest="x", model_dir=blocker / "ckpt",
                             cache_dir=tmp_path / "user", num_images=10, batch_size=10)
    assert info["path"].startswith(str(tmp_path / "user"))


# --- samplers -----------------------------------------------------------------------------------------------------
def test_gamma_one_reduces_analytic_ddpm_to_ddpm_and_analytic_ddim_to_ddim(gmm):
    """Gamma = 1 means Var[x0 | x_s] = 0: Analytic-DDPM is DDPM with beta-tilde, Analytic-DDIM (eta=0) is DDIM."""
    ones = np.ones(1000)
    x_T = torch.randn(6, 1, 8, 8, generator=gen(0), dtype=torch.float64)
    a = nfebench.sample(gmm, gmm.betas, x_T, "analytic_ddpm", nfe=7, generator=gen(1), moments=ones)
    b = nfebench.sample(gmm, gmm.betas, x_T, "ddpm", nfe=7, generator=gen(1), variance="small")
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    a = nfebench.sample(gmm, gmm.betas, x_T, "analytic_ddim", nfe=7, generator=gen(1), moments=ones, clip=True)
    b = nfebench.sample(gmm, gmm.betas, x_T, "ddim", nfe=7, clip=True)
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_analytic_samplers_spend_the_budget_and_add_the_optimal_noise(gmm):
    ts = chain_grid(SCHED, 5, "uniform")[:-1].astype(int)
    imgs = load_split("digits", "train")[:64]
    gamma = analytic_moments(gmm, gmm.betas, imgs, batch_size=64, generator=gen(0), timesteps=ts)
    x_T = torch.randn(8, 1, 8, 8, generator=gen(0), dtype=torch.float64)
    for name in ("analytic_ddpm", "analytic_ddim"):
        x0, spent = nfebench.sample(gmm, gmm.betas, x_T, name, nfe=5, generator=gen(2), moments=gamma,
                                    return_nfe=True)
        assert spent == 5 and torch.isfinite(x0).all()
    a = nfebench.sample(gmm, gmm.betas, x_T, "analytic_ddim", nfe=5, generator=gen(2), moments=gamma)
    b = nfebench.sample(gmm, gmm.betas, x_T, "analytic_ddim", nfe=5, generator=gen(3), moments=gamma)
    assert not torch.equal(a, b)  # eta = 0 is still stochastic: sigma*^2 > 0
    with pytest.raises(SamplerError, match="moments"):
        nfebench.sample(gmm, gmm.betas, x_T, "analytic_ddpm", nfe=5)
    with pytest.raises(SamplerError, match="T=1000"):
        nfebench.sample(gmm, gmm.betas, x_T, "analytic_ddpm", nfe=5, moments=np.ones(10))


def test_analytic_variance_gives_the_tightest_bound_on_the_oracle(gmm):
    """Bao et al. 2022's finding on a model with the exact score: at K = 10 the analytic-variance bound is below the
    small- and large-variance bounds, with the same Monte-Carlo noise for all three (same generator)."""
    k = 10
    ts = chain_grid(SCHED, k, "uniform")[:-1].astype(int)
    gamma = analytic_moments(gmm, gmm.betas, load_split("digits", "train"), num_images=200, batch_size=200,
                             generator=gen(0), timesteps=ts)
    x = load_split("digits", "test")[:48]
    res = {v: nfebench.nll(gmm, gmm.betas, x, method="vlb", nfe=k, generator=gen(9), variance=v, moments=gamma)
           for v in ("small", "large", "analytic")}
    assert res["analytic"]["bpd"] < res["small"]["bpd"] and res["analytic"]["bpd"] < res["large"]["bpd"]
    assert res["analytic"]["decoder_bpd"] == res["small"]["decoder_bpd"]  # same decoder, same noise
    assert res["analytic"]["prior_bpd"] == res["large"]["prior_bpd"]


def test_gmm_digest_identifies_the_oracle(gmm):
    assert gmm_digest(gmm.gmm) == gmm_digest(load_model("gmm").gmm)
    assert gmm_digest(gmm.gmm) != gmm_digest(load_model("gmm", n_components=5).gmm)

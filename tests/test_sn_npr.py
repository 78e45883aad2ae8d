"""SN-DPM / NPR-DPM (Bao et al. 2022b): exact moments on the oracle, the per-step KL against Analytic-DPM, heads that
share the network's forward pass, their training command, and the one-line error without heads."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
import torch

import nfebench
from nfebench.analytic_dpm import optimal_variance
from nfebench.cov_heads import attach_heads
from nfebench.models import ModelError, load_model
from nfebench.models.gmm import GaussianMixtureVP
from nfebench.samplers import SamplerError
from nfebench.samplers.analytic import HEAD_KINDS, head_variance
from nfebench.samplers.common import chain_grid
from nfebench.schedule import linear_betas

from .test_cli import error_lines, run_cli

BETAS = linear_betas()


def gen(seed):
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def oracle():
    return load_model("gmm")


def test_oracle_moments_are_the_conditional_moments_of_eps():
    """E[eps | x_t] is the oracle's eps; over the joint (x_0, eps), eps - E[eps | x] and eps^2 - E[eps^2 | x] are
    uncorrelated with functions of x_t (here 1 and x_t itself), which defines the conditional moments."""
    g = GaussianMixtureVP([0.4, 0.6], [[0.3, -0.2], [-0.4, 0.1]], [[[0.05, 0.01], [0.01, 0.03]],
                                                                     [[0.02, 0.0], [0.0, 0.04]]], BETAS, (2,))
    n, tau = 100_000, 400.0
    a, s = float(g.sched.alpha(tau)), float(g.sched.sigma(tau))
    eps = torch.randn(n, 2, generator=gen(1), dtype=torch.float64)
    x = a * g.sample(n, gen(0)) + s * eps
    t = torch.full((n,), tau)
    e1, e2 = g.eps_moments(x, t)
    torch.testing.assert_close(e1, g.eps(x, t), rtol=0, atol=1e-12)
    se = 4 * (eps**2).std(0) / n**0.5
    for f in (torch.ones(n, 1, dtype=torch.float64), x[:, :1], x[:, 1:]):
        assert torch.all(((eps - e1) * f).mean(0).abs() < se)
        assert torch.all(((eps**2 - e2) * f).mean(0).abs() < se)


def step_kl(v, post, c0, x0, x0_hat):
    """E KL(q(x_t | x_s, x_0) || N(mean, v)) per image (nats), the mean error c0 (x_0 - x0_hat); v scalar or [B, D]."""
    v = torch.as_tensor(v, dtype=torch.float64).expand_as(x0)
    return (0.5 * (torch.log(v / post) + post / v + c0**2 * (x0 - x0_hat) ** 2 / v - 1)).flatten(1).sum(1).mean()


def test_exact_moments_give_a_per_step_kl_no_larger_than_analytic_dpm(oracle):
    """With the oracle's exact moments, SN's and NPR's diagonal covariance is the optimal one given x_s, so each
    step's KL of the 10-step DDPM chain is no larger than with Analytic-DPM's optimal isotropic variance (whose Gamma
    is measured on the same samples); the two moments give the same covariance when eps_hat is exact."""
    g, sched = oracle.gmm, oracle.gmm.sched
    x0 = g.sample(300, gen(0))
    ts = chain_grid(sched, 10, "uniform")
    total = {"analytic": 0.0, "sn": 0.0}
    for s, t in zip(ts[:-2], ts[1:-1]):  # every KL step (the last one, onto clean data, is the decoder)
        a_s, s_s = float(sched.alpha(s)), float(sched.sigma(s))
        a_t, s_t = float(sched.alpha(t)), float(sched.sigma(t))
        x_s = a_s * x0 + s_s * torch.randn(x0.shape, generator=gen(int(s)), dtype=torch.float64)
        e1, e2 = g.eps_moments(x_s, torch.full((x0.shape[0],), float(s)))
        x0_hat = (x_s - s_s * e1) / a_s
        beta = 1 - (a_s / a_t) ** 2
        post, c0 = beta * s_t**2 / s_s**2, a_t * beta / s_s**2
        v_an = optimal_variance(sched, float(s), float(t), e1.pow(2).mean().item(), post)
        v_sn = head_variance(sched, float(s), float(t), post, e1, e2, "sn")
        v_npr = head_variance(sched, float(s), float(t), post, e1, e2 - e1**2, "npr")
        torch.testing.assert_close(v_sn, v_npr, rtol=1e-9, atol=1e-12)
        kl_an, kl_sn = step_kl(v_an, post, c0, x0, x0_hat).item(), step_kl(v_sn, post, c0, x0, x0_hat).item()
        assert kl_sn <= kl_an * (1 + 1e-9), (s, t, kl_sn, kl_an)
        total["analytic"] += kl_an
        total["sn"] += kl_sn
    assert total["sn"] < 0.9 * total["analytic"]  # and clearly lower over the chain (state-dependent, per pixel)


@pytest.mark.parametrize("name", sorted(HEAD_KINDS))
def test_spends_nfe_with_oracle_heads_and_is_a_one_line_error_without(oracle, name):
    headed = attach_heads(oracle, HEAD_KINDS[name])
    x_T = torch.randn(4, 1, 8, 8, generator=gen(0), dtype=torch.float64)
    x0, used = nfebench.sample(headed, oracle.betas, x_T, name, 7, generator=gen(1), return_nfe=True)
    assert used == 7 and torch.isfinite(x0).all()
    with pytest.raises(SamplerError, match=f"^{name} needs a model with covariance heads"):
        nfebench.sample(oracle, oracle.betas, x_T, name, 7, generator=gen(1))


@pytest.mark.slow
def test_sn_ddpm_reproduces_the_oracle_moments_on_the_full_chain():
    """SN-DDPM with exact moments at 1000 steps samples the 2-D mixture: mean and covariance within 4.5 standard
    errors (8000 samples), as ddpm does (tests/test_samplers_suite.py)."""
    g = GaussianMixtureVP([0.4, 0.6], [[0.3, -0.2], [-0.4, 0.1]], [(0.05 * np.eye(2)).tolist(),
                                                                   (0.02 * np.eye(2)).tolist()], BETAS, (2,))
    x = nfebench.sample(g.eps_moments, BETAS, torch.randn(8000, 2, generator=gen(10), dtype=torch.float64),
                        "sn_ddpm", 1000, generator=gen(11))
    m0, c0 = g.mean_cov()
    assert torch.all((x.mean(0) - m0).abs() < 4.5 * (c0.diagonal() / 8000).sqrt())
    assert torch.all((torch.cov(x.T) - c0).abs() < 4.5 * 0.05 * 2**0.5 / 8000**0.5)


@pytest.fixture(scope="module")
def headed_unet(tmp_path_factory, tiny_unet_dir):
    """A copy of the random-weight stand-in UNet with covariance heads trained on it (3 steps, the train command)."""
    from nfebench.train import main

    d = tmp_path_factory.mktemp("headed") / "unet"
    shutil.copytree(tiny_unet_dir, d)
    main(["cov_heads", "--steps", "3", "--batch-size", "8", "--model", str(d), "--out", str(d / "cov_heads")])
    return d


def test_heads_share_the_networks_forward_pass(headed_unet):
    """One UNet forward per step: the head reads the UNet's last feature map of that very forward."""
    model = load_model("diffusers", path=str(headed_unet))
    forwards = []
    model.module.register_forward_hook(lambda *_: forwards.append(1))
    x_T = torch.randn(3, 1, 8, 8, generator=gen(0))
    for name in ("npr_ddpm", "sn_ddim"):
        forwards.clear()
        x0, used = nfebench.sample(attach_heads(model, HEAD_KINDS[name]), model.betas, x_T, name, 5,
                                   generator=gen(1), return_nfe=True)
        assert used == 5 and len(forwards) == 5 and torch.isfinite(x0).all()
    stats = (headed_unet / "cov_heads" / "training_stats.json").read_text()
    assert '"steps": 3' in stats and "cov_heads --steps 3" in stats and "test_loss" in stats


def test_heads_of_other_weights_are_refused(headed_unet, tmp_path):
    from diffusers import UNet2DModel

    other = tmp_path / "other"
    shutil.copytree(headed_unet, other)
    unet = UNet2DModel.from_pretrained(other)
    with torch.no_grad():
        unet.conv_out.bias.add_(0.1)
    unet.save_pretrained(other)
    with pytest.raises(ModelError, match="were trained on other weights"):
        attach_heads(load_model("diffusers", path=str(other)), "sn")


def test_cli_without_heads_is_one_line_exit_2(tiny_unet_dir, tmp_path):
    r = run_cli(f"model.path={tiny_unet_dir}", f"results_dir={tmp_path}", "sampler=sn_ddpm", "nfe=5", "num_samples=8",
                "metrics=none")  # no cov_heads/ beside this checkpoint
    err = error_lines(r)
    assert r.returncode == 2 and len(err) == 1 and "no covariance heads in" in err[0], r.stderr[-1500:]
    assert "Traceback" not in r.stderr and not (tmp_path / "leaderboard.csv").exists()


@pytest.mark.slow
def test_cli_attaches_the_heads_beside_the_checkpoint(headed_unet, tmp_path):
    r = run_cli(f"model.path={headed_unet}", f"results_dir={tmp_path}", "sampler=sn_ddpm", "nfe=5", "num_samples=8",
                "metrics=none")
    assert r.returncode == 0, r.stderr[-1500:]
    assert pd.read_csv(tmp_path / "leaderboard.csv").nfe_used.tolist() == [5]

"""spacing=elbo (Watson et al. 2021): the per-pair KL table, its DP against brute force, the samplers and the vlb NLL
on the chain it picks, and the one-line errors."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

import nfebench
from nfebench.data import load_split
from nfebench.elbo_steps import ElboError, cached_x0_errors, kl_table, optimal_path, x0_errors
from nfebench.metrics.nll import vlb_terms
from nfebench.models.gmm import GaussianMixtureVP
from nfebench.samplers import SamplerError
from nfebench.samplers.common import CLEAN, chain_grid
from nfebench.schedule import VPSchedule, linear_betas

BETAS = linear_betas()
SCHED = VPSchedule(BETAS)


def gen(seed):
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def digits_gmm():
    """A 4-component oracle of the digits train split, and its x0 errors from 60 train images (every timestep)."""
    from nfebench.models import load_model

    model = load_model("gmm", n_components=4, reg_covar=1e-2)
    m = x0_errors(model, BETAS, load_split("digits", "train"), num_images=60, batch_size=60, generator=gen(0))
    return model, m


@pytest.mark.parametrize("K", [2, 3, 4, 5])
def test_dp_equals_brute_force_on_a_small_grid(K):
    """On T = 9 with a random positive cost table, the DP's path and cost are the best of all C(T-2, K-2) paths."""
    T = 9
    rng = np.random.default_rng(K)
    L = np.where(np.arange(T)[:, None] > np.arange(T)[None, :], rng.uniform(0.1, 2.0, (T, T)), np.inf)
    path, cost = optimal_path(L, K)
    best = min((sum(L[a, b] for a, b in zip(p[:-1], p[1:])), p)
               for inner in itertools.combinations(range(T - 2, 0, -1), K - 2) for p in [(T - 1, *inner, 0)])
    assert cost == pytest.approx(best[0], rel=1e-12) and tuple(path.astype(int)) == best[1]


@pytest.mark.parametrize("variance", ["small", "large"])
def test_dp_equals_brute_force_on_a_real_schedule(variance):
    """The same on the KL table of a 12-step linear schedule with the x0 errors of a Gaussian model."""
    sched = VPSchedule(np.linspace(0.01, 0.3, 12))
    m = 64 * (1 - sched.alphas_cumprod) / (sched.alphas_cumprod * 0.25 + (1 - sched.alphas_cumprod)) * 0.25
    L = kl_table(sched, m, 64, variance)
    for K in (3, 4, 6):
        _, cost = optimal_path(L, K)
        brute = min(sum(L[a, b] for a, b in zip(p[:-1], p[1:]))
                    for inner in itertools.combinations(range(10, 0, -1), K - 2) for p in [(11, *inner, 0)])
        assert cost == pytest.approx(brute, rel=1e-12)


@pytest.mark.parametrize("variance", ["small", "large", "analytic"])
def test_kl_table_is_the_vlb_step_term(digits_gmm, variance):
    """L[t, s] with m_t is the expected KL term of the vlb for that step: vlb_terms on an explicit 3-point chain
    [999, t, s...] reports per-step KLs that match the table's entries to Monte-Carlo accuracy."""
    from nfebench.analytic_dpm import analytic_moments

    model, _ = digits_gmm
    imgs = load_split("digits", "train")[:100]
    m = x0_errors(model, BETAS, imgs, timesteps=[999, 600, 250], generator=gen(5))  # the same images as the vlb
    gamma = (analytic_moments(model, BETAS, imgs, generator=gen(0), timesteps=[999, 600, 250])
             if variance == "analytic" else None)
    L = kl_table(SCHED, m, 64, variance, gamma)
    grid = np.array([999.0, 600.0, 250.0, 0.0, CLEAN])
    res = vlb_terms(model, SCHED, imgs, 4, variances=(variance,), gamma=gamma, generator=gen(0), grid=grid)
    got = res["terms"][(variance, False)]["kl_steps"]
    want = [L[999, 600], L[600, 250], L[250, 0]]
    np.testing.assert_allclose(got, want, rtol=0.1)


def test_elbo_chain_has_the_smallest_bound_among_spacings(digits_gmm):
    """On the oracle the chain spacing=elbo picks has a lower 10-step bound (the same images and noise) than the
    uniform and quadratic chains, and both the sampler and the NLL use it."""
    model, m = digits_gmm
    test = load_split("digits", "test")[:64]
    bpd = {sp: nfebench.nll(model, BETAS, test, method="vlb", nfe=10, generator=gen(3), spacing=sp, elbo_costs=m)
           for sp in ("elbo", "uniform", "quadratic")}
    assert bpd["elbo"]["bpd"] < min(bpd["uniform"]["bpd"], bpd["quadratic"]["bpd"]), {k: v["bpd"] for k, v in
                                                                                     bpd.items()}
    grid = bpd["elbo"]["timesteps"]
    assert grid[0] == 999 and grid[-2:] == [0.0, CLEAN] and len(grid) == 11
    assert grid != list(chain_grid(SCHED, 10, "uniform"))
    x_T = torch.randn(4, 1, 8, 8, generator=gen(0), dtype=torch.float64)
    for name, extra in (("ddpm", {}), ("ddim", {}), ("analytic_ddpm", {"moments": np.ones(1000)})):
        x0, used = nfebench.sample(model, BETAS, x_T, name, 10, generator=gen(1), return_nfe=True, spacing="elbo",
                                   elbo_costs=m, **extra)
        assert used == 10 and torch.isfinite(x0).all()
    a = nfebench.sample(model, BETAS, x_T, "ddim", 10, spacing="elbo", elbo_costs=m)
    b = nfebench.sample(model, BETAS, x_T, "ddim", 10, timesteps=grid)  # the small-variance chain
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_cache_beside_the_checkpoint(tmp_path):
    g = GaussianMixtureVP([1.0], [[0.0] * 64], [np.eye(64).tolist()], BETAS, (1, 8, 8))
    imgs = load_split("digits", "train")[:8]
    kw = dict(model_digest="abc", model_dir=tmp_path / "ckpt", cache_dir=tmp_path / "user", num_images=8, batch_size=8)
    m, info = cached_x0_errors(g.eps, BETAS, imgs, **kw)
    assert not info["cached"] and info["path"].startswith(str(tmp_path / "ckpt")) and "elbo_x0_errors_" in info["path"]
    m2, info2 = cached_x0_errors(g.eps, BETAS, imgs, **kw)
    assert info2["cached"] and np.array_equal(m, m2)
    x0 = nfebench.sample(g.eps, BETAS, torch.zeros(2, 1, 8, 8, dtype=torch.float64), "ddpm", 5, spacing="elbo",
                         elbo_costs=info["path"], generator=gen(0))
    assert torch.isfinite(x0).all()


@pytest.mark.parametrize("opts,match", [
    ({"spacing": "elbo"}, "spacing='elbo' needs the model's per-timestep x0 errors: pass elbo_costs=PATH"),
    ({"spacing": "elbo", "elbo_costs": np.ones(10)}, "elbo_costs have 10 values but the schedule has T=1000"),
    ({"spacing": "elbo", "elbo_costs": "/no/such.npz"}, "cannot read elbo_costs '/no/such.npz'"),
])
def test_bad_elbo_input_is_one_line(opts, match):
    g = GaussianMixtureVP([1.0], [[0.0, 0.0]], [np.eye(2).tolist()], BETAS, (2,))
    with pytest.raises(SamplerError, match=match):
        nfebench.sample(g.eps, BETAS, torch.zeros(2, 2, dtype=torch.float64), "ddpm", 5, **opts)
    with pytest.raises(SamplerError, match="unknown spacing 'elbo'"):  # only the chain samplers take it
        nfebench.sample(g.eps, BETAS, torch.zeros(2, 2, dtype=torch.float64), "dpm", 5, spacing="elbo")
    with pytest.raises(ElboError, match="needs 1 <= nfe <= T=4"):
        optimal_path(np.zeros((4, 4)), 5)


@pytest.mark.slow
def test_cli_estimates_the_costs_once_and_caches_them(tmp_path, monkeypatch):
    import pandas as pd

    from .test_cli import run_cli

    monkeypatch.setenv("NFEBENCH_CACHE", str(tmp_path / "cache"))  # the oracle has no checkpoint dir: user cache
    args = ["model=gmm_digits", "model.n_components=2", f"results_dir={tmp_path / 'res'}", "sampler=ddim",
            "sampler.spacing=elbo", "num_samples=4", "metrics=none"]
    r = run_cli(*args, "nfe=5")
    assert r.returncode == 0, r.stderr[-1500:]
    assert "ELBO step costs: estimated" in r.stdout and "not counted in NFE" in r.stdout
    assert len(list((tmp_path / "cache").rglob("elbo_x0_errors_*.npz"))) == 1
    r = run_cli(*args, "nfe=6")
    assert r.returncode == 0 and "ELBO step costs: cached" in r.stdout
    assert pd.read_csv(tmp_path / "res" / "leaderboard.csv").nfe_used.tolist() == [5, 6]

"""The first three samplers through the public API: budgets, options, batch-size independence."""

import numpy as np
import pytest
import torch

import nfebench
from nfebench.models import load_model
from nfebench.run import generate, sample_seeds, validate
from nfebench.samplers import SAMPLERS, PerSampleNoise, SamplerError
from nfebench.samplers.analytic import HEAD_KINDS
from nfebench.schedule import linear_betas


def zero_eps(x, t):
    return torch.zeros_like(x)


@pytest.mark.parametrize("nfe", [5, 10, 20, 50])
@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpm"])
def test_budget_is_spent_exactly(sampler, nfe):
    calls = []

    def eps(x, t):
        calls.append(t)
        assert t.shape == (x.shape[0],) and t.dtype == x.dtype
        assert float(t.min()) >= 0 and float(t.max()) <= 999
        return torch.zeros_like(x)

    x, used = nfebench.sample(eps, linear_betas(), torch.randn(3, 1, 8, 8), sampler, nfe, return_nfe=True)
    assert used == nfe == len(calls)
    assert x.shape == (3, 1, 8, 8)


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_every_registered_sampler_stays_within_budget(sampler):
    for nfe in (5, 10, 20, 50):
        spec = SAMPLERS[sampler]
        if nfe < spec.min_nfe:
            continue
        # Analytic-DPM needs its moments Gamma_n: any length-T array will do for counting evaluations; SN/NPR need a
        # covariance head's output beside eps (here a constant second moment)
        opts = {"moments": np.ones(1000)} if sampler.startswith("analytic_") else {}
        model = (lambda x, t: (zero_eps(x, t), torch.ones_like(x))) if sampler in HEAD_KINDS else zero_eps
        try:
            _, used = nfebench.sample(model, linear_betas(), torch.randn(2, 1, 8, 8, dtype=torch.float64),
                                      sampler, nfe, return_nfe=True, **opts)
        except SamplerError as e:  # an adaptive sampler's cap reached; restart's default intervals need nfe >= 11
            assert sampler in ("rk45", "ggf", "restart"), e
            assert "needed more than" in str(e) or "below the minimum" in str(e)
            continue
        assert used <= nfe


def test_unknown_sampler_and_option_and_bad_nfe_are_errors():
    x = torch.randn(1, 1, 8, 8)
    with pytest.raises(SamplerError, match="unknown sampler 'dmp'; allowed: .*dpm"):
        nfebench.sample(zero_eps, linear_betas(), x, "dmp", 10)
    with pytest.raises(SamplerError, match="unknown option 'ordr' for sampler 'dpm'; allowed: .*order"):
        nfebench.sample(zero_eps, linear_betas(), x, "dpm", 10, ordr=2)
    with pytest.raises(SamplerError, match="nfe must be a positive integer, got 2.5"):
        nfebench.sample(zero_eps, linear_betas(), x, "dpm", 2.5)
    with pytest.raises(SamplerError, match="nfe=0 is below the minimum"):
        nfebench.sample(zero_eps, linear_betas(), x, "dpm", 0)
    with pytest.raises(SamplerError, match="eta must be >= 0, got -0.1"):
        nfebench.sample(zero_eps, linear_betas(), x, "ddim", 10, eta=-0.1)


def test_dpm_fast_orders_follow_the_paper():
    from nfebench.samplers.dpm_solver import singlestep_orders

    assert singlestep_orders(10, 3) == [3, 3, 3, 1]
    assert singlestep_orders(11, 3) == [3, 3, 3, 2]
    assert singlestep_orders(12, 3) == [3, 3, 3, 2, 1]
    assert singlestep_orders(5, 2) == [2, 2, 1]


def test_per_sample_noise_does_not_depend_on_the_batch():
    a = PerSampleNoise([5, 6, 7]).randn((1, 8, 8))
    b = PerSampleNoise([6]).randn((1, 8, 8))
    assert torch.equal(a[1], b[0])


@pytest.mark.parametrize("sampler", [{"name": "dpm"}, {"name": "ddpm"}, {"name": "ddim", "eta": 0.5}])
def test_samples_are_identical_for_batch_sizes_7_and_64(tiny_unet_dir, sampler):
    model = load_model("diffusers", path=str(tiny_unet_dir))
    base = dict(model={"kind": "diffusers", "name": "tiny"}, dataset={"name": "digits"}, metrics={}, nfe=5,
                num_samples=64, seed=3, device="cpu", sampler=sampler)
    seeds = sample_seeds(3, 64)
    s7, n7, _ = generate(model, validate({**base, "batch_size": 7}), seeds, progress=False)
    s64, n64, _ = generate(model, validate({**base, "batch_size": 64}), seeds, progress=False)
    assert n7 == n64 == 5
    assert torch.equal(s7, s64)


def test_ddim_eta_zero_is_deterministic_and_eta_positive_uses_the_generator():
    x = torch.randn(4, 1, 8, 8)
    eps = lambda x, t: 0.1 * x  # noqa: E731
    a = nfebench.sample(eps, linear_betas(), x, "ddim", 10, generator=torch.Generator().manual_seed(0))
    b = nfebench.sample(eps, linear_betas(), x, "ddim", 10, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    c = nfebench.sample(eps, linear_betas(), x, "ddim", 10, eta=1.0, generator=torch.Generator().manual_seed(0))
    d = nfebench.sample(eps, linear_betas(), x, "ddim", 10, eta=1.0, generator=torch.Generator().manual_seed(1))
    assert not torch.equal(c, d)


def test_ddim_on_a_gaussian_follows_its_closed_form_and_contracts():
    """For data N(mu, b^2) the exact eps is sigma (x - alpha mu) / (alpha^2 b^2 + sigma^2), and one DDIM step s -> t
    multiplies x - alpha mu by (alpha_t alpha_s b^2 + sigma_t sigma_s) / (alpha_s^2 b^2 + sigma_s^2). By
    Cauchy-Schwarz that is at most the exact ODE's ratio, so DDIM's error contracts the spread
    (docs/dpm_fast_digits.md, studies/spread_bias.py); DPM-Solver-fast contracts less and converges to the exact map."""
    from nfebench.samplers.common import alpha_sigma, chain_grid
    from nfebench.schedule import VPSchedule

    sched, mu, b = VPSchedule(linear_betas()), 0.3, 0.1
    var = lambda a, s: a * a * b * b + s * s  # noqa: E731

    def eps(x, t):
        a, s = float(sched.alpha(float(t[0]))), float(sched.sigma(float(t[0])))
        return s * (x - a * mu) / var(a, s)

    x_T = torch.tensor([[[[1.7]]], [[[-0.4]]]], dtype=torch.float64)
    a_T, s_T = alpha_sigma(sched, float(sched.t_max))
    factor = 1.0
    grid = chain_grid(sched, 10, "uniform")
    for s, t in zip(grid[:-1], grid[1:]):
        (a_s, s_s), (a_t, s_t) = alpha_sigma(sched, s), alpha_sigma(sched, t)
        factor *= (a_t * a_s * b * b + s_t * s_s) / var(a_s, s_s)
    ddim = nfebench.sample(eps, sched, x_T, "ddim", 10)
    torch.testing.assert_close(ddim, mu + factor * (x_T - a_T * mu), rtol=1e-10, atol=1e-12)

    exact = b / var(a_T, s_T) ** 0.5  # the ODE maps x_T - alpha_T mu to the clean end with this ratio
    dpm10 = (nfebench.sample(eps, sched, x_T, "dpm", 10) - mu) / (x_T - a_T * mu)
    dpm50 = (nfebench.sample(eps, sched, x_T, "dpm", 50) - mu) / (x_T - a_T * mu)
    assert factor < 0.5 * exact  # DDIM at 10 NFE keeps under half the spread at b = 0.1
    assert (factor < dpm10).all() and (dpm10 < exact).all()
    # dpm ends at tau = 0 (sigma 0.01), not at the clean end: compare with the exact ratio there
    a_0, s_0 = alpha_sigma(sched, 0.0)
    torch.testing.assert_close(dpm50, torch.full_like(dpm50, var(a_0, s_0) ** 0.5 / var(a_T, s_T) ** 0.5), rtol=1e-2,
                               atol=0)

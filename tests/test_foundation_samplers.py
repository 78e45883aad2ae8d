"""The first three samplers through the public API: budgets, options, batch-size independence."""

import numpy as np
import pytest
import torch

import nfebench
from nfebench.models import load_model
from nfebench.run import generate, sample_seeds, validate
from nfebench.samplers import SAMPLERS, PerSampleNoise, SamplerError
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
        # Analytic-DPM needs its moments Gamma_n: any length-T array will do for counting evaluations
        opts = {"moments": np.ones(1000)} if sampler.startswith("analytic_") else {}
        _, used = nfebench.sample(zero_eps, linear_betas(), torch.randn(2, 1, 8, 8, dtype=torch.float64),
                                  sampler, nfe, return_nfe=True, **opts)
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

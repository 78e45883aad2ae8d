"""Every sampler: budget accounting, option handling, determinism; the stochastic ones: sample statistics."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pathlib  # noqa: E402

import numpy as np
import pytest  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

from nfebench import api  # noqa: E402
from nfebench.models.gmm import GaussianMixtureVP  # noqa: E402
from nfebench.samplers import SAMPLERS, SamplerError  # noqa: E402
from nfebench.samplers.analytic import HEAD_KINDS  # noqa: E402
from nfebench.samplers.common import Noise  # noqa: E402
from nfebench.schedule import TUNE_SPACINGS as SPACINGS, linear_betas  # noqa: E402

torch.set_num_threads(1)
BETAS = linear_betas()
NFES = [5, 10, 20, 50, 100]
ROOT = pathlib.Path(__file__).resolve().parents[1]


ADAPTIVE = ("rk45", "ggf")  # nfe is a cap (dpm's method=adaptive: tests/test_stochastic_adaptive.py)
MIN_WITH_DEFAULTS = {"restart": 11}  # 2 main Heun steps + the default restarts' 8
MAX_WITH_DEFAULTS = {"lcm": 50, "tcd": 50}  # LCM's grid has original_steps (50) levels to choose from


def expected_nfe(name: str, nfe: int) -> int:
    """What each algorithm can spend within a budget: everything, except the Heun-based samplers (a Heun pass to
    sigma = 0 spends 2N - 1, restart 2N - 1 + 8 by default: odd; so do the two-evaluation DPM++ 2S a and SDE)."""
    odd = ("heun", "edm_stochastic", "restart", "dpmpp_2s_ancestral", "dpmpp_sde", "dpm_2")
    return nfe - (1 - nfe % 2) if name in odd else nfe


class Counting:
    """A cheap smooth eps model (a 2-component mixture in 4 dims) that counts its own calls."""

    def __init__(self, heads=False):
        self.gmm = GaussianMixtureVP([0.4, 0.6], [[0.3, -0.2, 0.1, 0.0], [-0.4, 0.1, 0.2, 0.3]],
                                     [(0.05 * torch.eye(4)).tolist(), (0.02 * torch.eye(4)).tolist()], BETAS, (4,))
        self.calls, self.heads = 0, heads

    def __call__(self, x, t):
        self.calls += 1
        assert t.shape == (x.shape[0],) and float(t.min()) >= 0 and float(t.max()) <= 999
        if self.heads:  # a covariance head's output from the same evaluation (SN/NPR): the exact E[eps^2 | x]
            return self.gmm.eps_moments(x, t)
        return self.gmm.eps(x, t)


def counting(name) -> Counting:
    """The counting model, with covariance heads for the samplers that need them (SN/NPR)."""
    return Counting(heads=name in HEAD_KINDS)


class NoNoise(Noise):
    def randn_like(self, x):
        raise AssertionError("a deterministic sampler drew noise")


def x_T(n=3, seed=0):
    return torch.randn(n, 4, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def inputs(name) -> dict:
    """Options a sampler cannot run without: Analytic-DPM's moments (any length-T array will do here)."""
    return {"moments": np.ones(len(BETAS))} if name.startswith("analytic_") else {}


@pytest.mark.parametrize("nfe", NFES)
@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_budget(name, nfe):
    """nfe_used <= nfe, exactly nfe where the algorithm allows; below the minimum a clear error."""
    model = counting(name)
    spec = SAMPLERS[name]
    if nfe < spec.min_nfe:
        with pytest.raises(SamplerError, match=f"nfe={nfe} is below the minimum of sampler '{name}': {spec.min_nfe}"):
            api.sample(model, BETAS, x_T(), name, nfe, **inputs(name))
        assert model.calls == 0
        return
    if nfe < MIN_WITH_DEFAULTS.get(name, 0):
        with pytest.raises(SamplerError, match=f"nfe={nfe} is below the minimum of sampler '{name}'"):
            api.sample(model, BETAS, x_T(), name, nfe)
        assert model.calls == 0
        return
    if nfe > MAX_WITH_DEFAULTS.get(name, nfe):
        with pytest.raises(SamplerError, match=f"nfe={nfe} levels on LCM's grid of original_steps=50"):
            api.sample(model, BETAS, x_T(), name, nfe, **inputs(name))
        assert model.calls == 0
        return
    if name in ADAPTIVE:  # a cap: spent what the controller needed, or an error once the cap is reached
        try:
            x0, used = api.sample(model, BETAS, x_T(), name, nfe, return_nfe=True,
                                  generator=torch.Generator().manual_seed(0))
        except SamplerError as e:
            assert f"{name} needed more than nfe={nfe} evaluations" in str(e) and model.calls == nfe
            return
        assert used == model.calls <= nfe
    else:
        x0, used = api.sample(model, BETAS, x_T(), name, nfe, return_nfe=True,
                              generator=torch.Generator().manual_seed(0), **inputs(name))
        assert used == model.calls == expected_nfe(name, nfe)
    assert x0.shape == (3, 4) and torch.isfinite(x0).all()


def test_minimums():
    assert SAMPLERS["pndm"].min_nfe == 12  # three Runge-Kutta warm-up steps of 4 evaluations
    assert SAMPLERS["plms"].min_nfe == 2
    assert SAMPLERS["fastdpm"].min_nfe == 2  # its schedules need a first and a last noise level
    assert all(SAMPLERS[n].min_nfe == 1 for n in SAMPLERS if n not in ("pndm", "plms", "fastdpm"))


@pytest.mark.parametrize("name", sorted(n for n in SAMPLERS if not SAMPLERS[n].stochastic))
def test_deterministic_samplers_draw_no_noise(name):
    nfe = 400 if name in ADAPTIVE else 20
    a = api.sample(Counting(), BETAS, x_T(), name, nfe, generator=NoNoise())
    b = api.sample(Counting(), BETAS, x_T(), name, nfe, generator=NoNoise())
    assert torch.equal(a, b)


@pytest.mark.parametrize("name", sorted(n for n in SAMPLERS if "spacing" in SAMPLERS[n].options))
@pytest.mark.parametrize("spacing", SPACINGS)
def test_every_spacing(name, spacing):
    model = counting(name)
    x0, used = api.sample(model, BETAS, x_T(), name, 20, return_nfe=True, spacing=spacing,
                          generator=torch.Generator().manual_seed(0), **inputs(name))
    assert used == expected_nfe(name, 20) and torch.isfinite(x0).all()


@pytest.mark.parametrize("name,opts,match", [
    ("dpm", {"method": "adams"}, "unknown method"), ("dpm", {"order": 4}, "order must be 1, 2 or 3"),
    ("dpmpp", {"variant": "3S"}, "unknown variant"), ("unipc", {"variant": "bh3"}, "unknown variant"),
    ("unipc", {"order": 4}, "order must be"), ("deis", {"basis": "rho"}, "unknown basis"),
    ("deis", {"order": 5}, "order must be"), ("heun", {"spacing": "cosine"}, "unknown spacing"),
    ("euler", {"rho": 7}, "unknown option 'rho'"), ("dpm", {"timesteps": [999, 500, 0]}, "takes"),
    ("pndm", {"timesteps": [999.0, 0.0, -1.0]}, "takes"),
])
def test_bad_options(name, opts, match):
    with pytest.raises(SamplerError, match=match):
        api.sample(Counting(), BETAS, x_T(), name, 20, **opts)


def test_heun_explicit_grid_over_budget():
    """An explicit grid whose evaluations exceed the budget is refused before any evaluation."""
    model = Counting()
    with pytest.raises(SamplerError, match="above nfe"):
        api.sample(model, BETAS, x_T(), "heun", 5, timesteps=[999.0, 500.0, 100.0, 0.0])  # 6 evaluations
    assert model.calls == 0


def test_multistep_and_singlestep_grids_are_explicit():
    """dpm singlestep accepts its outer grid or every evaluation point; the two agree when the points coincide."""
    from nfebench.schedule import VPSchedule

    sched = VPSchedule(BETAS)
    outer = sched.timesteps(5, "logsnr")  # order 2 at nfe=10: 5 steps, midpoints at lambda midpoints
    lam = sched.lambda_(outer)
    mids = sched.tau_from_lambda(0.5 * (lam[:-1] + lam[1:]))
    full = [v for pair in zip(outer[:-1], mids) for v in pair] + [0.0]
    a = api.sample(Counting(), BETAS, x_T(), "dpm", 10, order=2, timesteps=outer.tolist())
    b = api.sample(Counting(), BETAS, x_T(), "dpm", 10, order=2, timesteps=full)
    assert torch.allclose(a, b, rtol=1e-10, atol=1e-12)


# --- stochastic samplers: mean and covariance of the oracle -------------------------------------------------------

def _mixture_2d():
    return GaussianMixtureVP([0.3, 0.7], [[-0.5, 0.2], [0.4, -0.3]],
                             [[[0.02, 0.01], [0.01, 0.03]], [[0.05, -0.02], [-0.02, 0.02]]], BETAS, (2,))


def _z_scores(x, gmm):
    """Largest |z| of the sample mean and of the sample second central moments against the exact ones."""
    m0, c0 = gmm.mean_cov()
    n, d = x.shape[0], x - m0
    zm = d.mean(0) / (c0.diagonal() / n).sqrt()
    i, j = torch.triu_indices(2, 2)
    y = d[:, i] * d[:, j]
    zc = (y.mean(0) - c0[i, j]) / (y.std(0) / n**0.5)
    return float(zm.abs().max()), float(zc.abs().max())


@pytest.mark.parametrize("name,opts", [("ddpm", {"variance": "small"}), ("ddpm", {"variance": "large"}),
                                       ("ddim", {"eta": 1.0}), ("ddim", {"eta": 0.5})])
def test_stochastic_samplers_match_oracle_moments(name, opts):
    """At the full 1000-step chain, 8000 samples have the oracle's mean and covariance within sampling error
    (|z| < 4.5 on each of 2 means and 3 second moments); the same check rejects the 10-step chain."""
    gmm = _mixture_2d()
    n = 8000
    xt = torch.randn(n, 2, generator=torch.Generator().manual_seed(10), dtype=torch.float64)
    x = api.sample(gmm.eps, BETAS, xt, name, 1000, generator=torch.Generator().manual_seed(11), **opts)
    zm, zc = _z_scores(x, gmm)
    assert zm < 4.5 and zc < 4.5, (zm, zc)
    x = api.sample(gmm.eps, BETAS, xt, name, 10, generator=torch.Generator().manual_seed(11), **opts)
    assert max(_z_scores(x, gmm)) > 4.5  # the check can fail: a coarse chain is visibly biased


def test_stochastic_reproducible_with_generator():
    a = api.sample(Counting(), BETAS, x_T(), "ddpm", 20, generator=torch.Generator().manual_seed(3))
    b = api.sample(Counting(), BETAS, x_T(), "ddpm", 20, generator=torch.Generator().manual_seed(3))
    c = api.sample(Counting(), BETAS, x_T(), "ddpm", 20, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


# --- configs ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_every_sampler_has_a_config_listing_its_options(name):
    path = ROOT / "conf" / "sampler" / f"{name}.yaml"
    if not path.exists() and name in ("analytic_ddpm", "analytic_ddim"):
        pytest.skip("configured by the NLL work")
    cfg = yaml.safe_load(path.read_text())
    assert cfg.pop("name") == name
    if cfg.get("spacing") == "default":  # schedule-dependent (issue 26): only for paper grids in the model's time
        assert SAMPLERS[name].options["spacing"] in ("uniform", "quadratic"), name
        cfg["spacing"] = SAMPLERS[name].options["spacing"]
    assert cfg == SAMPLERS[name].options

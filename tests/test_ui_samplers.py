"""Issue 28: the ancestral and SDE samplers users run (euler_ancestral, dpmpp_2s_ancestral, dpmpp_sde, dpmpp_2m_sde,
dpmpp_3m_sde, er_sde), their noise (gaussian, brownian) and the options every sampler takes (sigmas, ays_model):
conformance with k-diffusion 0.1.1.post1 (1e-9, float64) and diffusers (1e-5), ER-SDE against a loop written from
the paper, NFE, batch-size independence, the Brownian tree, and the one-line errors."""

from __future__ import annotations

import math
import os
import sys

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from nfebench import api  # noqa: E402
from nfebench.samplers import SAMPLERS, SamplerError  # noqa: E402
from nfebench.samplers.brownian import BrownianTree, seed_keys  # noqa: E402
from nfebench.samplers.common import PerSampleNoise  # noqa: E402
from nfebench.samplers.edm import edm_grid  # noqa: E402
from nfebench.schedules import Discrete, linear_betas  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "studies"))
import weak_convergence as W  # noqa: E402

from tests.kdiffusion_ref import kdiffusion_sampling  # noqa: E402

torch.set_num_threads(1)
SCHED = Discrete(linear_betas())
SEEDS = list(range(100, 106))
NEW = ("euler_ancestral", "dpmpp_2s_ancestral", "dpmpp_sde", "dpmpp_2m_sde", "dpmpp_3m_sde", "er_sde")


def x_T(n=6, seed=0):
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def grid_sigmas(n_points, spacing="karras"):
    taus = edm_grid(SCHED, n_points, spacing, None)
    return taus, [float(SCHED.edm_sigma(t)) for t in taus[:-1]] + [0.0]


def kd_model(eps_fn):
    """k-diffusion's denoiser D(x_hat, sigma) = x_hat - sigma eps(alpha x_hat, tau(sigma)) on our schedule."""
    def model(xh, sigma):
        s = float(sigma[0])
        tau = float(SCHED.tau_from_edm_sigma(s))
        return xh - s * eps_fn(xh / math.sqrt(1 + s * s), torch.full((xh.shape[0],), tau, dtype=xh.dtype))
    return model


def rel(a, b):
    return float((a - b).abs().max() / b.abs().max())


# name, our options, k-diffusion function, its kwargs, nfe, evaluation points
KD_CASES = [
    ("euler_ancestral", {}, "sample_euler_ancestral", {}, 10, 10),
    ("euler_ancestral", {"eta": 0.5, "s_noise": 0.9}, "sample_euler_ancestral", {"eta": 0.5, "s_noise": 0.9}, 10, 10),
    ("dpmpp_2s_ancestral", {}, "sample_dpmpp_2s_ancestral", {}, 11, 6),
    ("dpmpp_2s_ancestral", {"eta": 0.7}, "sample_dpmpp_2s_ancestral", {"eta": 0.7}, 11, 6),
    ("dpmpp_sde", {}, "sample_dpmpp_sde", {}, 11, 6),
    ("dpmpp_sde", {"r": 1 / 3, "eta": 0.5}, "sample_dpmpp_sde", {"r": 1 / 3, "eta": 0.5}, 11, 6),
    ("dpmpp_2m_sde", {}, "sample_dpmpp_2m_sde", {}, 10, 10),
    ("dpmpp_2m_sde", {"solver_type": "heun", "eta": 0.6}, "sample_dpmpp_2m_sde", {"solver_type": "heun", "eta": 0.6},
     10, 10),
    ("dpmpp_2m_sde", {"eta": 0.0}, "sample_dpmpp_2m", {}, 10, 10),  # "DPM++ 2M" (Karras): the eta = 0 twin
    ("dpmpp_3m_sde", {}, "sample_dpmpp_3m_sde", {}, 10, 10),
    ("dpmpp_3m_sde", {"eta": 0.0, "spacing": "exponential"}, "sample_dpmpp_3m_sde", {"eta": 0.0}, 12, 12),
    ("dpm_2", {}, "sample_dpm_2", {}, 11, 6),  # "DPM2"
    ("lms", {}, "sample_lms", {}, 10, 10),  # "LMS", order 4
    ("lms", {"order": 2, "spacing": "uniform"}, "sample_lms", {"order": 2}, 10, 10),
]


@pytest.mark.parametrize("name,opts,kd_fn,kd_opts,nfe,points", KD_CASES,
                         ids=[f"{c[0]}-{c[2]}-{c[1]}" for c in KD_CASES])
def test_conformance_with_k_diffusion(name, opts, kd_fn, kd_opts, nfe, points):
    """Same sigmas, same noise (the per-sample generators, in the order k-diffusion asks for it), float64: the
    samples agree to 1e-9 relative, and the NFE is k-diffusion's count of model calls."""
    K = kdiffusion_sampling()
    gmm = W.mixture()
    xt = x_T()
    ours, used = api.sample(gmm.eps, SCHED, xt, name, nfe, generator=PerSampleNoise(SEEDS), return_nfe=True, **opts)
    taus, sig = grid_sigmas(points, opts.get("spacing", "karras"))
    calls = []
    model = kd_model(gmm.eps)
    ns = PerSampleNoise(SEEDS)
    x0 = xt * math.sqrt(1 + sig[0] ** 2)
    deterministic = ("sample_dpmpp_2m", "sample_dpm_2", "sample_lms")
    kw = {} if kd_fn in deterministic else {"noise_sampler": lambda s, sn: ns.randn_like(x0)}
    ref = getattr(K, kd_fn)(lambda x, s: calls.append(1) or model(x, s), x0, torch.tensor(sig, dtype=torch.float64),
                            disable=True, **kw, **kd_opts)
    assert used == len(calls) <= nfe
    assert rel(ours, ref) < 1e-9, rel(ours, ref)


def test_dpmpp_2m_sde_equals_diffusers_sde_dpmsolverpp():
    """dpmpp_2m_sde (eta 1, midpoint) is diffusers' DPMSolverMultistepScheduler(algorithm_type="sde-dpmsolver++") on
    the same integer timesteps ending at sigma = 0, with the same noise passed as variance_noise: 1e-5."""
    from diffusers import DPMSolverMultistepScheduler

    gmm = W.mixture()
    xt = x_T()
    ts = [999, 850, 700, 560, 430, 320, 220, 140, 70, 20]
    ours = api.sample(gmm.eps, SCHED, xt, "dpmpp_2m_sde", len(ts), generator=PerSampleNoise(SEEDS),
                      timesteps=ts + [-1])
    sch = DPMSolverMultistepScheduler(trained_betas=linear_betas().tolist(), algorithm_type="sde-dpmsolver++",
                                      solver_order=2, final_sigmas_type="zero")
    sch.set_timesteps(timesteps=ts)
    ns, x = PerSampleNoise(SEEDS), xt.clone()
    for i, t in enumerate(sch.timesteps):
        z = ns.randn_like(x) if i < len(ts) - 1 else torch.zeros_like(x)
        e = gmm.eps(x, torch.full((x.shape[0],), float(t), dtype=x.dtype))
        x = sch.step(e, t, x, variance_noise=z).prev_sample
    assert rel(ours, x) < 1e-5, rel(ours, x)


def er_sde_reference(eps_fn, sched, xt, taus, zs, phi, dphi):
    """ER-SDE-Solver-3 (Cui et al. 2023, Alg. 3 in VE form), written from the paper: x_t = (phi_t/phi_s) x_s +
    phi_t int phi'/phi^2 D dsigma + noise, D expanded to second order, integrals by scipy quad."""
    from scipy.integrate import quad

    sig = [float(sched.edm_sigma(t)) for t in taus[:-1]] + [0.0]
    x = xt * math.sqrt(1 + sig[0] ** 2)
    Ds = []
    for i in range(len(sig) - 1):
        s, t = sig[i], sig[i + 1]
        Ds.append(x - s * eps_fn(x / math.sqrt(1 + s * s), torch.full((x.shape[0],), float(taus[i]),
                                                                       dtype=x.dtype)))
        if t == 0:
            return Ds[-1]
        x_new = phi(t) / phi(s) * x + (1 - phi(t) / phi(s)) * Ds[-1]
        if i >= 1:  # D' by the divided difference, then the integral of phi'/phi^2 (sigma - s)
            d1 = (Ds[-1] - Ds[-2]) / (s - sig[i - 1])
            c1 = phi(t) * quad(lambda u: (u - s) * dphi(u) / phi(u) ** 2, t, s, epsabs=1e-14, epsrel=1e-12)[0]
            x_new = x_new + c1 * d1
        if i >= 2:
            d1p = (Ds[-2] - Ds[-3]) / (sig[i - 1] - sig[i - 2])
            d2 = (d1 - d1p) / ((s - sig[i - 2]) / 2)
            c2 = phi(t) * quad(lambda u: (u - s) ** 2 / 2 * dphi(u) / phi(u) ** 2, t, s, epsabs=1e-14,
                               epsrel=1e-12)[0]
            x_new = x_new + c2 * d2
        x = x_new + math.sqrt(max(t * t - s * s * (phi(t) / phi(s)) ** 2, 0.0)) * zs[i]
    return x


DPHI = {"er_sde": lambda u: math.exp(u**0.3) + 10 + 0.3 * u**0.3 * math.exp(u**0.3), "reverse_sde": lambda u: 2 * u}


@pytest.mark.parametrize("noise_scale", ["er_sde", "reverse_sde"])
def test_er_sde_is_the_papers_solver(noise_scale):
    from nfebench.samplers.er_sde import NOISE_SCALES

    gmm = W.mixture()
    xt = x_T()
    ours = api.sample(gmm.eps, SCHED, xt, "er_sde", 10, generator=PerSampleNoise(SEEDS), noise_scale=noise_scale)
    taus, _ = grid_sigmas(10)
    ns = PerSampleNoise(SEEDS)
    zs = [ns.randn_like(xt) for _ in range(9)]
    ref = er_sde_reference(gmm.eps, SCHED, xt, taus, zs, lambda u: float(NOISE_SCALES[noise_scale](u)),
                           DPHI[noise_scale])
    assert rel(ours, ref) < 1e-9, rel(ours, ref)


@pytest.mark.parametrize("name", NEW)
def test_nfe_and_batch_size_independence(name):
    """The budget is spent as documented (2N - 1 for the two-evaluation samplers), and a sample does not depend on
    the batch it ran in, with Gaussian and with Brownian noise."""
    gmm = W.mixture()
    xt = x_T(6)
    for noise in ("gaussian", "brownian"):
        a, used = api.sample(gmm.eps, SCHED, xt, name, 9, generator=PerSampleNoise(SEEDS), return_nfe=True,
                             noise_sampler=noise)
        b = api.sample(gmm.eps, SCHED, xt[2:4], name, 9, generator=PerSampleNoise(SEEDS[2:4]), noise_sampler=noise)
        assert used == 9 and torch.equal(a[2:4], b)
    _, used = api.sample(gmm.eps, SCHED, xt, name, 10, generator=PerSampleNoise(SEEDS), return_nfe=True)
    assert used == (9 if name in ("dpmpp_2s_ancestral", "dpmpp_sde") else 10)


def test_brownian_tree_is_one_path_with_brownian_increments():
    """Increments over a refined grid sum to the coarse increment exactly (one path); disjoint increments are
    independent N(0, dt); a sample's path depends on its seed alone."""
    keys = seed_keys(range(4000))
    tree = BrownianTree(keys, (1,), 0.01, 80.0)
    w = lambda t: tree.w(t)[:, 0]  # noqa: E731
    pts = [80.0, 20.0, 7.5, 1.0, 0.2]
    fine = sum(w(a) - w(b) for a, b in zip(pts[:-1], pts[1:]))
    assert torch.allclose(fine, w(80.0) - w(0.2), atol=1e-12)
    inc = torch.stack([(w(a) - w(b)) / math.sqrt(a - b) for a, b in zip(pts[:-1], pts[1:])])
    assert (inc.mean(1).abs() < 4.5 / math.sqrt(4000)).all()
    assert ((inc.var(1) - 1).abs() < 4.5 * math.sqrt(2 / 4000)).all()
    corr = torch.corrcoef(inc)
    assert (corr - torch.eye(4)).abs().max() < 4.5 / math.sqrt(4000)
    other = BrownianTree(seed_keys([5, 6]), (1,), 0.01, 80.0)
    assert torch.equal(other.w(7.5)[0], tree.w(7.5)[5])


# --- errors ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,opts,match", [
    ("euler_ancestral", {"eta": -0.1}, "eta must be a number >= 0, got -0.1"),
    ("dpmpp_2m_sde", {"s_noise": -1}, "s_noise must be a number >= 0"),
    ("dpmpp_2m_sde", {"solver_type": "rk4"}, "unknown solver_type 'rk4'; allowed: midpoint, heun"),
    ("dpmpp_sde", {"r": 1.5}, r"r must be in \(0, 1\], got 1.5"),
    ("er_sde", {"order": 4}, "order must be 1, 2 or 3, got 4"),
    ("er_sde", {"noise_scale": "x"}, "unknown noise_scale 'x'; allowed: er_sde, ode, reverse_sde"),
    ("dpmpp_2m_sde", {"noise_sampler": "pink"}, "unknown noise_sampler 'pink'; allowed: gaussian, brownian"),
    ("ddim", {"noise_sampler": "brownian"}, "unknown option 'noise_sampler' for sampler 'ddim'"),
    ("dpmpp_2m_sde", {"sigmas": [14.6, 20.0, 0.0]}, "sigmas must be a strictly decreasing list"),
    ("dpmpp_2m_sde", {"sigmas": [500.0, 20.0, 0.0]}, "sigmas 500 .. 20 leave the schedule's range"),
    ("dpmpp_2m_sde", {"sigmas": [100.0, 1.0, 0.001, 0.0]}, "leave the schedule's range"),
    ("dpmpp_2m_sde", {"spacing": "ays"}, "the AYS list 'sd15' .* is not for this schedule"),
    ("dpmpp_2m_sde", {"spacing": "ays", "ays_model": "sd3"}, "unknown ays_model 'sd3'; allowed: sd15, sdxl, svd"),
    ("dpmpp_2m_sde", {"ays_model": "sdxl"}, "ays_model applies to spacing=ays"),
    ("dpmpp_2m_sde", {"spacing": "betta"}, "unknown spacing 'betta'"),
])
def test_bad_options_are_one_line_errors(name, opts, match):
    with pytest.raises((SamplerError, ValueError), match=match) as e:
        api.sample(W.mixture().eps, SCHED, x_T(2), name, 10, generator=PerSampleNoise(SEEDS[:2]), **opts)
    assert "\n" not in str(e.value)


def test_every_new_sampler_is_registered_as_stochastic_with_brownian_noise():
    for name in NEW + ("sa_solver",):
        assert SAMPLERS[name].stochastic and SAMPLERS[name].options["noise_sampler"] == "gaussian"


@pytest.mark.parametrize("p,c,tau", [(2, 2, [200, 800]), (3, 3, [200, 800]), (1, 1, 1.0), (2, 3, 0.0),
                                     (3, 2, [300, 900, 0.7])])
def test_sa_solver_equals_diffusers(monkeypatch, p, c, tau):
    """sa_solver is diffusers' SASolverScheduler (data prediction) on its own linspace grid ending at tau = 0, with
    the same noise (diffusers' per-step draw replaced by ours, zero where tau is 0): 1e-5 (its sigmas are float32)."""
    import diffusers.schedulers.scheduling_sasolver as S
    from diffusers import SASolverScheduler

    from nfebench.samplers.sa_solver import tau_function

    gmm = W.mixture()
    xt = x_T()
    steps = 12
    tf = tau_function(tau)
    sch = SASolverScheduler(trained_betas=linear_betas().tolist(), predictor_order=p, corrector_order=c,
                            tau_func=tf, algorithm_type="data_prediction")
    sch.set_timesteps(steps)
    ts = [int(t) for t in sch.timesteps] + [0]
    ours = api.sample(gmm.eps, SCHED, xt, "sa_solver", steps, generator=PerSampleNoise(SEEDS), timesteps=ts,
                      predictor_order=p, corrector_order=c, tau=tau)
    ns, state = PerSampleNoise(SEEDS), {"t": None}
    monkeypatch.setattr(S, "randn_tensor", lambda shape, **kw: ns.randn_like(xt) if tf(state["t"]) > 0
                        else torch.zeros(shape, dtype=torch.float64))
    x = xt.clone()
    for t in sch.timesteps:
        state["t"] = int(t)
        e = gmm.eps(x, torch.full((x.shape[0],), float(t), dtype=x.dtype))
        x = sch.step(e, t, x).prev_sample
    assert rel(ours, x) < 1e-5, rel(ours, x)


@pytest.mark.parametrize("tau,match", [(-1.0, "tau must be >= 0, got -1.0"),
                                       ([800, 200], "tau interval needs lo <= hi"),
                                       ("x", "tau must be a number >= 0, \\[lo, hi\\] or \\[lo, hi, value\\]")])
def test_sa_solver_bad_tau(tau, match):
    with pytest.raises(SamplerError, match=match):
        api.sample(W.mixture().eps, SCHED, x_T(2), "sa_solver", 10, tau=tau)


# --- the oracle: moments, weak and strong convergence (studies/ui_samplers_convergence.py, docs/convergence.md) ----

# dpmpp_sde with its Brownian noise (k-diffusion's default): its two noises per step are overlapping increments of one
# path; drawn independently (gaussian) its weak error is 2-7x larger (docs/convergence.md)
ORACLE = [("euler_ancestral", {}, 400), ("dpmpp_2s_ancestral", {}, 199),
          ("dpmpp_sde", {"noise_sampler": "brownian"}, 199),
          ("dpmpp_2m_sde", {}, 200), ("dpmpp_2m_sde", {"solver_type": "heun"}, 200), ("dpmpp_3m_sde", {}, 200),
          ("er_sde", {}, 200), ("sa_solver", {}, 200), ("sa_solver", {"tau": 1.0}, 200)]


@pytest.mark.parametrize("name,opts,nfe", ORACLE, ids=[f"{c[0]}-{c[1]}" for c in ORACLE])
def test_new_stochastic_samplers_match_oracle_moments(name, opts, nfe):
    """8000 samples have the mixture's mean and covariance within sampling error (|z| < 4.5), as the other
    stochastic samplers (tests/test_stochastic_adaptive.py)."""
    from tests.test_samplers_suite import _z_scores

    gmm = W.mixture()
    x = api.sample(gmm.eps, SCHED, x_T(8000, seed=10), name, nfe, generator=torch.Generator().manual_seed(11),
                   **opts)
    zm, zc = _z_scores(x, gmm)
    assert zm < 4.5 and zc < 4.5, (zm, zc)


@pytest.mark.parametrize("name,opts", [(c[0], c[1]) for c in ORACLE if c[1] != {"solver_type": "heun"}],
                         ids=[f"{c[0]}-{c[1]}" for c in ORACLE if c[1] != {"solver_type": "heun"}])
def test_new_stochastic_samplers_weak_error_falls_with_nfe(name, opts):
    """The moment error (8000 samples) falls by 3x or more from 10 to 100 NFE (9 to 99 for the 2N - 1 ones)."""
    odd = name in ("dpmpp_sde", "dpmpp_2s_ancestral")
    e_low, _ = W.run(name, opts, 9 if odd else 10, n=8000)
    e_high, _ = W.run(name, opts, 99 if odd else 100, n=8000)
    assert e_high < e_low / 3, (e_low, e_high)


@pytest.mark.parametrize("name", ["euler_ancestral", "dpmpp_2m_sde", "sa_solver"] +
                         [pytest.param(n, marks=pytest.mark.slow) for n in ("dpmpp_sde", "er_sde", "dpmpp_3m_sde")])
def test_brownian_noise_makes_strong_error_fall(name):
    """With noise_sampler=brownian the samples converge pathwise: the rms error against the same sampler on a
    160-step grid (same Brownian paths) falls by 2x or more from 10 to 40 NFE; with gaussian noise (fresh draws on
    every grid) it does not fall (the control)."""
    gmm = W.mixture()
    xt = x_T(100, seed=4)
    opts = {"tau": 1.0} if name == "sa_solver" else {}
    odd = name == "dpmpp_sde"

    def run(k, noise):
        return api.sample(gmm.eps, SCHED, xt, name, 2 * k - 1 if odd else k, generator=PerSampleNoise(range(100)),
                          noise_sampler=noise, **opts)

    ref = run(160, "brownian")
    err = lambda x: float((x - ref).pow(2).sum(1).mean().sqrt())  # noqa: E731
    assert err(run(40, "brownian")) < err(run(10, "brownian")) / 2
    ref = run(160, "gaussian")
    assert err(run(40, "gaussian")) > 0.5 * err(run(10, "gaussian"))

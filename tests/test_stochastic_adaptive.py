"""The stochastic (edm_stochastic, restart, sde, ggf) and adaptive (rk45, ggf, dpm method=adaptive) samplers on
the exact-score oracle: budgets and caps, the papers' algorithms written out as reference loops, moments, weak
convergence, the ODE solution, a VE schedule against diffusers' ScoreSdeVeScheduler, and their errors."""

from __future__ import annotations

import json
import math
import os
import sys

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from nfebench import api  # noqa: E402
from nfebench.samplers import SAMPLERS, CountedEps, SamplerError  # noqa: E402
from nfebench.samplers.common import as_noise  # noqa: E402
from nfebench.samplers.restart import restart_evals  # noqa: E402
from nfebench.schedule import VPSchedule, linear_betas  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "studies"))
import weak_convergence as W  # noqa: E402

torch.set_num_threads(1)
BETAS = linear_betas()
SCHED = VPSchedule(BETAS)


class Counted:
    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, x, t):
        self.calls += 1
        return self.fn(x, t)


def xt(n=5, d=2, seed=0, dtype=torch.float64):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def gen(seed=1):
    return torch.Generator().manual_seed(seed)


# --- from-the-paper reference loops (EDM Alg. 1-2 in x_hat = x / alpha, sigma = sigma / alpha) ------------------

def denoiser(eps_fn, sched):
    """EDM's D(x_hat; sigma) from an eps-model: D = x_hat - sigma eps(alpha x_hat, tau(sigma))."""
    def D(xh, sig):
        tau = float(sched.tau_from_edm_sigma(sig))
        t = torch.full((xh.shape[0],), tau, dtype=xh.dtype)
        return xh - sig * eps_fn(float(sched.alpha(tau)) * xh, t)
    return D


def karras(s_max, s_min, n, rho=7.0):
    """EDM Eq. 5: n noise levels from s_max to s_min."""
    i = np.arange(n)
    return (s_max ** (1 / rho) + i / (n - 1) * (s_min ** (1 / rho) - s_max ** (1 / rho))) ** rho


def heun_ref(D, x, s, t):
    """Alg. 1 lines 4-8: Euler from s to t, trapezoidal correction unless t = 0."""
    d = (x - D(x, s)) / s
    x_next = x + (t - s) * d
    if t != 0:
        x_next = x + (t - s) * 0.5 * (d + (x_next - D(x_next, t)) / t)
    return x_next


def edm_alg2_ref(eps_fn, x_T, n, s_churn, s_tmin, s_tmax, s_noise, g):
    D = denoiser(eps_fn, SCHED)
    sig = np.append(karras(float(SCHED.edm_sigma(999)), float(SCHED.edm_sigma(0)), n), 0.0)
    x = x_T / float(SCHED.alpha(999))
    for i in range(n):
        gamma = min(s_churn / n, math.sqrt(2) - 1) if s_tmin <= sig[i] <= s_tmax else 0.0
        s_hat = sig[i] * (1 + gamma)
        if gamma > 0:
            x = x + math.sqrt(s_hat**2 - sig[i] ** 2) * s_noise * torch.randn(x.shape, generator=g, dtype=x.dtype)
        x = heun_ref(D, x, s_hat, sig[i + 1])
    return x


def restart_ref(eps_fn, x_T, n_main, intervals, g):
    """Xu et al. 2023 Alg. 1: Heun main pass; at the main level nearest t_min, K x (noise to t_max, N_R-point
    Karras Heun pass back)."""
    D = denoiser(eps_fn, SCHED)
    sig = np.append(karras(float(SCHED.edm_sigma(999)), float(SCHED.edm_sigma(0)), n_main), 0.0)
    where = {}
    for n_r, k, t_min, t_max in intervals:
        where.setdefault(1 + int(np.argmin(np.abs(sig[1:-1] - t_min))), []).append((n_r, k, t_max))
    x = x_T / float(SCHED.alpha(999))
    for i in range(n_main):
        x = heun_ref(D, x, sig[i], sig[i + 1])
        for n_r, k, t_max in where.get(i + 1, []):
            sub = karras(t_max, sig[i + 1], n_r)
            for _ in range(k):
                x = x + math.sqrt(t_max**2 - sig[i + 1] ** 2) * torch.randn(x.shape, generator=g, dtype=x.dtype)
                for a, b in zip(sub[:-1], sub[1:]):
                    x = heun_ref(D, x, a, b)
    return x


@pytest.mark.parametrize("preset", [(30.0, 0.01, 1.0, 1.007), (80.0, 0.05, 50.0, 1.003)])
def test_edm_stochastic_is_algorithm_2(preset):
    """Table 5's CIFAR-10 VP and ImageNet-64 presets, 10 steps (19 evaluations): same x_0 as Alg. 2 written out."""
    gmm = W.mixture()
    ours = api.sample(gmm.eps, BETAS, xt(), "edm_stochastic", 19, generator=gen(), s_churn=preset[0],
                      s_tmin=preset[1], s_tmax=preset[2], s_noise=preset[3])
    ref = edm_alg2_ref(gmm.eps, xt(), 10, *preset, gen())
    assert torch.allclose(ours, ref, rtol=1e-8, atol=1e-9)
    plain = api.sample(gmm.eps, BETAS, xt(), "heun", 19)
    assert (ours - plain).abs().max() > 1e-3  # the churn did something
    assert torch.equal(api.sample(gmm.eps, BETAS, xt(), "edm_stochastic", 19, generator=gen(), s_churn=0.0), plain)


@pytest.mark.parametrize("n_main,intervals", [(18, [[3, 2, 0.06, 0.30]]),
                                              (12, [[4, 1, 1.09, 1.92], [3, 3, 0.06, 0.30]])])
def test_restart_is_algorithm_1_and_spends_its_formula(n_main, intervals):
    gmm = W.mixture()
    model = Counted(gmm.eps)
    expected = (2 * n_main - 1) + sum(2 * k * (n_r - 1) for n_r, k, _, _ in intervals)
    ours, used = api.sample(model, BETAS, xt(), "restart", expected + 1, generator=gen(), main_steps=n_main,
                            restarts=intervals, return_nfe=True)
    assert used == model.calls == expected == restart_evals(n_main, [tuple(iv) for iv in intervals])
    ref = restart_ref(gmm.eps, xt(), n_main, intervals, gen())
    assert torch.allclose(ours, ref, rtol=1e-8, atol=1e-9)


@pytest.mark.parametrize("nfe", [11, 43, 44, 100])
def test_restart_default_fills_the_budget(nfe):
    """main_steps=null: the largest N_main with (2 N_main - 1) + 8 <= nfe (43 = the paper's 18 main steps)."""
    model = Counted(W.mixture().eps)
    _, used = api.sample(model, BETAS, xt(), "restart", nfe, generator=gen(), return_nfe=True)
    assert used == model.calls == (nfe - 8 + 1) // 2 * 2 - 1 + 8
    assert used in (nfe, nfe - 1)


@pytest.mark.parametrize("opts,per_step", [({}, 1), ({"corrector": "langevin"}, 2),
                                           ({"corrector": "langevin", "corrector_steps": 3}, 4)])
def test_sde_spends_predictor_plus_corrector(opts, per_step):
    for nfe in (10, 21, 50):
        model = Counted(W.mixture().eps)
        _, used = api.sample(model, BETAS, xt(), "sde", nfe, generator=gen(), return_nfe=True, **opts)
        assert used == model.calls == nfe // per_step * per_step


# --- adaptive: the cap and what is spent -------------------------------------------------------------------------

@pytest.mark.parametrize("name,opts,loosen", [("rk45", {}, "rtol"), ("ggf", {}, "eps_abs / eps_rel"),
                                              ("dpm", {"method": "adaptive"}, "atol / rtol"),
                                              ("dpm", {"method": "adaptive", "order": 2}, "atol / rtol")])
def test_adaptive_cap(name, opts, loosen):
    """nfe_used is what the controller spent (counted by the model); one evaluation less is a one-line error;
    the same run under a larger cap is the same run."""
    gmm = W.mixture()
    model = Counted(gmm.eps)
    x, used = api.sample(model, BETAS, xt(), name, 5000, generator=gen(), return_nfe=True, **opts)
    assert used == model.calls < 5000
    y, used2 = api.sample(gmm.eps, BETAS, xt(), name, used, generator=gen(), return_nfe=True, **opts)
    assert used2 == used and torch.equal(x, y)
    label = "dpm method=adaptive" if name == "dpm" else name
    msg = f"{label} needed more than nfe={used - 1} evaluations; raise nfe or loosen {loosen}"
    with pytest.raises(SamplerError) as e:
        api.sample(gmm.eps, BETAS, xt(), name, used - 1, generator=gen(), **opts)
    assert str(e.value) == msg


def test_adaptive_tolerance_buys_evaluations():
    spent = [api.sample(W.mixture().eps, BETAS, xt(), "rk45", 10000, return_nfe=True, rtol=tol, atol=tol)[1]
             for tol in (1e-3, 1e-5, 1e-7)]
    assert spent[0] < spent[1] < spent[2]


# --- the ODE solution: rk45 and DPM-Solver-12/23 land on DDIM's at 1000 steps --------------------------------------

@pytest.fixture(scope="module")
def ode_oracle():
    """studies/convergence.py's smooth oracle (8 components, reg_covar 1e-2), 4 samples, and DDIM on 1000 points
    from 999 to 0 (999 steps), whose own error is 1.4e-3 rms."""
    from nfebench.models.gmm import load_gmm

    m = load_gmm(n_components=8, reg_covar=1e-2)
    x = torch.randn(4, *m.sample_shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ddim = api.sample(m, m.betas, x, "ddim", 1000, timesteps=SCHED.timesteps(999, "uniform").tolist())
    return m, x, ddim


@pytest.mark.parametrize("name,opts,close", [("rk45", {}, 2e-3), ("dpm", {"method": "adaptive"}, 4e-3),
                                             ("dpm", {"method": "adaptive", "order": 2}, 1.2e-2)])
def test_adaptive_ode_solvers_land_on_ddim_1000(ode_oracle, name, opts, close):
    m, x, ddim = ode_oracle
    y, used = api.sample(m, m.betas, x, name, 2000, return_nfe=True, **opts)
    assert (y - ddim).pow(2).mean().sqrt() < close, used


def test_tight_adaptive_solutions_agree_far_below_ddim_error(ode_oracle):
    """At tight tolerances rk45 and DPM-Solver-23 agree with each other 100x better than DDIM-1000 with either."""
    m, x, ddim = ode_oracle
    a = api.sample(m, m.betas, x, "rk45", 5000, rtol=1e-7, atol=1e-7)
    b = api.sample(m, m.betas, x, "dpm", 5000, method="adaptive", atol=1e-5, rtol=1e-5)
    rms = lambda u, v: float((u - v).pow(2).mean().sqrt())  # noqa: E731
    assert rms(a, b) < rms(a, ddim) / 100 and rms(a, ddim) > 1e-3


# --- distributions: moments at high NFE, weak convergence --------------------------------------------------------

STOCHASTIC = [("edm_stochastic", {}, 199), ("restart", {}, 199), ("sde", {}, 300),
              ("sde", {"predictor": "reverse_diffusion"}, 300), ("sde", {"predictor": "ancestral"}, 600),
              ("sde", {"predictor": "reverse_diffusion", "corrector": "langevin"}, 600), ("ggf", {}, 5000)]


@pytest.mark.parametrize("name,opts,nfe", STOCHASTIC)
def test_stochastic_samplers_match_oracle_moments(name, opts, nfe):
    """8000 samples have the mixture's mean and covariance within sampling error (|z| < 4.5 on 2 means and 3
    second moments), as tests/test_samplers_suite.py checks ddpm."""
    from tests.test_samplers_suite import _z_scores

    gmm = W.mixture()
    x = api.sample(gmm.eps, BETAS, xt(8000, seed=10), name, nfe, generator=gen(11), **opts)
    zm, zc = _z_scores(x, gmm)
    assert zm < 4.5 and zc < 4.5, (zm, zc)


@pytest.mark.parametrize("name,opts,low,high", [("sde", {}, 10, 200), ("sde", {"predictor": "ancestral"}, 10, 200),
                                                ("edm_stochastic", {}, 9, 99), ("restart", {}, 19, 99)])
def test_weak_error_falls_with_nfe(name, opts, low, high):
    """The moment error of studies/weak_convergence.py (8000 samples) falls by 3x or more from low to high NFE."""
    e_low, _ = W.run(name, opts, low, n=8000)
    e_high, _ = W.run(name, opts, high, n=8000)
    assert e_high < e_low / 3, (e_low, e_high)


def test_ggf_weak_error_falls_with_tolerance():
    loose, n_loose = W.run("ggf", {"eps_abs": 0.05, "eps_rel": 0.5}, 5000, n=8000)
    tight, n_tight = W.run("ggf", {"eps_abs": 0.0078, "eps_rel": 0.05}, 5000, n=8000)
    assert n_loose < n_tight and tight < loose / 3, (loose, tight)


# --- any schedule: a VE stub and diffusers' ScoreSdeVeScheduler --------------------------------------------------

class VEStub:
    """Variance-exploding schedule (Song et al. 2021, SMLD): alpha = 1, sigma = s_min (s_max / s_min)^tau on
    tau in [0, 1]; only the interface the samplers use."""

    t_min, t_max = 0.0, 1.0

    def __init__(self, s_min=0.01, s_max=50.0):
        self.lo, self.hi = math.log(s_min), math.log(s_max)

    def alpha(self, tau):
        return np.ones_like(np.asarray(tau, dtype=np.float64))

    def sigma(self, tau):
        return np.exp(self.lo + (self.hi - self.lo) * np.asarray(tau, dtype=np.float64))

    def lambda_(self, tau):
        return -np.log(self.sigma(tau))

    edm_sigma = sigma

    def tau_from_lambda(self, lam):
        return (-np.asarray(lam, dtype=np.float64) - self.lo) / (self.hi - self.lo)

    def tau_from_edm_sigma(self, s):
        return self.tau_from_lambda(-np.log(s))

    def timesteps(self, n, spacing, t_start=None, t_end=None):
        a, b = (self.t_max if t_start is None else t_start), (self.t_min if t_end is None else t_end)
        if spacing == "uniform":
            return np.linspace(a, b, n + 1)
        assert spacing == "karras"
        return self.tau_from_edm_sigma(karras(float(self.sigma(a)), float(self.sigma(b)), n + 1))


def on_schedule(eps_fn, sched, x, name, nfe, generator, **opts):
    """The sampler on any schedule object (api.sample takes betas or a VPSchedule until the VE work lands)."""
    eps = CountedEps(eps_fn, budget=nfe)
    with torch.no_grad():
        return SAMPLERS[name].fn(eps, sched, x, nfe, as_noise(generator), **opts), eps.calls


@pytest.mark.parametrize("corrector", ["none", "langevin"])
def test_sde_reverse_diffusion_on_ve_equals_diffusers_score_sde_ve(corrector):
    """score_sde's VE predictor(-corrector) as diffusers' ScoreSdeVeScheduler runs it (step_correct, then
    step_pred, per noise level), in float32 with the same noise stream, on a VE-diffused mixture; diffusers' last
    step (sigma_min -> 0) is left out: ours ends at sigma_min with the mean."""
    from diffusers import ScoreSdeVeScheduler

    ve = VEStub()
    gmm = W.mixture()
    gmm.sched = ve  # the same mixture, diffused by the VE process: exact eps = -sigma * score
    n = 30
    x0 = (xt(6, seed=3) * 50.0).float()
    sch = ScoreSdeVeScheduler(sigma_min=0.01, sigma_max=50.0, snr=0.16, sampling_eps=1e-3, correct_steps=1)
    sch.set_timesteps(n + 1)
    sch.set_sigmas(n + 1)
    g, x = gen(7), x0.clone()
    for i, t in enumerate(sch.timesteps[:-1]):
        sig = sch.discrete_sigmas[n - i]
        score = lambda y: -gmm.eps(y, torch.full((y.shape[0],), (n - i) / n)) / sig  # noqa: E731
        if corrector == "langevin":
            x = sch.step_correct(score(x), x, generator=g).prev_sample
        out = sch.step_pred(score(x), t, x, generator=g)
        x = out.prev_sample if i < n - 1 else out.prev_sample_mean
    nfe = n * (2 if corrector == "langevin" else 1)
    ours, _ = on_schedule(gmm.eps, ve, x0, "sde", nfe, gen(7), predictor="reverse_diffusion", corrector=corrector,
                          snr=0.16)
    assert torch.allclose(ours, x, rtol=1e-4, atol=1e-4), float((ours - x).abs().max())


@pytest.mark.parametrize("name,opts,nfe", [("edm_stochastic", {"s_tmax": 100.0}, 19), ("rk45", {}, 2000),
                                           ("ggf", {}, 5000), ("dpm", {"method": "adaptive"}, 2000),
                                           ("sde", {"predictor": "ancestral"}, 50),
                                           ("restart", {"restarts": [[3, 1, 0.1, 1.0]]}, 31)])
def test_samplers_run_on_a_ve_schedule(name, opts, nfe):
    """Only the schedule interface is used: on the VE stub every sampler runs, finite, within its budget."""
    ve = VEStub()
    gmm = W.mixture()
    gmm.sched = ve
    model = Counted(gmm.eps)
    x, used = on_schedule(model, ve, xt(4) * 50.0, name, nfe, gen(), **opts)
    assert torch.isfinite(x).all() and used == model.calls <= nfe and x.abs().max() < 5


# --- errors ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,opts,nfe,match", [
    ("edm_stochastic", {"s_churn": -1.0}, 19, r"^s_churn must be >= 0, got -1.0$"),
    ("edm_stochastic", {"s_tmin": 2.0, "s_tmax": 1.0}, 19, "s_tmin must be <= s_tmax"),
    ("sde", {"predictor": "heun"}, 20,
     r"^unknown predictor 'heun' for sde; allowed: euler_maruyama, reverse_diffusion, ancestral$"),
    ("sde", {"corrector": "ald"}, 20, r"^unknown corrector 'ald' for sde; allowed: none, langevin$"),
    ("sde", {"corrector": "langevin", "snr": 0.0}, 20, "snr must be > 0"),
    ("sde", {"corrector": "langevin", "corrector_steps": 3}, 3, "below the minimum of sampler 'sde'"),
    ("restart", {"restarts": [[3, 2, 0.06, 500.0]]}, 43,
     r"^restart interval \[3, 2, 0.06, 500.0\] is outside the schedule: need 0.01 <= t_min < t_max <= 157.4 "),
    ("restart", {"restarts": [[3, 2, 0.3, 0.06]]}, 43, "is outside the schedule"),
    ("restart", {"restarts": [[1, 2, 0.06, 0.3]]}, 43, "N_R must be an integer >= 2"),
    ("restart", {"main_steps": 30}, 43, "main_steps=30 with these restarts takes 67 evaluations, above nfe=43"),
    ("restart", {}, 10, "nfe=10 is below the minimum of sampler 'restart' with these restart intervals: 11"),
    ("rk45", {}, 10, r"^rk45 needed more than nfe=10 evaluations; raise nfe or loosen rtol$"),
    ("rk45", {"rtol": 0}, 200, "rtol must be a positive number, got 0"),
    ("ggf", {"eps_abs": -1}, 200, "eps_abs must be a positive number"),
    ("dpm", {"method": "adaptive", "order": 1}, 200, "needs order 2 .* or 3"),
    ("dpm", {"method": "adaptive", "atol": 0.0}, 200, "atol must be a positive number"),
])
def test_bad_options_are_one_line_errors(name, opts, nfe, match):
    model = Counted(W.mixture().eps)
    with pytest.raises(SamplerError, match=match) as e:
        api.sample(model, BETAS, xt(), name, nfe, generator=gen(), **opts)
    assert "\n" not in str(e.value)
    if "needed more" not in match:
        assert model.calls == 0  # refused before any evaluation


# --- the leaderboard row reports what an adaptive sampler spent --------------------------------------------------

def test_leaderboard_nfe_used_is_what_the_adaptive_sampler_spent(tmp_path):
    """Two batches of a run: nfe_used is the larger batch's count, measured by the model's counter (not the
    dry run's zero model, which needs fewer), and within the cap."""
    from hydra import compose, initialize_config_dir

    import nfebench.__main__ as entry
    from nfebench.models import load_model
    from nfebench.run import run, sample_seeds
    from nfebench.samplers import PerSampleNoise

    over = ["model=gmm_digits", "metrics=none", "sampler=dpm", "sampler.method=adaptive", "nfe=500",
            "num_samples=6", "batch_size=4", "seed=2", "device=cpu", f"results_dir={tmp_path}"]
    with initialize_config_dir(config_dir=str(entry.CONF_DIR), version_base="1.3"):
        row = run(compose(config_name="config", overrides=over), progress=False)
    model = load_model("gmm", dataset="digits", n_components=20, reg_covar=1e-4, seed=0)
    seeds = sample_seeds(2, 6)
    spent = []
    for batch in (seeds[:4], seeds[4:]):
        noise = PerSampleNoise(batch)
        x = noise.randn(model.sample_shape, dtype=model.dtype)
        spent.append(api.sample(model, model.betas, x, "dpm", 500, return_nfe=True, method="adaptive")[1])
    dry = api.dry_run("dpm", 500, model.betas, method="adaptive")
    assert row["nfe_used"] == max(spent) < 500 and row["nfe"] == 500
    assert dry < max(spent)


def test_a_run_reaching_the_cap_is_marked_failed_without_a_row(tmp_path):
    """The zero-model dry run passes (it needs fewer evaluations); sampling then reaches the cap: a one-line error,
    status.json says failed, and no leaderboard row is written."""
    from hydra import compose, initialize_config_dir

    import nfebench.__main__ as entry
    from nfebench.run import RunFailed, run

    over = ["model=gmm_digits", "metrics=none", "sampler=rk45", "nfe=60", "num_samples=2", "device=cpu",
            f"results_dir={tmp_path}"]
    with initialize_config_dir(config_dir=str(entry.CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=over)
    with pytest.raises(RunFailed, match=r"^rk45 needed more than nfe=60 evaluations; raise nfe or loosen rtol; run "
                                        r"marked failed") as e:
        run(cfg, progress=False)
    assert "\n" not in str(e.value)
    (status,) = (tmp_path / "runs").glob("*/status.json")
    assert '"failed"' in status.read_text() and not (tmp_path / "leaderboard.csv").exists()


def test_report_places_adaptive_rows_at_their_measured_nfe(tmp_path):
    from nfebench.leaderboard import append_row
    from nfebench.report import load_leaderboard

    board = tmp_path / "leaderboard.csv"
    for i, (sampler, opts, nfe, used) in enumerate([("rk45", {}, 500, 128), ("dpm", {"method": "adaptive"}, 500, 37),
                                                    ("dpm", {"method": "singlestep"}, 10, 10), ("heun", {}, 10, 9)]):
        append_row(board, {"run_id": f"r{i}", "model": "m", "dataset": "digits", "sampler": sampler,
                           "sampler_options": json.dumps(opts), "nfe": nfe, "nfe_used": used})
    assert load_leaderboard(board)["nfe_measured"].tolist() == [128, 37, 10, 10]

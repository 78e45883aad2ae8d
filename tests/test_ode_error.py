"""metrics.ode_error on the exact-score oracle: equal to the rms distance to an independent DOP853 reference, falling
with NFE at the sampler's order, the cached reference reused (the model not called for it twice), stochastic
samplers explained."""

from __future__ import annotations

import json
import math
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from nfebench.metrics.ode_error import probe  # noqa: E402
from nfebench.models.base import EpsModel  # noqa: E402
from nfebench.samplers import SAMPLERS  # noqa: E402

torch.set_num_threads(1)
N = 4
ORACLE = ["model=gmm_digits", "model.n_components=8", "model.reg_covar=1e-2"]  # smooth: errors asymptotic early
TIGHT = "metrics.ode_reference={sampler: dpmpp, nfe: 2000, options: {variant: 3M}}"


def cfg(results, *overrides):
    from hydra import compose, initialize_config_dir

    import nfebench.__main__  # noqa: F401  (registers the config's resolvers)
    from nfebench.paths import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=[*ORACLE, "metrics=none", "metrics.ode_error=true", f"num_samples={N}",
                                            f"batch_size={N}", "device=cpu", f"results_dir={results}", *overrides])


def run(results, *overrides):
    from nfebench.run import run as run_point

    row = run_point(cfg(results, *overrides), progress=False)
    d = results / "runs" / row["run_id"]
    per = np.load(d / "per_sample.npz") if (d / "per_sample.npz").is_file() else None
    return row, json.loads((d / "metrics.json").read_text()), per


@pytest.fixture(scope="module")
def oracle_reference():
    """x at t_min from each sample's x_T by scipy's DOP853 (rtol = atol = 1e-12) in u = log(sigma/alpha), and its
    denoised x_0 = (x - sigma eps(x, t_min)) / alpha: independent of nfebench's samplers."""
    from scipy.integrate import solve_ivp

    from nfebench.models import load_model
    from nfebench.run import sample_seeds
    from nfebench.samplers import PerSampleNoise

    m = load_model("gmm", dataset="digits", n_components=8, reg_covar=1e-2, name="gmm_digits")
    s = m.schedule
    x = PerSampleNoise(sample_seeds(0, N)).randn(m.sample_shape, dtype=m.dtype)

    def rhs(u, y):
        rho = math.exp(u)
        tau = float(np.clip(s.tau_from_edm_sigma(rho), s.t_min, s.t_max))
        e = m(torch.from_numpy(float(s.alpha(tau)) * y).reshape(x.shape), torch.full((N,), tau, dtype=torch.float64))
        return rho * e.reshape(-1).numpy()

    u0, u1 = math.log(s.edm_sigma(s.t_max)), math.log(s.edm_sigma(s.t_min))
    sol = solve_ivp(rhs, (u0, u1), (x / float(s.alpha(s.t_max))).reshape(-1).numpy(), method="DOP853", rtol=1e-12,
                    atol=1e-12)
    x_min = torch.from_numpy(sol.y[:, -1] * float(s.alpha(s.t_min))).reshape(x.shape)
    e = m(x_min, torch.full((N,), float(s.t_min), dtype=torch.float64))
    return {"t_min": x_min, "clean": (x_min - float(s.sigma(s.t_min)) * e) / float(s.alpha(s.t_min))}


def rms(a, b):
    return ((a - b) ** 2).reshape(a.shape[0], -1).mean(1).sqrt().numpy()


def _plain(name):
    return not SAMPLERS[name].needs


DETERMINISTIC = ["ddim", "deis", "diffusers", "dpm", "dpm_2", "dpmpp", "euler", "fastdpm", "heun", "ipndm", "lms",
                 "plms", "pndm", "rk45", "unipc"]


def test_probe_decides_stochastic_and_end_from_the_sampler_itself():
    """Every registered sampler without needs: deterministic exactly when it draws no noise at its defaults (ddim
    with eta = 0 and fastdpm with kappa = 0 do not, though registered stochastic); ddim, euler, heun end at clean
    data, the exponential integrators at t_min."""
    from nfebench.models.gmm import load_gmm
    from nfebench.recommend import _sampler_defaults

    sched = load_gmm(n_components=8, reg_covar=1e-2).schedule
    found = []
    for name in sorted(n for n in SAMPLERS if _plain(n)):
        opts = {k: v for k, v in _sampler_defaults(name).items() if k != "name"}
        got = probe(name, 1000 if name in ("rk45", "ggf") else 12, sched, None, **opts)
        if not got["stochastic"]:
            found.append(name)
            assert got["end"] in ("t_min", "clean"), (name, got)
    assert found == DETERMINISTIC
    assert probe("ddim", 10, sched, eta=1.0)["stochastic"]  # eta decides, not the name
    ends = {n: probe(n, 12, sched)["end"] for n in ("ddim", "euler", "heun", "dpmpp", "unipc", "deis")}
    assert ends == {"ddim": "clean", "euler": "clean", "heun": "clean", "dpmpp": "t_min", "unipc": "t_min",
                    "deis": "t_min"}


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    return tmp_path_factory.mktemp("ode")


FAST = ("ddim", "dpmpp", "heun")  # one of each end and family by default; every other deterministic sampler is slow


@pytest.mark.parametrize("sampler", [pytest.param(s, marks=() if s in FAST else pytest.mark.slow)
                                     for s in DETERMINISTIC])
def test_ode_error_equals_rms_to_an_independent_reference(sampler, shared, oracle_reference):
    nfe = 1000 if sampler == "rk45" else 12
    loose = ["sampler.rtol=3e-3", "sampler.atol=3e-3"] if sampler == "rk45" else []  # an error the reference resolves
    row, info, per = run(shared, f"sampler={sampler}", f"nfe={nfe}", TIGHT, *loose)
    end = info["ode_reference_info"]["end"]
    assert row["ode_reference"].endswith("t_min" if end == "t_min" else "clean data (t_min + denoising step)")
    x = torch.from_numpy(np.load(shared / "runs" / row["run_id"] / "per_sample.npz")["ode_error"])
    from nfebench.api import sample
    from nfebench.models import load_model
    from nfebench.recommend import _sampler_defaults
    from nfebench.run import sample_seeds
    from nfebench.samplers import PerSampleNoise

    m = load_model("gmm", dataset="digits", n_components=8, reg_covar=1e-2, name="gmm_digits")
    x_t = PerSampleNoise(sample_seeds(0, N)).randn(m.sample_shape, dtype=m.dtype)
    opts = {k: v for k, v in _sampler_defaults(sampler).items() if k != "name"}
    opts.update({"rtol": 3e-3, "atol": 3e-3} if loose else {})
    out = sample(m, m.schedule, x_t, sampler, nfe, **opts)
    want = rms(out, oracle_reference[end])
    np.testing.assert_allclose(x.numpy(), want, rtol=1e-6)
    assert row["ode_error"] == pytest.approx(want.mean(), rel=1e-6)
    assert row["ode_reference_error"] < 1e-3 * row["ode_error"]  # stated, and far below what it measures


@pytest.mark.parametrize("sampler, options, nfes, order", [
    ("ddim", [], [25, 50, 100], 1),  # ends at clean data: its last (denoising) step is the reference's
    ("dpmpp", [], [40, 80, 160], 2),  # 2M, ends at t_min
])
def test_ode_error_falls_at_the_samplers_order(sampler, options, nfes, order, shared):
    errs = [run(shared, f"sampler={sampler}", f"nfe={n}", TIGHT, *options)[0]["ode_error"] for n in nfes]
    slope = -np.polyfit(np.log(nfes), np.log(errs), 1)[0]
    assert abs(slope - order) <= 0.3, (errs, slope)


def test_reference_is_cached_across_a_sweep_and_not_recomputed(tmp_path, monkeypatch):
    calls = []
    orig = EpsModel.__call__
    monkeypatch.setattr(EpsModel, "__call__", lambda self, x, t, **c: calls.append(1) or orig(self, x, t, **c))
    _, first, _ = run(tmp_path, "sampler=ddim", "nfe=10")
    n_first = len(calls)
    assert not first["ode_reference_info"]["cached"] and n_first == 10 + 500 + 250 + 1  # sampler + reference
    _, second, _ = run(tmp_path, "sampler=dpmpp", "nfe=10")
    assert second["ode_reference_info"] == {**second["ode_reference_info"], "cached": True, "evaluations": 0}
    assert len(calls) - n_first == 10  # the sampler's evaluations only
    _, third, _ = run(tmp_path, "sampler=unipc", "nfe=10", "num_samples=2")  # a prefix of the cached seeds
    assert third["ode_reference_info"]["cached"] and len(calls) - n_first == 20
    assert len(list((tmp_path / "ode_reference").glob("*.npz"))) == 1


def test_stochastic_sampler_row_says_why(tmp_path):
    row, _, per = run(tmp_path, "sampler=ddpm", "nfe=10")
    assert row.get("ode_error") is None and per is None
    assert "stochastic" in row["ode_reference"] and "no ODE solution" in row["ode_reference"]


def test_bad_reference_is_one_line_error(tmp_path):
    from nfebench.metrics.ode_error import OdeErrorError

    with pytest.raises(OdeErrorError, match="metrics.ode_reference.nfe must be an integer >= 2, got 1"):
        run(tmp_path, "sampler=ddim", "nfe=10", "metrics.ode_reference={sampler: dpmpp, nfe: 1}")
    from nfebench.run import ConfigError

    with pytest.raises(ConfigError, match="must be a deterministic sampler ending at t_min; it ends at clean"):
        run(tmp_path, "sampler=ddim", "nfe=10", "metrics.ode_reference={sampler: ddim, nfe: 100}")


def test_recommend_ranks_by_ode_error_and_compare_pairs_it(tmp_path, capsys):
    """rank_by=ode_error: the order of the mean ode_errors, differences from nfebench.stats.paired_mean, the
    stochastic candidate last and untested with its reason; compare prints the paired ODE-error difference."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    import nfebench.__main__ as entry
    from nfebench import stats
    from nfebench.compare import find_run, main as compare_main
    from nfebench.recommend import recommend

    with initialize_config_dir(config_dir=str(entry.CONF_DIR), version_base="1.3"):
        c = OmegaConf.to_container(compose("recommend", overrides=[
            *ORACLE, "metrics=none", "metrics.ode_error=true", "nfe=8", "num_samples=16", "device=cpu", "n_boot=200",
            "samplers=[ddim,dpmpp,ddpm,euler]", "rank_by=ode_error", f"results_dir={tmp_path}"]), resolve=True)
    out = recommend(c, progress=False)
    ranked = out["ranked"]
    assert [r["sampler"] for r in ranked][-1] == "ddpm" and ranked[-1]["verdict"] == "untested"
    means = [r["ode_error"] for r in ranked[:-1]]
    assert means == sorted(means) and all(r["ode_error_ci_low"] <= r["ode_error"] <= r["ode_error_ci_high"]
                                          for r in ranked[:-1])
    best, second = (find_run(r["run_id"], tmp_path) for r in ranked[:2])
    want = stats.paired_mean(second.per_sample()["ode_error"], best.per_sample()["ode_error"], "ode_error",
                             n_boot=200)
    assert ranked[1]["delta"] == pytest.approx(want["delta"]) and ranked[1]["delta_ci_low"] == pytest.approx(
        want["ci_low"])
    assert "stochastic" in out["advice"] and out["markdown"].name.endswith("-ode_error.md")
    assert compare_main([ranked[1]["run_id"], ranked[0]["run_id"], "--results", str(tmp_path)]) == 0
    assert "ODE error" in capsys.readouterr().out

"""Issue 28: `sampler=ui/NAME` configs for the names A1111 / ComfyUI users know, each checked to be the algorithm the
table in docs/samplers.md says: its config composes to that sampler and options, and where k-diffusion has the
function, nfebench through that config equals it (same sigmas, same noise, float64, 1e-9)."""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from nfebench import api  # noqa: E402
from nfebench.samplers import get_sampler  # noqa: E402
from nfebench.samplers.common import PerSampleNoise  # noqa: E402
from nfebench.samplers.edm import edm_grid  # noqa: E402
from nfebench.schedules import Discrete, linear_betas  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "studies"))
import weak_convergence as W  # noqa: E402

from tests.kdiffusion_ref import kdiffusion_sampling  # noqa: E402

CONF = Path(__file__).resolve().parents[1] / "conf"
SCHED = Discrete(linear_betas())
SEEDS = [7, 8, 9, 10]

# ui config -> (sampler, options it must set, noise_sampler, k-diffusion function or None)
UI = {
    "dpmpp_2m_karras": ("dpmpp_2m_sde", {"eta": 0.0, "spacing": "karras"}, "gaussian", "sample_dpmpp_2m"),
    "dpmpp_2m_sde_karras": ("dpmpp_2m_sde", {"eta": 1.0, "solver_type": "midpoint", "spacing": "karras"}, "brownian",
                            "sample_dpmpp_2m_sde"),
    "dpmpp_3m_sde_exponential": ("dpmpp_3m_sde", {"eta": 1.0, "spacing": "exponential"}, "brownian",
                                 "sample_dpmpp_3m_sde"),
    "dpmpp_3m_sde_karras": ("dpmpp_3m_sde", {"eta": 1.0, "spacing": "karras"}, "brownian", "sample_dpmpp_3m_sde"),
    "dpmpp_sde_karras": ("dpmpp_sde", {"eta": 1.0, "r": 0.5, "spacing": "karras"}, "brownian", "sample_dpmpp_sde"),
    "dpmpp_2s_a": ("dpmpp_2s_ancestral", {"eta": 1.0, "spacing": "uniform"}, "gaussian", "sample_dpmpp_2s_ancestral"),
    "euler_a": ("euler_ancestral", {"eta": 1.0, "spacing": "uniform"}, "gaussian", "sample_euler_ancestral"),
    "euler": ("euler", {"spacing": "uniform"}, "gaussian", "sample_euler"),
    "heun": ("heun", {"spacing": "uniform"}, "gaussian", "sample_heun"),
    "dpm2": ("dpm_2", {"spacing": "uniform"}, "gaussian", "sample_dpm_2"),
    "lms": ("lms", {"order": 4, "spacing": "uniform"}, "gaussian", "sample_lms"),
    "ddim": ("ddim", {"eta": 0.0, "spacing": "uniform"}, "gaussian", None),
    "unipc": ("unipc", {"order": 3, "variant": "bh1"}, "gaussian", None),
    "er_sde": ("er_sde", {"order": 3, "noise_scale": "er_sde"}, "gaussian", None),
    "sa_solver": ("sa_solver", {"predictor_order": 2, "corrector_order": 2, "tau": [200, 800]}, "gaussian", None),
}
TWO_EVALS = ("dpmpp_sde", "dpmpp_2s_ancestral", "heun", "dpm_2")


def test_every_ui_config_is_in_the_table():
    assert {p.stem for p in (CONF / "sampler" / "ui").glob("*.yaml")} == set(UI)


def compose_ui(name):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"sampler=ui/{name}"])
        return OmegaConf.to_container(cfg.sampler)


@pytest.mark.parametrize("ui", sorted(UI))
def test_ui_config_is_the_documented_algorithm(ui):
    sampler, opts, noise, kd_fn = UI[ui]
    s = compose_ui(ui)
    assert s.pop("name") == sampler
    full = get_sampler(sampler).check_options(s)
    assert full.get("noise_sampler", "gaussian") == noise
    assert {k: full[k] for k in opts} == opts
    if kd_fn is None:  # ddim, unipc: diffusers (test_conformance_diffusers); er_sde, sa_solver: test_ui_samplers
        return
    K = kdiffusion_sampling()
    gmm = W.mixture()
    xt = torch.randn(4, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    nfe = 11 if sampler in TWO_EVALS else 10
    ours = api.sample(gmm.eps, SCHED, xt, sampler, nfe, generator=PerSampleNoise(SEEDS), **s)
    taus = edm_grid(SCHED, (nfe + 1) // 2 if sampler in TWO_EVALS else nfe, full["spacing"], None)
    sig = [float(SCHED.edm_sigma(t)) for t in taus[:-1]] + [0.0]

    def model(xh, sigma):
        sv = float(sigma[0])
        tau = float(SCHED.tau_from_edm_sigma(sv))
        return xh - sv * gmm.eps(xh / math.sqrt(1 + sv * sv), torch.full((xh.shape[0],), tau, dtype=xh.dtype))

    x0 = xt * math.sqrt(1 + sig[0] ** 2)
    kw = {k: full[k] for k in ("eta", "s_noise", "r", "solver_type") if k in full}
    if full.get("eta") or sampler == "dpmpp_sde":  # the same noise: our per-sample Gaussian draws or Brownian paths
        from nfebench.samplers.brownian import StepNoise

        kw["noise_sampler"] = StepNoise(PerSampleNoise(SEEDS), x0, min(v for v in sig if v > 0), max(sig), noise)
    if kd_fn == "sample_dpmpp_2m":
        kw = {}
    ref = getattr(K, kd_fn)(model, x0, torch.tensor(sig, dtype=torch.float64), disable=True, **kw)
    assert float((ours - ref).abs().max() / ref.abs().max()) < 1e-9


def test_cli_runs_a_ui_name_with_a_sigma_list_and_brownian_noise(tmp_path):
    """One CLI run: sampler=ui/dpmpp_2m_sde_karras (Brownian noise) with a published-style sigma list on the oracle;
    the row records the options; a bad list is one line and exit 2, nothing written."""
    import pandas as pd

    from tests.test_cli import error_lines, run_cli

    res = tmp_path / "res"
    sig = "[80.0,20.0,5.0,1.0,0.2,0.05,0.0]"
    r = run_cli("model=gmm_digits", f"results_dir={res}", "sampler=ui/dpmpp_2m_sde_karras", f"sigmas={sig}",
                "nfe=6", "num_samples=8", "metrics=none")
    assert r.returncode == 0, r.stderr[-2000:]
    row = pd.read_csv(res / "leaderboard.csv").iloc[0]
    assert (row.sampler, row.nfe_used) == ("dpmpp_2m_sde", 6)
    assert "brownian" in row.sampler_options and "80.0" in row.sampler_options
    r = run_cli("model=gmm_digits", f"results_dir={tmp_path / 'bad'}", "sampler=ui/euler_a", "sigmas=[80.0,90.0,0.0]",
                "nfe=2", "num_samples=8", "metrics=none")
    assert r.returncode == 2 and error_lines(r) and "strictly decreasing" in error_lines(r)[0]
    assert not (tmp_path / "bad" / "leaderboard.csv").exists()


def test_recommend_takes_ui_names_and_the_new_samplers_as_candidates():
    """conf/recommend.yaml's default candidates include the new samplers; a UI name is a candidate too."""
    from omegaconf import OmegaConf as O

    from nfebench.recommend import candidates

    defaults = O.load(CONF / "recommend.yaml")["samplers"]
    assert {"euler_ancestral", "dpmpp_2m_sde", "dpmpp_3m_sde", "dpmpp_sde", "er_sde", "sa_solver"} <= set(defaults)
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        c = O.to_container(compose(config_name="config", overrides=["model=gmm_digits", "nfe=10"]), resolve=False)
    c["model"] = {"kind": "gmm", "name": "gmm_digits"}
    cands = candidates(c, ["ui/dpmpp_2m_karras", "ui/euler_a", "sa_solver"], tune=False)
    assert [x["cfg"]["sampler"]["name"] for x in cands] == ["dpmpp_2m_sde", "euler_ancestral", "sa_solver"]


def test_runner_records_sigmas_and_takes_ays_model_from_the_model_config():
    """validate(): the top-level sigmas / ays_model are recorded with the sampler's options where set (old run keys
    unchanged where not); spacing=ays takes the model config's ays_model by default."""
    from nfebench.run import run_key, validate

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        base = OmegaConf.to_container(compose(config_name="config", overrides=["sampler=euler_ancestral"]),
                                      resolve=False)
    base["model"] = {"kind": "gmm", "name": "gmm_digits"}
    p = validate(base)
    assert "sigmas" not in p.sampler_options and "ays_model" not in p.sampler_options
    legacy = {k: v for k, v in base.items() if k not in ("sigmas", "ays_model")}
    assert run_key(validate(legacy)) == run_key(p)  # configs from before issue 28 keep their run ids
    p = validate({**base, "sigmas": [80.0, 1.0, 0.0]})
    assert p.sampler_options["sigmas"] == [80.0, 1.0, 0.0]
    ays = {**base, "sampler": {**base["sampler"], "spacing": "ays"}, "model": {**base["model"], "ays_model": "sdxl"}}
    assert validate(ays).sampler_options["ays_model"] == "sdxl"

"""nfebench.tune on the exact-score oracle: a grid tuned on one noise batch beats the sampler's default grid and every
built-in spacing on held-out noise, is a valid grid within the budget, and reproduces the teacher when it may use the
teacher's own grid."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
import torch

import nfebench
from nfebench.models.gmm import load_gmm
from nfebench.samplers import CLEAN, SamplerError, get_sampler
from nfebench.schedule import TUNE_SPACINGS as SPACINGS, VPSchedule
from nfebench.tuning import LAYOUTS, _solver, builtin_grid, rms, teacher_solution

REFERENCE_NFE = 400  # the held-out "exact" solution: the teacher's solver at twice the budget tune uses


@lru_cache(maxsize=None)
def oracle():
    return load_gmm()  # the digits mixture (64 dims, 20 components, reg_covar 1e-4): stiff near tau = 0


def noise(n, seed):
    m = oracle()
    return torch.randn(n, *m.sample_shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@lru_cache(maxsize=None)
def held_out(clean: bool):
    m = oracle()
    x = noise(256, 1)  # enough that the held-out rms is not itself noisy (64 left the margins at +-5 %)
    return x, teacher_solution(_solver(m, VPSchedule(m.betas), "epsilon"), x, clean, REFERENCE_NFE)[0]


@pytest.mark.parametrize("sampler,nfe", [(s, n) for s in ("dpmpp", "unipc", "euler", "ipndm", "deis") for n in (5, 6)])
def test_tuned_grid_beats_default_and_every_spacing_on_held_out_noise(sampler, nfe):
    m = oracle()
    sched = VPSchedule(m.betas)
    grid, info = nfebench.tune(m, m.betas, sampler=sampler, nfe=nfe, x_T=noise(32, 0), return_info=True)
    points, clean = LAYOUTS[sampler](nfe)
    # a valid grid: T-1 down to 0 (then clean data where the sampler ends there), strictly decreasing, in budget
    assert grid[0] == sched.t_max and grid[points - 1] == 0.0 and len(grid) == points + clean
    assert np.all(np.diff(grid) < 0) and (grid[-1] == CLEAN) == clean
    x_T, ref = held_out(clean)
    x, used = nfebench.sample(m, m.betas, x_T, sampler, nfe, timesteps=grid, return_nfe=True)
    assert used <= nfe
    tuned = rms(x, ref)
    spacings = {s: rms(nfebench.sample(m, m.betas, x_T, sampler, nfe, spacing=s), ref) for s in SPACINGS}
    default = spacings[get_sampler(sampler).options["spacing"]]
    assert tuned <= 0.95 * default and tuned < min(spacings.values()), (tuned, spacings)
    # on the tuning noise, by construction, never worse than the best built-in spacing; the cost is reported
    assert info["error_tuned"] <= min(info["error_spacings"].values())
    assert info["teacher_nfe"] == 200 + clean  # the default teacher budget, plus the last step to clean data
    assert nfe * len(info["error_spacings"]) < info["tuning_nfe"] <= nfe * info["grids_tried"]


def test_with_the_teachers_own_grid_allowed_it_reproduces_the_teacher():
    m = oracle()
    x_T = noise(8, 2)
    grid, info = nfebench.tune(m, m.betas, sampler="dpmpp", nfe=12, x_T=x_T, variant="3M", teacher_nfe=12,
                               evals_per_point=2, return_info=True)
    assert info["error_tuned"] == 0.0 and info["best_spacing"] == "logsnr"
    np.testing.assert_array_equal(grid, VPSchedule(m.betas).timesteps(12, "logsnr"))
    teacher = nfebench.sample(m, m.betas, x_T, "dpmpp", 12, variant="3M")
    torch.testing.assert_close(nfebench.sample(m, m.betas, x_T, "dpmpp", 12, variant="3M", timesteps=grid), teacher,
                               rtol=0, atol=0)


@pytest.mark.parametrize("sampler", sorted(LAYOUTS))
def test_builtin_grids_are_the_samplers_own(sampler):
    """builtin_grid must rebuild exactly the grid each sampler makes from a spacing, or 'never worse than the best
    built-in spacing' would compare against the wrong grids."""
    m = load_gmm(n_components=2)
    opts = {"method": "multistep"} if sampler == "dpm" else {}
    x_T = noise(2, 3)
    for nfe in (12, 13):
        for s in SPACINGS:
            try:
                grid = builtin_grid(VPSchedule(m.betas), sampler, nfe, s)
            except SamplerError:
                continue
            own = nfebench.sample(m, m.betas, x_T, sampler, nfe, spacing=s, **opts)
            explicit = nfebench.sample(m, m.betas, x_T, sampler, nfe, timesteps=grid, **opts)
            torch.testing.assert_close(explicit, own, rtol=0, atol=0, msg=f"{sampler} nfe={nfe} {s}")


@pytest.mark.parametrize("sampler,options,nfe,message", [
    ("diffusers", {}, 5, "sampler 'diffusers' cannot take an explicit timestep grid"),
    ("ddpm", {}, 5, "sampler 'ddpm' cannot be tuned; tune its deterministic limit 'ddim'"),
    ("ddim", {"eta": 0.5}, 5, "sampler 'ddim' with eta=0.5 is stochastic; tune its deterministic limit (eta=0)"),
    ("dpm", {}, 5, "sampler 'dpm' with method=singlestep places its own intermediate points"),
    ("pndm", {}, 5, "nfe=5 is below the minimum of sampler 'pndm': 12"),
    ("unipc", {"timesteps": [999, 0]}, 5, "tune chooses the timesteps"),
    ("unipc", {"ordr": 2}, 5, "unknown option 'ordr' for sampler 'unipc'"),
    ("nosuch", {}, 5, "unknown sampler 'nosuch'"),
])
def test_bad_input_is_a_one_line_error(sampler, options, nfe, message):
    m = oracle()
    with pytest.raises(SamplerError) as e:
        nfebench.tune(m, m.betas, sampler=sampler, nfe=nfe, x_T=noise(2, 0), **options)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_tune_sees_the_network_through_its_parametrization():
    """The oracle presented as v_prediction tunes to the same grid as its eps form (the adapter is exact)."""
    from nfebench.models.parametrization import present

    m = oracle()
    x = noise(4, 0)
    v_net = present(m.fn, m.schedule, "v_prediction")
    kw = dict(sampler="unipc", nfe=5, x_T=x, evals_per_point=3)
    np.testing.assert_allclose(nfebench.tune(v_net, m.betas, prediction_type="v_prediction", **kw),
                               nfebench.tune(m, m.betas, **kw), rtol=1e-6)


# ------------------------------------------------------------- the cache: python -m nfebench.tune, spacing=tuned

def compose_point(tmp_path, *overrides, config="tune"):
    from hydra import compose, initialize_config_dir

    import nfebench.__main__ as entry  # registers the config's resolvers

    with initialize_config_dir(config_dir=str(entry.CONF_DIR), version_base="1.3"):
        return compose(config_name=config, overrides=["model=gmm_digits", "model.n_components=2", "sampler=dpmpp",
                                                      "nfe=5", f"results_dir={tmp_path}", "device=cpu",
                                                      "metrics=none", "num_samples=8", *overrides])


def test_tuned_grid_is_cached_with_provenance_and_used_by_spacing_tuned(tmp_path):
    from nfebench.run import run
    from nfebench.tuning import grid_hash, tune_point

    record = tune_point(compose_point(tmp_path, "tune.num_noise=8", "tune.teacher_nfe=40"), progress=False)
    prov = record["provenance"]
    assert record["nfe"] == 5 and record["grid_hash"] == grid_hash(record["timesteps"])
    assert prov["teacher_nfe"] == 40 and prov["noise"]["num_noise"] == 8 and prov["tuning_nfe"] > 0
    assert prov["error_after"] <= min(prov["error_spacings"].values()) <= prov["error_before"]["rms"]
    assert tune_point(compose_point(tmp_path, "tune.num_noise=8"), progress=False) == record  # cached: not redone

    row = run(compose_point(tmp_path, "sampler.spacing=tuned", config="config"), progress=False)
    opts = json.loads(row["sampler_options"])
    assert opts["spacing"] == "tuned" and opts["tuned_grid"] == record["grid_hash"] and row["nfe_used"] == 5
    default = run(compose_point(tmp_path, config="config"), progress=False)
    assert default["run_id"] != row["run_id"]


def test_spacing_tuned_without_a_matching_cached_grid_is_a_one_line_error(tmp_path):
    from nfebench.run import run
    from nfebench.tuning import tune_point

    with pytest.raises(SamplerError, match=r"no tuned grid for model 'gmm_digits', sampler 'dpmpp' at nfe=5 .* make "
                                           r"it with: python -m nfebench.tune sampler=dpmpp nfe=5"):
        run(compose_point(tmp_path, "sampler.spacing=tuned", config="config"), progress=False)
    tune_point(compose_point(tmp_path, "tune.num_noise=4", "tune.teacher_nfe=20", "tune.evals_per_point=1"),
               progress=False)
    cached = record_path(tmp_path)
    shutil.copy(cached, cached.with_name(cached.name.replace("nfe5", "nfe6")))  # a grid filed under another budget
    with pytest.raises(SamplerError, match="was made for nfe=5, not 6"):
        run(compose_point(tmp_path, "sampler.spacing=tuned", "nfe=6", config="config"), progress=False)
    with pytest.raises(SamplerError, match="was made for model_digest="):  # same name, other weights
        run(compose_point(tmp_path, "sampler.spacing=tuned", "model.n_components=3", config="config"), progress=False)
    with pytest.raises(SamplerError, match="spacing 'tuned' is a cached grid"):
        nfebench.sample(oracle(), oracle().betas, noise(1, 0), "dpmpp", 5, spacing="tuned")


def record_path(tmp_path):
    (path,) = (tmp_path / "schedules" / "gmm_digits").glob("dpmpp-nfe5-*.json")
    return path


def test_cli_bad_input_is_one_line_and_exit_2(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    env.pop("HYDRA_FULL_ERROR", None)
    r = subprocess.run([sys.executable, "-m", "nfebench.tune", "sampler=diffusers", "nfe=5", f"results_dir={tmp_path}"],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        "nfebench: error: sampler 'diffusers' cannot take an explicit timestep grid, so it cannot be tuned; tunable: "
        "ddim, deis, dpm, dpmpp, euler, heun, ipndm, plms, pndm, unipc"], r.stderr
    assert not (tmp_path / "schedules").exists()


def test_report_labels_tuned_rows_by_spacing_not_by_each_budgets_grid_hash():
    import pandas as pd

    from nfebench.report import variant_labels

    opts = [{"spacing": "logsnr"}, {"spacing": "tuned", "tuned_grid": "a1"}, {"spacing": "tuned", "tuned_grid": "b2"}]
    df = pd.DataFrame({"sampler": ["dpmpp"] * 3, "options": opts, "guidance_scale": [None] * 3})
    assert variant_labels(df) == ["dpmpp (spacing=logsnr)", "dpmpp (spacing=tuned)", "dpmpp (spacing=tuned)"]


# --- method=gits (Chen et al. 2024): dynamic programming over the teacher trajectory's local errors (issue 28) ------

def test_gits_dynamic_program_is_the_cheapest_path():
    """min_cost_path against brute force over every increasing path with the given number of steps."""
    from itertools import combinations

    from nfebench.tuning import min_cost_path

    rng = np.random.default_rng(0)
    G = 9
    cost = np.triu(rng.uniform(0.1, 1.0, (G, G)), 1)
    cost[cost == 0] = np.inf
    for steps in (1, 3, 5, 8):
        brute = min((sum(cost[a, b] for a, b in zip(p[:-1], p[1:])), p)
                    for p in ((0, *mid, G - 1) for mid in combinations(range(1, G - 1), steps - 1)))
        path = min_cost_path(cost, steps)
        assert tuple(path) == brute[1] and np.isclose(sum(cost[a, b] for a, b in zip(path[:-1], path[1:])), brute[0])


@pytest.mark.parametrize("sampler,nfe", [("ipndm", 5), pytest.param("euler", 6, marks=pytest.mark.slow)])
def test_gits_grid_beats_the_default_grid_on_held_out_noise(sampler, nfe):
    """GITS' grid (tuned on 32 noise samples) is a valid grid in the sampler's layout within the budget, and lands
    closer to the held-out teacher solution than the sampler's default grid; tuning cost reported in NFE and s."""
    m = oracle()
    grid, info = nfebench.tune(m, m.betas, sampler, nfe, noise(32, 0), method="gits", return_info=True)
    points, clean = LAYOUTS[sampler](nfe)
    assert len(grid) == points + clean and grid[0] == 999 and np.all(np.diff(grid) < 0)
    assert info["method"] == "gits" and info["tuning_nfe"] > 0 and info["teacher_nfe"] >= 200 and info["seconds"] > 0
    x, x_ref = held_out(clean)
    tuned, used = nfebench.sample(m, m.betas, x, sampler, nfe, timesteps=grid, return_nfe=True)
    default = nfebench.sample(m, m.betas, x, sampler, nfe)
    assert used <= nfe and rms(tuned, x_ref) < rms(default, x_ref), (rms(tuned, x_ref), rms(default, x_ref))


def test_gits_bad_method_is_a_one_line_error():
    m = oracle()
    with pytest.raises(SamplerError, match="unknown tuning method 'lbfgs'; allowed: ld3, gits"):
        nfebench.tune(m, m.betas, "dpmpp", 5, noise(4, 0), method="lbfgs")

"""Tuned timestep grids: `nfebench.tune`, the grid that brings one sampler at one budget closest to the ODE solution.

Method: direct minimisation of the final error, as LD3 (Tong et al. 2024, "Learning to Discretize Denoising
Diffusion ODEs", Sec. 3): with a teacher x*(x_T), an accurate high-NFE solve of the same probability-flow ODE from
the same noise, choose the student's timesteps xi to minimise

    L(xi) = || Psi_xi(x_T) - x*(x_T) ||_2   over the tuning noise x_T (rms over samples and dimensions)

where Psi_xi is the sampler itself run on grid xi. LD3 back-propagates through the solver and relaxes the target with
a slack ball around x*; here the objective is minimised without gradients (the samplers run under no_grad, any
network works) and without the slack, so the tuned grid is judged by the same L it was chosen by:

  1. the teacher: DPM-Solver++(3M) (Lu et al. 2022b, App. B) on a logSNR-uniform grid of `teacher_nfe` steps, the
     whole noise batch at once; for samplers whose grid ends at clean data (sigma = 0) its x(0) is finished by the
     same last step they take (x0 = (x - sigma eps) / alpha at tau = 0, one more evaluation);
  2. every built-in spacing (schedules.TUNE_SPACINGS) in the sampler's layout: L of each, the sampler's default among them;
  3. Nelder-Mead (scipy) from the best of them, over the free interior points. A grid is parametrised by its
     steps in normalised half log-SNR, c_k = (lambda(tau_k) - lambda(T-1)) / (lambda(0) - lambda(T-1)), the m - 1
     increments a softmax of m - 2 free logits (the last fixed at 0): every point of the search space is a strictly
     decreasing grid with the sampler's fixed ends T-1 and 0;
  4. the grid with the smallest L among all those evaluated: by construction never worse, on the tuning noise, than
     the best built-in spacing.

`python -m nfebench.tune model=... sampler=... nfe=...` (tune_point) caches the grid with its provenance under
results_dir/schedules/<model>/ (cache_path); `python -m nfebench ... sampler.spacing=tuned` runs on it (load_tuned),
the row's sampler_options recording the grid's hash as `tuned_grid`.

Supported: the deterministic solvers that take an explicit `timesteps` grid and spend one fixed budget on it (LAYOUTS
below); the stochastic DDIM only in its deterministic limit eta = 0.

Second method, `method="gits"` (Chen et al. 2024, "On the trajectory regularity of ODE-based diffusion sampling",
ICML, Sec. 4, GITS): dynamic programming over a teacher trajectory's local errors. The teacher (the same
DPM-Solver++(3M)) is run through `gits_candidates` candidate timesteps (logSNR-uniform from T-1 to 0, teacher_nfe
evaluations split evenly between them) and its states x*(t_i) kept; the cost of a step t_i -> t_j is the rms error of
one first-order (DDIM / Euler) step from x*(t_i) against x*(t_j), all costs from G evaluations (the step from t_i
uses eps at t_i only); the grid is the path from T-1 to 0 with exactly the sampler's number of steps and the
smallest summed cost (O(K G^2)). The grid is then scored by the same final-error L as above (reported, not searched
further): GITS optimises local errors, not the final one. `python -m nfebench.tune tune.method=gits` caches it beside
the LD3-style grid; `sampler.spacing=gits` samples on it.
"""

from __future__ import annotations

import hashlib
import json
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from . import __version__
from .api import check_nfe
from .samplers import CLEAN, SamplerError, get_sampler
from .samplers.common import chain_grid, check_spacing
from .schedules import TUNE_SPACINGS, Discrete, as_schedule

TEACHER = ("dpmpp", {"variant": "3M"})  # with the sampler's default logsnr spacing
TEACHER_LABEL = "dpmpp 3M, logsnr"


def _multistep(nfe):  # nfe + 1 points from T-1 to 0, one evaluation per step
    return nfe + 1, False


# sampler -> nfe -> (grid points from T-1 to 0, whether the grid then ends at clean data, tau = -1)
LAYOUTS = {
    "dpmpp": _multistep, "unipc": _multistep, "deis": _multistep, "ipndm": _multistep, "dpm": _multistep,
    "plms": lambda nfe: (nfe, False),  # N = nfe - 1 steps (PNDM's pseudo improved-Euler first step costs one more)
    "pndm": lambda nfe: (nfe - 8, False),  # N = nfe - 9 steps after the Runge-Kutta warm-up's 9 extra evaluations
    "euler": lambda nfe: (nfe, True),  # nfe evaluations at the points, the last step from tau = 0 to sigma = 0
    "ddim": lambda nfe: (nfe, True),
    "heun": lambda nfe: ((nfe + 1) // 2, True),  # N points spend 2N - 1 (no correction on the step to sigma = 0)
}
SINGLESTEP = {"dpm": ("method", "singlestep"), "dpmpp": ("variant", "2S")}  # their own intermediate points


def check_tunable(sampler: str, nfe, options: dict) -> dict:
    """The sampler's resolved options, or a one-line SamplerError saying why its grid cannot be tuned."""
    spec = get_sampler(sampler)
    opts = spec.check_options(options)
    if "timesteps" not in spec.options:
        raise SamplerError(f"sampler {sampler!r} cannot take an explicit timestep grid, so it cannot be tuned; "
                           f"tunable: {', '.join(sorted(LAYOUTS))}")
    if sampler not in LAYOUTS:
        hint = "; tune its deterministic limit 'ddim'" if spec.stochastic else ""
        raise SamplerError(f"sampler {sampler!r} cannot be tuned{hint}; tunable: {', '.join(sorted(LAYOUTS))}")
    if spec.stochastic and opts.get("eta", 0) != 0:
        raise SamplerError(f"sampler {sampler!r} with eta={opts['eta']} is stochastic; tune its deterministic limit "
                           f"(eta=0) and use that grid")
    if sampler in SINGLESTEP and opts.get(SINGLESTEP[sampler][0]) == SINGLESTEP[sampler][1]:
        key, value = SINGLESTEP[sampler]
        raise SamplerError(f"sampler {sampler!r} with {key}={value} places its own intermediate points; tune a "
                           f"multistep {key} instead")
    if opts.get("timesteps") is not None:
        raise SamplerError("tune chooses the timesteps: drop the sampler's 'timesteps' option")
    check_spacing(opts["spacing"])  # the default grid the tuned one is compared with
    check_nfe(nfe, spec.min_nfe, sampler)
    return opts


def builtin_grid(sched: Discrete, sampler: str, nfe: int, spacing: str) -> np.ndarray:
    """The grid the sampler builds itself from `spacing` at this budget, as an explicit timesteps array."""
    points, clean = LAYOUTS[sampler](nfe)
    if sampler == "ddim":
        return chain_grid(sched, nfe, spacing)  # integer timesteps, as DDIM's respaced chain
    ts = np.array([sched.t_max]) if points == 1 else sched.timesteps(points - 1, spacing)
    return np.append(ts, CLEAN) if clean else ts


def grid_hash(grid) -> str:
    """12 hex digits of sha256 over the grid's float64 bytes: what a leaderboard row records of a tuned grid."""
    return hashlib.sha256(np.ascontiguousarray(np.asarray(grid, dtype=np.float64)).tobytes()).hexdigest()[:12]


class _Grids:
    """Maps the search's free logits to grids in the sampler's layout (module docstring, step 3) and back."""

    def __init__(self, sched: Discrete, points: int, clean: bool):
        self.sched, self.points, self.clean = sched, points, clean
        self.lam_hi, self.lam_lo = float(sched.lambda_(sched.t_max)), float(sched.lambda_(sched.t_min))

    def grid(self, theta) -> np.ndarray:
        z = np.append(np.asarray(theta, dtype=np.float64), 0.0)
        inc = np.exp(z - z.max())
        c = np.cumsum(inc / inc.sum())[:-1]  # interior points in (0, 1)
        inner = self.sched.tau_from_lambda(self.lam_hi + c * (self.lam_lo - self.lam_hi))
        ts = np.concatenate([[self.sched.t_max], inner, [self.sched.t_min]])
        return np.append(ts, CLEAN) if self.clean else ts

    def theta(self, grid) -> np.ndarray:
        ts = np.asarray(grid, dtype=np.float64)[: self.points]
        c = (self.sched.lambda_(ts) - self.lam_hi) / (self.lam_lo - self.lam_hi)
        log_inc = np.log(np.maximum(np.diff(c), 1e-12))
        return log_inc[:-1] - log_inc[-1]


def _solver(model_fn, sched, prediction_type: str):
    """run(x, sampler, nfe, **options) -> (x0, nfe spent): the one place tune calls nfebench.sample."""
    from . import api

    def run(x, sampler, nfe, **options):
        return api.sample(model_fn, sched, x, sampler, nfe, prediction_type=prediction_type, return_nfe=True,
                          **options)

    return run


def rms(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).pow(2).mean().sqrt())


def teacher_solution(run, x_T, clean: bool, teacher_nfe: int, sched=None):
    """The teacher's x_0 from x_T (module docstring, step 1) and the evaluations it spent per sample."""
    x, spent = run(x_T, TEACHER[0], teacher_nfe, **TEACHER[1])
    if clean:  # the students' last step, t_min -> sigma = 0, taken from the teacher's x(t_min)
        t_min = 0.0 if sched is None else sched.t_min
        k = 1.0 if sched is None else float(sched.input_scale(t_min))  # back to the model's space, as x_T is
        x, one = run(x * k, "euler", 1, timesteps=[t_min, CLEAN])
        spent += one
    return x, spent


METHODS = ("ld3", "gits")


def teacher_trajectory(run, sched, x_T, candidates: np.ndarray, teacher_nfe: int):
    """x*(t_i) at each candidate timestep (the teacher, DPM-Solver++(3M), run segment by segment with
    teacher_nfe // (G - 1) logSNR steps per segment) and the evaluations it spent per sample."""
    per = max(3, teacher_nfe // (len(candidates) - 1))
    states, x, spent = [x_T], x_T, 0
    for a, b in zip(candidates[:-1], candidates[1:]):
        lam = np.linspace(float(sched.lambda_(a)), float(sched.lambda_(b)), per + 1)
        sub = sched.tau_from_lambda(lam)
        sub[0], sub[-1] = a, b
        x, used = run(x, TEACHER[0], per, timesteps=sub, **TEACHER[1])
        states.append(x)
        spent += used
    return states, spent


def min_cost_path(cost: np.ndarray, steps: int) -> np.ndarray:
    """Indices 0 = i_0 < i_1 < ... < i_steps = G - 1 minimising sum_k cost[i_k, i_{k+1}] (cost[i, j] = inf for
    j <= i): dynamic programming over (steps taken, node), O(steps G^2)."""
    G = cost.shape[0]
    best = np.full((steps + 1, G), np.inf)
    back = np.zeros((steps + 1, G), dtype=int)
    best[0, 0] = 0.0
    for k in range(1, steps + 1):
        tot = best[k - 1][:, None] + cost  # [from, to]
        back[k], best[k] = tot.argmin(0), tot.min(0)
    path = [G - 1]
    for k in range(steps, 0, -1):
        path.append(back[k, path[-1]])
    return np.array(path[::-1])


def gits_grid(run, sched, x_T, points: int, clean: bool, teacher_nfe: int, num_candidates: int):
    """GITS (Chen et al. 2024, Sec. 4): the `points`-point grid from T-1 to 0 whose DDIM steps along the teacher's
    trajectory have the smallest summed local error, by dynamic programming. Returns (grid, teacher states' final
    x, teacher evaluations, cost evaluations)."""
    G = int(num_candidates)
    if G < points:
        raise SamplerError(f"tune.gits_candidates={G} must be at least the grid's {points} points")
    lam_hi, lam_lo = float(sched.lambda_(sched.t_max)), float(sched.lambda_(sched.t_min))
    cand = sched.tau_from_lambda(np.linspace(lam_hi, lam_lo, G))
    cand[0], cand[-1] = sched.t_max, sched.t_min
    states, spent = teacher_trajectory(run, sched, x_T, cand, teacher_nfe)
    al, sg = sched.alpha(cand), sched.sigma(cand)
    cost = np.full((G, G), np.inf)
    for i in range(G - 1):  # eps at t_i from one DDIM step's evaluation: x0_i = (x - sigma eps)/alpha
        x1, _ = run(states[i], "ddim", 1, timesteps=[cand[i], CLEAN])  # one evaluation: x0 predicted at t_i
        eps_i = (states[i] - al[i] * x1) / sg[i]
        for j in range(i + 1, G):
            cost[i, j] = rms(al[j] * x1 + sg[j] * eps_i, states[j])
    grid = cand[min_cost_path(cost, points - 1)]
    grid[0], grid[-1] = sched.t_max, sched.t_min
    return (np.append(grid, CLEAN) if clean else grid), states[-1], spent, G - 1


def tune(model_fn, betas_or_schedule, sampler: str = "dpmpp", nfe: int = 10, x_T: torch.Tensor | None = None,
         prediction_type: str = "epsilon", *, teacher_nfe: int = 200, evals_per_point: int = 20,
         method: str = "ld3", gits_candidates: int = 41, return_info: bool = False, **sampler_options):
    """A timestep grid for `sampler` at `nfe` evaluations, tuned on the noise x_T [B, ...] (method: module docstring).

    model_fn, betas_or_schedule, prediction_type: as nfebench.sample. sampler_options: the sampler's own options
    (`spacing` names the default grid the result is compared with; `timesteps` is what tune chooses). teacher_nfe:
    the teacher's budget. evals_per_point: grids the search may try beyond the built-in spacings, per free grid
    point. Returns the grid, a float64 array that nfebench.sample(..., timesteps=grid) takes; with return_info=True
    also a dict: teacher, teacher_nfe and tuning_nfe (evaluations spent per noise sample by the teacher and by all
    the grids tried), num_noise, grids_tried, error_default / error_tuned / error_spacings (rms distance to the
    teacher on x_T), best_spacing, seconds. method: "ld3" (the search above) or "gits" (dynamic programming over the
    teacher trajectory's local errors, Chen et al. 2024, on gits_candidates candidate timesteps; module docstring).
    """
    t0 = time.perf_counter()
    if method not in METHODS:
        raise SamplerError(f"unknown tuning method {method!r}; allowed: {', '.join(METHODS)}")
    sched = as_schedule(betas_or_schedule)
    opts = check_tunable(sampler, nfe, get_sampler(sampler).resolve_spacing(sampler_options, sched))
    if not isinstance(x_T, torch.Tensor) or x_T.dim() < 2:
        raise SamplerError(f"x_T must be a batch of noise [B, ...] to tune on, got {type(x_T).__name__}")
    check_nfe(teacher_nfe, 1, TEACHER[0])
    run = _solver(model_fn, sched, prediction_type)
    points, clean = LAYOUTS[sampler](nfe)
    if method == "gits":
        gits, target, teacher_spent, cost_spent = gits_grid(run, sched, x_T, points, clean, teacher_nfe,
                                                            gits_candidates)
        if clean:  # the students' last step to clean data, from the teacher's x(0)
            target, one = run(target, "euler", 1, timesteps=[0.0, CLEAN])
            teacher_spent += one
    else:
        target, teacher_spent = teacher_solution(run, x_T, clean, teacher_nfe, sched)
    solver_opts = {k: v for k, v in opts.items() if k not in ("spacing", "timesteps")}
    spent, tried = 0, {}

    def error(grid) -> float:
        nonlocal spent
        key = tuple(np.round(grid, 9))
        if key not in tried:
            try:
                x, used = run(x_T, sampler, nfe, timesteps=grid, **solver_opts)
            except SamplerError:  # points closer than the grid validation allows
                tried[key] = (np.inf, grid)
            else:
                spent += used
                tried[key] = (rms(x, target), np.asarray(grid, dtype=np.float64))
        return tried[key][0]

    errors = {}
    for spacing in TUNE_SPACINGS:
        try:
            errors[spacing] = error(builtin_grid(sched, sampler, nfe, spacing))
        except SamplerError:  # e.g. DDIM's integer chain repeats timesteps for this spacing at this budget
            continue
    best_spacing = min(errors, key=errors.get)
    grids = _Grids(sched, points, clean)
    free = points - 2
    if method == "gits":  # the DP's grid as it is, scored by the same final error (not searched further)
        err = error(gits)
        spent += cost_spent
        if not return_info:
            return gits
        return gits, {"sampler": sampler, "options": solver_opts, "nfe": nfe, "method": "gits",
                      "teacher": f"{TEACHER_LABEL}, through {gits_candidates} candidates", "teacher_nfe": teacher_spent,
                      "tuning_nfe": spent, "num_noise": int(x_T.shape[0]), "grids_tried": len(tried),
                      "error_default": errors.get(opts["spacing"]), "error_tuned": err, "error_spacings": errors,
                      "best_spacing": best_spacing, "seconds": round(time.perf_counter() - t0, 2)}
    if free > 0:
        from scipy.optimize import minimize

        theta0 = grids.theta(builtin_grid(sched, sampler, nfe, best_spacing))
        simplex = np.vstack([theta0] + [theta0 + 0.5 * np.eye(free)[i] for i in range(free)])
        budget = evals_per_point * free
        minimize(lambda th: error(grids.grid(th)), theta0, method="Nelder-Mead",
                 options={"maxfev": budget, "initial_simplex": simplex, "xatol": 1e-3, "fatol": 0.0})
    err, grid = min(tried.values(), key=lambda v: v[0])
    if not return_info:
        return grid
    info = {"sampler": sampler, "options": solver_opts, "nfe": nfe, "method": "ld3", "teacher": TEACHER_LABEL,
            "teacher_nfe": teacher_spent, "tuning_nfe": spent, "num_noise": int(x_T.shape[0]),
            "grids_tried": len(tried), "error_default": errors.get(opts["spacing"]), "error_tuned": err,
            "error_spacings": errors, "best_spacing": best_spacing, "seconds": round(time.perf_counter() - t0, 2)}
    return grid, info


# ------------------------------------------------------------------------------------------- the cache and the CLI

# conf/tune.yaml documents them
TUNE_DEFAULTS = {"num_noise": 32, "seed": 1, "teacher_nfe": 200, "evals_per_point": 20, "method": "ld3",
                 "gits_candidates": 41}
SPACING_OF_METHOD = {"ld3": "tuned", "gits": "gits"}  # sampler.spacing=<this> samples on the method's cached grid
GRID_OPTIONS = ("spacing", "timesteps", "tuned_grid")  # what a tuned grid replaces: not part of its cache key


LATER_OPTIONS = {"frame": None}  # euler / heun's ODE frame (issue 26), added after their grids were cached


def key_options(options: dict) -> dict:
    """The sampler options a tuned grid is made for (JSON-normalised, so a loaded record compares equal). Options added
    to a sampler after its grids were first cached (LATER_OPTIONS) are left out at their defaults, so those grids
    keep their names."""
    kept = {k: v for k, v in options.items()
            if k not in GRID_OPTIONS and not (k in LATER_OPTIONS and v == LATER_OPTIONS[k])}
    return json.loads(json.dumps(kept, sort_keys=True))


def cache_path(results_dir, model_name: str, sampler: str, options: dict, nfe: int, method: str = "ld3") -> Path:
    """results_dir/schedules/<model>/<sampler>-nfe<N>-<8 hex digits of the options>.json (GITS: ...-gits.json)"""
    digest = hashlib.sha256(json.dumps(key_options(options), sort_keys=True).encode()).hexdigest()[:8]
    suffix = "" if method == "ld3" else f"-{method}"
    return Path(results_dir) / "schedules" / model_name / f"{sampler}-nfe{nfe}-{digest}{suffix}.json"


def check_record(record: dict, **expected) -> None:
    """A one-line SamplerError when a cached grid was made for another model, sampler, options or budget."""
    def show(v):  # a digest by its first 12 hex digits
        return repr(v[:12] if isinstance(v, str) and len(v) > 16 else v)

    for key, want in expected.items():
        if record.get(key) != want:
            raise SamplerError(f"the tuned grid {record['cache_path']} was made for {key}={show(record.get(key))}, "
                               f"not {show(want)}; tune this one with python -m nfebench.tune (force=true replaces it)")


def load_tuned(results_dir, model_name: str, sampler: str, options: dict, nfe: int,
               method: str = "ld3") -> tuple[dict, dict]:
    """The cached grid for `sampler.spacing=tuned` (gits: `sampler.spacing=gits`) and the options a leaderboard row
    records for it (the spacing and tuned_grid, the grid's hash). The model's weights are checked against the record
    once loaded (run.run)."""
    spacing = SPACING_OF_METHOD[method]
    if options.get("timesteps") is not None:
        raise SamplerError(f"sampler.spacing={spacing} takes the cached grid; drop sampler.timesteps")
    path = cache_path(results_dir, model_name, sampler, options, nfe, method)
    if not path.is_file():
        extra = "" if method == "ld3" else f" tune.method={method}"
        raise SamplerError(f"no {'tuned' if method == 'ld3' else method} grid for model {model_name!r}, sampler "
                           f"{sampler!r} at nfe={nfe} with these options in {path.parent}; make it with: python -m "
                           f"nfebench.tune sampler={sampler} nfe={nfe}{extra} results_dir={results_dir} and this "
                           f"run's model and sampler.* overrides")
    record = {**json.loads(path.read_text()), "cache_path": str(path)}
    check_record(record, model=model_name, sampler=sampler, nfe=nfe, options=key_options(options))
    check_record(record, grid_hash=grid_hash(record["timesteps"]))
    return record, {**options, "tuned_grid": record["grid_hash"]}


def tune_point(cfg, progress: bool = True) -> dict:
    """`python -m nfebench.tune`: tune the configured (model, sampler, options, nfe) on `tune.num_noise` noise samples
    with per-sample seeds (tune.seed, i) and cache the grid; returns the record (the cached one, unless force=true)."""
    from omegaconf import DictConfig, OmegaConf

    from .leaderboard import atomic_write_text
    from .models import load_model
    from .needs import model_digest
    from .point import ConfigError, check_writable, sample_seeds, validate
    from .samplers import PerSampleNoise

    c = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    settings = {**TUNE_DEFAULTS, **(c.pop("tune", None) or {})}
    unknown = sorted(set(settings) - set(TUNE_DEFAULTS))
    if unknown:
        raise ConfigError(f"unknown tune setting {unknown[0]!r}; allowed: {', '.join(TUNE_DEFAULTS)}")
    if c["sampler"].get("spacing") in SPACING_OF_METHOD.values():
        raise ConfigError("sampler.spacing is the default grid the tuned one is compared with; leave it, or set "
                          "a built-in spacing, when tuning")
    if settings["method"] not in METHODS:
        raise ConfigError(f"unknown tune.method {settings['method']!r}; allowed: {', '.join(METHODS)}")
    for key in ("num_noise", "teacher_nfe", "evals_per_point", "gits_candidates"):
        if isinstance(settings[key], bool) or not isinstance(settings[key], int) or settings[key] < 1:
            raise ConfigError(f"tune.{key} must be a positive integer, got {settings[key]!r}")
    p = validate(c)
    opts = check_tunable(p.sampler, p.nfe, p.sampler_options)
    name = p.model.get("name", "model")
    method = settings["method"]
    path = cache_path(p.results_dir, name, p.sampler, opts, p.nfe, method)
    if path.is_file() and not p.force:
        print(f"[nfebench] {path} is already tuned; keeping it (force=true tunes it again)")
        return json.loads(path.read_text())
    check_writable(p.results_dir)
    model = load_model(p.model["kind"], device=p.device, **{k: v for k, v in p.model.items() if k not in ("kind",
                                                                                                      "note")})
    x_T = PerSampleNoise(sample_seeds(settings["seed"], settings["num_noise"])).randn(model.sample_shape,
                                                                                       dtype=model.dtype)
    grid, info = tune(model, model.schedule, p.sampler, p.nfe, x_T.to(model.device), teacher_nfe=settings["teacher_nfe"],
                      evals_per_point=settings["evals_per_point"], method=method,
                      gits_candidates=settings["gits_candidates"], return_info=True, **opts)
    record = {
        "model": name, "model_digest": model_digest(model), "sampler": p.sampler, "options": key_options(opts),
        "nfe": p.nfe, "timesteps": grid.tolist(), "grid_hash": grid_hash(grid),
        "provenance": {
            "method": ("nfebench.tuning (LD3's final-error objective, Nelder-Mead from the best built-in spacing)"
                       if method == "ld3" else f"nfebench.tuning GITS (Chen et al. 2024: dynamic programming over "
                       f"the teacher trajectory's local DDIM errors, {settings['gits_candidates']} candidates)"),
            "teacher": info["teacher"], "teacher_nfe": info["teacher_nfe"],
            "noise": {"seed": settings["seed"], "num_noise": settings["num_noise"],
                      "per_sample_seeds": "nfebench.run.sample_seeds(seed, num_noise)"},
            "tuning_nfe": info["tuning_nfe"], "grids_tried": info["grids_tried"],
            "error_before": {"spacing": opts["spacing"], "rms": info["error_default"]},
            "error_after": info["error_tuned"], "error_spacings": info["error_spacings"],
            "best_spacing": info["best_spacing"], "seconds": info["seconds"], "device": p.device,
            "nfebench_version": __version__,
            "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds")}}
    atomic_write_text(path, json.dumps(record, indent=1) + "\n")
    if progress:
        print(f"[nfebench] {name} {p.sampler} nfe={p.nfe} ({method}): rms to the teacher {info['error_default']:.4g} "
              f"({opts['spacing']}) -> {info['error_tuned']:.4g} tuned (best built-in: {info['best_spacing']} "
              f"{info['error_spacings'][info['best_spacing']]:.4g}); teacher {info['teacher_nfe']} + search "
              f"{info['tuning_nfe']} evaluations x {settings['num_noise']} samples, {info['seconds']:.0f} s\n"
              f"  grid {grid_hash(grid)}: {', '.join(f'{t:.2f}' for t in grid)}\n  -> {path}")
    return record

"""Distance to the exact ODE solution (metrics.ode_error): how far each sample is from a converged solution of the
same probability-flow ODE from the same x_T (the measure of DPM-Solver-v3 and DC-Solver; docs/metrics.md).

For sample i with sampler output x_i (the sampler's working space: latents for latent models, before decoding and
before quantization) and reference r_i from the same x_T:

    ode_error_i = sqrt(mean_d (x_i - r_i)^2)          (root-mean-square over the dimensions d)

The row's `ode_error` is the mean over samples; the per-sample values go to the run's per_sample.npz, so that
nfebench.compare and the report test differences paired over the samples.

Where the trajectory ends. A sampler ends either at tau = t_min (x_{t_min}, e.g. DPM-Solver's default) or at clean
data (the DDIM chain, EDM's Euler/Heun: a last step from t_min to sigma = 0, which is the denoising step
x_0 = (x - sigma eps(x, t_min)) / alpha at t_min). The reference is one converged solve to t_min (default
DPM-Solver++ 3M at 500 evaluations) plus, for the samplers ending at clean data, that same denoising step applied to
it: the exact solution of the discretized problem every sampler of that kind solves. Which end a sampler has is
read off the sampler itself, with its options, by a probe on a one-pixel sample (`probe`): for data concentrated at
0 the exact eps is x / sigma and the ODE solution from x_T = sigma(t_max) is x = sigma(tau), so the sampler's output
is sigma at its end, on any schedule. No sampler is known by name.

Stochastic samplers have no ODE solution: a sampler registered `stochastic=True` whose options make it draw noise
(the probe counts the draws: ddim with eta = 0 draws none) gets no ode_error, and its row says why.

The reference's own error: the reference sampler at half its NFE from the same x_T; the rms distance of the two is
stated (`ode_reference_error`, an overestimate of the error of the full-NFE reference) and a run whose ode_error is
not at least 10x above it prints a warning. The reference is cached under results_dir/ode_reference/, one file per
model, seed, reference setting and conditioning, holding every sample computed so far (the per-sample seeds of
`seed` are a prefix-stable sequence, so 500 samples reuse the first 500 of 1000); a sweep pays for it once.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch

DEFAULT_REFERENCE = {"sampler": "dpmpp", "nfe": 500, "options": {"variant": "3M"}}
RESOLVED_BY = 10.0  # the reference's error should be this much below what it measures
END_TOL = 0.2   # the probe's end within this fraction of sigma(t_min) of 0 / of sigma(t_min): clean data / t_min
#                 (rk45 at rtol = 3e-3 is 6 % off; a grid ending at the discrete t = 1 is 49 % off)


from .fidelity import MetricsError  # noqa: E402


class OdeErrorError(MetricsError):
    """ode_error cannot be measured as configured: the message names the bad value and what is allowed."""


# ---------------------------------------------------------------------------------------- where a sampler ends


def probe(sampler: str, nfe: int, sched, variance_type=None, **options) -> dict:
    """{"stochastic": bool, "sigma_end": float, "end": "t_min" | "clean" | "other"} of this sampler with these
    options, from one run on a one-pixel sample (module docstring): the exact eps of data at 0, eps = x / sigma,
    from x_T = sigma(t_max) (z = 1), whose ODE solution is x = sigma(tau) at every tau; the output is sigma at the
    sampler's end. stochastic: registered stochastic and drawing noise with these options (the noise source here
    counts the draws and returns zeros)."""
    from ..api import sample
    from ..samplers import get_sampler
    from ..samplers.common import Noise

    class Draws(Noise):
        count = 0

        def randn_like(self, x):
            Draws.count += 1
            return torch.zeros_like(x)

    channels = 2 if variance_type in ("learned", "learned_range") else 1

    def delta_data(x, t):  # in the model's own terms; plus the zero covariance-head output SN/NPR read (as dry_run)
        tau = t.detach().cpu().numpy()
        scale = torch.as_tensor(sched.input_scale(tau) * sched.sigma(tau), dtype=x.dtype).reshape(-1, 1, 1, 1)
        return (x / scale).repeat(1, channels, 1, 1), torch.zeros_like(x)

    x_t = torch.full((1, 1, 1, 1), float(sched.sigma(sched.t_max) * sched.input_scale(sched.t_max)), dtype=torch.float64)
    from ..samplers import SamplerError

    stochastic = get_sampler(sampler).stochastic
    try:
        out = sample(delta_data, sched, x_t, sampler, nfe, generator=Draws(None), variance_type=variance_type,
                     **options)
    except SamplerError:  # an adaptive SDE solver on zero noise can run past its cap: it drew noise first
        if stochastic and Draws.count > 0:
            return {"stochastic": True, "sigma_end": float("nan"), "end": "other"}
        raise
    sigma_end, sigma_min = float(out.reshape(-1)[0]), float(sched.sigma(sched.t_min))
    end = ("clean" if abs(sigma_end) <= END_TOL * sigma_min else
           "t_min" if abs(sigma_end - sigma_min) <= END_TOL * sigma_min else "other")
    return {"stochastic": stochastic and Draws.count > 0, "sigma_end": sigma_end, "end": end}


# ---------------------------------------------------------------------------------------- the reference


def reference_setting(m: dict) -> dict:
    """metrics.ode_reference as {sampler, nfe, options}, validated (OdeErrorError names the bad value)."""
    from ..samplers import SamplerError, get_sampler

    ref = m.get("ode_reference") or DEFAULT_REFERENCE
    if not isinstance(ref, dict) or set(ref) - {"sampler", "nfe", "options"}:
        raise OdeErrorError(f"metrics.ode_reference must be a mapping with sampler, nfe, options; got {ref!r}")
    ref = {"sampler": ref.get("sampler", DEFAULT_REFERENCE["sampler"]), "nfe": ref.get("nfe", DEFAULT_REFERENCE["nfe"]),
           "options": dict(ref.get("options") or {})}
    nfe = ref["nfe"]
    if isinstance(nfe, bool) or not isinstance(nfe, int) or nfe < 2:
        raise OdeErrorError(f"metrics.ode_reference.nfe must be an integer >= 2, got {nfe!r}")
    try:
        spec = get_sampler(ref["sampler"])
        ref["options"] = {k: v for k, v in spec.check_options(ref["options"]).items() if k in ref["options"]}
    except SamplerError as e:
        raise OdeErrorError(f"metrics.ode_reference: {e}") from None
    return ref


def describe_reference(ref: dict) -> str:
    opts = ",".join(f"{k}={v}" for k, v in sorted(ref["options"].items()))
    return f"{ref['sampler']}({opts}) nfe={ref['nfe']}" if opts else f"{ref['sampler']} nfe={ref['nfe']}"


def _model_digest(model, p) -> str:
    from ..needs import model_digest

    try:
        return model_digest(model)
    except Exception:  # a python-factory model without a weight file: its configuration names it
        return hashlib.sha256(json.dumps(p.model, sort_keys=True, default=str).encode()).hexdigest()


def cache_path(model, p, ref: dict) -> Path:
    key = {"model": _model_digest(model, p), "schedule": model.schedule.describe(), "dtype": str(model.dtype),
           "prediction_type": model.prediction_type, "seed": p.seed, "reference": ref,
           "guidance_scale": p.guidance_scale, "class_labels": p.class_labels, "conditional": bool(p.labels)}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return Path(p.results_dir) / "ode_reference" / f"{p.model.get('name', 'model')}-s{p.seed}-{digest}.npz"


def _solve(model, sched, x, ref: dict, nfe: int, cond: dict) -> tuple[torch.Tensor, int]:
    from ..samplers import CountedEps, get_sampler
    from ..samplers.common import Noise

    class NoDraws(Noise):
        def randn_like(self, x):
            raise OdeErrorError(f"the ODE reference {describe_reference(ref)} drew noise: choose a deterministic "
                                "sampler for metrics.ode_reference")

    eps = CountedEps(partial(model, **cond), budget=nfe)
    return get_sampler(ref["sampler"]).fn(eps, sched, x, nfe, NoDraws(None), **ref["options"]), eps.calls


def compute_reference(model, p, seeds: list[int], ref: dict, batch_size: int) -> dict:
    """The reference for `seeds`: x at t_min, its denoised x_0, and the per-sample rms distance to the half-NFE
    reference; arrays [N, ...] in the model's dtype (err float64), plus evaluations spent per sample."""
    from ..api import to_vp_frame
    from ..samplers import PerSampleNoise

    sched = model.schedule
    parts = {"x_t_min": [], "x_clean": [], "error": []}
    evals = 0
    with torch.no_grad():
        for i in range(0, len(seeds), batch_size):
            batch = seeds[i:i + batch_size]
            noise = PerSampleNoise(batch)
            x = to_vp_frame(sched.prior_std * noise.randn(model.sample_shape, dtype=model.dtype), sched).to(model.device)
            cond = {} if not p.labels else dict(class_labels=torch.tensor([p.labels[s] for s in batch]),
                                                guidance_scale=p.guidance_scale, null_class=model.null_class)
            x_ref, n1 = _solve(model, sched, x, ref, ref["nfe"], cond)
            x_half, n2 = _solve(model, sched, x, ref, ref["nfe"] // 2, cond)
            t = float(sched.t_min)
            e = partial(model, **cond)(x_ref, torch.full((x.shape[0],), t, dtype=x.dtype, device=x.device))
            e = e[0] if isinstance(e, tuple) else e
            x_clean = (x_ref - float(sched.sigma(t)) * e) / float(sched.alpha(t))
            parts["x_t_min"].append(x_ref.cpu())
            parts["x_clean"].append(x_clean.cpu())
            parts["error"].append(rms_per_sample(x_ref, x_half))
            evals = n1 + n2 + 1
    return {k: torch.cat(v) if k != "error" else np.concatenate(v) for k, v in parts.items()} | {"evaluations": evals}


def rms_per_sample(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """sqrt(mean over each sample's dimensions of (a - b)^2), float64 [N]."""
    d = (a.double() - b.double().to(a.device)).reshape(a.shape[0], -1)
    return d.pow(2).mean(1).sqrt().cpu().numpy()


def cached_reference(model, p, ref: dict, progress: bool = True) -> dict:
    """The reference of every seed of p, from the cache where it covers them (computing only what is missing).
    Returns the arrays for p's seeds plus {"path", "cached", "seconds", "evaluations"}."""
    from ..leaderboard import atomic_write_bytes
    from ..point import sample_seeds

    seeds = sample_seeds(p.seed, p.num_samples)
    path = cache_path(model, p, ref)
    have = {}
    if path.is_file():
        with np.load(path) as z:
            have = {k: z[k] for k in z.files}
        n = min(len(have["seeds"]), len(seeds))
        if list(have["seeds"][:n]) != seeds[:n]:  # not this seed sequence: start over
            have = {}
    done = len(have["seeds"]) if have else 0
    t0, evals = time.perf_counter(), 0
    if done < len(seeds):
        new = compute_reference(model, p, seeds[done:], ref, p.batch_size)
        evals = new.pop("evaluations")
        new = {k: (v.numpy() if torch.is_tensor(v) else v) for k, v in new.items()}
        new["seeds"] = np.array(seeds[done:], dtype=np.uint32)
        have = {k: np.concatenate([have[k], new[k]]) if have else new[k] for k in new}
        buf = io.BytesIO()
        np.savez(buf, **have, reference=json.dumps(ref))
        atomic_write_bytes(path, buf.getvalue())
    seconds = time.perf_counter() - t0
    out = {k: have[k][:len(seeds)] for k in ("x_t_min", "x_clean", "error")}
    return {**out, "seeds": seeds, "path": str(path), "cached": evals == 0, "seconds": seconds,
            "evaluations": evals, "computed": len(seeds) - done}


@dataclass
class OdeError:
    """The per-sample hook nfebench.needs runs on every batch of raw sampler output (see Resolution.per_sample)."""

    reference: torch.Tensor  # [N, ...] the reference at the sampler's end, in seed order
    index: dict  # seed -> row of reference
    reference_error: float
    label: str
    key: str = "ode_error"

    def __call__(self, x0: torch.Tensor, seeds: list[int]) -> np.ndarray:
        rows = torch.as_tensor([self.index[int(s)] for s in seeds])
        return rms_per_sample(x0, self.reference[rows])

    def summary(self, values: np.ndarray) -> dict:
        mean = float(np.mean(values))
        if not mean >= RESOLVED_BY * self.reference_error:
            print(f"[nfebench] warning: ode_error {mean:.3g} is not {RESOLVED_BY:g}x above the reference's own error "
                  f"{self.reference_error:.3g} ({self.label}): raise metrics.ode_reference.nfe")
        return {"ode_error": mean}


def resolve(model, p, progress: bool = True):
    """The `ode_reference` need (nfebench.needs): decide whether the sampler has an ODE solution, where it ends,
    and give the reference (cached) as a per-sample hook."""
    from ..needs import Resolution
    from ..point import ConfigError, sampler_call_options

    ref = reference_setting(p.metrics)
    label = describe_reference(ref)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError("metrics.ode_error runs in one process (its per-sample values are not gathered across "
                          "torchrun ranks); run it without torchrun")
    sched = model.schedule
    opts = sampler_call_options(p)
    got = probe(p.sampler, p.nfe, sched, model.variance_type, **opts)
    if got["stochastic"]:
        why = f"none: {p.sampler} is stochastic with these options (it draws noise), no ODE solution to measure"
        if progress:
            print(f"[nfebench] metrics.ode_error: {why}; ode_error left empty")
        return Resolution(row={"ode_reference": why})
    if got["end"] == "other":
        raise ConfigError(f"metrics.ode_error: sampler {p.sampler} ends at sigma={got['sigma_end']:.4g}, neither "
                          f"t_min (sigma={float(sched.sigma(sched.t_min)):.4g}) nor clean data (0); ode_error "
                          "compares samplers ending at one of those")
    ref_end = probe(ref["sampler"], ref["nfe"], sched, model.variance_type, **ref["options"])
    if ref_end["stochastic"] or ref_end["end"] != "t_min":
        raise ConfigError(f"metrics.ode_reference {label} must be a deterministic sampler ending at t_min; it "
                          f"{'draws noise' if ref_end['stochastic'] else 'ends at ' + ref_end['end']}")
    res = cached_reference(model, p, ref, progress)
    if progress:
        how = "cached" if res["cached"] else (f"{res['computed']} samples x {res['evaluations']} evaluations in "
                                              f"{res['seconds']:.1f} s, one-off, not counted in NFE")
        print(f"[nfebench] ODE reference {label}: {how}: {res['path']}")
    end = "x_clean" if got["end"] == "clean" else "x_t_min"
    reference = torch.from_numpy(res[end]).to(model.device)
    err = float(np.sqrt(np.mean(res["error"] ** 2)))
    where = "clean data (t_min + denoising step)" if got["end"] == "clean" else "t_min"
    hook = OdeError(reference, {s: i for i, s in enumerate(res["seeds"])}, err, label)
    return Resolution(row={"ode_reference": f"{label} to {where}", "ode_reference_error": err},
                      timings={"ode_reference_seconds": round(res["seconds"], 3)}, per_sample=[hook],
                      details={"ode_reference_info": {k: res[k] for k in ("path", "cached", "evaluations", "computed")}
                               | {"seconds": round(res["seconds"], 3), "end": got["end"], "error_rms": err}})

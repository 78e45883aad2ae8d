"""Analytic-DPM (Bao, Li, Zhu, Zhang 2022, arXiv 2201.06503): the optimal reverse variance from one moment.

For the reverse step s -> t (s > t, integer timesteps of the chain; t may be CLEAN) of the DDIM family
(Song et al. 2021, Eq. 7 with lambda^2 the step's own noise)

    q_lambda(x_t | x_s, x_0) = N( a_t x_0 + sqrt(sigma_t^2 - lambda^2) (x_s - a_s x_0) / sigma_s,  lambda^2 I ),

the Gaussian p(x_t | x_s) with the best (KL-optimal) mean and isotropic variance has mean = the same expression with
x_0 replaced by x0_hat(x_s) = (x_s - sigma_s eps_hat) / a_s, and variance (Bao et al. 2022, Thm 1, Eq. 7; written
here with the noise prediction instead of the score, eps_hat = -sigma_s * score):

    sigma*^2 = lambda^2 + c0^2 * Var[x_0 | x_s],     c0 = a_t - sqrt(sigma_t^2 - lambda^2) * a_s / sigma_s,
    Var[x_0 | x_s] (per dimension, averaged) = (sigma_s^2 / a_s^2) * (1 - Gamma_s),
    Gamma_s = E_{x_0 ~ data, x_s ~ q(x_s | x_0)} [ mean_d eps_hat(x_s, s)_d^2 ].

(c0^2 sigma_s^2 / a_s^2 is the paper's (sqrt(bar_beta_n / alpha_n) - sqrt(bar_beta_{n-1} - lambda_n^2))^2 on a
respaced chain.)  lambda^2 = the posterior variance beta-tilde gives Analytic-DDPM; lambda^2 = 0 gives Analytic-DDIM.
Thm 2 bounds the variance for data in [-1, 1]: 0 <= Var[x_0 | x_s] <= min(sigma_s^2 / a_s^2, 1); the Monte-Carlo
estimate of Gamma is clipped into that range (as the authors' code does: cov clamped to [0, 1]).

Gamma_s depends on the model only, so it is estimated once, on the model's training data, at every integer timestep
(T * num_images per-sample evaluations, a one-off cost reported apart from any sampler's NFE) and cached beside the
checkpoint (`cached_moments`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .images import to_model_range
from .schedule import VPSchedule

DEFAULT_NUM_IMAGES = 500  # training images per timestep for Gamma_n (T * 500 per-sample evaluations, once)
DEFAULT_BATCH_SIZE = 250
CACHE_PREFIX = "analytic_moments"
USER_CACHE = Path(os.environ.get("NFEBENCH_CACHE", Path.home() / ".cache" / "nfebench")) / "analytic_dpm"


class MomentsError(ValueError):
    """Moments that are missing or do not fit the model: the message says what to pass."""


def _model_dtype_device(eps_fn):
    return getattr(eps_fn, "dtype", torch.float32), getattr(eps_fn, "device", torch.device("cpu"))


def per_timestep_mean(eps_fn: Callable, betas, train_images_uint8: torch.Tensor, statistic: Callable,
                      num_images: int | None = None, batch_size: int = DEFAULT_BATCH_SIZE,
                      generator: torch.Generator | None = None, timesteps=None, error=None) -> np.ndarray:
    """E over training images x_0 and fresh noise of statistic(x0, x_n, eps_hat, a_n, s_n) [B] at each integer
    timestep n, float64 [T] (timesteps not asked for are NaN): the one Monte-Carlo loop behind Analytic-DPM's moments
    and spacing=elbo's x0 errors (nfebench.elbo_steps).

    x_0 runs over `num_images` training images (a generator-drawn subset; None = all), x_n = a_n x_0 + s_n eps with one
    fresh eps per image and timestep. The noise of timestep n is drawn for all images at once, so the estimate does
    not depend on batch_size. Cost: len(timesteps) * num_images per-sample evaluations. Bad input raises `error`.
    """
    error = error or MomentsError
    sched = betas if isinstance(betas, VPSchedule) else VPSchedule(betas)
    x_all = to_model_range(train_images_uint8).double()
    n_total = x_all.shape[0]
    m = n_total if num_images is None else int(num_images)
    if not 1 <= m <= n_total:
        raise error(f"num_images must be in [1, {n_total}] (the training images given), got {num_images}")
    if m < n_total:
        x_all = x_all[torch.randperm(n_total, generator=generator)[:m].sort().values]
    ns = np.arange(sched.T) if timesteps is None else np.asarray(timesteps, dtype=np.int64)
    if np.any(ns < 0) or np.any(ns >= sched.T):
        raise error(f"timesteps must be integers in [0, {sched.T - 1}]")
    dtype, device = _model_dtype_device(eps_fn)
    out = np.full(sched.T, np.nan)
    with torch.no_grad():
        for n in ns:
            a, s = float(sched.alpha(float(n))), float(sched.sigma(float(n)))
            noise = torch.randn(x_all.shape, generator=generator, dtype=torch.float64)
            total = 0.0
            for i in range(0, m, batch_size):
                x0 = x_all[i:i + batch_size]
                x = (a * x0 + s * noise[i:i + batch_size]).to(dtype=dtype, device=device)
                e = eps_fn(x, torch.full((x.shape[0],), float(n), dtype=dtype, device=device)).double().cpu()
                total += statistic(x0, x.double().cpu(), e, a, s).sum().item()
            out[n] = total / m
    return out


def analytic_moments(eps_fn: Callable, betas, train_images_uint8: torch.Tensor, num_images: int | None = None,
                     batch_size: int = DEFAULT_BATCH_SIZE, generator: torch.Generator | None = None,
                     timesteps=None) -> np.ndarray:
    """Gamma_n = E mean_d(eps_hat(x_n, n)^2) at each integer timestep n (Bao et al. 2022, Eq. 8), float64 [T]
    (sampling of x_0 and the noise, cost and `timesteps`: per_timestep_mean)."""
    return per_timestep_mean(eps_fn, betas, train_images_uint8, lambda x0, x, e, a, s: e.pow(2).flatten(1).mean(1),
                             num_images, batch_size, generator, timesteps)


def variance_bounds(sched: VPSchedule, s: float, t: float, lambda2: float) -> tuple[float, float]:
    """(c0^2, upper bound of Var[x_0 | x_s]) of the step s -> t; t = -1 is clean data (a = 1, sigma = 0)."""
    a_s, s_s = float(sched.alpha(s)), float(sched.sigma(s))
    a_t, s_t = (1.0, 0.0) if t < 0 else (float(sched.alpha(t)), float(sched.sigma(t)))
    c0 = a_t - math.sqrt(max(s_t**2 - lambda2, 0.0)) * a_s / s_s
    return c0**2, min(s_s**2 / a_s**2, 1.0)


def optimal_variance(sched: VPSchedule, s: float, t: float, gamma_s: float, lambda2: float) -> float:
    """sigma*^2 of the step s -> t (Bao et al. 2022, Thm 1 and the Thm 2 bounds; module docstring)."""
    if not np.isfinite(gamma_s):
        raise MomentsError(f"no moment Gamma at timestep {s:g}; estimate it there (analytic_moments)")
    c02, upper = variance_bounds(sched, s, t, lambda2)
    a_s, s_s = float(sched.alpha(s)), float(sched.sigma(s))
    cov = min(max(s_s**2 / a_s**2 * (1.0 - gamma_s), 0.0), upper)
    return lambda2 + c02 * cov


# --- loading and caching ------------------------------------------------------------------------------------------
def load_moments(moments, T: int) -> np.ndarray:
    """A moments option -> float64 [T]: a path to a cache file written by cached_moments (.npz), or an array."""
    if moments is None:
        raise MomentsError("Analytic-DPM needs the moments Gamma_n: pass moments=PATH (a file from "
                           "nfebench.analytic_dpm.cached_moments) or an array of length T")
    if isinstance(moments, (str, os.PathLike)):
        p = Path(moments)
        if not p.exists():
            raise MomentsError(f"moments file {str(p)!r} does not exist")
        with np.load(p) as f:
            gamma = np.asarray(f["gamma"], dtype=np.float64)
    else:
        gamma = np.asarray(moments, dtype=np.float64).reshape(-1)
    if gamma.size != T:
        raise MomentsError(f"moments have {gamma.size} values but the schedule has T={T} timesteps")
    return gamma


def weights_digest(model_dir) -> str:
    """sha256 of the weight files (diffusion_pytorch_model.*) under a diffusers model directory."""
    root = Path(model_dir)
    files = sorted(p for p in root.rglob("diffusion_pytorch_model.*") if p.is_file())
    if not files:
        raise MomentsError(f"no diffusion_pytorch_model.* weights under {str(root)!r}")
    h = hashlib.sha256()
    for p in files:
        h.update(p.relative_to(root).as_posix().encode())
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def gmm_digest(gmm) -> str:
    """sha256 of a GaussianMixtureVP's parameters (the oracle has no weight file)."""
    h = hashlib.sha256()
    for a in (gmm.w, gmm.mu, gmm.d, gmm.u):
        h.update(a.detach().cpu().double().contiguous().numpy().tobytes())
    return h.hexdigest()


def moments_key(model_digest: str, betas, train_images_uint8: torch.Tensor, num_images, seed: int) -> str:
    """The cache key: model weights, betas, training images, subset size and seed (16 hex digits)."""
    h = hashlib.sha256()
    h.update(model_digest.encode())
    h.update(np.ascontiguousarray(np.asarray(betas, dtype=np.float64)).tobytes())
    h.update(train_images_uint8.contiguous().numpy().tobytes())
    h.update(json.dumps({"num_images": num_images, "seed": seed}).encode())
    return h.hexdigest()[:16]


def _writable(d: Path) -> bool:
    try:
        d.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=d, prefix=".probe", delete=True):
            pass
        return True
    except OSError:
        return False


def cached_moments(eps_fn: Callable, betas, train_images_uint8: torch.Tensor, *, model_digest: str,
                   model_dir=None, cache_dir=None, num_images: int | None = DEFAULT_NUM_IMAGES,
                   batch_size: int = DEFAULT_BATCH_SIZE, seed: int = 0, recompute: bool = False
                   ) -> tuple[np.ndarray, dict]:
    """Gamma_n for this model, from the cache or estimated once (analytic_moments) and cached.

    The file `analytic_moments_<key>.npz` goes beside the weights (model_dir) when that directory is writable, else
    into cache_dir (default $NFEBENCH_CACHE/analytic_dpm or ~/.cache/nfebench/analytic_dpm). Both places are read.
    Returns (gamma [T], info) with info: path, cached (bool), num_images, seed, per_sample_evals (T: each image's
    evaluations), calls (batched model calls), seconds (of the estimate when it was made).
    """
    sched = betas if isinstance(betas, VPSchedule) else VPSchedule(betas)

    def compute(m, gen):
        return analytic_moments(eps_fn, sched, train_images_uint8, num_images=m, batch_size=batch_size, generator=gen)

    return cached_array(CACHE_PREFIX, "gamma", compute, sched, train_images_uint8, model_digest=model_digest,
                        model_dir=model_dir, cache_dir=cache_dir, num_images=num_images, batch_size=batch_size,
                        seed=seed, recompute=recompute)


def cached_array(prefix: str, field: str, compute: Callable, sched: VPSchedule, train_images_uint8: torch.Tensor, *,
                 model_digest: str, model_dir=None, cache_dir=None, num_images: int | None = DEFAULT_NUM_IMAGES,
                 batch_size: int = DEFAULT_BATCH_SIZE, seed: int = 0, recompute: bool = False
                 ) -> tuple[np.ndarray, dict]:
    """A per-timestep array estimated once per model on its training images (compute(num_images, generator) -> [T])
    and cached as `<prefix>_<key>.npz` (the array under `field`): the machinery of cached_moments, shared with
    nfebench.elbo_steps."""
    m = train_images_uint8.shape[0] if num_images is None else min(int(num_images), train_images_uint8.shape[0])
    key = moments_key(model_digest, sched.betas, train_images_uint8, m, seed)
    name = f"{prefix}_{key}.npz"
    user = Path(cache_dir) if cache_dir is not None else USER_CACHE
    places = ([Path(model_dir)] if model_dir is not None else []) + [user]
    if not recompute:
        for d in places:
            p = d / name
            if p.exists():
                with np.load(p) as f:
                    info = json.loads(str(f["info"]))
                    arr = np.asarray(f[field], dtype=np.float64)
                return arr, {**info, "path": str(p), "cached": True}
    t0 = time.time()
    arr = compute(m, torch.Generator().manual_seed(seed))
    info = {"num_images": m, "seed": seed, "per_sample_evals": sched.T,
            "calls": sched.T * math.ceil(m / batch_size), "seconds": round(time.time() - t0, 2),
            "model_digest": model_digest, "key": key}
    target = next((d for d in places if _writable(d)), None)
    if target is None:
        raise MomentsError(f"cannot write the {prefix} cache in any of {[str(d) for d in places]}")
    path = target / name
    tmp = target / f".{name}.{os.getpid()}.tmp.npz"
    np.savez(tmp, **{field: arr}, betas=sched.betas, info=json.dumps(info))
    os.replace(tmp, path)  # atomic: concurrent runs never read a half-written file
    return arr, {**info, "path": str(path), "cached": False}

"""ELBO-optimal timesteps (Watson, Chan, Ho, Norouzi 2021, "Learning to efficiently sample from diffusion
probabilistic models", arXiv 2106.03802), `spacing=elbo` for the ddpm / ddim / analytic_* chains and the vlb NLL.

For a chain T-1 = tau_K > ... > tau_1 = 0 (then clean data) the K-step bound (nfebench.metrics.nll, vlb) is

    L = prior(T-1) + sum_{i=2..K} L(tau_i, tau_{i-1}) + decoder(0),

a sum of terms that each depend on one pair (t, s) only (Sec. 3): with the model's x0_hat at t, the step t -> s has

    L(t, s) = 1/2 [ D (log(v / post) + post / v - 1) + (c0^2 / v) m_t ],   m_t = E ||x_0 - x0_hat(x_t, t)||^2,

post = beta-tilde and c0 = a_s beta' / s_t^2 of the respaced step (beta' = 1 - alpha_bar_t / alpha_bar_s), v the
reverse variance (small: post; large: beta'; analytic: Analytic-DPM's optimal variance from Gamma_t). m_t needs one
pass of the model over training images at each candidate timestep t (all T of them), whatever s is, so the whole table
L costs T passes; the prior and the decoder do not depend on the interior points. The K-step chain with the smallest
bound is then a shortest path with exactly K - 1 edges from T-1 to 0, found by dynamic programming in O(K T^2)
(Watson et al., Sec. 3, Alg. 1). m_t is estimated once per model and cached beside the checkpoint (as Analytic-DPM's
moments, same key); its cost is reported apart from any sampler's NFE. Discrete VP schedules only (integer timesteps).
"""

from __future__ import annotations

import os

import numpy as np
import torch

from .analytic_dpm import DEFAULT_BATCH_SIZE, DEFAULT_NUM_IMAGES, MomentsError, cached_array, per_timestep_mean
from .schedule import VPSchedule

CACHE_PREFIX = "elbo_x0_errors"
VARIANCES = ("small", "large", "analytic")


class ElboError(ValueError):
    """Missing or mismatched x0-error table, or a bad spacing=elbo request: the message says what to pass."""


def x0_errors(eps_fn, betas, train_images_uint8: torch.Tensor, num_images: int | None = None,
              batch_size: int = DEFAULT_BATCH_SIZE, generator: torch.Generator | None = None,
              timesteps=None) -> np.ndarray:
    """m_t = E_{x_0, eps} ||x_0 - x0_hat(x_t, t)||^2 (summed over dimensions) at each integer t, float64 [T].

    The Monte-Carlo loop of Analytic-DPM's moments (analytic_dpm.per_timestep_mean: `num_images` training images, one
    fresh eps per image and timestep, batch-size independent; `timesteps` limits the estimate to those integers).
    """
    return per_timestep_mean(eps_fn, betas, train_images_uint8,
                             lambda x0, x, e, a, s: (x0 - (x - s * e) / a).pow(2).flatten(1).sum(1),
                             num_images, batch_size, generator, timesteps, error=ElboError)


def load_x0_errors(costs, T: int) -> np.ndarray:
    """An elbo_costs option -> float64 [T]: a path to a file written by cached_x0_errors (.npz), or an array."""
    if costs is None:
        raise ElboError("spacing='elbo' needs the model's per-timestep x0 errors: pass elbo_costs=PATH (a file from "
                        "nfebench.elbo_steps.cached_x0_errors) or an array of length T")
    try:
        m = np.asarray(np.load(costs)["m"] if isinstance(costs, (str, os.PathLike)) else costs,
                       dtype=np.float64).reshape(-1)
    except OSError as e:
        raise ElboError(f"cannot read elbo_costs {costs!r}: {e}") from None
    if m.size != T:
        raise ElboError(f"elbo_costs have {m.size} values but the schedule has T={T} timesteps")
    return m


def kl_table(sched: VPSchedule, m: np.ndarray, dims: int, variance: str = "small", gamma=None) -> np.ndarray:
    """L[t, s] (nats per image) of the step t -> s for all integers T-1 >= t > s >= 0; +inf elsewhere."""
    if variance not in VARIANCES:
        raise ElboError(f"unknown variance {variance!r} for spacing=elbo; allowed: {', '.join(VARIANCES)}")
    if variance == "analytic" and gamma is None:
        raise ElboError("spacing=elbo with the analytic variance needs Analytic-DPM's moments Gamma")
    ab = sched.alphas_cumprod
    t, s = np.meshgrid(np.arange(sched.T), np.arange(sched.T), indexing="ij")
    valid = t > s
    ab_t, ab_s = ab[t], ab[s]
    beta = 1.0 - ab_t / ab_s  # respaced beta' of the step t -> s
    post = beta * (1.0 - ab_s) / (1.0 - ab_t)
    c0sq = ab_s * beta**2 / (1.0 - ab_t) ** 2  # (a_s beta' / s_t^2)^2
    if variance == "small":
        v = post
    elif variance == "large":
        v = beta
    else:  # Analytic-DPM (analytic_dpm.optimal_variance with lambda^2 = post), vectorized over the pairs
        g = np.asarray(gamma, dtype=np.float64)[t]
        a_t, s_t, a_s, s_s = np.sqrt(ab_t), np.sqrt(1 - ab_t), np.sqrt(ab_s), np.sqrt(1 - ab_s)
        c0_opt = a_s - np.sqrt(np.maximum(s_s**2 - post, 0.0)) * a_t / s_t
        cov = np.clip(s_t**2 / a_t**2 * (1.0 - g), 0.0, np.minimum(s_t**2 / a_t**2, 1.0))
        v = post + c0_opt**2 * cov
    with np.errstate(divide="ignore", invalid="ignore"):
        L = 0.5 * (dims * (np.log(v / post) + post / v - 1.0) + c0sq / v * m[t])
    return np.where(valid, L, np.inf)


def optimal_path(L: np.ndarray, K: int) -> tuple[np.ndarray, float]:
    """The decreasing path T-1 = tau_K > ... > tau_1 = 0 with K - 1 edges that minimizes sum L[tau_i, tau_{i-1}]
    (dynamic programming, Watson et al. 2021, Alg. 1), and its cost. K = 1 is the single point T-1."""
    T = L.shape[0]
    if not 1 <= K <= T:
        raise ElboError(f"spacing=elbo needs 1 <= nfe <= T={T}, got {K}")
    if K == 1:
        return np.array([T - 1], dtype=np.float64), 0.0
    cost = np.full(T, np.inf)
    cost[T - 1] = 0.0  # cost[t]: the best path from T-1 to t with k edges so far
    back = np.empty((K - 1, T), dtype=np.int64)
    for k in range(K - 1):
        total = cost[:, None] + L  # [from t, to s]
        back[k] = np.argmin(total, axis=0)
        cost = total[back[k], np.arange(T)]
    path = [0]
    for k in range(K - 2, -1, -1):
        path.append(int(back[k, path[-1]]))
    if not np.isfinite(cost[0]) or path[-1] != T - 1:
        raise ElboError(f"no {K}-step chain from {T - 1} to 0 (nfe above T?)")
    return np.array(path[::-1], dtype=np.float64), float(cost[0])


def elbo_timesteps(sched, K: int, costs, dims: int, variance: str = "small", gamma=None) -> np.ndarray:
    """The K evaluation timesteps of the chain with the smallest K-step bound, decreasing (without CLEAN)."""
    if getattr(sched, "betas", None) is None:
        raise ElboError(f"spacing=elbo needs a discrete VP schedule (integer timesteps); got {type(sched).__name__}")
    m = load_x0_errors(costs, sched.T)
    if not np.all(np.isfinite(m)):
        raise ElboError("spacing=elbo needs the x0 errors at every timestep (the table has NaN)")
    return optimal_path(kl_table(sched, m, dims, variance, gamma), K)[0]


def cached_x0_errors(eps_fn, betas, train_images_uint8: torch.Tensor, *, model_digest: str, model_dir=None,
                     cache_dir=None, num_images: int | None = DEFAULT_NUM_IMAGES, batch_size: int = DEFAULT_BATCH_SIZE,
                     seed: int = 0, recompute: bool = False) -> tuple[np.ndarray, dict]:
    """m_t for this model, from the cache (`elbo_x0_errors_<key>.npz` beside the checkpoint, else the user cache)
    or estimated once by x0_errors; returns (m [T], info) as analytic_dpm.cached_moments does."""
    sched = betas if isinstance(betas, VPSchedule) else VPSchedule(betas)

    def compute(n, gen):
        return x0_errors(eps_fn, sched, train_images_uint8, num_images=n, batch_size=batch_size, generator=gen)

    try:
        return cached_array(CACHE_PREFIX, "m", compute, sched, train_images_uint8, model_digest=model_digest,
                            model_dir=model_dir, cache_dir=cache_dir, num_images=num_images, batch_size=batch_size,
                            seed=seed, recompute=recompute)
    except MomentsError as e:
        raise ElboError(str(e)) from None

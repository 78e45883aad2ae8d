"""Is the difference real? Paired bootstrap confidence intervals and p-values for FID, KID, IS and NLL differences
(and, for text-to-image runs, CLIP score and CMMD).

Samplers compared at the same NFE share their initial noise: row i of two runs' features comes from the same
per-sample seed. The difference of a metric between two such runs is therefore estimated far more tightly by
resampling the *pairs* (row i of both runs together) than by treating the runs as independent.

Every function here returns the same dict (the contract other code builds on, e.g. nfebench.recommend):

    metric    "fid" | "kid" | "is" | "nll" | "clip_score" | "cmmd"
    a, b      the metric of run a and of run b on all their rows
    delta     a - b
    ci_low, ci_high   the `level` confidence interval of delta
    p_value   two-sided p-value for delta = 0
    level, n_boot, n, paired

Method (Efron & Tibshirani 1993, An Introduction to the Bootstrap: ch. 6 for the bootstrap of a statistic,
ch. 16 for tests, sec. 13.4 for the basic interval). Each replicate draws N row indices with replacement,
the same indices for both runs (paired=True), and recomputes both metrics on the resampled rows, through
multinomial row weights rather than copies (nfebench.metrics.from_features.frechet_to_reference). The interval is
the basic bootstrap interval [2 delta - q_hi, 2 delta - q_lo] of the replicates delta*: FID is biased at finite N
(its bias depends on each run's covariance), and the basic interval subtracts the bias the bootstrap sees once
instead of adding it twice as the percentile interval would. The p-value inverts the same interval:
p = 2 min(#{delta* >= 2 delta} + 1, #{delta* <= 2 delta} + 1) / (n_boot + 1), capped at 1, so p < 1 - level
exactly when the interval excludes 0 (up to the +1 of the finite-sample correction).

The reference set is held fixed: both runs are scored against the same reference statistics, which are computed
once and not resampled. The interval is therefore for the difference of the two runs' metrics against this
reference (what a leaderboard compares), conditional on it; the reference's own sampling noise enters both
metrics alike and largely cancels in their difference. docs/stats.md has the calibration and the costs.

Two runs from different seeds (paired=False) are independent samples: each replicate then resamples each run's
rows separately, which gives the wider interval of an unpaired comparison.
"""

from __future__ import annotations

import numpy as np
import torch

from .metrics.from_features import FLOAT, GaussianRef, as_tensor, frechet_to_reference, poly_kernel

CHUNK = 100  # bootstrap replicates evaluated at once (memory: CHUNK x N weights)
MIN_BOOT = 100


class StatsError(ValueError):
    """Inputs that cannot be compared as asked: the message names the bad value and what is allowed."""


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


# ---------------------------------------------------------------------------------------------- the bootstrap


def _check(n_a: int, n_b: int, n_boot, level, paired: bool, seeds_a, seeds_b) -> None:
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < MIN_BOOT:
        raise StatsError(f"n_boot must be an integer >= {MIN_BOOT}, got {n_boot!r}")
    if not (isinstance(level, float) and 0 < level < 1):
        raise StatsError(f"level must be a float in (0, 1), got {level!r}")
    if not paired:
        return
    if n_a != n_b:
        raise StatsError(f"a paired comparison needs the same rows in both runs, got {n_a} and {n_b} rows")
    if seeds_a is not None and seeds_b is not None:
        sa, sb = np.asarray(seeds_a), np.asarray(seeds_b)
        if sa.shape != sb.shape or (sa != sb).any():
            bad = int(np.argmax(sa != sb)) if sa.shape == sb.shape else 0
            raise StatsError(f"the runs' rows come from different seeds (row {bad}: {sa.ravel()[bad]} vs "
                             f"{sb.ravel()[bad]}); a paired comparison needs the same per-sample seeds "
                             "(compare them with paired=False)")


def _weights(n: int, count: int, gen: torch.Generator, device) -> torch.Tensor:
    """[count, n] multinomial row counts of `count` resamples of n rows with replacement."""
    idx = torch.randint(n, (count, n), generator=gen)
    w = torch.zeros(count, n, dtype=FLOAT).scatter_add_(1, idx, torch.ones(count, n, dtype=FLOAT))
    return w.to(device)


def bootstrap(stat_a, stat_b, n_a: int, n_b: int, metric: str, n_boot: int = 1000, seed: int = 0,
              level: float = 0.95, paired: bool = True, device="cpu") -> dict:
    """The comparison dict (module docstring) of two statistics given as functions of row weights:
    stat_x(W) for W [B, n_x] (multinomial counts summing to n_x) returns the B resampled values, [B].
    With paired=True both see the same W (n_a == n_b)."""
    gen = torch.Generator().manual_seed(seed)
    a = float(stat_a(torch.ones(1, n_a, dtype=FLOAT, device=device))[0])
    b = float(stat_b(torch.ones(1, n_b, dtype=FLOAT, device=device))[0])
    deltas = []
    for start in range(0, n_boot, CHUNK):
        count = min(CHUNK, n_boot - start)
        wa = _weights(n_a, count, gen, device)
        wb = wa if paired else _weights(n_b, count, gen, device)
        deltas.append(stat_a(wa) - stat_b(wb))
    boot = torch.cat(deltas).double().cpu()
    delta = a - b
    ci_low, ci_high = _basic_interval(delta, boot, level)
    above, below = int((boot >= 2 * delta).sum()), int((boot <= 2 * delta).sum())
    p = min(1.0, 2 * (min(above, below) + 1) / (n_boot + 1))
    return {"metric": metric, "a": a, "b": b, "delta": delta, "ci_low": ci_low, "ci_high": ci_high,
            "p_value": p, "level": level, "n_boot": int(n_boot), "n": n_a if paired else (n_a, n_b),
            "paired": paired}


def _basic_interval(value: float, boot: torch.Tensor, level: float) -> tuple[float, float]:
    """The basic bootstrap interval [2 v - q_hi, 2 v - q_lo] of the replicates' quantiles (module docstring)."""
    q_lo, q_hi = torch.quantile(boot, torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=FLOAT)).tolist()
    return 2 * value - q_hi, 2 * value - q_lo


# ---------------------------------------------------------------------------------------------- the metrics


def _features(x, name: str, device) -> torch.Tensor:
    try:
        return as_tensor(x, device)
    except ValueError as e:
        raise StatsError(f"{name}: {e}") from None


def _pair(feats_a, feats_b, feats_ref, device):
    a, b = _features(feats_a, "feats_a", device), _features(feats_b, "feats_b", device)
    dims = {"feats_a": a.shape[1], "feats_b": b.shape[1]}
    ref = None
    if feats_ref is not None:
        ref = _features(feats_ref, "feats_ref", device)
        dims["feats_ref"] = ref.shape[1]
    if len(set(dims.values())) > 1:
        raise StatsError(f"feature dimensions differ: {dims}; compare runs scored with the same feature extractor")
    return a, b, ref


# Above this many multiply-adds for the replicates' covariances (2 N d^2 n_boot), method="auto" uses the linearized
# bootstrap: 8e9 (digits, 1000 x 64, 1000 replicates) stays exact on a CPU; 50k x 2048 is 4e14, hours on a CPU.
EXACT_BUDGET = {"cpu": 5e10, "cuda": 5e13}
FID_METHODS = ("auto", "exact", "linear")


def _linear_fid_stat(x: torch.Tensor, g: GaussianRef):
    """W -> FID of the weighted rows to first order in the weights (the delta method; Efron & Tibshirani 1993,
    sec. 21.3): FID + mean_i w_i psi_i, with psi_i the empirical influence of row i on
    FID = |mu - mu_r|^2 + tr S + tr S_r - 2 tr (S_r^1/2 S S_r^1/2)^1/2:
        psi_i = 2 (mu - mu_r).(x_i - mu) + (x_i - mu)^T (I - G) (x_i - mu) - its mean over i,
        G = S_r^1/2 (S_r^1/2 S S_r^1/2)^-1/2 S_r^1/2  (d tr(M^1/2) = tr(M^-1/2 dM) / 2; a pseudo-inverse where
        the product is singular). One pass over the rows (N d^2), then N operations per replicate."""
    n = x.shape[0]
    mu = x.mean(0)
    xc = x - mu
    cov = xc.T @ xc / (n - 1)
    inner = g.cov_sqrt @ cov @ g.cov_sqrt
    vals, vecs = torch.linalg.eigh((inner + inner.T) / 2)
    inv_sqrt = torch.where(vals > 1e-12 * vals.max(), vals.clamp_min(1e-300).rsqrt(), torch.zeros_like(vals))
    big_g = g.cov_sqrt @ (vecs * inv_sqrt) @ vecs.T @ g.cov_sqrt
    quad = ((xc @ (torch.eye(x.shape[1], dtype=FLOAT, device=x.device) - big_g)) * xc).sum(1)
    psi = 2 * xc @ (mu - g.mu) + quad - quad.mean()
    value = ((mu - g.mu) ** 2).sum() + torch.trace(cov) + g.trace - 2 * vals.clamp_min(0).sqrt().sum()  # the FID

    def stat(w):
        return value + w @ psi / n

    return stat


def paired_fid(feats_a, feats_b, feats_ref, n_boot: int = 1000, seed: int = 0, level: float = 0.95, *,
               seeds_a=None, seeds_b=None, paired: bool = True, device=None, method: str = "auto") -> dict:
    """FID_a - FID_b against the fixed reference, with a paired bootstrap CI and p-value (module docstring).

    feats_*: [N, d] numpy arrays or torch tensors (row i of a and b from the same seed); seeds_a/seeds_b: the
    per-sample seeds, checked equal when given. method: "exact" recomputes both FIDs on every replicate (one
    weighted d x d covariance per run, N d^2, and one symmetric eigen-decomposition, d^3); "linear" resamples
    their first-order expansion in the row weights (_linear_fid_stat: N d^2 once, then N per replicate), which
    agrees with exact to a few per cent at N >= 1000 (tests/test_stats.py) and is what makes 50k x 2048 features
    cheap; "auto" (default) is exact below EXACT_BUDGET multiply-adds for the device, linear above. The result's
    `method` says which ran. On the GPU when one is present.
    """
    if method not in FID_METHODS:
        raise StatsError(f"unknown method {method!r}; allowed: {', '.join(FID_METHODS)}")
    device = device or default_device()
    a, b, ref = _pair(feats_a, feats_b, feats_ref, device)
    _check(a.shape[0], b.shape[0], n_boot, level, paired, seeds_a, seeds_b)
    g = GaussianRef.of(ref)
    if method == "auto":
        cost = (a.shape[0] + b.shape[0]) * a.shape[1] ** 2 * n_boot
        method = "exact" if cost <= EXACT_BUDGET["cuda" if str(device).startswith("cuda") else "cpu"] else "linear"
    if method == "exact":
        stat_a, stat_b = (lambda w: frechet_to_reference(a, g, w)), (lambda w: frechet_to_reference(b, g, w))
    else:
        stat_a, stat_b = _linear_fid_stat(a, g), _linear_fid_stat(b, g)
    out = bootstrap(stat_a, stat_b, a.shape[0], b.shape[0], "fid", n_boot, seed, level, paired, device)
    return {**out, "method": method}


def fid_ci(feats, feats_ref, n_boot: int = 1000, seed: int = 0, level: float = 0.95, *, device=None) -> dict:
    """One run's FID against the fixed reference with a bootstrap CI over its rows (the same resampling and basic
    interval as paired_fid, exact FIDs per replicate): {metric, fid, ci_low, ci_high, level, n_boot, n}. The basic
    interval subtracts the bootstrap's bias, which at a small FID exceeds the FID itself (a resample repeats rows,
    which widens the Frechet distance); it is then truncated at 0, where the distance is bounded (intersecting an
    interval with the parameter space keeps its coverage). Conditional on the reference, as paired_fid. For comparing two runs use paired_fid: its interval is far narrower than two of these side by side."""
    device = device or default_device()
    x, _, ref = _pair(feats, feats, feats_ref, device)
    _check(x.shape[0], x.shape[0], n_boot, level, False, None, None)
    g = GaussianRef.of(ref)
    gen = torch.Generator().manual_seed(seed)
    fid = float(frechet_to_reference(x, g))
    boot = torch.cat([frechet_to_reference(x, g, _weights(x.shape[0], min(CHUNK, n_boot - start), gen, device))
                      for start in range(0, n_boot, CHUNK)]).double().cpu()
    ci_low, ci_high = (max(0.0, v) for v in _basic_interval(fid, boot, level))
    return {"metric": "fid", "fid": fid, "ci_low": ci_low, "ci_high": ci_high, "level": level, "n_boot": int(n_boot),
            "n": x.shape[0]}


def _ref_self_kernel(ref: torch.Tensor, block: int = 4096) -> torch.Tensor:
    """Mean of k(r_i, r_j) over pairs i != j of the reference rows (the reference's own MMD^2 term)."""
    m = ref.shape[0]
    total = sum(poly_kernel(ref[i:i + block], ref).sum() for i in range(0, m, block))
    return (total - ((ref * ref).sum(1) / ref.shape[1] + 1).pow(3).sum()) / (m * (m - 1))


def _mmd_stat(x: torch.Tensor, ref: torch.Tensor, krr: torch.Tensor, block: int = 4096):
    """W -> unbiased MMD^2 of the weighted rows of x to ref (cubic polynomial kernel, Binkowski et al. 2018,
    eq. 2, on all rows: no subsets); krr = _ref_self_kernel(ref). A resampled row repeated w_i times contributes
    w_i (w_i - 1) off-diagonal self-pairs, as the copies would."""
    n = x.shape[0]
    kxx = poly_kernel(x, x)
    diag = kxx.diagonal().clone()
    kxr = sum(poly_kernel(x, ref[i:i + block]).sum(1) for i in range(0, ref.shape[0], block)) / ref.shape[0]

    def stat(w):
        return (((w @ kxx) * w).sum(1) - w @ diag) / (n * (n - 1)) - 2 * (w @ kxr) / n + krr

    return stat


def paired_kid(feats_a, feats_b, feats_ref, n_boot: int = 1000, seed: int = 0, level: float = 0.95, *,
               seeds_a=None, seeds_b=None, paired: bool = True, device=None) -> dict:
    """KID_a - KID_b with a paired bootstrap CI and p-value: the unbiased MMD^2 on all rows (not torch-fidelity's
    mean over 100 subsets, which is noisier and not a function of the rows alone). Memory N^2 (the kernel matrix)."""
    device = device or default_device()
    a, b, ref = _pair(feats_a, feats_b, feats_ref, device)
    _check(a.shape[0], b.shape[0], n_boot, level, paired, seeds_a, seeds_b)
    krr = _ref_self_kernel(ref)
    return bootstrap(_mmd_stat(a, ref, krr), _mmd_stat(b, ref, krr), a.shape[0], b.shape[0], "kid", n_boot, seed, level,
                     paired, device)


def _is_stat(logits: torch.Tensor):
    """W -> Inception Score exp(E KL(p(y|x) || p(y))) of the weighted rows, as one split (Salimans et al. 2016)."""
    log_p = logits.log_softmax(1)
    p = log_p.exp()
    neg_entropy = (p * log_p).sum(1)
    n = logits.shape[0]

    def stat(w):
        marginal = w @ p / n
        return torch.exp(w @ neg_entropy / n - (marginal * marginal.clamp_min(1e-300).log()).sum(1))

    return stat


def paired_is(logits_a, logits_b, n_boot: int = 1000, seed: int = 0, level: float = 0.95, *, seeds_a=None,
              seeds_b=None, paired: bool = True, device=None) -> dict:
    """IS_a - IS_b with a paired bootstrap CI and p-value; IS on all rows as one split (the leaderboard's is_mean
    averages 10 splits, which biases it low at small N)."""
    device = device or default_device()
    a, b, _ = _pair(logits_a, logits_b, None, device)
    _check(a.shape[0], b.shape[0], n_boot, level, paired, seeds_a, seeds_b)
    return bootstrap(_is_stat(a), _is_stat(b), a.shape[0], b.shape[0], "is", n_boot, seed, level, paired, device)


def paired_nll(bits_a, bits_b, n_boot: int = 1000, seed: int = 0, level: float = 0.95, *, paired: bool = True,
               device=None) -> dict:
    """NLL_a - NLL_b (bits/dim) from per-image values [N] on the same test images, paired over images."""
    device = device or default_device()
    a = _features(np.asarray(bits_a, dtype=np.float64).reshape(-1, 1), "bits_a", device)[:, 0]
    b = _features(np.asarray(bits_b, dtype=np.float64).reshape(-1, 1), "bits_b", device)[:, 0]
    _check(a.shape[0], b.shape[0], n_boot, level, paired, None, None)
    return bootstrap(lambda w: w @ a / a.shape[0], lambda w: w @ b / b.shape[0], a.shape[0], b.shape[0], "nll",
                     n_boot, seed, level, paired, device)


def paired_mean(values_a, values_b, metric: str, n_boot: int = 1000, seed: int = 0, level: float = 0.95, *,
                seeds_a=None, seeds_b=None, paired: bool = True, device=None) -> dict:
    """mean(a) - mean(b) of per-sample values [N] (e.g. ode_error, nfebench.metrics.ode_error) with the paired
    bootstrap CI and p-value of the module docstring, row i of both from the same seed."""
    device = device or default_device()
    a = _features(np.asarray(values_a, dtype=np.float64).reshape(-1, 1), "values_a", device)[:, 0]
    b = _features(np.asarray(values_b, dtype=np.float64).reshape(-1, 1), "values_b", device)[:, 0]
    _check(a.shape[0], b.shape[0], n_boot, level, paired, seeds_a, seeds_b)
    return bootstrap(lambda w: w @ a / a.shape[0], lambda w: w @ b / b.shape[0], a.shape[0], b.shape[0], metric,
                     n_boot, seed, level, paired, device)


def mean_ci(values, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> dict:
    """One run's mean of per-sample values with the basic bootstrap interval over its rows: {mean, ci_low, ci_high}."""
    x = torch.as_tensor(np.asarray(values, dtype=np.float64))
    _check(x.shape[0], x.shape[0], n_boot, level, False, None, None)
    gen = torch.Generator().manual_seed(seed)
    boot = torch.cat([_weights(x.shape[0], min(CHUNK, n_boot - s), gen, "cpu") @ x / x.shape[0]
                      for s in range(0, n_boot, CHUNK)])
    lo, hi = _basic_interval(float(x.mean()), boot, level)
    return {"mean": float(x.mean()), "ci_low": lo, "ci_high": hi, "level": level, "n_boot": int(n_boot),
            "n": x.shape[0]}


def paired_clip_score(scores_a, scores_b, n_boot: int = 1000, seed: int = 0, level: float = 0.95, *, seeds_a=None,
                      seeds_b=None, paired: bool = True, device=None) -> dict:
    """CLIP score_a - CLIP score_b from the per-sample values 100 cos(image, caption) [N] (nfebench.metrics.clip):
    the statistic is torchmetrics' max(mean, 0); paired over the samples' seeds (and so their captions)."""
    device = device or default_device()
    a = _features(np.asarray(scores_a, dtype=np.float64).reshape(-1, 1), "scores_a", device)[:, 0]
    b = _features(np.asarray(scores_b, dtype=np.float64).reshape(-1, 1), "scores_b", device)[:, 0]
    _check(a.shape[0], b.shape[0], n_boot, level, paired, seeds_a, seeds_b)
    return bootstrap(lambda w: (w @ a / a.shape[0]).clamp_min(0.0), lambda w: (w @ b / b.shape[0]).clamp_min(0.0),
                     a.shape[0], b.shape[0], "clip_score", n_boot, seed, level, paired, device)


def _cmmd_stat(x: torch.Tensor, ref: torch.Tensor, sigma: float = 10.0, scale: float = 1000.0):
    """W -> CMMD (Jayasumana et al. 2024; nfebench.metrics.clip.cmmd: RBF kernel, all pairs, x1000) of the weighted
    rows of x to the fixed reference rows. Memory N^2 (the kernel matrix)."""
    gamma = 1.0 / (2.0 * sigma**2)

    def k(p, q):
        return torch.exp(-gamma * ((p * p).sum(1)[:, None] + (q * q).sum(1)[None, :] - 2.0 * p @ q.T))

    n = x.shape[0]
    kxx, kxr, krr = k(x, x), k(x, ref).mean(1), k(ref, ref).mean()

    def stat(w):
        return scale * (((w @ kxx) * w).sum(1) / n**2 - 2 * (w @ kxr) / n + krr)

    return stat


def paired_cmmd(emb_a, emb_b, emb_ref, n_boot: int = 1000, seed: int = 0, level: float = 0.95, *, seeds_a=None,
                seeds_b=None, paired: bool = True, device=None) -> dict:
    """CMMD_a - CMMD_b from the samples' CLIP image embeddings [N, D] and the reference's [M, D], held fixed."""
    device = device or default_device()
    a, b, ref = _pair(emb_a, emb_b, emb_ref, device)
    _check(a.shape[0], b.shape[0], n_boot, level, paired, seeds_a, seeds_b)
    return bootstrap(_cmmd_stat(a, ref), _cmmd_stat(b, ref), a.shape[0], b.shape[0], "cmmd", n_boot, seed, level,
                     paired, device)


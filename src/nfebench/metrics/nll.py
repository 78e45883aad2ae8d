"""Likelihood of held-out data in bits/dim: the variational bound of the sampling chain (`vlb`) and the
probability-flow ODE likelihood (`ode`). Definitions and the offset conventions are in docs/nll.md.

vlb (Ho et al. 2020, Eq. 5 and Sec. 3.3; respaced chain of Nichol & Dhariwal 2021, Sec. 4; Bao et al. 2022 for the
analytic variance). Data x_0 = uint8 / 127.5 - 1. On the chain of K = nfe integer timesteps tau_K = T-1 > ... > tau_1
(= 0 for K >= 2) that ddpm / ddim use:

    L = KL(q(x_{tau_K} | x_0) || N(0, I))                                      prior, no network call
      + sum_{i=2..K} E_q KL(q(x_{tau_{i-1}} | x_{tau_i}, x_0) || p(x_{tau_{i-1}} | x_{tau_i}))   one call each
      + E_q [-log p(x_0 | x_{tau_1})]                                         decoder, one call

  each expectation a one-sample Monte-Carlo estimate with its own x_{tau_i} ~ q(x_{tau_i} | x_0) (as improved-
  diffusion's calc_bpd_loop). Bits/dim = L / (D ln 2), no offset. The reverse step s -> t is Gaussian with the
  posterior-mean form in x0_hat = (x_s - sigma_s eps) / a_s (optionally clamped to [-1, 1]) and variance
      small    : beta-tilde = beta' sigma_t^2 / sigma_s^2 (beta' = 1 - alpha_bar_s / alpha_bar_t, respaced)
      large    : beta'
      analytic : beta-tilde + c0^2 Var[x0 | x_s] from the moments Gamma (nfebench.analytic_dpm)
      learned  : the network's own, per element (variance_type learned / learned_range; Nichol & Dhariwal 2021,
                 Eq. 15 between log beta' and log beta-tilde: how Improved DDPM's published NLLs were measured)
  The decoder (Ho et al. 2020, Eq. 13) is the Gaussian N(x0_hat, v) integrated over the bin [x_0 - 1/255, x_0 + 1/255]
  (the outer bins open-ended) with v = beta-tilde of the first original step (tau 1 -> 0), the same for the three
  fixed variances (the clipped log-variance of Ho et al.'s and improved-diffusion's code, and Analytic-DPM's nll
  code); for `learned`, the network's variance there, between log beta_1 and that clipped log beta-tilde.

ode (Song et al. 2021, "Score-based generative modeling through SDEs", Sec. 4.3 and App. D.2). Uniform
dequantization y = (uint8 + u) / 256, u ~ U[0, 1)^D, z = 2 y - 1 in [-1, 1). The probability-flow ODE in half
log-SNR lambda (Lu et al. 2022, Eq. 3.3 in lambda):

    dx/dlambda = sigma^2 x - sigma eps(x, tau(lambda)),   div = sigma^2 D - sigma tr(d eps / d x),

from tau = 0 (the data end: z is treated as a sample of p_{tau=0}) to tau = T-1, where N(0, I) is the prior:

    log p_0(z) = log N(x(lambda_{T-1}); 0, I) + integral_{lambda_0}^{lambda_{T-1}} div dlambda      (nats)
    bpd = -log p_0(z) / (D ln 2) + 7     (+8 for the 256 levels, -1 for the Jacobian of [0, 1] -> [-1, 1]).

On continuous schedules (nfebench.schedules VPLinear, VE, Flow) read t_min for tau = 0 and t_max for T-1 throughout.
z is a point of the model's own space at t_min (x_model = k x_vp, k = input_scale: 1 on VP, sqrt(1 + s^2) on VE,
sqrt((1 - s)^2 + s^2) on Flow) and the prior is the model's, N(0, prior_std^2 I) in its space at t_max (on VP
N(0, I); on VE N(0, sigma_max^2 I); on Flow N(0, I) at s_max): both are carried into the VP frame with their
Jacobians, so the NLL is of the data as the model sees it.

The trace is exact (D vector-Jacobian products with the basis vectors) or Hutchinson's estimate with Rademacher probes
fixed per image for the whole solve (Grathwohl et al. 2019). Solvers: scipy's adaptive RK45 (reference), or fixed-step
Euler / Heun on a grid of the model's timesteps that spend the budget.

Randomness (dequantization, probes, forward noise) is drawn for all images at once, in an order that does not depend on
batch_size: results are batch-size independent (the adaptive solver up to its tolerance, as its steps are shared by a
batch).
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch

from ..analytic_dpm import load_moments, optimal_variance
from ..models.parametrization import learned_log_variance
from ..samplers.common import CLEAN, alpha_sigma, chain_grid, check_spacing
from ..schedules import Schedule, as_schedule

LN2 = math.log(2.0)
VARIANCES = ("small", "large", "analytic", "learned")
ODE_SOLVERS = ("rk45", "heun", "euler")
DIVERGENCES = ("auto", "exact", "hutchinson")
EXACT_MAX_DIM = 256  # divergence="auto": exact up to this many dimensions (digits 64), Hutchinson above
DEQUANT_OFFSET_BITS = 7.0


class NLLError(ValueError):
    """Bad NLL method, option or input: the message names the bad value and what is allowed."""


def _dtype_device(eps_fn):
    return getattr(eps_fn, "dtype", torch.float32), getattr(eps_fn, "device", torch.device("cpu"))


def _check_images(images_uint8) -> torch.Tensor:
    if not isinstance(images_uint8, torch.Tensor) or images_uint8.dtype != torch.uint8 or images_uint8.dim() < 2:
        raise NLLError("images must be a uint8 tensor [N, C, H, W] (values 0..255)")
    if images_uint8.shape[0] < 1:
        raise NLLError("no images to evaluate")
    return images_uint8


def _rand(shape, generator, kind="normal"):
    if kind == "normal":
        return torch.randn(shape, generator=generator, dtype=torch.float64)
    if kind == "uniform":
        return torch.rand(shape, generator=generator, dtype=torch.float64)
    return torch.randint(0, 2, shape, generator=generator).to(torch.float64) * 2 - 1  # Rademacher


# --- Gaussian pieces (float64, per element) -----------------------------------------------------------------------
def normal_kl(mean1, var1, mean2, var2):
    """KL(N(mean1, var1) || N(mean2, var2)) per element, in nats."""
    return 0.5 * (math.log(var2 / var1) + var1 / var2 + (mean1 - mean2) ** 2 / var2 - 1.0)


def _log1mexp(x):
    """log(1 - exp(x)) for x <= 0, accurate on both sides of -ln 2 (Maechler 2012)."""
    return torch.where(x > -LN2, torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def log_normal_bin(lo, hi):
    """log(Phi(hi) - Phi(lo)) for standardized bin edges lo < hi (either may be infinite), without cancellation."""
    flip = (lo + hi) > 0  # work in the lower tail: Phi(hi) - Phi(lo) = Phi(-lo) - Phi(-hi)
    a, b = torch.where(flip, -hi, lo), torch.where(flip, -lo, hi)
    la, lb = torch.special.log_ndtr(a), torch.special.log_ndtr(b)
    return lb + _log1mexp(la - lb)


def discretized_gaussian_log_likelihood(x_uint8: torch.Tensor, mean: torch.Tensor, var) -> torch.Tensor:
    """log P(x) per element under N(mean, var) integrated over x's bin (Ho et al. 2020, Eq. 13), in nats.

    The bin of level k is [x - 1/255, x + 1/255] with x = k / 127.5 - 1; level 0 extends to -inf, level 255 to +inf.
    """
    x = x_uint8.double() / 127.5 - 1.0
    std = torch.as_tensor(var, dtype=torch.float64).sqrt()  # a float, or a tensor of per-element variances
    lo = torch.where(x_uint8 == 0, torch.full_like(x, -math.inf), (x - 1.0 / 255.0 - mean) / std)
    hi = torch.where(x_uint8 == 255, torch.full_like(x, math.inf), (x + 1.0 / 255.0 - mean) / std)
    return log_normal_bin(lo, hi)


# --- vlb ----------------------------------------------------------------------------------------------------------
def decoder_variance(sched: Schedule, tau_1: float) -> float:
    """beta-tilde of the original step tau = 1 -> 0 when a Discrete chain ends at tau_1 = 0; else (K = 1, or a
    continuous schedule) sigma(tau_1)^2."""
    if sched.discrete and tau_1 == 0:
        return float(sched.betas[1] * (1.0 - sched.alphas_cumprod[0]) / (1.0 - sched.alphas_cumprod[1]))
    return float(sched.sigma(tau_1) ** 2)


def vlb_terms(eps_fn: Callable, sched: Schedule, images_uint8: torch.Tensor, num_steps: int, *,
              spacing: str = "uniform", variances=("small",), clips=(False,), gamma=None, batch_size: int = 256,
              generator: torch.Generator | None = None, grid=None) -> dict:
    """Per-image terms (nats) of the K-step bound for several (variance, clip) choices from one set of evaluations.

    grid: the chain's timesteps (K integers ending at 0, then CLEAN), e.g. spacing=elbo's; default chain_grid's.

    Returns {"grid": taus, "nfe": K, "calls": batched calls, "terms": {(variance, clip): {"prior", "kl", "decoder",
    "kl_steps"}}} with prior/kl/decoder float64 [N] and kl_steps [K-1] (mean over images, largest tau first).
    """
    x_u8 = _check_images(images_uint8)
    n = x_u8.shape[0]
    x0 = x_u8.double() / 127.5 - 1.0
    dims = x0[0].numel()
    dtype, device = _dtype_device(eps_fn)
    ts = chain_grid(sched, num_steps, check_spacing(spacing)) if grid is None else np.asarray(grid, dtype=np.float64)
    keys = [(v, c) for v in variances for c in clips]
    if any(v == "analytic" for v in variances) and gamma is None:
        raise NLLError("variance='analytic' needs the moments: pass moments=PATH or an array (analytic_dpm)")
    out = {k: {"prior": None, "kl": torch.zeros(n, dtype=torch.float64), "decoder": None, "kl_steps": []}
           for k in keys}
    # prior: KL(N(a_K x0, s_K^2) || N(0, 1)), exact
    a_k, s_k = alpha_sigma(sched, ts[0])
    prior = normal_kl(a_k * x0, s_k**2, 0.0, 1.0).flatten(1).sum(1)
    for k in keys:
        out[k]["prior"] = prior
    calls = 0
    for s, t in zip(ts[:-1], ts[1:]):
        a_s, s_s = alpha_sigma(sched, s)
        a_t, s_t = alpha_sigma(sched, t)
        beta = 1.0 - (a_s / a_t) ** 2  # respaced beta'
        post = beta * s_t**2 / s_s**2  # beta-tilde (0 onto clean data)
        c0 = a_t * beta / s_s**2  # posterior-mean coefficient of x0 (Ho et al. 2020, Eq. 7)
        noise = _rand(x0.shape, generator)  # all images at once: batch-size independent
        x0_hat = torch.empty_like(x0)
        log_var = torch.empty_like(x0) if "learned" in variances else None  # the network's, per element
        log_beta = math.log(beta)
        log_post = math.log(post if t != CLEAN else decoder_variance(sched, s))  # clipped onto clean data
        with torch.no_grad():
            for i in range(0, n, batch_size):
                x_s = a_s * x0[i:i + batch_size] + s_s * noise[i:i + batch_size]
                xin = x_s.to(dtype=dtype, device=device)
                e = eps_fn(xin, torch.full((xin.shape[0],), float(s), dtype=dtype, device=device))
                x0_hat[i:i + batch_size] = (x_s - s_s * e.double().cpu()) / a_s
                if log_var is not None:
                    log_var[i:i + batch_size] = learned_log_variance(e, log_beta, log_post).cpu()
                calls += 1
        for (var_kind, clip), acc in out.items():
            xh = x0_hat.clamp(-1.0, 1.0) if clip else x0_hat
            if t == CLEAN:
                v_dec = log_var.exp() if var_kind == "learned" else decoder_variance(sched, s)
                acc["decoder"] = -discretized_gaussian_log_likelihood(x_u8, xh, v_dec).flatten(1).sum(1)
                continue
            if var_kind == "small":
                v_p = post
            elif var_kind == "large":
                v_p = beta
            elif var_kind == "learned":
                v_p = log_var.exp()
            else:
                v_p = optimal_variance(sched, float(s), float(t), float(gamma[int(s)]), post)
            # KL between N(mu_q, post) and N(mu_p, v_p) per element; mu_q - mu_p = c0 (x0 - x0_hat)
            kl = (0.5 * (torch.log(torch.as_tensor(v_p / post, dtype=torch.float64)) + post / v_p - 1.0
                         + c0**2 * (x0 - xh).pow(2) / v_p)).expand_as(x0).flatten(1).sum(1)
            acc["kl"] += kl
            acc["kl_steps"].append(kl.mean().item())
    return {"grid": ts, "nfe": len(ts) - 1, "calls": calls, "terms": out, "dims": dims}


def _summary(per_image_bits: torch.Tensor) -> tuple[float, float]:
    v = per_image_bits.double()
    se = v.std(unbiased=True).item() / math.sqrt(v.numel()) if v.numel() > 1 else float("nan")
    return v.mean().item(), se


def vlb_result(terms: dict, variance: str, clip: bool, num_images: int, spacing: str) -> dict:
    """The nll result dict of one (variance, clip) choice from vlb_terms' output."""
    t = terms["terms"][(variance, clip)]
    to_bits = 1.0 / (terms["dims"] * LN2)
    total = (t["prior"] + t["kl"] + t["decoder"]) * to_bits
    bpd, se = _summary(total)
    return {"method": "vlb", "bpd": bpd, "bpd_se": se, "per_image_bpd": total.double(), "variance": variance,
            "clip": bool(clip), "spacing": spacing,
            "nfe": terms["nfe"], "vjp": 0, "num_images": num_images,
            "prior_bpd": (t["prior"] * to_bits).mean().item(), "kl_bpd": (t["kl"] * to_bits).mean().item(),
            "decoder_bpd": (t["decoder"] * to_bits).mean().item(),
            "kl_steps_bpd": [k * to_bits for k in t["kl_steps"]], "timesteps": [float(x) for x in terms["grid"]],
            "offset_bits": 0.0}


# --- ode ----------------------------------------------------------------------------------------------------------
class _ODEFunc:
    """The probability-flow ODE in lambda with its divergence, for one batch; counts forward passes and VJPs."""

    def __init__(self, eps_fn, sched, shape, exact: bool, probes, dtype, device):
        self.eps_fn, self.sched, self.shape = eps_fn, sched, shape
        self.exact, self.probes = exact, probes  # probes: [B, P, D] or None
        self.dtype, self.device = dtype, device
        self.dims = int(np.prod(shape[1:]))
        self.forward = 0
        self.vjp = 0

    def __call__(self, lam: float, x: torch.Tensor):
        """(dx/dlambda, div) at half log-SNR lam; x float64 [B, ...] on the CPU."""
        lab = -math.log1p(math.exp(-2.0 * lam)) if lam > -20 else 2.0 * lam  # log alpha_bar = -softplus(-2 lam)
        tau = float(np.clip(self.sched.tau_from_log_alpha_bar(lab), self.sched.t_min, self.sched.t_max))
        sig = math.sqrt(-math.expm1(lab))
        b = x.shape[0]
        xin = x.to(dtype=self.dtype, device=self.device).detach().requires_grad_(True)
        t = torch.full((b,), tau, dtype=self.dtype, device=self.device)
        with torch.enable_grad():
            e = self.eps_fn(xin, t)
            self.forward += 1
            tr = torch.zeros(b, dtype=torch.float64)
            if self.exact:
                basis = torch.zeros(b, self.dims, dtype=e.dtype, device=e.device)
                for d in range(self.dims):
                    basis.zero_()
                    basis[:, d] = 1.0
                    (g,) = torch.autograd.grad(e, xin, basis.view_as(e), retain_graph=d < self.dims - 1)
                    tr += g.reshape(b, -1)[:, d].double().cpu()
                self.vjp += self.dims
            else:
                p = self.probes.shape[1]
                for j in range(p):
                    v = self.probes[:, j].to(dtype=e.dtype, device=e.device).view_as(e)
                    (g,) = torch.autograd.grad(e, xin, v, retain_graph=j < p - 1)
                    tr += (g * v).reshape(b, -1).sum(1).double().cpu()
                tr /= p
                self.vjp += p
        e = e.detach().double().cpu()
        dx = sig**2 * x - sig * e
        div = sig**2 * self.dims - sig * tr
        return dx, div


def _lam(sched, tau) -> float:
    return float(sched.lambda_(tau))


def ode_logp_batch(eps_fn, sched: Schedule, z: torch.Tensor, *, nfe=None, solver="rk45", atol=1e-5, rtol=1e-5,
                   exact=True, probes=None, spacing="logsnr") -> dict:
    """log p_{tau=t_min}(z) (nats) of one batch z (float64, model range) through the probability-flow ODE.

    Returns {"logp", "prior", "delta": float64 [B], "forward", "vjp": counts for the batch}.
    """
    dtype, device = _dtype_device(eps_fn)
    shape = tuple(z.shape)
    b, dims = shape[0], int(np.prod(shape[1:]))
    f = _ODEFunc(eps_fn, sched, shape, exact, probes, dtype, device)
    lam0, lam1 = _lam(sched, sched.t_min), _lam(sched, sched.t_max)
    # z and the prior live in the model's own space (x_model = k x_vp): k = 1 on VP, ~1 at VE's and Flow's ends
    k0, k1 = float(sched.input_scale(sched.t_min)), float(sched.input_scale(sched.t_max))
    z = z / k0
    if solver == "rk45":
        from scipy.integrate import solve_ivp

        def rhs(lam, y):
            x = torch.from_numpy(y[: b * dims]).view(shape)
            dx, div = f(float(lam), x)
            return np.concatenate([dx.reshape(-1).numpy(), div.numpy()])

        y0 = np.concatenate([z.reshape(-1).numpy(), np.zeros(b)])
        sol = solve_ivp(rhs, (lam0, lam1), y0, method="RK45", atol=atol, rtol=rtol)
        if not sol.success:
            raise FloatingPointError(f"RK45 failed: {sol.message}")
        y1 = sol.y[:, -1]
        x1, delta = torch.from_numpy(y1[: b * dims]).view(shape), torch.from_numpy(y1[b * dims:])
    else:
        stages = 2 if solver == "heun" else 1
        n_int = nfe // stages + nfe % stages  # heun with an odd budget: the last interval is an Euler step
        taus = sched.timesteps(n_int, spacing)[::-1]  # t_min .. t_max
        lams = [_lam(sched, t) for t in taus]
        x, delta = z.clone(), torch.zeros(b, dtype=torch.float64)
        for i in range(n_int):
            h = lams[i + 1] - lams[i]
            dx1, div1 = f(lams[i], x)
            if solver == "heun" and (i < n_int - 1 or nfe % 2 == 0):
                dx2, div2 = f(lams[i + 1], x + h * dx1)
                x, delta = x + 0.5 * h * (dx1 + dx2), delta + 0.5 * h * (div1 + div2)
            else:
                x, delta = x + h * dx1, delta + h * div1
        x1 = x
        assert f.forward == nfe, (f.forward, nfe)
    # the prior N(0, prior_std^2 I) of x_model = k1 x_vp, as a density of x_vp; the data end's Jacobian -D log k0
    sd = sched.prior_std / k1
    prior = (-0.5 * (x1.reshape(b, -1) / sd).pow(2).sum(1) - 0.5 * dims * math.log(2 * math.pi) - dims * math.log(sd)
             - dims * math.log(k0))
    return {"logp": prior + delta, "prior": prior, "delta": delta, "forward": f.forward, "vjp": f.vjp}


def ode_nll(eps_fn, sched: Schedule, images_uint8: torch.Tensor, *, nfe=None, solver=None, atol=1e-5, rtol=1e-5,
            divergence="auto", probes=1, spacing="logsnr", batch_size=512, generator=None) -> dict:
    """Bits/dim of uniformly dequantized images under the probability-flow ODE (module docstring, `ode`).

    nfe=None: the adaptive reference (solver rk45 at atol, rtol), which reports what it spent; an int: a fixed-step
    solver (heun by default, or euler) spending exactly nfe forward passes per image.
    """
    x_u8 = _check_images(images_uint8)
    n, dims = x_u8.shape[0], x_u8[0].numel()
    if solver is None:
        solver = "rk45" if nfe is None else "heun"
    if solver not in ODE_SOLVERS:
        raise NLLError(f"unknown solver {solver!r}; allowed: {', '.join(ODE_SOLVERS)}")
    if solver == "rk45" and nfe is not None:
        raise NLLError("solver='rk45' is the adaptive reference: use nfe=None (or solver heun / euler with nfe)")
    if solver != "rk45" and nfe is None:
        raise NLLError(f"solver {solver!r} is fixed-step: give nfe (or use solver='rk45' with nfe=None)")
    if divergence not in DIVERGENCES:
        raise NLLError(f"unknown divergence {divergence!r}; allowed: {', '.join(DIVERGENCES)}")
    exact = divergence == "exact" or (divergence == "auto" and dims <= EXACT_MAX_DIM)
    if not exact and (isinstance(probes, bool) or not isinstance(probes, int) or probes < 1):
        raise NLLError(f"probes must be a positive integer, got {probes!r}")
    check_spacing(spacing)
    u = _rand(x_u8.shape, generator, "uniform")  # dequantization noise, all images at once
    z = 2.0 * (x_u8.double() + u) / 256.0 - 1.0
    probe_all = None if exact else _rand((n, probes, dims), generator, "rademacher")
    logp, prior, delta = (torch.empty(n, dtype=torch.float64) for _ in range(3))
    fwd = np.empty(n)
    vjp = np.empty(n)
    for i in range(0, n, batch_size):
        j = min(i + batch_size, n)
        r = ode_logp_batch(eps_fn, sched, z[i:j], nfe=nfe, solver=solver, atol=atol, rtol=rtol, exact=exact,
                           probes=None if exact else probe_all[i:j], spacing=spacing)
        logp[i:j], prior[i:j], delta[i:j] = r["logp"], r["prior"], r["delta"]
        fwd[i:j], vjp[i:j] = r["forward"], r["vjp"]
    to_bits = 1.0 / (dims * LN2)
    per_image = -logp * to_bits + DEQUANT_OFFSET_BITS
    bpd, se = _summary(per_image)
    return {"method": "ode", "bpd": bpd, "bpd_se": se, "per_image_bpd": per_image, "variance": None,
            "nfe": float(fwd.mean()), "nfe_max": int(fwd.max()), "vjp": float(vjp.mean()), "num_images": n,
            "solver": solver, "atol": atol if solver == "rk45" else None, "rtol": rtol if solver == "rk45" else None,
            "spacing": spacing if solver != "rk45" else None,
            "divergence": "exact" if exact else "hutchinson", "probes": None if exact else probes,
            "prior_bpd": (-prior * to_bits).mean().item(), "delta_bpd": (-delta * to_bits).mean().item(),
            "offset_bits": DEQUANT_OFFSET_BITS, "dequantization": "uniform", "t_start": 0.0}


# --- the public entry ---------------------------------------------------------------------------------------------
VLB_OPTIONS = {"variance": "small", "clip": False, "spacing": "uniform", "moments": None, "batch_size": 256,
               "num_images": None, "elbo_costs": None}
ODE_OPTIONS = {"solver": None, "atol": 1e-5, "rtol": 1e-5, "divergence": "auto", "probes": 1, "spacing": "logsnr",
               "batch_size": 512, "num_images": None}
METHODS = {"vlb": VLB_OPTIONS, "ode": ODE_OPTIONS}


def nll(eps_fn: Callable, betas, images_uint8: torch.Tensor, method: str = "ode", nfe: int | None = None,
        generator: torch.Generator | None = None, **options) -> dict:
    """Negative log-likelihood of uint8 images in bits/dim (see nfebench.nll for the documentation)."""
    if method not in METHODS:
        raise NLLError(f"unknown nll method {method!r}; allowed: {', '.join(METHODS)}")
    allowed = METHODS[method]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise NLLError(f"unknown option {unknown[0]!r} for nll method {method!r}; allowed: {', '.join(sorted(allowed))}")
    opts = {**allowed, **options}
    if nfe is not None and (isinstance(nfe, bool) or not isinstance(nfe, int) or nfe < 1):
        raise NLLError(f"nfe must be a positive integer or None, got {nfe!r}")
    bs = opts.pop("batch_size")
    if isinstance(bs, bool) or not isinstance(bs, int) or bs < 1:
        raise NLLError(f"batch_size must be a positive integer, got {bs!r}")
    sched = as_schedule(betas)
    images = _check_images(images_uint8)
    num = opts.pop("num_images")
    if num is not None:
        if isinstance(num, bool) or not isinstance(num, int) or not 1 <= num <= images.shape[0]:
            raise NLLError(f"num_images must be an integer in [1, {images.shape[0]}] or None, got {num!r}")
        images = images[:num]
    if method == "vlb":
        variance, clip, spacing = opts["variance"], bool(opts["clip"]), opts["spacing"]
        if variance not in VARIANCES:
            raise NLLError(f"unknown variance {variance!r}; allowed: {', '.join(VARIANCES)}")
        if variance == "analytic" and not sched.discrete:
            raise NLLError(f"variance='analytic' needs a discrete schedule; this one is {sched.describe()}")
        gamma = load_moments(opts["moments"], sched.T) if variance == "analytic" else None
        k = sched.T if nfe is None else nfe
        grid = None
        if spacing == "elbo":  # the chain of the smallest bound for this variance (Watson et al. 2021)
            from ..elbo_steps import ElboError, elbo_timesteps

            try:
                grid = np.append(elbo_timesteps(sched, k, opts["elbo_costs"], images[0].numel(), variance, gamma),
                                 CLEAN)
            except ElboError as e:
                raise NLLError(str(e)) from None
        terms = vlb_terms(eps_fn, sched, images, k, spacing=spacing, variances=(variance,), clips=(clip,),
                          gamma=gamma, batch_size=bs, generator=generator, grid=grid)
        return vlb_result(terms, variance, clip, images.shape[0], spacing)
    return ode_nll(eps_fn, sched, images, nfe=nfe, batch_size=bs, generator=generator, **opts)

"""The ancestral and SDE samplers of k-diffusion and the UIs built on it: Euler ancestral, DPM-Solver++(2S) ancestral,
DPM-Solver++ SDE, DPM-Solver++(2M) SDE and (3M) SDE (Lu et al. 2022b, arXiv 2211.01095, Sec. 5 and App.; Crowson's
k-diffusion, whose step formulas these follow so that the UI names mean the same algorithm here).

Variables (EDM's, Karras et al. 2022): x_hat = x / alpha, sigma = sigma_vp / alpha (schedule.edm_sigma), the
denoiser D(x_hat, sigma) = x_hat - sigma eps(alpha x_hat, tau(sigma)), t = -log sigma = lambda, h = t_next - t.
Grid: N evaluation points of `spacing` (karras by default) then sigma = 0, as k-diffusion's sigma lists.

  ancestral split (k-diffusion get_ancestral_step): a step sigma -> sigma_next is a deterministic step to
      sigma_down = sqrt(sigma_next^2 - sigma_up^2) plus noise of std sigma_up,
      sigma_up = min(sigma_next, eta sigma_next sqrt(1 - sigma_next^2 / sigma^2))  (eta = 1: DDPM's posterior std).
  euler_ancestral     x <- x + (sigma_down - sigma) (x - D) / sigma, then + s_noise sigma_up z.
  dpmpp_2s_ancestral  DPM-Solver++(2S) (r = 1/2) from t to t_down = -log sigma_down: u = (sigma_mid/sigma) x -
                      (e^{-h/2} - 1) D, x <- (sigma_down/sigma) x - (e^{-h} - 1) D(u, sigma_mid); Euler on the last
                      step.
  dpmpp_sde           DPM-Solver++ SDE with r (default 1/2): an ancestral first-order step to the intermediate
                      point s = t + r h (noise over sigma -> sigma_s), the model there, then the ancestral step from t
                      to t_next with D_d = (1 - 1/(2r)) D + 1/(2r) D(u) (noise over sigma -> sigma_next).
  dpmpp_2m_sde        the SDE of DPM-Solver++ with eta (Lu et al. 2022b, Eq. 16 with the variance-preserving noise):
                      x <- (sigma_next/sigma) e^{-eta h} x + (1 - e^{-(1+eta) h}) D + second-order term + sigma_next
                      sqrt(1 - e^{-2 eta h}) s_noise z; the second-order term from the previous D,
                      midpoint: 0.5 (1 - e^{-(1+eta)h}) (D - D_prev) / r, heun: (1 - (1 - e^{-(1+eta)h}) /
                      ((1+eta)h)) (D - D_prev) / r, as k-diffusion; r = h_prev / h. The last step (to sigma = 0)
                      is x = D.
  dpmpp_3m_sde        k-diffusion's third-order multistep SDE: with h_eta = (1 + eta) h,
                      x <- e^{-h_eta} x + (1 - e^{-h_eta}) D + phi_2 D1 - phi_3 D2, phi_2 = (e^{-h_eta} - 1)/h_eta + 1,
                      phi_3 = phi_2/h_eta - 1/2, D1, D2 the backward differences of DPM-Solver++(3M) with k-diffusion's
                      D2 = (D1_0 - D1_1)/(r0 + r1) (without nfebench dpmpp 3M's factor 2: at eta = 0 this is
                      k-diffusion's 3M, which docs/samplers.md explains is second order).
NFE: euler_ancestral, dpmpp_2m_sde, dpmpp_3m_sde N; dpmpp_2s_ancestral, dpmpp_sde 2N - 1 (the last step, to 0, is
one evaluation): N = (nfe + 1) // 2. Noise is drawn only where it is used (not at eta = 0, not on the last step);
noise_sampler (every sampler here): gaussian (fresh per-sample draws) | brownian (one Brownian path per sample in
sigma, brownian.py: a refined grid sees the same path).
"""

from __future__ import annotations

import math

from .brownian import StepNoise
from .common import CLEAN
from .edm import edm_grid
from .registry import SamplerError, register

SOLVER_TYPES = ("midpoint", "heun")


def check_nonneg(**vals) -> None:
    for k, v in vals.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0:
            raise SamplerError(f"{k} must be a number >= 0, got {v!r}")


class Denoiser:
    """D(x_hat, sigma) of the counted eps model on a schedule; grid points keep their exact timestep."""

    def __init__(self, eps, sched):
        self.eps, self.sched = eps, sched

    def __call__(self, xh, sigma: float, tau: float | None = None):
        tau = float(self.sched.tau_from_edm_sigma(sigma)) if tau is None else tau
        return xh - sigma * self.eps(xh / math.sqrt(1.0 + sigma * sigma), tau)


class KGrid:
    """The grid as k-diffusion's sigma list: taus (the last CLEAN) and their EDM sigmas (the last 0)."""

    def __init__(self, sched, n_points: int, spacing: str, timesteps, nfe: int, per_step: int, name: str):
        self.taus = [float(t) for t in edm_grid(sched, n_points, spacing, timesteps)]
        if self.taus[-1] != CLEAN:
            raise SamplerError(f"{name} ends at clean data: its grid's last value must be -1 (sigmas: 0)")
        self.sigmas = [float(sched.edm_sigma(t)) for t in self.taus[:-1]] + [0.0]
        n = len(self.taus) - 1
        if per_step * n - (per_step - 1) > nfe:
            raise SamplerError(f"this grid of {n} steps takes {per_step * n - (per_step - 1)} evaluations, "
                               f"above nfe={nfe}")

    def steps(self):
        return zip(range(len(self.taus) - 1), self.taus[:-1], self.sigmas[:-1], self.sigmas[1:])


def ancestral_step(sigma: float, sigma_next: float, eta: float) -> tuple[float, float]:
    """(sigma_down, sigma_up) of k-diffusion's get_ancestral_step."""
    if not eta:
        return sigma_next, 0.0
    up = min(sigma_next, eta * math.sqrt(sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2))
    return math.sqrt(sigma_next**2 - up**2), up


def _noise(noise, xh, grid: KGrid, kind: str) -> StepNoise:
    return StepNoise(noise, xh, min(s for s in grid.sigmas if s > 0), max(grid.sigmas), kind)


@register("euler_ancestral", stochastic=True)
def euler_ancestral(eps, sched, x, nfe, noise, *, eta=1.0, s_noise=1.0, spacing="karras", timesteps=None,
                    noise_sampler="gaussian"):
    """Euler ancestral ("Euler a"; k-diffusion sample_euler_ancestral): N = nfe Euler steps of the PF-ODE to
    sigma_down, each followed by noise of std s_noise sigma_up (eta scales it; eta = 0 is euler)."""
    check_nonneg(eta=eta, s_noise=s_noise)
    grid, D = KGrid(sched, nfe, spacing, timesteps, nfe, 1, "euler_ancestral"), Denoiser(eps, sched)
    xh = x * math.sqrt(1.0 + grid.sigmas[0] ** 2)
    z = _noise(noise, xh, grid, noise_sampler)
    for i, tau, sig, sig_next in grid.steps():
        den = D(xh, sig, tau)
        down, up = ancestral_step(sig, sig_next, eta)
        xh = xh + (down - sig) * (xh - den) / sig
        if sig_next > 0 and up > 0:
            xh = xh + z(sig, sig_next) * (s_noise * up)
    return xh


@register("dpmpp_2s_ancestral", min_nfe=1, stochastic=True)
def dpmpp_2s_ancestral(eps, sched, x, nfe, noise, *, eta=1.0, s_noise=1.0, spacing="karras", timesteps=None,
                       noise_sampler="gaussian"):
    """DPM-Solver++(2S) ancestral ("DPM++ 2S a"; k-diffusion sample_dpmpp_2s_ancestral): N = (nfe+1)//2 steps,
    each a second-order singlestep DPM-Solver++ step to sigma_down then ancestral noise; the last (to 0) Euler."""
    check_nonneg(eta=eta, s_noise=s_noise)
    grid, D = KGrid(sched, (nfe + 1) // 2, spacing, timesteps, nfe, 2, "dpmpp_2s_ancestral"), Denoiser(eps, sched)
    xh = x * math.sqrt(1.0 + grid.sigmas[0] ** 2)
    z = _noise(noise, xh, grid, noise_sampler)
    for i, tau, sig, sig_next in grid.steps():
        den = D(xh, sig, tau)
        down, up = ancestral_step(sig, sig_next, eta)
        if down == 0:
            xh = xh + (down - sig) * (xh - den) / sig
        else:
            h = math.log(sig) - math.log(down)  # t_down - t with t = -log sigma
            sig_mid = math.exp(-(-math.log(sig) + 0.5 * h))
            u = (sig_mid / sig) * xh - math.expm1(-0.5 * h) * den
            xh = (down / sig) * xh - math.expm1(-h) * D(u, sig_mid)
        if sig_next > 0 and up > 0:
            xh = xh + z(sig, sig_next) * (s_noise * up)
    return xh


@register("dpmpp_sde", stochastic=True)
def dpmpp_sde(eps, sched, x, nfe, noise, *, eta=1.0, s_noise=1.0, r=0.5, spacing="karras", timesteps=None,
              noise_sampler="gaussian"):
    """DPM-Solver++ SDE ("DPM++ SDE"; k-diffusion sample_dpmpp_sde): N = (nfe+1)//2 steps of two evaluations, an
    ancestral step to the intermediate point lambda + r h and one to the next point; the last (to 0) Euler."""
    check_nonneg(eta=eta, s_noise=s_noise)
    if isinstance(r, bool) or not isinstance(r, (int, float)) or not 0 < r <= 1:
        raise SamplerError(f"r must be in (0, 1], got {r!r}")
    grid, D = KGrid(sched, (nfe + 1) // 2, spacing, timesteps, nfe, 2, "dpmpp_sde"), Denoiser(eps, sched)
    xh = x * math.sqrt(1.0 + grid.sigmas[0] ** 2)
    z = _noise(noise, xh, grid, noise_sampler)
    fac = 1.0 / (2.0 * r)
    for i, tau, sig, sig_next in grid.steps():
        den = D(xh, sig, tau)
        if sig_next == 0:
            xh = den  # Euler to sigma = 0: x + (0 - sigma) (x - D) / sigma
            continue
        t, t_next = -math.log(sig), -math.log(sig_next)
        sig_s = math.exp(-(t + r * (t_next - t)))
        down, up = ancestral_step(sig, sig_s, eta)  # step 1: to the intermediate point
        u = (down / sig) * xh - math.expm1(t + math.log(down)) * den
        if up > 0:
            u = u + z(sig, sig_s) * (s_noise * up)
        den_d = (1.0 - fac) * den + fac * D(u, sig_s)
        down, up = ancestral_step(sig, sig_next, eta)  # step 2: to the next point
        xh = (down / sig) * xh - math.expm1(t + math.log(down)) * den_d
        if up > 0:
            xh = xh + z(sig, sig_next) * (s_noise * up)
    return xh


@register("dpmpp_2m_sde", stochastic=True)
def dpmpp_2m_sde(eps, sched, x, nfe, noise, *, eta=1.0, s_noise=1.0, solver_type="midpoint", spacing="karras",
                 timesteps=None, noise_sampler="gaussian"):
    """DPM-Solver++(2M) SDE ("DPM++ 2M SDE"; k-diffusion sample_dpmpp_2m_sde; diffusers' sde-dpmsolver++ is
    eta = 1, midpoint): N = nfe multistep steps; solver_type midpoint | heun; eta = 0 is DPM-Solver++(2M)
    ("DPM++ 2M", k-diffusion sample_dpmpp_2m) on the same grid; the last step (to 0) is x = D."""
    check_nonneg(eta=eta, s_noise=s_noise)
    if solver_type not in SOLVER_TYPES:
        raise SamplerError(f"unknown solver_type {solver_type!r}; allowed: {', '.join(SOLVER_TYPES)}")
    grid, D = KGrid(sched, nfe, spacing, timesteps, nfe, 1, "dpmpp_2m_sde"), Denoiser(eps, sched)
    xh = x * math.sqrt(1.0 + grid.sigmas[0] ** 2)
    z = _noise(noise, xh, grid, noise_sampler)
    old, h_last = None, None
    for i, tau, sig, sig_next in grid.steps():
        den = D(xh, sig, tau)
        if sig_next == 0:
            xh = den
            continue
        h = math.log(sig) - math.log(sig_next)
        eh = eta * h
        phi = -math.expm1(-h - eh)  # 1 - e^{-(1+eta) h}
        xh = (sig_next / sig) * math.exp(-eh) * xh + phi * den
        if old is not None:
            r = h_last / h
            if solver_type == "heun":
                xh = xh + (1.0 - phi / (h + eh)) / r * (den - old)
            else:
                xh = xh + 0.5 * phi / r * (den - old)
        if eta and s_noise:
            xh = xh + z(sig, sig_next) * (sig_next * math.sqrt(-math.expm1(-2.0 * eh)) * s_noise)
        old, h_last = den, h
    return xh


@register("dpmpp_3m_sde", stochastic=True)
def dpmpp_3m_sde(eps, sched, x, nfe, noise, *, eta=1.0, s_noise=1.0, spacing="karras", timesteps=None,
                 noise_sampler="gaussian"):
    """DPM-Solver++(3M) SDE ("DPM++ 3M SDE"; k-diffusion sample_dpmpp_3m_sde, its coefficients): N = nfe
    multistep steps, orders 1, 2, 3 from the start; the last step (to 0) is x = D. Not in diffusers."""
    check_nonneg(eta=eta, s_noise=s_noise)
    grid, D = KGrid(sched, nfe, spacing, timesteps, nfe, 1, "dpmpp_3m_sde"), Denoiser(eps, sched)
    xh = x * math.sqrt(1.0 + grid.sigmas[0] ** 2)
    z = _noise(noise, xh, grid, noise_sampler)
    d_1, d_2, h_1, h_2 = None, None, None, None
    for i, tau, sig, sig_next in grid.steps():
        den = D(xh, sig, tau)
        if sig_next == 0:
            xh = den
            continue
        h = math.log(sig) - math.log(sig_next)
        h_eta = h * (eta + 1.0)
        xh = math.exp(-h_eta) * xh - math.expm1(-h_eta) * den
        phi_2 = math.expm1(-h_eta) / h_eta + 1.0
        if h_2 is not None:
            r0, r1 = h_1 / h, h_2 / h
            d1_0, d1_1 = (den - d_1) / r0, (d_1 - d_2) / r1
            d1 = d1_0 + (d1_0 - d1_1) * (r0 / (r0 + r1))
            d2 = (d1_0 - d1_1) / (r0 + r1)
            xh = xh + phi_2 * d1 - (phi_2 / h_eta - 0.5) * d2
        elif h_1 is not None:
            xh = xh + phi_2 * (den - d_1) / (h_1 / h)
        if eta and s_noise:
            xh = xh + z(sig, sig_next) * (sig_next * math.sqrt(-math.expm1(-2.0 * h * eta)) * s_noise)
        d_1, d_2, h_1, h_2 = den, d_1, h, h_1
    return xh

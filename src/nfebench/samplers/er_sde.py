"""ER-SDE-Solver (Cui et al. 2023, "Elucidating the solution space of extended reverse-time SDEs for diffusion
models", arXiv 2309.06169): the VE form in EDM's variables x_hat = x / alpha, sigma = edm_sigma.

The extended reverse-time SDE with noise-scale function phi has, for a step sigma_s -> sigma_t, the exact solution
(the paper's Eq. 17 / Prop. 4 in VE form)

    x_t = (phi_t / phi_s) x_s + phi_t int_{sigma_t}^{sigma_s} phi'(sigma) / phi(sigma)^2 D(sigma) dsigma
          + sqrt(sigma_t^2 - sigma_s^2 (phi_t / phi_s)^2) z.

Expanding D(sigma) = D_s + (sigma - sigma_s) D' + (sigma - sigma_s)^2 / 2 D'' and integrating by parts gives the
solver of order k (ER-SDE-Solver-k, Alg. 1-2), with dt = sigma_t - sigma_s:

    order 1: x_t = r x_s + (1 - r) D_s,  r = phi_t / phi_s
    order 2: + (dt + phi_t S1) D',       S1 = int_{sigma_t}^{sigma_s} 1 / phi
    order 3: + (dt^2 / 2 + phi_t S2) D'', S2 = int_{sigma_t}^{sigma_s} (sigma - sigma_s) / phi

D' and D'' are divided differences of the previous denoiser outputs in sigma (D'' = 2 D[s, s-1, s-2]); the first
steps use the orders available (1, 2, then 3). S1 and S2 are computed by 16-point Gauss-Legendre quadrature (the
authors' code and ComfyUI take a 200-point Riemann sum). The last step, to sigma = 0, is x = D. N = nfe steps.

Noise-scale functions (the paper's Sec. 4 and Table): `er_sde` (default, the paper's ER SDE 5, phi(sigma) =
sigma (e^{sigma^0.3} + 10)); `ode` (phi = sigma: the probability-flow ODE, no noise); `reverse_sde` (phi = sigma^2:
the reverse-time SDE, noise as ancestral sampling).
"""

from __future__ import annotations

import math

import numpy as np

from .dpmpp_sde import Denoiser, KGrid, _noise, check_nonneg
from .registry import SamplerError, register

NOISE_SCALES = {
    "er_sde": lambda s: s * (np.exp(s**0.3) + 10.0),
    "ode": lambda s: s,
    "reverse_sde": lambda s: s * s,
}
_GL_X, _GL_W = np.polynomial.legendre.leggauss(16)


def er_integrals(phi, sig_s: float, sig_t: float) -> tuple[float, float]:
    """S1 = int_{sigma_t}^{sigma_s} dsigma / phi and S2 = int_{sigma_t}^{sigma_s} (sigma - sigma_s) / phi."""
    half = 0.5 * (sig_s - sig_t)
    sig = sig_t + half * (_GL_X + 1.0)
    f = 1.0 / phi(sig)
    return float(half * np.sum(_GL_W * f)), float(half * np.sum(_GL_W * f * (sig - sig_s)))


@register("er_sde", stochastic=True)
def er_sde(eps, sched, x, nfe, noise, *, order=3, noise_scale="er_sde", s_noise=1.0, spacing="karras",
           timesteps=None, noise_sampler="gaussian"):
    """ER-SDE-Solver (Cui et al. 2023), order 3 by default (ER-SDE-Solver-3), noise-scale function er_sde (the
    paper's ER SDE 5) | ode | reverse_sde: N = nfe steps, the last (to 0) x = D."""
    if order not in (1, 2, 3):
        raise SamplerError(f"order must be 1, 2 or 3, got {order!r}")
    if noise_scale not in NOISE_SCALES:
        raise SamplerError(f"unknown noise_scale {noise_scale!r}; allowed: {', '.join(NOISE_SCALES)}")
    check_nonneg(s_noise=s_noise)
    phi = NOISE_SCALES[noise_scale]
    grid, D = KGrid(sched, nfe, spacing, timesteps, nfe, 1, "er_sde"), Denoiser(eps, sched)
    xh = x * math.sqrt(1.0 + grid.sigmas[0] ** 2)
    z = _noise(noise, xh, grid, noise_sampler)
    dens, sigs, d1_prev = [], [], None
    for i, tau, sig, sig_next in grid.steps():
        den = D(xh, sig, tau)
        dens, sigs = [den] + dens[:1], [sig] + sigs[:2]
        if sig_next == 0:
            xh = den
            continue
        r = float(phi(sig_next) / phi(sig))
        stage = min(order, i + 1)
        xh = r * xh + (1.0 - r) * den
        if stage >= 2:
            dt = sig_next - sig
            s1, s2 = er_integrals(phi, sig, sig_next)
            d1 = (dens[0] - dens[1]) / (sigs[0] - sigs[1])
            xh = xh + (dt + float(phi(sig_next)) * s1) * d1
            if stage >= 3:
                d2 = (d1 - d1_prev) / ((sigs[0] - sigs[2]) / 2.0)
                xh = xh + (dt * dt / 2.0 + float(phi(sig_next)) * s2) * d2
            d1_prev = d1
        std = sig_next**2 - sig**2 * r * r
        if s_noise and std > 0:
            xh = xh + z(sig, sig_next) * (s_noise * math.sqrt(std))
    return xh

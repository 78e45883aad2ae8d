"""Two deterministic samplers of k-diffusion that the UIs name "DPM2" and "LMS", in EDM's variables (x_hat = x /
alpha, sigma = edm_sigma, d = (x_hat - D) / sigma = eps) on k-diffusion's sigma list (N points of `spacing`, then 0).

  dpm_2  (k-diffusion sample_dpm_2 without churn; Karras et al. 2022 use the same midpoint idea): an Euler
         half-step to the geometric midpoint sigma_mid = sqrt(sigma sigma'), the derivative there, then the full
         step with it; the last step (to 0) is Euler. N steps, 2N - 1 evaluations.
  lms    (k-diffusion sample_lms): linear multistep in sigma, x' = x + sum_j c_j d_{i-j}, c_j the integral over
         [sigma_i, sigma_{i+1}] of the Lagrange basis through the last `order` sigmas (computed exactly here; k-diffusion
         uses scipy quad, exact for these polynomials), orders 1, 2, ... up to `order` (4). N steps, N evaluations.
"""

from __future__ import annotations

import math

import numpy as np

from .dpmpp_sde import Denoiser, KGrid
from .registry import SamplerError, register


@register("dpm_2")
def dpm_2(eps, sched, x, nfe, noise, *, spacing="karras", timesteps=None):
    """DPM2 (k-diffusion sample_dpm_2, no churn): N = (nfe+1)//2 midpoint steps in log sigma, 2N - 1 evaluations."""
    grid, D = KGrid(sched, (nfe + 1) // 2, spacing, timesteps, nfe, 2, "dpm_2"), Denoiser(eps, sched)
    xh = x * math.sqrt(1.0 + grid.sigmas[0] ** 2)
    for i, tau, sig, sig_next in grid.steps():
        d = (xh - D(xh, sig, tau)) / sig
        if sig_next == 0:
            xh = xh + d * (sig_next - sig)
            continue
        sig_mid = math.exp(0.5 * (math.log(sig) + math.log(sig_next)))
        x2 = xh + d * (sig_mid - sig)
        d2 = (x2 - D(x2, sig_mid)) / sig_mid
        xh = xh + d2 * (sig_next - sig)
    return xh


def lms_coefficients(sigmas, i: int, order: int) -> list[float]:
    """c_j = int_{sigma_i}^{sigma_{i+1}} prod_{k != j} (s - sigma_{i-k}) / (sigma_{i-j} - sigma_{i-k}) ds."""
    out = []
    for j in range(order):
        poly = np.poly1d([1.0])
        for k in range(order):
            if k != j:
                poly = poly * np.poly1d([1.0, -sigmas[i - k]]) / (sigmas[i - j] - sigmas[i - k])
        integral = poly.integ()
        out.append(float(integral(sigmas[i + 1]) - integral(sigmas[i])))
    return out


@register("lms")
def lms(eps, sched, x, nfe, noise, *, order=4, spacing="karras", timesteps=None):
    """LMS (k-diffusion sample_lms): linear multistep in sigma of order up to `order` (4), N = nfe steps."""
    if order not in (1, 2, 3, 4):
        raise SamplerError(f"order must be 1, 2, 3 or 4, got {order!r}")
    grid, D = KGrid(sched, nfe, spacing, timesteps, nfe, 1, "lms"), Denoiser(eps, sched)
    xh = x * math.sqrt(1.0 + grid.sigmas[0] ** 2)
    ds = []
    for i, tau, sig, sig_next in grid.steps():
        ds = [(xh - D(xh, sig, tau)) / sig] + ds[: order - 1]
        coeffs = lms_coefficients(grid.sigmas, i, min(i + 1, order))
        xh = xh + sum(c * d for c, d in zip(coeffs, ds))
    return xh

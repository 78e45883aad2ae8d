"""DEIS (Zhang & Chen 2022, arXiv 2204.13902): the exponential integrator with a polynomial extrapolation of the
noise prediction through the last `order` evaluations, "tAB" (Adams-Bashforth in time t).

In rho = sigma/alpha (EDM's sigma), the PF-ODE is exactly d(x/alpha) = eps drho (DEIS Eq. 11 with the eps
parametrisation). Replacing eps by its Lagrange interpolant P through the last r+1 points (tau_{i-j}, eps_{i-j}):

  x_t = a_t ( x_s / a_s + sum_j C_j eps_{i-j} ),   C_j = integral_{rho_s}^{rho_t} L_j(v(rho)) drho

(DEIS Eq. 14-15). basis "tab": L_j interpolates in time (the paper's tAB; t is affine in our tau); "logrho":
in log rho (diffusers' DEISMultistepScheduler, whose closed forms are this integral). C_j are integrated in float64
by Gauss-Legendre on the pieces between integer timesteps (tau(rho) has kinks there), which is exact to rounding.
"""

from __future__ import annotations

import math

import numpy as np

from .dpm_solver import _grid, multistep_orders
from .registry import SamplerError, register

_GL_X, _GL_W = np.polynomial.legendre.leggauss(8)


def deis_coefficients(sched, s: float, t: float, nodes, basis: str) -> list[float]:
    """C_j = integral over rho from rho(s) to rho(t) of the j-th Lagrange basis polynomial through `nodes` (taus)."""
    inner = np.arange(math.ceil(t), math.floor(s) + 1, dtype=np.float64)
    inner = inner[(inner > t) & (inner < s)][::-1]
    rho_b = sched.edm_sigma(np.concatenate([[s], inner, [t]]))
    lo, hi = rho_b[:-1, None], rho_b[1:, None]
    rho = 0.5 * (lo + hi) + 0.5 * (hi - lo) * _GL_X  # quadrature points, one row per piece
    w = 0.5 * (hi - lo) * _GL_W
    nodes = np.asarray(nodes, dtype=np.float64)
    if basis == "tab":
        v, vn = sched.tau_from_edm_sigma(rho), nodes
    else:
        v, vn = np.log(rho), np.log(sched.edm_sigma(nodes))
    coeffs = []
    for j in range(len(vn)):
        lj = np.ones_like(v)
        for k in range(len(vn)):
            if k != j:
                lj = lj * (v - vn[k]) / (vn[j] - vn[k])
        coeffs.append(float(np.sum(w * lj)))
    return coeffs


@register("deis")
def deis(eps, sched, x, nfe, noise, *, order=3, basis="tab", spacing="quadratic", lower_order_final=True,
         timesteps=None):
    """DEIS tAB (Zhang & Chen 2022): exponential integrator, Lagrange extrapolation of eps of degree order-1.

    nfe steps, one evaluation each; warm-up with orders 1, 2, ...; lower_order_final: orders ..., 2, 1 on the last
    steps when nfe < 15 (as diffusers). spacing "quadratic": quadratic time steps, as the DEIS code's tAB examples.
    """
    if basis not in ("tab", "logrho"):
        raise SamplerError(f"unknown basis {basis!r} for deis; allowed: tab, logrho")
    ts = _grid(sched, nfe + 1, spacing, timesteps, f"deis at nfe={nfe}")
    hist = []  # (tau, eps) newest first
    for i, k in enumerate(multistep_orders(nfe, int(order), lower_order_final)):
        s, t = float(ts[i]), float(ts[i + 1])
        hist = [(s, eps(x, s))] + hist[:2]
        c = deis_coefficients(sched, s, t, [tau for tau, _ in hist[:k]], basis)
        a_s, a_t = float(sched.alpha(s)), float(sched.alpha(t))
        x = a_t * (x / a_s + sum(cj * e for cj, (_, e) in zip(c, hist[:k])))
    return x

"""EDM's deterministic samplers (Karras, Aittala, Aila, Laine 2022, arXiv 2206.00364), Algorithm 1.

The PF-ODE in EDM's variables: x_hat = x / alpha and sigma = sigma_vp / alpha (schedule.edm_sigma), so that
dx_hat/dsigma = eps(alpha x_hat, tau(sigma)) exactly (EDM Eq. 4 with s(t) = alpha, and D = x_hat - sigma eps).
Steps: sigma_i of Eq. 5 (rho = 7) from sigma(t_max) to sigma(t_min) for i < N, then sigma_N = 0 (clean data).

  euler: x_{i+1} = x_i + (sigma_{i+1} - sigma_i) d_i                   N steps, N evaluations (= DDIM)
  heun : the same, then if sigma_{i+1} != 0 average d_i with d at the trial point (Eq. / Alg. 1 lines 9-11)
         N steps, 2N - 1 evaluations (the last step, to sigma = 0, is an Euler step).
"""

from __future__ import annotations

from .common import CLEAN, check_spacing, explicit_grid
from .registry import SamplerError, register


def edm_grid(sched, n_steps: int, spacing: str, timesteps):
    """N+1 timesteps: N from t_max to t_min in `spacing` (EDM's karras, rho=7, by default), then CLEAN (sigma = 0)."""
    if timesteps is not None:
        return explicit_grid(sched, timesteps, allow_clean=True)
    check_spacing(spacing)
    taus = [sched.t_max] if n_steps == 1 else sched.timesteps(n_steps - 1, spacing).tolist()
    return taus + [CLEAN]


def _sig_alpha(sched, tau):
    """(EDM sigma, alpha) at tau; (0, 1) at CLEAN."""
    return (0.0, 1.0) if tau == CLEAN else (float(sched.edm_sigma(tau)), float(sched.alpha(tau)))


def _run(eps, sched, x, ts, heun: bool, nfe: int):
    evals = (len(ts) - 1) * (2 if heun else 1) - (1 if heun and ts[-1] == CLEAN else 0)
    if evals > nfe:
        raise SamplerError(f"this timestep grid takes {evals} evaluations, above nfe={nfe}")
    sig, a = _sig_alpha(sched, float(ts[0]))
    xh = x / a  # x_hat = x / alpha
    for s, t in zip(ts[:-1], ts[1:]):
        s, t = float(s), float(t)
        (sig_s, a_s), (sig_t, a_t) = _sig_alpha(sched, s), _sig_alpha(sched, t)
        d = eps(a_s * xh, s)  # dx_hat/dsigma at (x_hat, sigma_s)
        x_next = xh + (sig_t - sig_s) * d  # Euler step
        if heun and t != CLEAN:  # second-order correction (Alg. 1 lines 9-11), not on the step to sigma = 0
            x_next = xh + (sig_t - sig_s) * 0.5 * (d + eps(a_t * x_next, t))
        xh = x_next
    return xh * _sig_alpha(sched, float(ts[-1]))[1]  # back to x = alpha x_hat (alpha = 1 at CLEAN)


@register("euler")
def euler(eps, sched, x, nfe, noise, *, spacing="karras", timesteps=None):
    """Euler on EDM's PF-ODE (Karras et al. 2022, Alg. 1 without the correction): nfe steps, nfe evaluations.

    spacing "karras" is EDM's Eq. 5 with rho = 7; `timesteps` an explicit grid (may end at -1, sigma = 0).
    """
    return _run(eps, sched, x, edm_grid(sched, nfe, spacing, timesteps), heun=False, nfe=nfe)


@register("heun")
def heun(eps, sched, x, nfe, noise, *, spacing="karras", timesteps=None):
    """Heun's 2nd-order method on EDM's PF-ODE (Karras et al. 2022, Alg. 1): N = (nfe+1)//2 steps spend 2N-1."""
    return _run(eps, sched, x, edm_grid(sched, (nfe + 1) // 2, spacing, timesteps), heun=True, nfe=nfe)

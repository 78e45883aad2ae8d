"""EDM's deterministic samplers (Karras, Aittala, Aila, Laine 2022, arXiv 2206.00364), Algorithm 1.

The PF-ODE in EDM's variables: x_hat = x / alpha and sigma = sigma_vp / alpha (schedule.edm_sigma), so that
dx_hat/dsigma = eps(alpha x_hat, tau(sigma)) exactly (EDM Eq. 4 with s(t) = alpha, and D = x_hat - sigma eps).
Steps: sigma_i of Eq. 5 (rho = 7) from sigma(t_max) to sigma(t_min) for i < N, then sigma_N = 0 (clean data).

  euler: x_{i+1} = x_i + (sigma_{i+1} - sigma_i) d_i                   N steps, N evaluations (= DDIM)
  heun : the same, then if sigma_{i+1} != 0 average d_i with d at the trial point (Eq. / Alg. 1 lines 9-11)
         N steps, 2N - 1 evaluations (the last step, to sigma = 0, is an Euler step).
  frame (euler, heun): "edm" integrates x_hat in EDM sigma as above (EDM's s(t) = 1, sigma(t) = t); "model"
         integrates the model's own state x_m = model_alpha x_0 + model_sigma eps in its own time tau (EDM Alg. 1
         with s(t) = model_alpha, sigma(t) = model_sigma / model_alpha), dx_m/dtau = a' x_0 + s' eps
         (schedule.model_rates): on Flow this is Euler / Heun on dx_f/ds = v, as SD3 and diffusers'
         FlowMatchEuler / FlowMatchHeun step. Euler is the same in both frames (both are DDIM); Heun's correction is
         not. Default (None): the schedule's ode_frame ("model" on Flow, "edm" elsewhere).
  edm_stochastic: Alg. 2, the Heun step preceded on [S_tmin, S_tmax] by "churn": noise raising sigma_i to
         sigma_hat = (1 + gamma) sigma_i; N steps, 2N - 1 evaluations.
"""

from __future__ import annotations

import math

from .common import CLEAN, alpha_sigma, check_spacing, eval_points, explicit_grid
from .registry import SamplerError, register


def edm_grid(sched, n_steps: int, spacing: str, timesteps):
    """N+1 timesteps: N from t_max to t_min in `spacing` (EDM's karras, rho=7, by default), then CLEAN (sigma = 0)."""
    if timesteps is not None:
        return explicit_grid(sched, timesteps, allow_clean=True)
    check_spacing(spacing)
    return eval_points(sched, n_steps, spacing).tolist() + [CLEAN]


def sig_alpha(sched, tau):
    """(EDM sigma, alpha) at tau; (0, 1) at CLEAN."""
    return (0.0, 1.0) if tau == CLEAN else (float(sched.edm_sigma(tau)), float(sched.alpha(tau)))


def heun_step(eps, sched, xh, s: float, t: float, heun: bool = True, sig_s: float | None = None):
    """One step of Alg. 1 in x_hat from timestep s to t (t may be CLEAN): Euler, then, if heun and t is not
    CLEAN, the trapezoidal correction (Alg. 1 lines 9-11). sig_s: the EDM sigma at s if already known."""
    sig_s = sig_alpha(sched, s)[0] if sig_s is None else sig_s
    a_s = sig_alpha(sched, s)[1]
    sig_t, a_t = sig_alpha(sched, t)
    d = eps(a_s * xh, s)  # dx_hat/dsigma at (x_hat, sigma_s)
    x_next = xh + (sig_t - sig_s) * d  # Euler step
    if heun and t != CLEAN:
        x_next = xh + (sig_t - sig_s) * 0.5 * (d + eps(a_t * x_next, t))
    return x_next


def heun_evals(ts, heun: bool = True) -> int:
    """Evaluations of Alg. 1 on the grid ts: 2 per step (1 for euler), 1 on a last step to sigma = 0."""
    return (len(ts) - 1) * (2 if heun else 1) - (1 if heun and ts[-1] == CLEAN else 0)


def _check_evals(ts, heun: bool, nfe: int) -> None:
    if heun_evals(ts, heun) > nfe:
        raise SamplerError(f"this timestep grid takes {heun_evals(ts, heun)} evaluations, above nfe={nfe}")


def _model_frame(eps, sched, x, ts, heun: bool):
    """Alg. 1 in the model's own state and time (module docstring): x_m = k x, velocity a' x0_hat + s' eps_hat."""
    if sched.model_rates(float(ts[0])) is None or sched.clean_tau is None:
        raise SamplerError(f"frame=model needs a schedule whose own coefficients are linear in its time (flow); got "
                           f"{sched.describe()}; use frame=edm")

    def tau_of(t):
        return sched.clean_tau if t == CLEAN else t

    def velocity(xm, t):
        k, (a, s) = float(sched.input_scale(t)), alpha_sigma(sched, t)
        e = eps(xm / k, t)
        da, ds = sched.model_rates(t)
        return da * (xm / k - s * e) / a + ds * e

    xm = x * float(sched.input_scale(float(ts[0])))
    for s, t in zip(ts[:-1], ts[1:]):
        s, t = float(s), float(t)
        dt = tau_of(t) - s
        d = velocity(xm, s)
        x_next = xm + dt * d
        if heun and t != CLEAN:
            x_next = xm + dt * 0.5 * (d + velocity(x_next, t))
        xm = x_next
    t_end = float(ts[-1])
    return xm if t_end == CLEAN else xm / float(sched.input_scale(t_end))


def _run(eps, sched, x, ts, heun: bool, nfe: int, frame=None):
    _check_evals(ts, heun, nfe)
    frame = sched.ode_frame if frame is None else frame
    if frame not in ("edm", "model"):
        raise SamplerError(f"unknown frame {frame!r}; allowed: edm, model (or null: the schedule's)")
    if frame == "model":
        return _model_frame(eps, sched, x, ts, heun)
    xh = x / sig_alpha(sched, float(ts[0]))[1]  # x_hat = x / alpha
    for s, t in zip(ts[:-1], ts[1:]):
        xh = heun_step(eps, sched, xh, float(s), float(t), heun)
    return xh * sig_alpha(sched, float(ts[-1]))[1]  # back to x = alpha x_hat (alpha = 1 at CLEAN)


@register("euler")
def euler(eps, sched, x, nfe, noise, *, spacing="karras", timesteps=None, frame=None):
    """Euler on EDM's PF-ODE (Karras et al. 2022, Alg. 1 without the correction): nfe steps, nfe evaluations.

    spacing "karras" is EDM's Eq. 5 with rho = 7; `timesteps` an explicit grid (may end at -1, sigma = 0);
    frame: edm | model | None (the schedule's; module docstring).
    """
    return _run(eps, sched, x, edm_grid(sched, nfe, spacing, timesteps), heun=False, nfe=nfe, frame=frame)


@register("heun")
def heun(eps, sched, x, nfe, noise, *, spacing="karras", timesteps=None, frame=None):
    """Heun's 2nd-order method on EDM's PF-ODE (Karras et al. 2022, Alg. 1): N = (nfe+1)//2 steps spend 2N-1.
    frame: edm | model | None (the schedule's; module docstring)."""
    return _run(eps, sched, x, edm_grid(sched, (nfe + 1) // 2, spacing, timesteps), heun=True, nfe=nfe, frame=frame)


@register("edm_stochastic", stochastic=True)
def edm_stochastic(eps, sched, x, nfe, noise, *, s_churn=30.0, s_tmin=0.01, s_tmax=1.0, s_noise=1.007,
                   spacing="karras", timesteps=None):
    """EDM's stochastic sampler (Karras et al. 2022, Alg. 2): N = (nfe+1)//2 Heun steps spend 2N-1, each step
    first adding noise that raises sigma_i to sigma_hat = (1 + gamma_i) sigma_i.

    gamma_i = min(s_churn / N, sqrt(2) - 1) where s_tmin <= sigma_i <= s_tmax, else 0 (Alg. 2 line 4); the added
    noise is N(0, s_noise^2 (sigma_hat^2 - sigma_i^2) I) (line 6). Defaults: Table 5, CIFAR-10 VP (30, 0.01, 1,
    1.007); ImageNet-64: 80, 0.05, 50, 1.003. sigma_hat is capped at sigma(T-1), the schedule's top, where the
    model is defined. s_churn = 0 is heun.
    """
    for name, v in (("s_churn", s_churn), ("s_noise", s_noise), ("s_tmin", s_tmin)):
        if v < 0:
            raise SamplerError(f"{name} must be >= 0, got {v}")
    if s_tmin > s_tmax:
        raise SamplerError(f"s_tmin must be <= s_tmax, got s_tmin={s_tmin}, s_tmax={s_tmax}")
    ts = edm_grid(sched, (nfe + 1) // 2, spacing, timesteps)
    _check_evals(ts, True, nfe)
    gamma = min(s_churn / (len(ts) - 1), math.sqrt(2.0) - 1.0)
    sig_top = float(sched.edm_sigma(sched.t_max))
    xh = x / sig_alpha(sched, float(ts[0]))[1]
    for s, t in zip(ts[:-1], ts[1:]):
        s, t = float(s), float(t)
        sig = sig_alpha(sched, s)[0]
        sig_hat = min(sig * (1.0 + gamma), sig_top) if s_tmin <= sig <= s_tmax else sig
        if sig_hat > sig:  # Alg. 2 lines 5-6: x_hat_i = x_i + sqrt(sigma_hat^2 - sigma_i^2) S_noise z
            xh = xh + math.sqrt(sig_hat**2 - sig**2) * s_noise * noise.randn_like(xh)
            s = float(sched.tau_from_edm_sigma(sig_hat))
        xh = heun_step(eps, sched, xh, s, t, sig_s=sig_hat)  # lines 7-11, from sigma_hat
    return xh * sig_alpha(sched, float(ts[-1]))[1]

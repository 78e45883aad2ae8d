"""Adaptive-step samplers: `nfe` is a cap, not a schedule. Each has a batch-level step-size controller (the model
evaluates the whole batch at one timestep), so the step sizes, and with them the evaluations spent, are the batch's:
every sample of a batch spends the same number, and samples depend (slightly) on the batch they ran in. Rejected
attempts are counted. Reaching the cap before the end is a one-line error (common.Capped).

  rk45: the probability-flow ODE (score_sde's "ODE sampler", Song et al. 2021 Sec. 4.3, which calls scipy's RK45
        with rtol = atol = 1e-5) by the Dormand-Prince 5(4) pair (Dormand & Prince 1980, the tableau of Hairer,
        Norsett & Wanner, Solving ODEs I, Sec. II.5) with the standard controller (ibid. Sec. II.4;
        scipy's choices: safety 0.9, factors in [0.2, 10], no growth right after a rejection, and Hairer's
        starting step, II.4 "Starting step size", which costs one evaluation). It integrates EDM's form of the
        ODE, d(x/alpha)/du = sigma eps(x, tau) with u = log sigma, sigma = sigma/alpha (schedule.edm_sigma),
        from tau = T-1 to tau = 0; the error norm is the rms over the whole batch (as scipy on score_sde's
        flattened batch).
  ggf:  Gotta Go Fast (Jolicoeur-Martineau, Li, Piche-Taillefer, Kachman, Mitliagkas 2021, arXiv 2105.14080),
        Alg. 1: per attempt an Euler-Maruyama step x' and the stochastic improved-Euler step x'' with the same
        noise z (Roberts 2012); error E = ||(x' - x'') / delta||_2 / sqrt(D), delta = max(eps_abs, eps_rel
        max(|x'|, |x'_prev|)); accept if E <= 1 and continue from x'' (extrapolation); h <- min(tau - 0,
        theta h E^(-r)), theta = 0.9, r = 0.9, h_init = 0.01 of the time span. The reverse-SDE steps are
        sde.py's (f and g^2 integrated over the step from the schedule's alpha and sigma). E is the worst
        sample's (the controller is the batch's; the authors' code keeps a step size per sample). eps at the
        step's start is reused after a rejection (their code evaluates it again). As their code, it ends with
        one denoising evaluation at tau = 0, x + sigma^2 score.
"""

from __future__ import annotations

import math

import torch

from .common import Capped, check_tolerances, worst_sample_rms
from .registry import register
from .sde import Transition

# Dormand-Prince 5(4): nodes, stage coefficients, 5th-order weights (= the last stage row: FSAL) and the weights
# of the error estimate (5th - 4th order).
DP_C = (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0)
DP_A = ((),
        (1 / 5,),
        (3 / 40, 9 / 40),
        (44 / 45, -56 / 15, 32 / 9),
        (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
        (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
        (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84))
DP_E = (71 / 57600, 0.0, -71 / 16695, 71 / 1920, -17253 / 339200, 22 / 525, -1 / 40)
SAFETY, MIN_FACTOR, MAX_FACTOR = 0.9, 0.2, 10.0


def _combine(weights, ks):
    return sum(w * k for w, k in zip(weights, ks) if w)


def _rms(v: torch.Tensor) -> float:
    return float(v.double().pow(2).mean().sqrt())


@register("rk45")
def rk45(eps, sched, x, nfe, noise, *, rtol=1e-5, atol=1e-5):
    """Probability-flow ODE by adaptive RK45 (Dormand-Prince 5(4); score_sde's ODE sampler, rtol = atol = 1e-5).

    nfe is a cap: the evaluations spent are what the controller needed (reported as nfe_used); reaching the cap
    first is an error. rtol, atol: relative and absolute tolerance of the local error in x / alpha.
    """
    check_tolerances(rtol=rtol, atol=atol)
    f_eps = Capped(eps, nfe, "rk45", "rtol")
    u, u_end = math.log(float(sched.edm_sigma(sched.t_max))), math.log(float(sched.edm_sigma(sched.t_min)))

    def f(u_, y):  # d(x_hat)/du = sigma eps(alpha x_hat, tau(sigma)), sigma = e^u
        tau = float(sched.tau_from_edm_sigma(math.exp(u_)))
        return math.exp(u_) * f_eps(float(sched.alpha(tau)) * y, tau)

    y = x / float(sched.alpha(sched.t_max))
    k0 = f(u, y)
    # Hairer's starting step (Solving ODEs I, II.4): from the sizes of y, y' and a finite-difference y''
    scale = atol + rtol * y.abs()
    d0, d1 = _rms(y / scale), _rms(k0 / scale)
    h0 = min(1e-6 if d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / d1, u - u_end)
    d2 = _rms((f(u - h0, y - h0 * k0) - k0) / scale) / h0
    h1 = max(1e-6, h0 * 1e-3) if max(d1, d2) <= 1e-15 else (0.01 / max(d1, d2)) ** (1 / 5)
    h = min(100 * h0, h1, u - u_end)
    while u > u_end:
        rejected = False
        while True:
            h = min(h, u - u_end)
            ks = [k0]
            for c, a in zip(DP_C[1:6], DP_A[1:6]):
                ks.append(f(u - c * h, y - h * _combine(a, ks)))
            y_new = y - h * _combine(DP_A[6], ks)  # 5th-order solution
            ks.append(f(u - h, y_new))  # FSAL: the last stage is f at the new point, the next step's first
            err = _rms(h * _combine(DP_E, ks) / (atol + rtol * torch.maximum(y.abs(), y_new.abs())))
            if err < 1.0:
                break
            h *= max(MIN_FACTOR, SAFETY * err ** (-1 / 5))
            rejected = True
        u = u - h if h < u - u_end else u_end
        y, k0 = y_new, ks[6]
        factor = MAX_FACTOR if err == 0 else min(MAX_FACTOR, SAFETY * err ** (-1 / 5))
        h *= min(1.0, factor) if rejected else factor
    return y * float(sched.alpha(sched.t_min))


GGF_THETA, GGF_R, GGF_H_INIT = 0.9, 0.9, 0.01


@register("ggf", stochastic=True)
def ggf(eps, sched, x, nfe, noise, *, eps_abs=0.0078, eps_rel=0.05):
    """Gotta Go Fast (Jolicoeur-Martineau et al. 2021, Alg. 1): adaptive reverse-SDE solver, Euler-Maruyama vs
    improved Euler with extrapolation; eps_abs (0.0078: 2/255 on [-1, 1] data), eps_rel (0.05).

    nfe is a cap: evaluations spent (rejected attempts included) are what the controller needed.
    """
    check_tolerances(eps_abs=eps_abs, eps_rel=eps_rel)
    f = Capped(eps, nfe, "ggf", "eps_abs / eps_rel")
    s, end = sched.t_max, sched.t_min
    h = GGF_H_INIT * (s - end)
    x_prev, e_s = x, None
    while s > end:
        t = max(s - h, end)
        tr = Transition(sched, s, t)
        e_s = f(x, s) if e_s is None else e_s  # unchanged after a rejection
        noise_term = math.sqrt(tr.g2) * noise.randn_like(x)
        x1 = x + tr.drift(x, tr.score(e_s)) + noise_term  # Euler-Maruyama
        x_tilde = x + tr.drift(x1, tr.score(f(x1, t), at_t=True)) + noise_term
        x2 = 0.5 * (x1 + x_tilde)  # improved Euler (Alg. 1)
        delta = torch.clamp(eps_rel * torch.maximum(x1.abs(), x_prev.abs()), min=eps_abs)
        err = worst_sample_rms((x1 - x2) / delta)
        if err <= 1.0:
            x, x_prev, s, e_s = x2, x1, t, None
        h = min(s - end, h * (GGF_THETA * err ** -GGF_R if err > 0 else math.inf))
    return x - float(sched.sigma(end)) * f(x, end)  # the paper's final denoising, x + sigma^2 score (1 evaluation)

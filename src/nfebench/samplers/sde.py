"""Reverse-time SDE samplers of score_sde (Song, Sohl-Dickstein, Kingma, Kumar, Ermon, Poole 2021, ICLR,
arXiv 2011.13456): predictor-corrector sampling (Sec. 4.2, Alg. 1 and App. G, Alg. 2-5).

The forward process x_tau = alpha x_0 + sigma eps of any schedule (VP: alpha^2 + sigma^2 = 1; VE: alpha = 1) is,
from timestep t up to s > t, the Gaussian transition x_s = r x_t + sqrt(G2) z with

    r = alpha_s / alpha_t,    G2 = sigma_s^2 - r^2 sigma_t^2,

i.e. the forward SDE dx = f x dtau + g dw with  integral_t^s f = log r  and (to first order) integral_t^s g^2 = G2.
The samplers below step the reverse SDE from s down to t with these per-step numbers, so they use only the
schedule's alpha and sigma (score = -eps / sigma_s):

  euler_maruyama    x_t = x_s - log(r) x_s + G2 score + sqrt(G2) z              (Eq. 6, Euler-Maruyama; f and g^2
                    integrated over the step; score_sde evaluates them at the step's start, the same to first order)
  reverse_diffusion x_t = (2 - r) x_s + G2 score + sqrt(G2) z                   (App. E, the forward step reversed;
                    r = sqrt(1 - beta_i) and G2 = beta_i on adjacent VP timesteps, score_sde's VP discretisation)
  ancestral         x_t = (x_s + G2 score) / r + sqrt(G2 sigma_t^2 / sigma_s^2) z  (App. F / DDPM's posterior)

The corrector `langevin` (Alg. 4-5) makes `corrector_steps` Langevin steps at s before each predictor step:
step size e = 2 a (snr ||z|| / ||score||)^2 (norms averaged over the batch, as score_sde), a = r^2 (score_sde's
alpha_i = 1 - beta_i on VP, 1 on VE), x <- x + e score + sqrt(2 e) z. The last predictor step adds no noise
(score_sde's `denoise`: it returns the mean). NFE: N steps x (1 + corrector_steps) evaluations.
"""

from __future__ import annotations

import math

import torch

from .common import check_spacing
from .registry import SamplerError, register

PREDICTORS = ("euler_maruyama", "reverse_diffusion", "ancestral")
CORRECTORS = ("none", "langevin")


class Transition:
    """The forward transition from t up to s: r = alpha_s / alpha_t, G2 = sigma_s^2 - r^2 sigma_t^2 (floats)."""

    def __init__(self, sched, s: float, t: float):
        self.s, self.t = s, t
        self.sig_s, self.sig_t = float(sched.sigma(s)), float(sched.sigma(t))
        self.r = float(sched.alpha(s)) / float(sched.alpha(t))
        self.g2 = self.sig_s**2 - self.r**2 * self.sig_t**2

    def score(self, e, at_t: bool = False):
        """The score -eps / sigma at s (or at t)."""
        return -e / (self.sig_t if at_t else self.sig_s)

    def drift(self, x, score):
        """The Euler-Maruyama increment of the reverse SDE's drift over the step: -log(r) x + G2 score."""
        return -math.log(self.r) * x + self.g2 * score


def predictor_step(kind: str, tr: Transition, x, e, z):
    """One predictor step s -> t given eps e at (x, s); z is the step's N(0, I) noise or None (no noise)."""
    if kind == "euler_maruyama":
        mean, std = x + tr.drift(x, tr.score(e)), math.sqrt(tr.g2)
    elif kind == "reverse_diffusion":
        mean, std = (2.0 - tr.r) * x + tr.g2 * tr.score(e), math.sqrt(tr.g2)
    else:  # ancestral
        mean, std = (x + tr.g2 * tr.score(e)) / tr.r, math.sqrt(tr.g2) * tr.sig_t / tr.sig_s
    return mean if z is None else mean + std * z


def _batch_norm(v):
    """score_sde's norm: the per-sample L2 norm, averaged over the batch."""
    return torch.linalg.vector_norm(v.reshape(v.shape[0], -1), dim=1).mean()


@register("sde", stochastic=True)
def sde(eps, sched, x, nfe, noise, *, predictor="euler_maruyama", corrector="none", snr=0.16, corrector_steps=1,
        spacing="uniform"):
    """score_sde's reverse-time SDE samplers (Song et al. 2021): a predictor (euler_maruyama, reverse_diffusion,
    ancestral) and optionally the Langevin corrector; N = nfe // (1 + corrector_steps) steps from T-1 to 0.

    snr: the corrector's signal-to-noise ratio (Alg. 4-5); corrector_steps: Langevin steps per predictor step.
    spacing: the time grid, uniform in tau by default (score_sde's).
    """
    if predictor not in PREDICTORS:
        raise SamplerError(f"unknown predictor {predictor!r} for sde; allowed: {', '.join(PREDICTORS)}")
    if corrector not in CORRECTORS:
        raise SamplerError(f"unknown corrector {corrector!r} for sde; allowed: {', '.join(CORRECTORS)}")
    if corrector == "langevin" and (int(corrector_steps) != corrector_steps or corrector_steps < 1):
        raise SamplerError(f"corrector_steps must be an integer >= 1, got {corrector_steps!r}")
    if corrector == "langevin" and not snr > 0:
        raise SamplerError(f"snr must be > 0, got {snr!r}")
    per_step = 1 + (int(corrector_steps) if corrector == "langevin" else 0)
    n = nfe // per_step
    if n < 1:
        raise SamplerError(f"nfe={nfe} is below the minimum of sampler 'sde' with corrector_steps="
                           f"{corrector_steps}: {per_step}")
    ts = sched.timesteps(n, check_spacing(spacing))
    for i, (s, t) in enumerate(zip(ts[:-1], ts[1:])):
        tr = Transition(sched, float(s), float(t))
        for _ in range(per_step - 1):  # Langevin corrector at s (Alg. 5)
            grad = tr.score(eps(x, tr.s))
            z = noise.randn_like(x)
            step = 2.0 * tr.r**2 * (snr * _batch_norm(z) / _batch_norm(grad)) ** 2
            x = x + step * grad + torch.sqrt(2.0 * step) * z
        last = i == len(ts) - 2
        x = predictor_step(predictor, tr, x, eps(x, tr.s), None if last else noise.randn_like(x))
    return x

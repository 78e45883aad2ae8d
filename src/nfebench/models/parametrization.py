"""The one adapter between a network and the samplers: whatever the network predicts, in its own time variable and
input scaling, becomes eps in the VP frame x = alpha x_0 + sigma eps (alpha^2 + sigma^2 = 1).

The network sees x_model = k x with k = schedule.input_scale(tau) (1 on VP schedules; 1 / alpha on VE, where
x_model = x_0 + s eps with s = sigma / alpha). Every parametrization is affine in eps and x:

    out = A eps + B x                                              (A, B from alpha, sigma, k; float64)
    epsilon      eps                                        A = 1,            B = 0
    sample       x_0 = (x - sigma eps) / alpha              A = -sigma/alpha, B = 1/alpha
    v_prediction v = alpha eps - sigma x_0                  A = 1/alpha,      B = -sigma/alpha
                   (Salimans & Ho 2022, Sec. 4 and App. D; with alpha^2 + sigma^2 = 1, eps = sigma x + alpha v)
    score        grad log p(x_model) = -eps / (k sigma)     A = -1/(k sigma), B = 0
                   (Song et al. 2021, Eq. 1-2: the VE score of NCSN++ is -eps / s)

so eps = (out - B x) / A. EDM's preconditioned networks D(x; sigma) are `sample` on a VE schedule (Karras et al.
2022, Eq. 7): their forward, unchanged. A new parametrization is one entry of PARAMETRIZATIONS.

variance_type (Nichol & Dhariwal 2021, Sec. 3.1): `learned_range` or `learned` networks output 2C channels; the
first C are the prediction, the other C the variance values (v of Eq. 15 in [-1, 1], or the log-variance). They
travel with the eps output as its attribute `variance_values` (same evaluation, no extra NFE); ODE samplers ignore
it; ddpm's variance=learned and the vlb's variance=learned read it through `learned_log_variance`.
(`variance_type` fixed_small / fixed_large (and their _log forms), as diffusers writes them, mean C channels.)
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from .base import ModelError


def _epsilon(a, s, k):
    return 1.0, 0.0


def _sample(a, s, k):
    return -s / a, 1.0 / a


def _v_prediction(a, s, k):
    return 1.0 / a, -s / a


def _score(a, s, k):
    return -1.0 / (k * s), 0.0


PARAMETRIZATIONS: dict[str, Callable] = {
    "epsilon": _epsilon, "sample": _sample, "v_prediction": _v_prediction, "score": _score,
}
LEARNED = ("learned", "learned_range")
FIXED = ("fixed_small", "fixed_small_log", "fixed_large", "fixed_large_log")  # diffusers' names: C output channels
VARIANCE_TYPES = LEARNED + FIXED


def check_prediction_type(prediction_type) -> str:
    if prediction_type not in PARAMETRIZATIONS:
        raise ModelError(f"unknown prediction_type {prediction_type!r}; allowed: {', '.join(PARAMETRIZATIONS)}")
    return prediction_type


def check_variance_type(variance_type):
    """learned / learned_range as given; None and the fixed variances (one prediction, C channels) as None."""
    if variance_type is not None and variance_type not in VARIANCE_TYPES:
        raise ModelError(f"unknown variance_type {variance_type!r}; allowed: {', '.join(VARIANCE_TYPES)} (or null)")
    return variance_type if variance_type in LEARNED else None


def _coefficients(schedule, prediction_type: str, tau: torch.Tensor, ndim: int):
    """(A, B, k) as float64 tensors [B, 1, ...] at the per-sample times tau [B]."""
    t = tau.detach().double().cpu().numpy()
    a, s, k = schedule.alpha(t), schedule.sigma(t), schedule.input_scale(t)
    A, B = PARAMETRIZATIONS[prediction_type](a, s, k)
    shape = (-1,) + (1,) * (ndim - 1)
    return tuple(torch.from_numpy(np.broadcast_to(np.asarray(v, dtype=np.float64), t.shape).copy()).view(shape)
                 for v in (A, B, k))


class EpsAdapter:
    """eps(x_vp, tau) in the VP frame from network(x_model, tau) -> prediction (module docstring).

    Callable as fn(x [B, C, ...], tau [B]); the network gets tau unchanged (the model's own time variable). A network
    returning (prediction, aux) -- aux an auxiliary output of the same forward pass, such as the SN/NPR covariance
    heads (nfebench.cov_heads) -- gives (eps, aux), aux unchanged (CountedEps keeps it in .aux).
    """

    def __init__(self, network: Callable, schedule, prediction_type: str = "epsilon", variance_type=None):
        self.network, self.schedule = network, schedule
        self.prediction_type = check_prediction_type(prediction_type)
        self.variance_type = check_variance_type(variance_type)
        self.dtype = getattr(network, "dtype", torch.float32)
        self.device = getattr(network, "device", torch.device("cpu"))

    def __call__(self, x: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
        A, B, k = (c.to(x.device) for c in _coefficients(self.schedule, self.prediction_type, tau, x.dim()))
        x_model = (x.double() * k).to(x.dtype)
        # class conditioning / guidance (issue 14) plugs in here: the network call below becomes the guided
        # combination of conditional and unconditional outputs, before the conversion to eps.
        out = self.network(x_model, tau)
        out, aux = out if isinstance(out, tuple) else (out, None)  # an auxiliary output of the same forward pass
        variance = None
        if self.variance_type in LEARNED:
            if out.shape[1] != 2 * x.shape[1]:
                raise ModelError(f"variance_type {self.variance_type!r} needs {2 * x.shape[1]} output channels "
                                 f"(prediction + variance), the network returned {out.shape[1]}")
            out, variance = out.chunk(2, dim=1)
        eps = ((out.double() - B * x.double()) / A).to(x.dtype)
        if variance is not None:
            eps.variance_values, eps.variance_type = variance, self.variance_type
        return eps if aux is None else (eps, aux)


def present(eps_fn: Callable, schedule, prediction_type: str) -> Callable:
    """The inverse of EpsAdapter: the network network(x_model, tau) that outputs `prediction_type` in the schedule's
    input scaling and whose adapted eps is eps_fn(x_vp, tau) (how the exact-score oracle presents itself)."""
    check_prediction_type(prediction_type)

    def network(x_model: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
        A, B, k = (c.to(x_model.device) for c in _coefficients(schedule, prediction_type, tau, x_model.dim()))
        x = x_model.double() / k
        return (A * eps_fn(x.to(x_model.dtype), tau).double() + B * x).to(x_model.dtype)

    return network


def learned_log_variance(eps_out: torch.Tensor, log_beta: float, log_beta_tilde: float):
    """The reverse step's log-variance from the network's variance values (Nichol & Dhariwal 2021, Eq. 15):
    learned_range: v in [-1, 1] -> f = (v + 1) / 2, log var = f log beta + (1 - f) log beta-tilde;
    learned: the values are the log-variance itself (ADM's LEARNED). float64, shaped as the output."""
    v = getattr(eps_out, "variance_values", None)
    if v is None:
        raise ModelError("variance=learned needs a model with variance_type learned or learned_range "
                         "(2C output channels)")
    v = v.double()
    if eps_out.variance_type == "learned":
        return v
    f = (v + 1.0) / 2.0
    return f * log_beta + (1.0 - f) * log_beta_tilde

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
    flow_prediction  v = eps - x_0 on a Flow schedule         A = 1/(k alpha), B = -1/alpha
                   (diffusers' name; Lipman et al. 2023, Liu et al. 2023, Esser et al. 2024: the velocity
                   d x_f / d s of x_f = (1 - s) x_0 + s eps, with k alpha = 1 - s: eps = x_f + (1 - s) v and
                   x_0 = x_f - s v.) With the schedule's data_at_1 convention (SiT, rectified flow) the network's
                   velocity is x_0 - eps: A and B change sign (nfebench.schedules.Flow, velocity_sign).

`v_prediction` on a Flow schedule is still Salimans & Ho's v of the VP frame (alpha eps - sigma x_0 with the VP
alpha, sigma), not the flow velocity; the flow velocity is `flow_prediction`. flow_prediction needs a Flow schedule;
every other parametrization works on every schedule (an eps- or x_0-predicting flow model is `epsilon` / `sample` on
Flow). The network is called at schedule.network_time(tau) (tau itself, but for Flow's data_at_1 convention).

so eps = (out - B x) / A. EDM's preconditioned networks D(x; sigma) are `sample` on a VE schedule (Karras et al.
2022, Eq. 7): their forward, unchanged. A new parametrization is one entry of PARAMETRIZATIONS.

variance_type (Nichol & Dhariwal 2021, Sec. 3.1): `learned_range` or `learned` networks output 2C channels; the
first C are the prediction, the other C the variance values (v of Eq. 15 in [-1, 1], or the log-variance). They
travel with the eps output as its attribute `variance_values` (same evaluation, no extra NFE); ODE samplers ignore
it; ddpm's variance=learned and the vlb's variance=learned read it through `learned_log_variance`.
(`variance_type` fixed_small / fixed_large (and their _log forms), as diffusers writes them, mean C channels.)

Class conditioning and classifier-free guidance (Ho & Salimans 2022, Eq. 6, in diffusers' convention): with
class_labels y the network is called network(x_model, tau, y); with guidance_scale w and the model's null label,

    eps = eps_u + w (eps_c - eps_u),   eps_c = eps(x, tau, y),  eps_u = eps(x, tau, null)

applied to eps *after* each half's conversion above. The conversion is affine in the output with the same A, B for
both halves, so guiding the raw outputs would give the same field: the guided field is the same whatever the
network predicts. w = 1 (or None) is the conditional network alone and w = 0 the unconditional one, one pass each;
any other w runs both halves as one forward of 2B samples (GUIDED_PASSES network passes per evaluation).
With learned variances the variance values are the conditional half's.

Text conditioning (nfebench.models.pipeline) goes the same way: the network takes a dict of per-sample tensors
(prompt embeddings, pooled embeddings, SDXL's time ids) and the negative / unconditional prompt's embeddings play
the null label; `guidance_interval` [lo, hi] (Kynkaenniemi et al. 2024) guides only where EDM's sigma = sigma / alpha
is in (lo, hi] and runs the conditional network alone elsewhere (guidance_passes counts the passes).
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


def _flow_prediction(a, s, k):
    return 1.0 / (k * a), -1.0 / a


PARAMETRIZATIONS: dict[str, Callable] = {
    "epsilon": _epsilon, "sample": _sample, "v_prediction": _v_prediction, "score": _score,
    "flow_prediction": _flow_prediction,
}
LEARNED = ("learned", "learned_range")
FIXED = ("fixed_small", "fixed_small_log", "fixed_large", "fixed_large_log")  # diffusers' names: C output channels
VARIANCE_TYPES = LEARNED + FIXED


def check_prediction_type(prediction_type) -> str:
    if prediction_type not in PARAMETRIZATIONS:
        raise ModelError(f"unknown prediction_type {prediction_type!r}; allowed: {', '.join(PARAMETRIZATIONS)}")
    return prediction_type


def check_schedule_fit(schedule, prediction_type: str) -> None:
    """flow_prediction (a velocity) is defined on a Flow schedule only: a one-line error for any other."""
    from ..schedules import Flow

    if prediction_type == "flow_prediction" and not isinstance(schedule, Flow):
        raise ModelError(f"prediction_type flow_prediction needs a flow schedule (model.schedule: {{kind: flow, "
                         f"shift: ..}}); got {schedule.describe()}")


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
    if prediction_type == "flow_prediction":  # data_at_1 (SiT, rectified flow): the velocity x_0 - eps
        A, B = schedule.velocity_sign * A, schedule.velocity_sign * B
    shape = (-1,) + (1,) * (ndim - 1)
    return tuple(torch.from_numpy(np.broadcast_to(np.asarray(v, dtype=np.float64), t.shape).copy()).view(shape)
                 for v in (A, B, k))


def network_passes(guidance_scale) -> int:
    """Network passes per sample per guided evaluation: 2 when both halves of CFG run, else 1."""
    return 1 if guidance_scale is None or guidance_scale in (0, 1) else 2


def guidance_passes(schedule, tau, guidance_scale, interval=None) -> int:
    """Network passes of one guided evaluation at tau: 2 where both halves of CFG run, else 1. With a guidance
    interval (Kynkaenniemi et al. 2024, Sec. 3) CFG runs only where EDM's sigma = sigma / alpha of the step lies in
    (lo, hi]; elsewhere the conditional network alone (one pass)."""
    if network_passes(guidance_scale) == 1:
        return 1
    if interval is None:
        return 2
    sigma = float(schedule.edm_sigma(float(tau)))
    return 2 if interval[0] < sigma <= interval[1] else 1


def check_guidance(class_labels, guidance_scale, null_class, batch: int | None = None):
    """Validate conditioning arguments before any sampling; returns the labels as an int64 tensor (or None)."""
    if guidance_scale is not None:
        if isinstance(guidance_scale, bool) or not isinstance(guidance_scale, (int, float)) \
                or not np.isfinite(guidance_scale) or guidance_scale < 0:
            raise ModelError(f"guidance_scale must be a finite number >= 0 (or null), got {guidance_scale!r}")
        if class_labels is None:
            raise ModelError(f"guidance_scale={guidance_scale} needs class_labels (a class-conditional model)")
        if guidance_scale != 1 and null_class is None:
            raise ModelError(f"guidance_scale={guidance_scale} needs a model with a null label (null_class); this "
                             f"model has none (use guidance_scale=1 or null, or set model.null_class)")
    if class_labels is None:
        return None
    y = torch.as_tensor(class_labels)
    if y.dim() != 1 or y.dtype.is_floating_point or y.dtype == torch.bool:
        raise ModelError(f"class_labels must be a 1-D sequence of integers, got {class_labels!r}")
    if batch is not None and y.numel() != batch:
        raise ModelError(f"class_labels has {y.numel()} labels for a batch of {batch} samples")
    return y.long()


class EpsAdapter:
    """eps(x_vp, tau) in the VP frame from network(x_model, tau) -> prediction (module docstring).

    Callable as fn(x [B, C, ...], tau [B]); the network gets tau unchanged (the model's own time variable). With
    class_labels [B], fn(x, tau, class_labels=y, guidance_scale=w, null_class=K) calls network(x_model, tau, labels)
    and guides in eps with K the model's null label (module docstring). A network returning (prediction, aux) -- aux
    an auxiliary output of the same forward pass, such as the SN/NPR covariance heads (nfebench.cov_heads) -- gives
    (eps, aux), aux unchanged (CountedEps keeps it in .aux); unguided only.
    """

    def __init__(self, network: Callable, schedule, prediction_type: str = "epsilon", variance_type=None):
        self.network, self.schedule = network, schedule
        self.prediction_type = check_prediction_type(prediction_type)
        check_schedule_fit(schedule, self.prediction_type)
        self.variance_type = check_variance_type(variance_type)
        self.time = getattr(schedule, "network_time", lambda tau: tau)
        self.dtype = getattr(network, "dtype", torch.float32)
        self.device = getattr(network, "device", torch.device("cpu"))

    def __call__(self, x: torch.Tensor, tau: torch.Tensor, class_labels: torch.Tensor | None = None,
                 guidance_scale: float | None = None, null_class: int | None = None, *, condition: dict | None = None,
                 negative: dict | None = None, guidance_interval=None) -> torch.Tensor:
        A, B, k = (c.to(x.device) for c in _coefficients(self.schedule, self.prediction_type, tau, x.dim()))
        x_model = (x.double() * k).to(x.dtype)
        t_net = self.time(tau)
        if condition is not None:
            return self._conditioned(x, x_model, tau, t_net, A, B, condition, negative, guidance_scale,
                                     guidance_interval)
        if class_labels is None:
            return self._to_eps(self.network(x_model, t_net), x, A, B)
        y = check_guidance(class_labels, guidance_scale, null_class, x.shape[0]).to(x.device)
        if network_passes(guidance_scale) == 1:  # w = 1 (or None): conditional alone; w = 0: unconditional alone
            labels = torch.full_like(y, null_class) if guidance_scale == 0 else y
            return self._to_eps(self.network(x_model, t_net, labels), x, A, B)
        out = self.network(torch.cat([x_model, x_model]), torch.cat([t_net, t_net]),
                           torch.cat([y, torch.full_like(y, null_class)]))  # one forward of 2B samples
        if isinstance(out, tuple):
            raise ModelError("guidance with an auxiliary network output (covariance heads) is not supported")
        eps_c, eps_u = (self._to_eps(o, x, A, B) for o in out.chunk(2, dim=0))
        eps = (eps_u.double() + guidance_scale * (eps_c.double() - eps_u.double())).to(x.dtype)
        if hasattr(eps_c, "variance_values"):
            eps.variance_values, eps.variance_type = eps_c.variance_values, eps_c.variance_type
        return eps

    def _conditioned(self, x, x_model, tau, t_net, A, B, condition, negative, w, interval):
        """A network conditioned by tensors (a pipeline's prompt embeddings: a dict of [B, ...] tensors, called
        network(x_model, t_net, condition)), guided with the negative / unconditional condition as class labels are:
        eps_u + w (eps_c - eps_u) in eps, both halves as one forward of 2B samples, only where guidance_passes is 2
        (w = 0: the negative condition alone)."""
        if negative is None or guidance_passes(self.schedule, tau[0], w, interval) == 1:
            cond = negative if (negative is not None and w == 0) else condition
            return self._to_eps(self.network(x_model, t_net, cond), x, A, B)
        out = self.network(torch.cat([x_model, x_model]), torch.cat([t_net, t_net]), {
            k: torch.cat([condition[k], negative[k]]) for k in condition})
        eps_c, eps_u = (self._to_eps(o, x, A, B) for o in out.chunk(2, dim=0))
        return (eps_u.double() + w * (eps_c.double() - eps_u.double())).to(x.dtype)

    def _to_eps(self, out: torch.Tensor, x: torch.Tensor, A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
        """The network's output (prediction [+ variance values], or with an auxiliary output (that, aux)) -> eps,
        carrying the variance values along (and returning (eps, aux) with an auxiliary output)."""
        out, aux = out if isinstance(out, tuple) else (out, None)
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
    """The inverse of EpsAdapter: the network network(x_model, tau[, class_labels]) that outputs `prediction_type`
    in the schedule's input scaling and whose adapted eps is eps_fn(x_vp, tau[, class_labels]) (how the exact-score
    oracle presents itself). It is called at the schedule's network time (network_time is its own inverse)."""
    check_prediction_type(prediction_type)
    check_schedule_fit(schedule, prediction_type)
    time = getattr(schedule, "network_time", lambda t: t)

    def network(x_model: torch.Tensor, t_net: torch.Tensor, *class_labels) -> torch.Tensor:
        tau = time(t_net)
        A, B, k = (c.to(x_model.device) for c in _coefficients(schedule, prediction_type, tau, x_model.dim()))
        x = x_model.double() / k
        return (A * eps_fn(x.to(x_model.dtype), tau, *class_labels).double() + B * x).to(x_model.dtype)

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

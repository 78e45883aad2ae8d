"""Consistency models' boundary-condition preconditioning, as model-side wrappers (the samplers never see it).

A consistency function must satisfy f(x, t_min) = x; consistency models build it in with c_skip(t) -> 1 and
c_out(t) -> 0 at the bottom of the schedule (Song et al. 2023, App. C). Two forms, each read from a config mapping
(`model.consistency`, or the loader of a checkpoint whose scheduler config is CMStochasticIterativeScheduler):

    kind: cm   (Song et al. 2023; diffusers CMStochasticIterativeScheduler), on a VE schedule, the raw network F:
               D(x, s) = c_skip(s) x + c_out(s) F(c_in(s) x, 250 log s),
               c_skip = sd^2 / ((s - s_min)^2 + sd^2), c_out = (s - s_min) sd / sqrt(s^2 + sd^2),
               c_in = 1 / sqrt(s^2 + sd^2), sd = sigma_data (0.5), s_min the schedule's sigma_min.
               D is an x_0 prediction (prediction_type sample) on VE(sigma_min, sigma_max).
    kind: lcm  (Luo et al. 2023; diffusers LCMScheduler), on a discrete schedule, the model's own x_0 estimate:
               f(x, t) = c_skip(t) x + c_out(t) x0_hat(x, t), with u = timestep_scaling t,
               c_skip = sd^2 / (u^2 + sd^2), c_out = u / sqrt(u^2 + sd^2) (nfebench.train.lcm_boundary).
Both return a model whose eps is that of the preconditioned x_0: eps = (x - alpha f) / sigma in the VP frame.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from .base import ModelError
from .parametrization import EpsAdapter

KINDS = {"cm": ("sigma_data",), "lcm": ("sigma_data", "timestep_scaling")}


def check_spec(spec) -> dict:
    """{kind, params} with defaults, or a one-line ModelError."""
    spec = dict(spec or {})
    kind = spec.pop("kind", None)
    if kind not in KINDS:
        raise ModelError(f"model.consistency.kind must be one of {', '.join(KINDS)}, got {kind!r}")
    bad = sorted(set(spec) - set(KINDS[kind]))
    if bad:
        raise ModelError(f"unknown model.consistency parameter {bad[0]!r} for kind {kind}; allowed: "
                         f"{', '.join(KINDS[kind])}")
    out = {"kind": kind, "sigma_data": 0.5, **({"timestep_scaling": 10.0} if kind == "lcm" else {}), **spec}
    for k, v in out.items():
        if k != "kind" and (isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0):
            raise ModelError(f"model.consistency.{k} must be a positive number, got {v!r}")
    return out


def cm_network(network, sigma_min: float, sigma_data: float = 0.5):
    """D(x_ve, s) of a consistency model's raw network F(x_in, t) (module docstring, kind cm)."""

    def denoiser(x, sigma, *class_labels):
        s = sigma.double().view(-1, *([1] * (x.dim() - 1)))
        c_skip = sigma_data**2 / ((s - sigma_min) ** 2 + sigma_data**2)
        c_out = (s - sigma_min) * sigma_data / (s**2 + sigma_data**2).sqrt()
        c_in = 1.0 / (s**2 + sigma_data**2).sqrt()
        t = 250.0 * torch.log(sigma.double() + 1e-44)
        out = network((c_in * x.double()).to(x.dtype), t.to(sigma.dtype), *class_labels)
        return (c_skip * x.double() + c_out * out.double()).to(x.dtype)

    return denoiser


def lcm_scalings(tau: torch.Tensor, sigma_data: float, timestep_scaling: float):
    u = tau.double() * timestep_scaling
    return sigma_data**2 / (u**2 + sigma_data**2), u / (u**2 + sigma_data**2).sqrt()


class LCMBoundary:
    """eps(x, tau) of f = c_skip x + c_out x0_hat, x0_hat from the wrapped eps (module docstring, kind lcm)."""

    def __init__(self, fn, schedule, sigma_data: float, timestep_scaling: float):
        self.fn, self.schedule = fn, schedule
        self.sigma_data, self.timestep_scaling = sigma_data, timestep_scaling
        self.network = getattr(fn, "network", fn)

    def __call__(self, x, tau, **conditioning):
        t = tau.detach().double().cpu().numpy()
        shape = (-1,) + (1,) * (x.dim() - 1)
        a, s = (torch.from_numpy(np.asarray(v, dtype=np.float64)).view(shape).to(x.device)
                for v in (self.schedule.alpha(t), self.schedule.sigma(t)))
        e = self.fn(x, tau, **conditioning).double()
        c_skip, c_out = (c.view(shape).to(x.device) for c in lcm_scalings(tau.cpu(), self.sigma_data,
                                                                         self.timestep_scaling))
        f = c_skip * x.double() + c_out * (x.double() - s * e) / a
        return ((x.double() - a * f) / s).to(x.dtype)


def precondition(model, spec):
    """The model with its consistency preconditioning (a copy; the given model is unchanged)."""
    spec = check_spec(spec)
    if spec["kind"] == "cm":
        sched = model.schedule
        if not (float(getattr(sched, "prior_std", 1.0)) != 1.0):
            raise ModelError(f"model.consistency kind cm is defined on a VE schedule (sigma in [sigma_min, "
                             f"sigma_max]); model {model.name!r} has {sched.describe()}")
        net = cm_network(model.network, float(sched.t_min), spec["sigma_data"])
        fn = EpsAdapter(net, sched, "sample")
        return dataclasses.replace(model, fn=fn, prediction_type="sample", needs=(), calls=0)
    if not model.schedule.discrete:
        raise ModelError(f"model.consistency kind lcm is defined on a discrete schedule; model {model.name!r} has "
                         f"{model.schedule.describe()}")
    fn = LCMBoundary(model.fn, model.schedule, spec["sigma_data"], spec["timestep_scaling"])
    return dataclasses.replace(model, fn=fn, needs=(), calls=0)



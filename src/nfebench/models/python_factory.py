"""Any network a user can build in Python: `model=python model.factory=package.module:function model.kwargs={...}`.

The factory is called once with model.kwargs and returns network(x, tau) (a torch.nn.Module or any callable) in the
model's own terms: x in its input scaling, tau its own time variable, output its prediction_type (docs/models.md
wraps an EDM pickle and a score_sde checkpoint this way). model.prediction_type, model.variance_type,
model.schedule (nfebench.schedules.from_config: a kind or {kind: ..., params}), model.sample_shape ([C, H, W]) and
model.dataset say what it is. Class-conditional networks (model.num_classes = K) are called network(x, tau, labels)
with integer labels [B] in 0..K-1; model.null_class names the label of the unconditional half of classifier-free
guidance (e.g. K for a network trained with label dropout to a (K+1)-th embedding; null: no guidance), as on
`model=diffusers`. One forward pass on a zero batch of one sample at load time checks the output shape
(it is not counted in the NFE of a run).
"""

from __future__ import annotations

import importlib

import torch

from ..schedules import from_config
from .base import EpsModel, ModelError
from .parametrization import LEARNED, EpsAdapter, check_prediction_type, check_variance_type


def import_factory(spec, what: str = "model.factory"):
    """package.module:function -> the function, or a one-line ModelError naming `what` (the config key)."""
    if not isinstance(spec, str) or spec.count(":") != 1 or not all(spec.split(":")):
        raise ModelError(f"{what} must be 'package.module:function', got {spec!r}")
    mod_name, attr = spec.split(":")
    try:
        mod = importlib.import_module(mod_name)
    except Exception as e:  # ImportError, or the module failing on import
        raise ModelError(f"cannot import {what} {spec!r}: {type(e).__name__}: {e}") from None
    fn = getattr(mod, attr, None)
    if fn is None:
        raise ModelError(f"{what} {spec!r}: module {mod_name!r} has no attribute {attr!r}")
    if not callable(fn):
        raise ModelError(f"{what} {spec!r} is not callable (a {type(fn).__name__})")
    return fn


def _shape(sample_shape) -> tuple:
    try:
        shape = tuple(int(v) for v in sample_shape)
    except (TypeError, ValueError):
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise ModelError(f"model.sample_shape must be [C, H, W] of positive integers, got {sample_shape!r}")
    return shape


def load_python(factory=None, kwargs=None, device="cpu", name: str | None = None, dtype: str = "float32",
                dataset: str | None = None, prediction_type: str = "epsilon", variance_type: str | None = None,
                schedule=None, sample_shape=None, num_classes: int | None = None,
                null_class: int | None = None) -> EpsModel:
    """Build the user's network and wrap it as an EpsModel (module docstring)."""
    if dtype not in ("float32", "float64"):
        raise ModelError(f"unknown model dtype {dtype!r}; allowed: float32, float64")
    if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, int)
                                    or num_classes < 1):
        raise ModelError(f"model.num_classes must be a positive integer (or null: unconditional), got {num_classes!r}")
    if null_class is not None and (num_classes is None or isinstance(null_class, bool)
                                   or not isinstance(null_class, int) or 0 <= null_class < num_classes
                                   or null_class < 0):
        raise ModelError(f"model.null_class={null_class!r}: needs model.num_classes and a label >= num_classes "
                         f"(not one of the classes)")
    if schedule is None:
        raise ModelError("model.schedule is not set; give a kind (discrete, vp_linear, ve, flow) "
                         "or {kind: ..., parameters}")
    torch_dtype = {"float32": torch.float32, "float64": torch.float64}[dtype]
    ptype, vtype = check_prediction_type(prediction_type), check_variance_type(variance_type)
    sched, shape = from_config(schedule), _shape(sample_shape)
    fn = import_factory(factory)
    try:
        network = fn(**dict(kwargs or {}))
    except ModelError:  # the factory's own one-line message
        raise
    except Exception as e:
        raise ModelError(f"model.factory {factory!r} failed: {type(e).__name__}: {e}") from None
    if not callable(network):
        raise ModelError(f"model.factory {factory!r} returned a {type(network).__name__}, not a callable network")
    module = network if isinstance(network, torch.nn.Module) else None
    if module is not None:
        module.to(device=device, dtype=torch_dtype).eval().requires_grad_(False)
    want = (1, shape[0] * (2 if vtype in LEARNED else 1), *shape[1:])
    x = torch.zeros(1, *shape, dtype=torch_dtype, device=device)
    with torch.no_grad():
        try:
            t = torch.full((1,), float(sched.t_max), dtype=torch_dtype, device=device)
            out = network(x, t) if num_classes is None else network(x, t, torch.zeros(1, dtype=torch.long,
                                                                                         device=device))
        except Exception as e:
            raise ModelError(f"the network from {factory!r} fails on a [1, {', '.join(map(str, shape))}] input: "
                             f"{type(e).__name__}: {e}") from None
    got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
    if got != want:
        raise ModelError(f"the network from {factory!r} returned shape {got} for input {(1, *shape)}; expected "
                         f"{want} (sample_shape {list(shape)}, variance_type {vtype})")
    return EpsModel(name=name or factory.split(":")[-1], fn=EpsAdapter(network, sched, ptype, vtype),
                    betas=sched.betas if sched.discrete else None, sample_shape=shape, dtype=torch_dtype,
                    device=torch.device(device), module=module, schedule=sched, prediction_type=ptype,
                    variance_type=vtype, num_classes=num_classes, null_class=null_class)

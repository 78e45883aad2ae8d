"""Any diffusers scheduler run on our model, through the same evaluation counter as our own samplers.

`sampler=diffusers sampler.scheduler=DPMSolverMultistepScheduler sampler.scheduler_kwargs={...}`: the scheduler is
built with the model's training betas (trained_betas) and the given kwargs, and run as a diffusers pipeline runs it:
x = x_T * init_noise_sigma; for t in timesteps: x = step(eps(scale_model_input(x, t), t), t, x). The number of
inference steps is the largest whose len(timesteps) (diffusers' own evaluation count) fits the budget.
Nothing is adapted: this measures diffusers' scheduler as shipped (its spacing, clipping and final-step defaults).
"""

from __future__ import annotations

import inspect

from .registry import SamplerError, register

REFUSED = {"IPNDMScheduler": "it builds its own schedule and ignores the model's betas (use sampler=ipndm)"}


def make_scheduler(name: str, betas, kwargs: dict | None):
    import diffusers

    cls = getattr(diffusers, str(name), None)
    if cls is None or not name.endswith("Scheduler") or not hasattr(cls, "set_timesteps"):
        raise SamplerError(f"unknown diffusers scheduler {name!r}; give a class name such as "
                           f"DPMSolverMultistepScheduler")
    if name in REFUSED:
        raise SamplerError(f"diffusers {name} is not supported: {REFUSED[name]}")
    params = inspect.signature(cls.__init__).parameters
    if "trained_betas" not in params:
        raise SamplerError(f"diffusers {name} takes no trained_betas, so it cannot run on a VP model's schedule")
    kwargs = dict(kwargs or {})
    for k in ("trained_betas", "num_train_timesteps"):
        if k in kwargs:
            raise SamplerError(f"scheduler_kwargs may not set {k!r}: it comes from the model")
    unknown = sorted(set(kwargs) - set(params))
    if unknown:
        raise SamplerError(f"unknown argument {unknown[0]!r} for diffusers {name}")
    return cls(num_train_timesteps=len(betas), trained_betas=[float(b) for b in betas], **kwargs)


def _evals(scheduler, n: int):
    """len(timesteps) at n inference steps, or None where the scheduler refuses n (e.g. PNDM below 4 steps)."""
    try:
        scheduler.set_timesteps(n)
    except (ValueError, IndexError, ZeroDivisionError):
        return None
    return len(scheduler.timesteps)


def fit_steps(scheduler, nfe: int, name: str) -> int:
    """The largest num_inference_steps whose evaluation count len(timesteps) is at most nfe (left set)."""
    for n in range(nfe, 0, -1):
        evals = _evals(scheduler, n)
        if evals is not None and evals <= nfe:
            return n
    smallest = next((e for e in (_evals(scheduler, n) for n in range(1, 100)) if e is not None), "unknown")
    raise SamplerError(f"nfe={nfe} is below the minimum of diffusers {name}: {smallest}")


@register("diffusers")
def diffusers_scheduler(eps, sched, x, nfe, noise, *, scheduler="DPMSolverMultistepScheduler", scheduler_kwargs=None):
    """A diffusers scheduler class (by name) on our model and call counter; spends len(timesteps) <= nfe."""
    if not sched.discrete:
        raise SamplerError(f"sampler=diffusers needs a discrete schedule (trained betas); this model's schedule is "
                           f"{sched.describe()}")
    sch = make_scheduler(scheduler, sched.betas, scheduler_kwargs)
    fit_steps(sch, nfe, scheduler)
    step_kw = {"generator": noise.generator} if "generator" in inspect.signature(sch.step).parameters else {}
    x = x * float(sch.init_noise_sigma)
    for t in sch.timesteps:
        e = eps(sch.scale_model_input(x, t), float(t))
        x = sch.step(e, t, x, **step_kw).prev_sample
    return x

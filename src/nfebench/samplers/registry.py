"""The sampler registry: one decorator per sampler, duplicate names and unknown options rejected.

A sampler is a plain function

    fn(eps, sched, x, nfe, noise, *, option=default, ...) -> x_0

where `eps(x, tau)` is the counted model (tau a Python float, the model's own timestep), `sched` a VPSchedule,
`x` the initial noise x_T, `nfe` the budget and `noise` a Noise source (see common.py). Its keyword-only parameters
are its options: their names and defaults are read from the signature, so a misspelt option is an error.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Callable


class SamplerError(ValueError):
    """A bad sampler name, option or budget: the message names the bad value and what is allowed."""


@dataclass(frozen=True)
class SamplerSpec:
    name: str
    fn: Callable
    min_nfe: int
    stochastic: bool
    options: dict = field(default_factory=dict)  # option name -> default
    summary: str = ""
    needs: tuple = ()  # what it needs prepared before sampling (names resolved by nfebench.needs)
    brownian: bool = False  # an SDE solver that takes noise_sampler=brownian (common.StepNoise)

    def check_options(self, options: dict) -> dict:
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            allowed = ", ".join(sorted(self.options)) or "none"
            raise SamplerError(f"unknown option {unknown[0]!r} for sampler {self.name!r}; allowed: {allowed}")
        return {**self.options, **options}

    def default_spacing_asked(self, options: dict) -> bool:
        """options leave this sampler's spacing to the schedule: `spacing` omitted or `default`."""
        from ..schedules import DEFAULT_SPACING

        return "spacing" in self.options and options.get("spacing", DEFAULT_SPACING) == DEFAULT_SPACING

    def resolve_spacing(self, options: dict, schedule) -> dict:
        """options with `spacing` omitted or `default` replaced by this sampler's default grid on `schedule` (a
        Schedule or a kind name; nfebench.schedules.default_spacing); an explicit spacing keeps its literal meaning."""
        from ..schedules import default_spacing

        if not self.default_spacing_asked(options):
            return options
        return {**options, "spacing": default_spacing(self.options["spacing"], schedule)}


SAMPLERS: dict[str, SamplerSpec] = {}


def register(name: str, *, min_nfe: int = 1, stochastic: bool = False, needs: tuple = (), brownian: bool = False):
    """Register `fn` under `name`. Its keyword-only parameters (with defaults) are its options; `needs` names what
    the runner must prepare first (nfebench.needs: e.g. "moments" fills the option of that name). brownian: it draws
    its noise per step through brownian.StepNoise, so noise_sampler=brownian applies."""

    def deco(fn):
        if name in SAMPLERS:
            raise ValueError(f"sampler {name!r} registered twice ({SAMPLERS[name].fn.__module__} and {fn.__module__})")
        params = inspect.signature(fn).parameters.values()
        options = {p.name: p.default for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}
        missing = [k for k, v in options.items() if v is inspect.Parameter.empty]
        if missing:
            raise ValueError(f"sampler {name!r}: option {missing[0]!r} needs a default")
        summary = (inspect.getdoc(fn) or "").split("\n")[0]
        SAMPLERS[name] = SamplerSpec(name, fn, min_nfe, stochastic, options, summary, tuple(needs), brownian)
        return fn

    return deco


def get_sampler(name: str) -> SamplerSpec:
    if name not in SAMPLERS:
        raise SamplerError(f"unknown sampler {name!r}; allowed: {', '.join(sorted(SAMPLERS))}")
    return SAMPLERS[name]

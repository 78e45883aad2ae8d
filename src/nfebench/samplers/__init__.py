"""Samplers: one module per family, each registering its functions with @register (see registry.py).

Adding a sampler is one file: write the function, decorate it, import the module here.
"""

# modules register their samplers on import
from . import (adaptive, analytic, ddpm, deis, diffusers_sampler, dpm_solver, dpmpp_sde, edm, er_sde,  # noqa: F401
               kdiffusion_ode,
               fastdpm, pndm, restart, sa_solver, sde, unipc)
from .common import CLEAN, BudgetExceeded, CountedEps, Noise, PerSampleNoise
from .registry import SAMPLERS, SamplerError, SamplerSpec, get_sampler, register

__all__ = ["SAMPLERS", "SamplerError", "SamplerSpec", "get_sampler", "register", "CountedEps", "Noise",
           "PerSampleNoise", "BudgetExceeded", "CLEAN"]

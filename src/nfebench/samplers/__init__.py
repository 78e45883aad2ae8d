"""Samplers: one module per family, each registering its functions with @register (see registry.py).

Adding a sampler is one file: write the function, decorate it, import the module here.
"""

# modules register their samplers on import
from . import (adaptive, analytic, consistency, ddpm, deis, diffusers_sampler, dpm_solver, dpmpp_sde, edm,  # noqa: F401
               er_sde, fastdpm, kdiffusion_ode, pndm, restart, sa_solver, sde, unipc)
from .common import CLEAN, BudgetExceeded, CountedEps, Noise, PerSampleNoise
from .registry import SAMPLERS, SamplerError, SamplerSpec, get_sampler, register

__all__ = ["SAMPLERS", "SamplerError", "SamplerSpec", "get_sampler", "register", "CountedEps", "Noise",
           "PerSampleNoise", "BudgetExceeded", "CLEAN"]

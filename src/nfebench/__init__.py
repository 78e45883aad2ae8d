"""nfebench: which diffusion sampler at N network evaluations, and what it costs in FID, IS and likelihood.

`nfebench.sample`, `nfebench.nll` and `nfebench.tune` are imported on first use, so tools that need no torch (the report) start fast.
"""

__version__ = "0.1.0"

__all__ = ["sample", "nll", "tune", "__version__"]


def __getattr__(name):
    if name in ("sample", "nll"):
        from . import api

        return getattr(api, name)
    if name == "tune":  # nfebench/tune.py is the `python -m nfebench.tune` entry; the function lives in tuning.py
        from .tuning import tune

        return tune
    raise AttributeError(f"module 'nfebench' has no attribute {name!r}")

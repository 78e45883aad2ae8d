"""nfebench: which diffusion sampler at N network evaluations, and what it costs in FID, IS and likelihood.

`nfebench.sample` and `nfebench.nll` are imported on first use, so tools that need no torch (the report) start fast.
"""

__version__ = "0.1.0"

__all__ = ["sample", "nll", "__version__"]


def __getattr__(name):
    if name in ("sample", "nll"):
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'nfebench' has no attribute {name!r}")

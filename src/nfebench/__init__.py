"""nfebench: which diffusion sampler at N network evaluations, and what it costs in FID, IS and likelihood."""

__version__ = "0.1.0"

from .api import nll, sample  # noqa: E402

__all__ = ["sample", "nll", "__version__"]

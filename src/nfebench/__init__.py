"""nfebench: which diffusion sampler at N network evaluations, and what it costs in FID, IS and likelihood."""

__version__ = "0.1.0"

from .api import sample  # noqa: E402

__all__ = ["sample", "__version__"]

"""k-diffusion's sampling module alone (its package __init__ imports clean-fid, wandb, ...): the reference for the
conformance tests of issue 28. Pinned in the dev extras (k-diffusion==0.1.1.post1, installed with --no-deps by
`make`, plus torchsde and torchdiffeq); tests that need it skip cleanly when it is absent."""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types

import pytest


def kdiffusion_sampling():
    """k_diffusion.sampling without running k_diffusion/__init__.py; pytest.skip if it or its deps are missing."""
    if "k_diffusion.sampling" in sys.modules:
        return sys.modules["k_diffusion.sampling"]
    spec = importlib.util.find_spec("k_diffusion")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("k-diffusion is not installed (dev extra: pip install --no-deps k-diffusion==0.1.1.post1)")
    for dep in ("torchsde", "torchdiffeq"):
        if importlib.util.find_spec(dep) is None:
            pytest.skip(f"{dep} is not installed (k-diffusion's sampling module needs it)")
    pkg = types.ModuleType("k_diffusion")
    pkg.__path__ = list(spec.submodule_search_locations)
    sys.modules.setdefault("k_diffusion", pkg)
    return importlib.import_module("k_diffusion.sampling")

"""Factories for checkpoints in other code bases' formats, for `model=python model.factory=...` (docs/models.md).

edm_pickle: an EDM network pickle (Karras et al. 2022, NVlabs/edm): the published edm-*.pkl or a training
snapshot. Its network is the preconditioned denoiser D(x; sigma) (EDM Eq. 7, Table 1), so it is prediction_type
`sample` on a VE schedule (EDM samples sigma in 0.002..80), its forward unchanged. Unpickling needs EDM's own
packages (torch_utils, dnnlib, training): put a checkout of NVlabs/edm on PYTHONPATH. Class-conditional pickles need
class labels, which nfebench does not pass yet: only unconditional ones run.
"""

from __future__ import annotations

import pickle
from pathlib import Path

from .base import ModelError


def edm_pickle(path: str | None = None, key: str = "ema"):
    """The network stored under `key` of an EDM pickle (a dict with "ema", as EDM saves it), as network(x, sigma)."""
    if not path:
        raise ModelError("model.kwargs.path is not set; pass model.kwargs.path=/path/to/edm-cifar10-32x32-uncond-vp.pkl")
    p = Path(str(path)).expanduser()
    if not p.is_file():
        raise ModelError(f"EDM pickle {str(p)!r} not found (model.kwargs.path); download it, e.g. "
                         f"https://nvlabs-fi-cdn.nvidia.com/edm/pretrained/edm-cifar10-32x32-uncond-vp.pkl")
    try:
        with p.open("rb") as f:
            obj = pickle.load(f)
    except ModuleNotFoundError as e:
        raise ModelError(f"unpickling {str(p)!r} needs EDM's code ({e.name}); put a checkout of NVlabs/edm on "
                         f"PYTHONPATH") from None
    net = obj.get(key) if isinstance(obj, dict) else obj
    if net is None:
        raise ModelError(f"EDM pickle {str(p)!r} has no {key!r} entry; has: {', '.join(map(str, obj))}")
    if getattr(net, "label_dim", 0):
        raise ModelError(f"EDM pickle {str(p)!r} is class-conditional (label_dim={net.label_dim}); nfebench runs "
                         f"unconditional models only")
    return net

"""EpsModel: a noise-prediction network as eps(x, t) with its training betas, counting every forward call."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch


class ModelError(ValueError):
    """A model that cannot be loaded: the message names the path or id and what to do."""


@dataclass
class EpsModel:
    name: str
    fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # eps(x [B,C,H,W], t [B] float model timesteps)
    betas: np.ndarray  # float64 training schedule, length T
    sample_shape: tuple  # (C, H, W)
    dtype: torch.dtype = torch.float32  # the dtype x should be in
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    calls: int = 0  # forward calls (each one a whole batch), counted here whatever the caller does
    source: str | None = None  # the checkpoint directory, if the model came from one
    module: torch.nn.Module | None = None  # the network behind fn, if any (runtime: channels_last, compile)

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.fn(x, t)

"""EpsModel: a network as eps(x, tau) in the VP frame with its noise schedule, counting every forward call."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch


class ModelError(ValueError):
    """A model that cannot be loaded: the message names the path or id and what to do."""


@dataclass
class EpsModel:
    """What every loader returns. `fn` is already eps in the VP frame (the network behind the parametrization
    adapter, nfebench.models.parametrization); `schedule` is its noise schedule (nfebench.schedules), `betas` the
    training betas when that schedule is Discrete (None otherwise)."""

    name: str
    fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # eps(x_vp [B,C,H,W], tau [B] the model's own time)
    betas: np.ndarray | None  # float64 training schedule, length T (Discrete schedules)
    sample_shape: tuple  # (C, H, W)
    dtype: torch.dtype = torch.float32  # the dtype x should be in
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    calls: int = 0  # forward calls (each one a whole batch), counted here whatever the caller does
    source: str | None = None  # the checkpoint directory, if the model came from one
    module: torch.nn.Module | None = None  # the network behind fn, if any (runtime: channels_last, compile)
    schedule: object = None  # a nfebench.schedules.Schedule; None: Discrete(betas)
    prediction_type: str = "epsilon"  # what the network predicts (before the adapter)
    variance_type: str | None = None  # learned / learned_range: the network also outputs the variance
    num_classes: int | None = None  # class-conditional: labels 0..num_classes-1 (fn takes class_labels=...)
    null_class: int | None = None  # the label of the unconditional half of classifier-free guidance
    decoder: Callable | None = None  # latent models: latents -> images in [-1, 1] (e.g. diffusers_unet.LatentDecoder)
    # per-sample conditioning the model applies itself: conditioning(seeds) -> the keyword arguments of fn for those
    # samples (a text-to-image pipeline's prompt embeddings and guidance, set by its need resolver,
    # nfebench.models.pipeline). With it the runner passes no class labels of its own.
    conditioning: Callable | None = None
    needs: tuple = ()  # what must be prepared before sampling (nfebench.needs), e.g. ("consistency",)
    start: Callable | None = None  # (noise, seeds) -> the sampler's initial state (VP frame); None: x_T (initial_state)

    def __post_init__(self):
        from ..schedules import Discrete

        if self.schedule is None:
            self.schedule = Discrete(self.betas)
        if self.betas is None and self.schedule.discrete:
            self.betas = self.schedule.betas

    def initial_state(self, noise, seeds, tau: float | None = None) -> torch.Tensor:
        """The sampler's initial state for the samples of these seeds, in the VP frame: x_T = prior_std z in the
        model's space (z from each sample's own noise source) at the schedule's t_max, or at tau (an explicit grid's
        first timestep: x_T is the state there), or what `start` draws (a truncated chain's prior sample noised to
        t_start, nfebench.needs)."""
        if self.start is not None:
            return self.start(noise, seeds)
        sched = self.schedule
        x = sched.prior_std * noise.randn(self.sample_shape, dtype=self.dtype)
        scale = float(sched.input_scale(sched.t_max if tau is None else tau))
        return x if scale == 1.0 else x / scale

    @property
    def network(self) -> Callable:
        """The raw network in its own terms (x_model, tau) -> prediction_type (uncounted), for nfebench.sample with
        prediction_type and schedule given."""
        return getattr(self.fn, "network", self.fn)

    def __call__(self, x: torch.Tensor, t: torch.Tensor, **conditioning) -> torch.Tensor:
        """eps(x, t); conditioning (class_labels=, guidance_scale=) goes to the adapter (models.parametrization)."""
        self.calls += 1
        return self.fn(x, t, **conditioning)

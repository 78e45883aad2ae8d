"""Denoising Diffusion GANs (Xiao et al. 2022) as an nfebench model: a stochastic x_0 generator G(x_t, t, z) on its own
few-step discrete schedule, sampled by posterior sampling x_{t-1} ~ q(x_{t-1} | x_t, x_0 = G(x_t, t, z)).

That is exactly the `ddpm` sampler (variance small: the posterior q(x_{t-1} | x_t, x_0), Ho et al. 2020 Eq. 7) with
a `sample` (x_0) prediction on the short Discrete schedule below, at nfe = num_timesteps (the authors'
sample_from_model: for i = T-1..0, x_0 = G(x, i, z), x = q-posterior sample, no noise at i = 0). Tested on the exact
oracle (tests/test_fewstep.py: the mixture's exact posterior sampler as G gives the mixture at 2, 4 and 8 steps).

Schedule (the authors' get_sigma_schedule, VP, not geometric): t_i = i / T (1 - 1e-3) + 1e-3 for i = 0..T,
alpha_bar(t) = exp(-(beta_min t + (beta_max - beta_min) t^2 / 2)), betas_i = 1 - alpha_bar(t_i) / alpha_bar(t_{i-1})
for i = 1..T (their leading 1e-8 is dropped by their own Posterior_Coefficients). CIFAR-10: T = 4, beta 0.1..20.

The latent z is drawn per call from torch's global generator (as the authors do): DDGAN rows are reproducible from
the run's seed only up to that stream (the diffusion noise is per sample as always).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from ..schedules import Discrete
from .base import ModelError


def ddgan_betas(num_timesteps: int = 4, beta_min: float = 0.1, beta_max: float = 20.0) -> np.ndarray:
    t = np.arange(0, num_timesteps + 1, dtype=np.float64) / num_timesteps * (1.0 - 1e-3) + 1e-3
    alpha_bar = np.exp(-(beta_min * t + 0.5 * (beta_max - beta_min) * t**2))
    return 1.0 - alpha_bar[1:] / alpha_bar[:-1]


def ddgan_schedule(num_timesteps: int = 4, beta_min: float = 0.1, beta_max: float = 20.0) -> Discrete:
    return Discrete(ddgan_betas(num_timesteps, beta_min, beta_max))


def generator(path=None, args=None, nz: int = 100, device="cpu"):
    """network(x_t, t) -> x_0 of the authors' NCSNpp generator (score_sde.models.ncsnpp_generator_adagn, from a
    checkout of NVlabs/denoising-diffusion-gan on PYTHONPATH) with its netG_*.pth weights at `path`; `args` is the
    generator's argument namespace as a mapping (the README's CIFAR-10 flags plus test_ddgan.py's defaults)."""
    if not path:
        raise ModelError("model.kwargs.path is required: the DDGAN generator weights (saved_info/dd_gan/cifar10/"
                         "ddgan_cifar10_exp1/netG_1200.pth from the authors' release)")
    try:
        from score_sde.models.ncsnpp_generator_adagn import NCSNpp
    except ImportError as e:
        raise ModelError(f"DDGAN needs a checkout of NVlabs/denoising-diffusion-gan on PYTHONPATH ({e})") from None
    net = NCSNpp(argparse.Namespace(**dict(args or {})))
    state = torch.load(path, map_location=device)
    net.load_state_dict({k[7:] if k.startswith("module.") else k: v for k, v in state.items()})
    net.eval().to(device)

    def network(x, t):
        z = torch.randn(x.shape[0], nz, device=x.device)
        return net(x, t.round().long(), z)

    return network

"""Priors for truncated diffusion (model.prior=package.module:function; nfebench.needs' "prior").

A prior is fn(seeds) -> x_0 samples [len(seeds), C, H, W] in the model's space, sample i a function of seeds[i]
alone (so a run's samples do not depend on its batches). The runner noises them to t_start.

digits_gmm: the digits oracle's Gaussian mixture (nfebench.models.gmm.fit_gmm, 20 full-covariance components fitted
to the train split), used as a cheap generative model in ES-DDPM's role of the VAE: its samples are blurry
(FID well above the diffusion model's), and the diffusion model refines them from t_start.
"""

from __future__ import annotations

import torch


def digits_gmm(seeds, n_components: int = 20) -> torch.Tensor:
    from .models.gmm import GaussianMixtureVP, fit_gmm
    from .schedules import Discrete, linear_betas

    w, m, c, shape = fit_gmm("digits", n_components, 1e-4, 0)
    gmm = GaussianMixtureVP(w, m, c, Discrete(linear_betas()), shape)
    return torch.cat([gmm.sample(1, torch.Generator().manual_seed(int(s))) for s in seeds]).float()

"""The exact-score oracle: a Gaussian mixture fitted to a dataset's train split, diffused by the VP process.

Under x_t = a x_0 + s eps, a component N(mu, C) becomes N(a mu, a^2 C + s^2 I), so the noisy density, its score
and eps = -s * score are closed-form. With C = U diag(d) U^T the covariance of component k at time t is
U diag(a^2 d + s^2) U^T, so everything costs one rotation per component and no matrix inverse at run time.
Samplers run on it with no model error in the way, its exact samples give a reference for sample statistics, and
its exact density checks the likelihood estimators.

The oracle can be presented as any parametrization on any schedule (load_gmm's prediction_type and schedule): the
network it then shows is the exact eps mapped to that prediction in that schedule's input scaling, and the adapter
maps it back, so every parametrization and schedule has an exact-score twin.

Class-conditional (load_gmm(conditional=True)): one Gaussian per class of the train split (its mean and covariance),
weighted by the class frequencies. Label k is component k alone, the null label K the whole mixture, so
classifier-free guidance has an exact twin: w = 1 samples class k's Gaussian, w = 0 the mixture.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch

from ..schedules import Discrete, Schedule, from_config, linear_betas
from .base import EpsModel, ModelError
from .parametrization import EpsAdapter, present


class GaussianMixtureVP:
    """p_0 = sum_k w_k N(mu_k, U_k diag(d_k) U_k^T) in model range ([-1, 1] pixels, flattened to D dims)."""

    def __init__(self, weights, means, covariances, betas_or_schedule, shape):
        self.w = torch.as_tensor(weights, dtype=torch.float64)
        self.mu = torch.as_tensor(means, dtype=torch.float64)  # [K, D]
        d, u = torch.linalg.eigh(torch.as_tensor(covariances, dtype=torch.float64))
        self.d, self.u = d.clamp_min(1e-12), u  # [K, D], [K, D, D]
        self.sched = betas_or_schedule if isinstance(betas_or_schedule, Schedule) else Discrete(betas_or_schedule)
        self.shape = tuple(shape)
        self.K, self.D = self.mu.shape

    def _a_s(self, t: torch.Tensor):
        """Per-sample (alpha, sigma) at model timesteps t [B] (t = -1: clean data)."""
        tn = t.detach().double().cpu().numpy()
        clean = tn < 0
        tc = np.where(clean, self.sched.t_min, tn)
        a = np.where(clean, 1.0, self.sched.alpha(tc))
        s = np.where(clean, 0.0, self.sched.sigma(tc))
        return torch.from_numpy(a), torch.from_numpy(s)

    def _component_terms(self, x: torch.Tensor, t: torch.Tensor):
        """log of w_k N(x; a mu_k, a^2 C_k + s^2 I) [B, K] and the whitened residuals z = U^T (x - a mu) / var."""
        a, s = self._a_s(t)
        xf = x.reshape(x.shape[0], -1).double().cpu()
        var = a[:, None, None] ** 2 * self.d[None] + s[:, None, None] ** 2  # [B, K, D]
        r = xf[:, None, :] - a[:, None, None] * self.mu[None]  # [B, K, D]
        rot = torch.einsum("bkd,kde->bke", r, self.u)  # U^T r
        logp = (torch.log(self.w)[None] - 0.5 * (rot**2 / var).sum(-1) - 0.5 * torch.log(var).sum(-1)
                - 0.5 * self.D * math.log(2 * math.pi))
        return logp, rot / var

    def log_prob(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Exact log p_t(x) in nats, per sample [B] (t = -1: the clean mixture)."""
        logp, _ = self._component_terms(x, t)
        return torch.logsumexp(logp, dim=1)

    def score(self, x: torch.Tensor, t: torch.Tensor, class_labels: torch.Tensor | None = None) -> torch.Tensor:
        """grad_x log p_t(x); with class_labels [B], sample b's is that of component class_labels[b] alone (the
        label K = number of components: the whole mixture)."""
        logp, z = self._component_terms(x, t)
        gamma = torch.softmax(logp, dim=1)  # responsibilities [B, K]
        if class_labels is not None:
            y = torch.as_tensor(class_labels).long().cpu()
            one = y < self.K
            gamma[one] = torch.nn.functional.one_hot(y[one], self.K).double()
        # -sum_k gamma_k Sigma_k^-1 (x - a mu_k), rotating back per component first: a three-operand einsum here
        # builds a [B, K, D, D] intermediate, which made the D backward passes of the exact ODE trace slow
        grad = -(gamma[:, :, None] * torch.einsum("kde,bke->bkd", self.u, z)).sum(1)
        return grad.reshape(x.shape)

    def eps(self, x: torch.Tensor, t: torch.Tensor, class_labels: torch.Tensor | None = None) -> torch.Tensor:
        _, s = self._a_s(t)
        return (-s.view(-1, *[1] * (x.dim() - 1)) * self.score(x, t, class_labels)).to(dtype=x.dtype,
                                                                                        device=x.device)

    def eps_moments(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact E[eps | x_t] and the diagonal of E[eps eps^T | x_t] (float64, shaped as x).

        Given component k, x_0 | x_t is Gaussian with mean m_k = mu_k + U diag(a d / (a^2 d + s^2)) U^T (x - a mu_k)
        and covariance P_k = U diag(d s^2 / (a^2 d + s^2)) U^T; over k the responsibilities weigh them. With
        eps = (x - a x_0) / s: E[eps | x] = (x - a E[x_0 | x]) / s, E[eps^2 | x] = E[eps | x]^2 + a^2 Var[x_0 | x] / s^2.
        """
        a, s = self._a_s(t)
        logp, z = self._component_terms(x, t)
        gamma = torch.softmax(logp, dim=1)  # [B, K]
        a3 = a[:, None, None]
        m = self.mu[None] + torch.einsum("kde,bke->bkd", self.u, a3 * self.d[None] * z)  # [B, K, D]
        p_diag = torch.einsum("kde,bke->bkd", self.u**2, self.d[None] * s[:, None, None] ** 2 / (
            a3**2 * self.d[None] + s[:, None, None] ** 2))  # diag(P_k) [B, K, D]
        mean_x0 = (gamma[:, :, None] * m).sum(1)
        var_x0 = (gamma[:, :, None] * (p_diag + m**2)).sum(1) - mean_x0**2
        xf = x.reshape(x.shape[0], -1).double().cpu()
        e1 = (xf - a[:, None] * mean_x0) / s[:, None]
        e2 = e1**2 + (a[:, None] / s[:, None]) ** 2 * var_x0.clamp_min(0.0)
        return e1.reshape(x.shape), e2.reshape(x.shape)

    def sample(self, n: int, generator: torch.Generator | None = None, component: int | None = None) -> torch.Tensor:
        """n exact samples of p_0 (or of one component), float64 [n, *shape]."""
        k = (torch.multinomial(self.w, n, replacement=True, generator=generator) if component is None
             else torch.full((n,), component))
        z = torch.randn(n, self.D, generator=generator, dtype=torch.float64)
        x = self.mu[k] + torch.einsum("nde,ne->nd", self.u[k], self.d[k].sqrt() * z)
        return x.reshape(n, *self.shape)

    def mean_cov(self, component: int | None = None):
        """Exact mean [D] and covariance [D, D] of p_0 (or of one component)."""
        if component is not None:
            u = self.u[component]
            return self.mu[component], u @ torch.diag(self.d[component]) @ u.T
        m = (self.w[:, None] * self.mu).sum(0)
        cov = torch.einsum("k,kde,ke,kfe->df", self.w, self.u, self.d, self.u)
        dm = self.mu - m
        return m, cov + torch.einsum("k,kd,ke->de", self.w, dm, dm)


@lru_cache(maxsize=None)
def fit_gmm(dataset: str = "digits", n_components: int = 20, reg_covar: float = 1e-4, seed: int = 0):
    """Fit a full-covariance mixture to the dataset's train split in model range (deterministic given seed)."""
    from sklearn.mixture import GaussianMixture

    from ..data import load_split
    from ..images import to_model_range

    x = to_model_range(load_split(dataset, "train"))
    shape = tuple(x.shape[1:])
    g = GaussianMixture(n_components, covariance_type="full", reg_covar=reg_covar, random_state=seed, max_iter=200)
    g.fit(x.reshape(x.shape[0], -1).double().numpy())
    return g.weights_, g.means_, g.covariances_, shape


@lru_cache(maxsize=None)
def fit_class_gaussians(dataset: str = "digits", reg_covar: float = 1e-4):
    """One Gaussian per class of the train split in model range: (class frequencies, means, covariances, shape)."""
    from ..data import load_split
    from ..images import to_model_range

    images, labels = load_split(dataset, "train", with_labels=True)
    x = to_model_range(images).reshape(images.shape[0], -1).double()
    classes = torch.unique(labels)
    if not torch.equal(classes, torch.arange(len(classes))):
        raise ModelError(f"dataset {dataset!r} has labels {classes.tolist()}; a conditional oracle needs 0..K-1")
    parts = [x[labels == k] for k in classes]
    w = np.array([len(p) for p in parts], dtype=np.float64) / x.shape[0]
    means = np.stack([p.mean(0).numpy() for p in parts])
    covs = np.stack([np.cov(p.numpy(), rowvar=False) + reg_covar * np.eye(x.shape[1]) for p in parts])
    return w, means, covs, tuple(images.shape[1:])


def load_gmm(device="cpu", dataset: str = "digits", n_components: int = 20, reg_covar: float = 1e-4, seed: int = 0,
             betas=None, name: str | None = None, dtype: str = "float64", prediction_type: str = "epsilon",
             schedule=None, conditional: bool = False) -> EpsModel:
    """The oracle as an EpsModel. schedule: None (Discrete(betas), default linear betas), a Schedule, or a config
    value for nfebench.schedules.from_config ("ve", {kind: vp_linear, beta_max: 20}, ...); prediction_type: the
    parametrization it presents itself as (None: epsilon; the adapter turns it back into the exact eps). conditional:
    one Gaussian per class (n_components is then the number of classes), num_classes = null_class = K (module
    docstring)."""
    if schedule is not None and betas is not None:
        raise ModelError("give the oracle either betas or a schedule, not both")
    if isinstance(schedule, Schedule):
        sched = schedule
    elif schedule is not None:
        sched = from_config(schedule)
    else:
        sched = Discrete(linear_betas() if betas is None else betas)
    prediction_type = prediction_type or "epsilon"
    w, m, c, shape = fit_class_gaussians(dataset, reg_covar) if conditional else fit_gmm(dataset, n_components,
                                                                                        reg_covar, seed)
    gmm = GaussianMixtureVP(w, m, c, sched, shape)
    network = present(gmm.eps, sched, prediction_type)  # what a network of that kind would output, exactly
    classes = dict(num_classes=gmm.K, null_class=gmm.K) if conditional else {}
    model = EpsModel(name=name or f"gmm_{dataset}", fn=EpsAdapter(network, sched, prediction_type),
                     betas=sched.betas if sched.discrete else None, sample_shape=shape,
                     dtype={"float32": torch.float32, "float64": torch.float64}[dtype], device=torch.device(device),
                     schedule=sched, prediction_type=prediction_type, **classes)
    model.gmm = gmm  # exact sampling and density for tests and NLL checks
    return model

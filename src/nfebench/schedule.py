"""VP noise-schedule maths, in float64, in one place.

Time convention (DPM-Solver's discrete-time wrapper, Lu et al. 2022, App. D): the model is trained on integer
timesteps n = 0..T-1 with alpha_bar_n = prod_{i<=n} (1 - beta_i).  We use the model's own timestep tau in [0, T-1]
as the continuous time, and define the schedule between integers by linear interpolation of log(alpha_bar).

    alpha(tau)  = sqrt(alpha_bar(tau))             (signal scale)
    sigma(tau)  = sqrt(1 - alpha_bar(tau))         (noise scale)
    lambda(tau) = log(alpha / sigma)               (half log-SNR, decreasing in tau)
    x_tau       = alpha(tau) * x_0 + sigma(tau) * eps

Everything here works on numpy float64 scalars or arrays; samplers turn the few numbers they need per step into
Python floats, so the sampling loop never does schedule maths in the model's dtype.
"""

from __future__ import annotations

import numpy as np

SPACINGS = ("uniform", "quadratic", "logsnr", "karras")


def linear_betas(num_train_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> np.ndarray:
    """The linear beta schedule of Ho et al. 2020 (Sec. 4): beta_1..beta_T evenly spaced."""
    return np.linspace(beta_start, beta_end, num_train_timesteps, dtype=np.float64)


class VPSchedule:
    """A discrete VP schedule (the training betas) made continuous in the model's timestep tau in [0, T-1]."""

    def __init__(self, betas):
        betas = np.asarray(betas, dtype=np.float64).reshape(-1)
        if betas.size < 2 or not np.all((betas > 0) & (betas < 1)):
            raise ValueError(f"betas must be a 1-D schedule of at least 2 values in (0, 1); got {betas.size} values")
        self.betas = betas
        self.T = betas.size
        self.alphas_cumprod = np.cumprod(1.0 - betas)
        self.log_alpha_bar = np.log(self.alphas_cumprod)  # decreasing in n
        self.t_min = 0.0
        self.t_max = float(self.T - 1)

    # --- forward maps: tau -> schedule quantities -------------------------------------------------------------
    def log_alpha_bar_at(self, tau):
        """log(alpha_bar) at continuous tau: piecewise-linear interpolation between integer timesteps."""
        tau = np.asarray(tau, dtype=np.float64)
        if np.any(tau < -1e-9) or np.any(tau > self.t_max + 1e-9):
            raise ValueError(f"timestep {tau} outside [0, {self.t_max:g}]")
        return np.interp(tau, np.arange(self.T, dtype=np.float64), self.log_alpha_bar)

    def alpha_bar(self, tau):
        return np.exp(self.log_alpha_bar_at(tau))

    def alpha(self, tau):
        return np.exp(0.5 * self.log_alpha_bar_at(tau))

    def sigma(self, tau):
        # sqrt(1 - exp(l)) with l <= 0; -expm1(l) keeps precision when alpha_bar is close to 1.
        return np.sqrt(-np.expm1(self.log_alpha_bar_at(tau)))

    def lambda_(self, tau):
        """Half log-SNR: log(alpha) - log(sigma)."""
        lab = self.log_alpha_bar_at(tau)
        return 0.5 * lab - 0.5 * np.log(-np.expm1(lab))

    def edm_sigma(self, tau):
        """EDM's sigma (Karras et al. 2022): the noise level of x / alpha, i.e. sigma / alpha = exp(-lambda)."""
        return np.exp(-self.lambda_(tau))

    # --- inverse maps -----------------------------------------------------------------------------------------
    def tau_from_log_alpha_bar(self, lab):
        """Inverse of log_alpha_bar_at (exact for the piecewise-linear interpolant)."""
        lab = np.asarray(lab, dtype=np.float64)
        # log_alpha_bar is strictly decreasing; np.interp needs increasing x, so flip.
        return np.interp(-lab, -self.log_alpha_bar, np.arange(self.T, dtype=np.float64))

    def tau_from_lambda(self, lam):
        """Inverse of lambda_: alpha_bar = sigmoid(2 lambda), so log(alpha_bar) = -softplus(-2 lambda)."""
        lam = np.asarray(lam, dtype=np.float64)
        return self.tau_from_log_alpha_bar(-np.logaddexp(0.0, -2.0 * lam))

    def tau_from_edm_sigma(self, s):
        return self.tau_from_lambda(-np.log(np.asarray(s, dtype=np.float64)))

    # --- discrete <-> continuous ------------------------------------------------------------------------------
    def to_continuous(self, tau):
        """Model timestep tau in [0, T-1] -> continuous time t in [1/T, 1] (score-SDE / DPM-Solver convention)."""
        return (np.asarray(tau, dtype=np.float64) + 1.0) / self.T

    def to_discrete(self, t):
        """Continuous time t in [1/T, 1] -> model timestep tau = T * t - 1."""
        return np.asarray(t, dtype=np.float64) * self.T - 1.0

    # --- timestep grids ---------------------------------------------------------------------------------------
    def timesteps(self, num_steps: int, spacing: str, t_start: float | None = None, t_end: float | None = None,
                  rho: float = 7.0) -> np.ndarray:
        """A decreasing grid of num_steps + 1 timesteps from t_start (default T-1) to t_end (default 0).

        uniform   : uniform in tau (DDIM "linear tau"; DPM-Solver "time_uniform").
        quadratic : uniform in sqrt(tau - t_end) (DDIM's CIFAR-10 choice, Song et al. 2021 App. D.2).
        logsnr    : uniform in lambda (DPM-Solver's choice, Lu et al. 2022 Sec. 3.3).
        karras    : EDM's sigma^(1/rho) spacing, rho=7 (Karras et al. 2022 Eq. 5), in EDM sigma = exp(-lambda).
        """
        if num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {num_steps}")
        a = self.t_max if t_start is None else float(t_start)
        b = self.t_min if t_end is None else float(t_end)
        u = np.linspace(0.0, 1.0, num_steps + 1)
        if spacing == "uniform":
            ts = a + (b - a) * u
        elif spacing == "quadratic":
            ts = b + (np.sqrt(a - b) * (1.0 - u)) ** 2
        elif spacing == "logsnr":
            ts = self.tau_from_lambda(self.lambda_(a) + (self.lambda_(b) - self.lambda_(a)) * u)
        elif spacing == "karras":
            s_max, s_min = self.edm_sigma(a) ** (1.0 / rho), self.edm_sigma(b) ** (1.0 / rho)
            ts = self.tau_from_edm_sigma((s_max + (s_min - s_max) * u) ** rho)
        else:
            raise ValueError(f"unknown spacing {spacing!r}; allowed: {', '.join(SPACINGS)}")
        ts[0], ts[-1] = a, b  # pin the ends exactly (inverse maps are exact only up to rounding)
        return ts

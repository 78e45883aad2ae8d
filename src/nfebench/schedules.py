"""Noise-schedule maths, in float64, in one place: the discrete VP, the continuous VP and the VE schedule.

Samplers work in the VP frame whatever the model was trained on:

    x_tau = alpha(tau) x_0 + sigma(tau) eps,   alpha^2 + sigma^2 = 1,   lambda(tau) = log(alpha / sigma)

where tau is the model's own time variable. A schedule gives alpha, sigma, lambda (half log-SNR) and its inverse,
EDM's sigma = sigma / alpha = exp(-lambda) and its inverse, the range [t_min, t_max] of tau, and the decreasing grids
of every spacing, so every sampler runs on every schedule.

    Discrete(betas)              tau = the training timestep in [0, T-1]; between integers log(alpha_bar) is
                                 interpolated linearly (DPM-Solver's discrete-time wrapper, Lu et al. 2022, App. D).
    VPLinear(beta_min, beta_max) score_sde's continuous VP SDE (Song et al. 2021, Eq. 11 / App. B): tau = t in
                                 [t_min, 1], log alpha(t) = -(beta_max - beta_min) t^2 / 4 - beta_min t / 2.
    VE(sigma_min, sigma_max)     the variance-exploding SDE (Song et al. 2021, Eq. 9; EDM, Karras et al. 2022):
                                 tau = the VE noise level s in [sigma_min, sigma_max]. The model sees
                                 x_ve = x_0 + s eps = x_vp / alpha, so alpha = 1 / sqrt(1 + s^2), sigma = s alpha
                                 and lambda = -log s; `input_scale` (1 / alpha) and `prior_std` (sigma_max) say so.

Each class defines log(alpha^2) of tau and its inverse; everything else follows from those two maps. Values are numpy
float64 scalars or arrays; samplers turn the few numbers they need per step into Python floats.
"""

from __future__ import annotations

import inspect

import numpy as np

SPACINGS = ("uniform", "quadratic", "logsnr", "karras")


class ScheduleError(ValueError):
    """A bad schedule kind or parameter: the message names the bad value and what is allowed."""


def linear_betas(num_train_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> np.ndarray:
    """The linear beta schedule of Ho et al. 2020 (Sec. 4): beta_1..beta_T evenly spaced."""
    return np.linspace(beta_start, beta_end, num_train_timesteps, dtype=np.float64)


class Schedule:
    """The interface every schedule gives. Subclasses define t_min, t_max, log_alpha_bar_at and
    tau_from_log_alpha_bar (log alpha_bar = log alpha^2), and `describe` (the leaderboard's schedule column)."""

    discrete = False  # True: the DDPM/DDIM chains round their grid to integer timesteps
    prior_std = 1.0  # the std of x_T in the model's own space (sigma_max for VE)
    t_min: float
    t_max: float

    def _check(self, tau):
        tau = np.asarray(tau, dtype=np.float64)
        tol = 1e-9 * max(1.0, self.t_max)
        if np.any(tau < self.t_min - tol) or np.any(tau > self.t_max + tol):
            raise ValueError(f"timestep {tau} outside [{self.t_min:g}, {self.t_max:g}]")
        return tau

    # --- forward maps: tau -> schedule quantities -------------------------------------------------------------
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

    def input_scale(self, tau):
        """What the network's input is in units of the VP state: x_model = input_scale(tau) * x_vp (1 for VP)."""
        return np.ones_like(np.asarray(tau, dtype=np.float64))

    # --- inverse maps -----------------------------------------------------------------------------------------
    def tau_from_lambda(self, lam):
        """Inverse of lambda_: alpha_bar = sigmoid(2 lambda), so log(alpha_bar) = -softplus(-2 lambda)."""
        lam = np.asarray(lam, dtype=np.float64)
        return self.tau_from_log_alpha_bar(-np.logaddexp(0.0, -2.0 * lam))

    def tau_from_edm_sigma(self, s):
        return self.tau_from_lambda(-np.log(np.asarray(s, dtype=np.float64)))

    # --- timestep grids ---------------------------------------------------------------------------------------
    def timesteps(self, num_steps: int, spacing: str, t_start: float | None = None, t_end: float | None = None,
                  rho: float = 7.0) -> np.ndarray:
        """A decreasing grid of num_steps + 1 timesteps from t_start (default t_max) to t_end (default t_min).

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


class Discrete(Schedule):
    """A discrete VP schedule (the training betas) made continuous in the model's timestep tau in [0, T-1]."""

    discrete = True

    def __init__(self, betas):
        betas = np.asarray(betas, dtype=np.float64).reshape(-1)
        if betas.size < 2 or not np.all((betas > 0) & (betas < 1)):
            raise ScheduleError(f"betas must be a 1-D schedule of at least 2 values in (0, 1); got {betas.size} values")
        self.betas = betas
        self.T = betas.size
        self.alphas_cumprod = np.cumprod(1.0 - betas)
        self.log_alpha_bar = np.log(self.alphas_cumprod)  # decreasing in n
        self.t_min = 0.0
        self.t_max = float(self.T - 1)

    def describe(self) -> str:
        return f"discrete(T={self.T})"

    def log_alpha_bar_at(self, tau):
        """log(alpha_bar) at continuous tau: piecewise-linear interpolation between integer timesteps."""
        return np.interp(self._check(tau), np.arange(self.T, dtype=np.float64), self.log_alpha_bar)

    def tau_from_log_alpha_bar(self, lab):
        """Inverse of log_alpha_bar_at (exact for the piecewise-linear interpolant)."""
        lab = np.asarray(lab, dtype=np.float64)
        # log_alpha_bar is strictly decreasing; np.interp needs increasing x, so flip.
        return np.interp(-lab, -self.log_alpha_bar, np.arange(self.T, dtype=np.float64))

    # --- discrete <-> continuous ------------------------------------------------------------------------------
    def to_continuous(self, tau):
        """Model timestep tau in [0, T-1] -> continuous time t in [1/T, 1] (score-SDE / DPM-Solver convention)."""
        return (np.asarray(tau, dtype=np.float64) + 1.0) / self.T

    def to_discrete(self, t):
        """Continuous time t in [1/T, 1] -> model timestep tau = T * t - 1."""
        return np.asarray(t, dtype=np.float64) * self.T - 1.0


class VPLinear(Schedule):
    """score_sde's continuous VP SDE with linear beta(t) = beta_min + (beta_max - beta_min) t (Song et al. 2021,
    Eq. 11): log alpha(t) = -(beta_max - beta_min) t^2 / 4 - beta_min t / 2, tau = t in [t_min, 1]."""

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, t_min: float = 1e-3):
        beta_min, beta_max, t_min = float(beta_min), float(beta_max), float(t_min)
        if not 0 < beta_min < beta_max:
            raise ScheduleError(f"vp_linear needs 0 < beta_min < beta_max; got beta_min={beta_min:g}, "
                                f"beta_max={beta_max:g}")
        if not 0 < t_min < 1:
            raise ScheduleError(f"vp_linear needs t_min in (0, 1); got {t_min:g}")
        self.beta_min, self.beta_max, self.t_min, self.t_max = beta_min, beta_max, t_min, 1.0

    def describe(self) -> str:
        return f"vp_linear(beta_min={self.beta_min:g},beta_max={self.beta_max:g},t_min={self.t_min:g})"

    def log_alpha_bar_at(self, tau):
        t = self._check(tau)
        return -0.5 * (self.beta_max - self.beta_min) * t**2 - self.beta_min * t

    def tau_from_log_alpha_bar(self, lab):
        """The positive root of (d/2) t^2 + beta_min t + lab = 0 (d = beta_max - beta_min), written as
        -2 lab / (beta_min + sqrt(beta_min^2 - 2 d lab)) to avoid cancellation near t = 0."""
        lab = np.asarray(lab, dtype=np.float64)
        d = self.beta_max - self.beta_min
        return -2.0 * lab / (self.beta_min + np.sqrt(self.beta_min**2 - 2.0 * d * lab))


class VE(Schedule):
    """The variance-exploding schedule: tau = s, the noise level of x_ve = x_0 + s eps, in [sigma_min, sigma_max].

    In the VP frame: alpha = 1 / sqrt(1 + s^2), sigma = s alpha, lambda = -log s, EDM sigma = s. The network sees
    x_ve = x_vp / alpha (input_scale), and x_T is drawn in its space as sigma_max * z (prior_std), as EDM does.
    Covers EDM (0.002..80) and NCSN++ (score_sde / ScoreSdeVeScheduler: 0.01..50, 348 or 1348).
    """

    def __init__(self, sigma_min: float = 0.002, sigma_max: float = 80.0):
        sigma_min, sigma_max = float(sigma_min), float(sigma_max)
        if not 0 < sigma_min < sigma_max:
            raise ScheduleError(f"ve needs 0 < sigma_min < sigma_max; got sigma_min={sigma_min:g}, "
                                f"sigma_max={sigma_max:g}")
        self.sigma_min, self.sigma_max = sigma_min, sigma_max
        self.t_min, self.t_max, self.prior_std = sigma_min, sigma_max, sigma_max

    def describe(self) -> str:
        return f"ve(sigma_min={self.sigma_min:g},sigma_max={self.sigma_max:g})"

    def log_alpha_bar_at(self, tau):
        return -np.log1p(self._check(tau) ** 2)

    def tau_from_log_alpha_bar(self, lab):
        return np.sqrt(np.expm1(-np.asarray(lab, dtype=np.float64)))

    # exact closed forms (the generic ones would lose digits through alpha_bar)
    def lambda_(self, tau):
        return -np.log(self._check(tau))

    def tau_from_lambda(self, lam):
        return np.exp(-np.asarray(lam, dtype=np.float64))

    def input_scale(self, tau):
        return np.sqrt(1.0 + self._check(tau) ** 2)


class Truncated(Schedule):
    """A schedule whose chain starts at t_start < t_max (truncated diffusion: ES-DDPM, Lyu et al. 2022; TDPM, Zheng
    et al. 2023): every quantity is the base schedule's, only t_max is t_start, so every sampler's grid starts
    there. `betas` is hidden (None): samplers defined on the full training chain refuse it."""

    betas = None

    def __init__(self, base: Schedule, t_start: float):
        t_start = float(t_start)
        if not base.t_min < t_start <= base.t_max:
            raise ScheduleError(f"t_start={t_start:g} is outside the schedule's ({base.t_min:g}, {base.t_max:g}]")
        if base.discrete and t_start != round(t_start):
            raise ScheduleError(f"t_start={t_start:g}: a discrete schedule starts at an integer timestep")
        self.base, self.t_start = base, t_start
        self.discrete, self.prior_std = base.discrete, base.prior_std
        self.t_min, self.t_max = base.t_min, t_start

    def describe(self) -> str:
        return self.base.describe()  # the model's schedule; the row's t_start column says where the chain began

    def log_alpha_bar_at(self, tau):
        return self.base.log_alpha_bar_at(tau)

    def tau_from_log_alpha_bar(self, lab):
        return self.base.tau_from_log_alpha_bar(lab)

    # every map is the base schedule's own (a subclass may override any of them)
    def alpha_bar(self, tau):
        return self.base.alpha_bar(tau)

    def alpha(self, tau):
        return self.base.alpha(tau)

    def sigma(self, tau):
        return self.base.sigma(tau)

    def lambda_(self, tau):
        return self.base.lambda_(tau)

    def edm_sigma(self, tau):
        return self.base.edm_sigma(tau)

    def tau_from_lambda(self, lam):
        return self.base.tau_from_lambda(lam)

    def tau_from_edm_sigma(self, s):
        return self.base.tau_from_edm_sigma(s)

    def input_scale(self, tau):
        return self.base.input_scale(tau)


KINDS = {"discrete": Discrete, "vp_linear": VPLinear, "ve": VE}


def as_schedule(betas_or_schedule) -> Schedule:
    """A Schedule as given, or a plain 1-D betas array as the Discrete schedule (the API's historical meaning)."""
    return betas_or_schedule if isinstance(betas_or_schedule, Schedule) else Discrete(betas_or_schedule)


def from_config(cfg) -> Schedule:
    """A schedule from a config value: a kind name (its default parameters) or a mapping {kind: ..., params}.

    discrete takes betas, or num_train_timesteps / beta_start / beta_end (Ho et al.'s linear schedule);
    vp_linear takes beta_min, beta_max, t_min; ve takes sigma_min, sigma_max.
    """
    params = {"kind": cfg} if isinstance(cfg, str) else dict(cfg or {})
    kind = params.pop("kind", None)
    if kind not in KINDS:
        raise ScheduleError(f"unknown schedule kind {kind!r}; allowed: {', '.join(KINDS)}")
    if kind == "discrete" and "betas" not in params:
        allowed = ("num_train_timesteps", "beta_start", "beta_end")
        bad = sorted(set(params) - set(allowed))
        if bad:
            raise ScheduleError(f"unknown parameter {bad[0]!r} for schedule discrete; allowed: betas, "
                                f"{', '.join(allowed)}")
        return Discrete(linear_betas(**params))
    allowed = list(inspect.signature(KINDS[kind]).parameters)
    bad = sorted(set(params) - set(allowed))
    if bad:
        raise ScheduleError(f"unknown parameter {bad[0]!r} for schedule {kind}; allowed: {', '.join(allowed)}")
    return KINDS[kind](**params)

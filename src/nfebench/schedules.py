"""Noise-schedule maths, in float64, in one place: the discrete VP, the continuous VP, the VE and the flow schedule.

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
    Flow(shift, time_scale)      the flow-matching (rectified-flow) interpolant x_f = (1 - s) x_0 + s eps of SD3, Flux,
                                 SiT (Esser et al. 2024; Lipman et al. 2023; Liu et al. 2023): tau = time_scale * s.
                                 The model sees x_f = x_vp * sqrt((1 - s)^2 + s^2) (input_scale), so
                                 model_alpha = 1 - s, model_sigma = s, lambda = log((1 - s) / s); x_T is N(0, I).
                                 `shift` (SD3's time shift) bends every spacing's grid (class docstring).

alpha() and sigma() are always the VP-frame coefficients the samplers use; model_alpha() and model_sigma() are the
coefficients of the model's own space (x_model = model_alpha x_0 + model_sigma eps): alpha, sigma on VP, 1, s on VE,
1 - s, s on Flow.

Each class defines log(alpha^2) of tau and its inverse; everything else follows from those two maps. Values are numpy
float64 scalars or arrays; samplers turn the few numbers they need per step into Python floats.
"""

from __future__ import annotations

import inspect

import numpy as np

TUNE_SPACINGS = ("uniform", "quadratic", "logsnr", "karras")  # the built-in families nfebench.tune compares
# the step schedules of the UIs and their papers (issue 28), by the names users know
UI_SPACINGS = ("exponential", "kl_optimal", "sgm_uniform", "simple", "beta", "ays")
SPACINGS = TUNE_SPACINGS + UI_SPACINGS  # every spacing a sampler accepts (plus "tuned" / "gits", cached grids)
DEFAULT_SPACING = "default"  # a sampler's default grid on the schedule it runs on (Schedule.default_spacings)
# Spacings that ComfyUI defines as steps + 1 levels whose last is replaced by sigma = 0: a sampler that ends at clean
# data evaluates at the first N of the N + 1 points (for the others it evaluates at N points ending at t_min).
LAST_REPLACED_BY_ZERO = ("sgm_uniform", "simple", "beta", "ays")

# Align Your Steps (Sabour, Fidler, Kreis 2024): the published 10-step noise levels (EDM sigma), NVIDIA's AYS page;
# the last level is the model's sigma_min, which ComfyUI and diffusers' AysSchedules replace by 0.
AYS_SIGMAS = {
    "sd15": (14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963, 0.652, 0.399, 0.152, 0.029),
    "sdxl": (14.615, 6.315, 3.771, 2.181, 1.342, 0.862, 0.555, 0.380, 0.234, 0.113, 0.029),
    "svd": (700.00, 54.5, 15.886, 7.977, 4.248, 1.789, 0.981, 0.403, 0.173, 0.034, 0.002),
}
AYS_TOP_TOLERANCE = 1e-3  # the published top level may sit this far (relative) above the schedule's own
BETA_SPACING = (0.6, 0.6)  # Lee et al. 2024's alpha = beta = 0.6


class Spacing(str):
    """A spacing name with its parameters (spacing=ays: `ays_model`); compares and prints as its name."""

    def __new__(cls, name: str, **params):
        s = super().__new__(cls, name)
        s.params = params
        return s


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
    clean_tau = None  # the model time of clean data (sigma = 0) where it is one, e.g. s = 0 on Flow: an explicit
    # grid may end there (read as clean data, like -1)
    ode_frame = "edm"  # the state and time euler / heun integrate in by default (nfebench.samplers.edm)
    # spacing=default (issue 26): what a sampler's own default spacing (its paper's, chosen on a VP model) becomes on
    # this schedule. uniform and quadratic are grids in the model's time tau; on VP that is the paper's grid, on other
    # schedules it can leave the ODE unresolved (VE: uniform in sigma), so the schedule names its replacement.
    # Spacings defined in lambda or EDM sigma (logsnr, karras, ...) mean the same on every schedule and stay.
    default_spacings: dict = {}
    t_min: float
    t_max: float

    def _check(self, tau):
        tau = np.asarray(tau, dtype=np.float64)
        tol = 1e-6 * max(1.0, self.t_max)  # float32 timesteps (a float32 model) round by up to 6e-8 relative
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

    def model_alpha(self, tau):
        """The data coefficient in the model's own space: x_model = model_alpha x_0 + model_sigma eps."""
        return self.input_scale(tau) * self.alpha(tau)

    def model_sigma(self, tau):
        """The noise coefficient in the model's own space (VE: s; Flow: s)."""
        return self.input_scale(tau) * self.sigma(tau)

    def model_rates(self, tau):
        """(d model_alpha / d tau, d model_sigma / d tau): the velocity of the model's own state is
        model_rates[0] x_0 + model_rates[1] eps. Defined where the model's coefficients are linear in tau (Flow);
        None elsewhere."""
        return None

    def network_time(self, tau):
        """The time value the network is called with at the house's model time tau (tau itself, but for Flow's
        data_at_1 convention). Works on numpy arrays and torch tensors alike."""
        return tau

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
        exponential: uniform in log sigma (k-diffusion's get_sigmas_exponential): the same grid as logsnr.
        kl_optimal: uniform in arctan(sigma) (ComfyUI's kl_optimal; the KL-optimal schedule of Sabour et al. 2024).
        sgm_uniform: uniform in tau (ComfyUI's sgm_uniform: N + 1 levels, the last replaced by 0 where a sampler
                    ends at clean data; here the same points as uniform).
        simple    : ComfyUI's simple: on a discrete schedule the training timesteps T-1 - floor(i T / N), i < N, then
                    t_min; on a continuous schedule uniform in tau.
        beta      : Lee et al. 2024 (Beta Sampling), tau = t_min + (t_max - t_min) I^-1(1 - i/N; 0.6, 0.6), the beta
                    quantiles applied in timesteps as ComfyUI does (diffusers' use_beta_sigmas applies them in sigma),
                    not rounded to integers (ComfyUI rounds and drops repeats).
        ays       : Align Your Steps (Sabour et al. 2024): the published 10-step levels of spacing.params["ays_model"]
                    (sd15 | sdxl | svd; default sd15), log-linearly interpolated to N + 1 levels for other step counts
                    (NVIDIA's loglinear_interp); the ends are the schedule's (the published top may sit up to
                    AYS_TOP_TOLERANCE above it), a list that does not fit the schedule is an error.
        The ends are pinned to t_start and t_end; exponential, kl_optimal and ays are defined in EDM sigma, so they use
        only lambda and its inverse and work on every schedule kind.
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
        elif spacing == "exponential":
            ts = self.tau_from_edm_sigma(np.exp(np.log(self.edm_sigma(a)) * (1.0 - u) + np.log(self.edm_sigma(b)) * u))
        elif spacing == "kl_optimal":
            g_max, g_min = np.arctan(self.edm_sigma(a)), np.arctan(self.edm_sigma(b))
            ts = self.tau_from_edm_sigma(np.tan(g_max * (1.0 - u) + g_min * u))
        elif spacing == "sgm_uniform":
            ts = a + (b - a) * u
        elif spacing == "simple":
            if self.discrete and (a, b) == (self.t_max, self.t_min):
                n_train = int(self.t_max) + 1
                ts = np.append(self.t_max - np.floor(np.arange(num_steps) * n_train / num_steps), b)
            else:
                ts = a + (b - a) * u
        elif spacing == "beta":
            from scipy.stats import beta as beta_dist

            ts = b + (a - b) * beta_dist.ppf(1.0 - u, *BETA_SPACING)
        elif spacing == "ays":
            ts = self.tau_from_edm_sigma(self._ays_levels(num_steps, getattr(spacing, "params", {}).get("ays_model"),
                                                          a, b))
        else:
            raise ValueError(f"unknown spacing {spacing!r}; allowed: {', '.join(SPACINGS)}")
        ts[0], ts[-1] = a, b  # pin the ends exactly (inverse maps are exact only up to rounding)
        if np.any(np.diff(ts) >= 0):
            raise ScheduleError(f"spacing {spacing!r} gives repeated timesteps at {num_steps} steps; use fewer steps "
                                f"or another spacing")
        return ts

    def _ays_levels(self, num_steps: int, ays_model, a: float, b: float) -> np.ndarray:
        """N + 1 AYS levels (EDM sigma) for this schedule, the first clamped to sigma(a) within the tolerance."""
        name = "sd15" if ays_model is None else ays_model
        if name not in AYS_SIGMAS:
            raise ScheduleError(f"unknown ays_model {name!r}; allowed: {', '.join(AYS_SIGMAS)}")
        levels = np.array(AYS_SIGMAS[name], dtype=np.float64)
        if num_steps + 1 != levels.size:  # NVIDIA's loglinear_interp
            xs, new = np.linspace(0, 1, levels.size), np.linspace(0, 1, num_steps + 1)
            levels = np.exp(np.interp(new, xs, np.log(levels[::-1])))[::-1]
        top, bottom = float(self.edm_sigma(a)), float(self.edm_sigma(b))
        if not (abs(levels[0] / top - 1.0) <= AYS_TOP_TOLERANCE and levels[-2] > bottom):
            raise ScheduleError(f"the AYS list {name!r} (sigma {levels[0]:g} .. {levels[-1]:g}) is not for this "
                                f"schedule (sigma {top:.5g} .. {bottom:.4g}); known lists: {', '.join(AYS_SIGMAS)}, "
                                f"or pass the grid as sigmas=[...]")
        levels[0], levels[-1] = top, bottom
        return levels


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

    Default grid: a sampler whose paper grid is uniform or quadratic in the timestep runs on EDM's Karras grid here
    (uniform in sigma leaves the low-noise end unresolved: ddim converges at order 0.6; docs/convergence.md).
    """

    default_spacings = {"uniform": "karras", "quadratic": "karras"}

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


FLOW_CONVENTIONS = ("noise_at_1", "data_at_1")
FLOW_S_RANGE = (1e-3, 1.0 - 1e-3)  # the unshifted s range every Flow samples in (Flow docstring)


def flow_time_shift(s, shift: float):
    """SD3's time shift (Esser et al. 2024, Sec. 5.3.2): s -> k s / (1 + (k - 1) s); lambda moves by -log k."""
    s = np.asarray(s, dtype=np.float64)
    return shift * s / (1.0 + (shift - 1.0) * s)


def flow_time_unshift(s, shift: float):
    """The inverse of flow_time_shift: s -> s / (k - (k - 1) s)."""
    s = np.asarray(s, dtype=np.float64)
    return s / (shift - (shift - 1.0) * s)


def dynamic_shift(image_seq_len, base_shift: float = 0.5, max_shift: float = 1.15, base_image_seq_len: int = 256,
                  max_image_seq_len: int = 4096, time_shift_type: str = "exponential") -> float:
    """Flux's resolution-dependent shift as diffusers computes it (FluxPipeline's calculate_shift, then the scheduler's
    time_shift): mu is linear in the image's token count, from base_shift at base_image_seq_len to max_shift at
    max_image_seq_len; the shift is e^mu ("exponential", Flux) or mu itself ("linear")."""
    if image_seq_len is None:
        raise ScheduleError("a dynamic-shift flow schedule (use_dynamic_shifting) needs image_seq_len, the number of "
                            "image tokens (latent (H / patch) * (W / patch)); set model.image_seq_len")
    if isinstance(image_seq_len, bool) or not isinstance(image_seq_len, (int, float)) or not image_seq_len > 0:
        raise ScheduleError(f"image_seq_len must be a positive number of image tokens, got {image_seq_len!r}")
    if time_shift_type not in ("exponential", "linear"):
        raise ScheduleError(f"unknown time_shift_type {time_shift_type!r}; allowed: exponential, linear")
    m = (max_shift - base_shift) / (max_image_seq_len - base_image_seq_len)
    mu = image_seq_len * m + (base_shift - m * base_image_seq_len)
    return float(np.exp(mu)) if time_shift_type == "exponential" else float(mu)


class Flow(Schedule):
    """The flow-matching interpolant x_f = (1 - s) x_0 + s eps, s in (0, 1], at model time tau = time_scale * s.

    In the VP frame (x_vp = x_f / c, c = sqrt((1 - s)^2 + s^2) = input_scale): alpha = (1 - s) / c, sigma = s / c,
    lambda = log((1 - s) / s), EDM sigma = s / (1 - s); model_alpha = 1 - s and model_sigma = s. x_T is N(0, I) in
    the model's space (prior_std 1). time_scale: 1000 for diffusers' flow schedulers and SD3 (timestep = 1000 s), 1
    for networks that take s itself (Flux's transformer, SiT).

    The range. lambda(s = 1) = -inf: every sampler that divides by alpha would see it, so nfebench samples in
    s in [shift(0.001), shift(0.999)], tau in [t_min, t_max] (0.999 is where diffusers' DPM-Solver++ and UniPC start
    in flow mode; 0.001 is the lowest sigma of FlowMatchEulerDiscreteScheduler's 1000 training sigmas), and starts
    from x_T ~ N(0, I) at s_max (the marginal there is 0.001 x_0 + 0.999 eps, as close to N(0, I) as VP's x_T).

    shift k (SD3's time shift, flow_time_shift): s -> k s / (1 + (k - 1) s), lambda -> lambda - log k. Every spacing
    is computed on the unshifted s in [0.001, 0.999] and then shifted, as diffusers shifts its grids: `uniform` is the
    shifted uniform grid in s (FlowMatchEulerDiscreteScheduler's), `logsnr` and `karras` are those of the shifted
    range (a constant offset of lambda changes neither). The ODE itself does not depend on k.

    convention: `noise_at_1` (diffusers, SD3, Flux: the network is called at tau = time_scale * s and flow_prediction
    is v = eps - x_0) or `data_at_1` (SiT, Liu et al.'s rectified flow: t = 1 - s, x_t = t x_0 + (1 - t) eps, the
    network is called at time_scale * t and its velocity is x_0 - eps). Only the network's time argument and the sign
    of its velocity differ (network_time, velocity_sign); the schedule, grids and samplers are the same.

    Default grid: uniform stays the shifted uniform grid in s (FlowMatchEuler's); a quadratic paper grid (DEIS) becomes
    logsnr, where third-order DEIS converges at its order (2.1 on quadratic in s; docs/convergence.md).
    """

    default_spacings = {"quadratic": "logsnr"}

    def __init__(self, shift: float = 1.0, time_scale: float = 1000.0, convention: str = "noise_at_1"):
        for name, v in (("shift", shift), ("time_scale", time_scale)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v) or v <= 0:
                raise ScheduleError(f"flow {name} must be a finite number > 0, got {v!r}")
        if convention not in FLOW_CONVENTIONS:
            raise ScheduleError(f"unknown flow convention {convention!r}; allowed: {', '.join(FLOW_CONVENTIONS)}")
        self.shift, self.time_scale, self.convention = float(shift), float(time_scale), convention
        self.velocity_sign = 1.0 if convention == "noise_at_1" else -1.0
        lo, hi = flow_time_shift(np.array(FLOW_S_RANGE), self.shift)
        self.t_min, self.t_max, self.prior_std = float(lo * self.time_scale), float(hi * self.time_scale), 1.0

    clean_tau = 0.0  # s = 0: x_f = x_0
    ode_frame = "model"  # euler / heun step x_f in s, as FlowMatchEuler / FlowMatchHeun and SD3 do

    def model_rates(self, tau):
        """d(1 - s)/d tau = -1 / time_scale, d s / d tau = 1 / time_scale: the velocity is (eps - x_0) / time_scale."""
        return -1.0 / self.time_scale, 1.0 / self.time_scale

    def describe(self) -> str:
        tail = "" if self.convention == "noise_at_1" else f",convention={self.convention}"
        return f"flow(shift={self.shift:g},time_scale={self.time_scale:g}{tail})"

    def s(self, tau):
        """The interpolation time s = tau / time_scale (the noise coefficient of x_f)."""
        return self._check(tau) / self.time_scale

    def network_time(self, tau):
        return tau if self.convention == "noise_at_1" else self.time_scale - tau

    def log_alpha_bar_at(self, tau):
        s = self.s(tau)
        return 2.0 * np.log1p(-s) - np.log((1.0 - s) ** 2 + s**2)

    def tau_from_log_alpha_bar(self, lab):
        lab = np.asarray(lab, dtype=np.float64)
        return self.tau_from_lambda(0.5 * (lab - np.log(-np.expm1(lab))))

    # exact closed forms
    def lambda_(self, tau):
        s = self.s(tau)
        return np.log1p(-s) - np.log(s)

    def tau_from_lambda(self, lam):
        """s = 1 / (1 + e^lambda)."""
        return self.time_scale / (1.0 + np.exp(np.asarray(lam, dtype=np.float64)))

    def alpha(self, tau):
        s = self.s(tau)
        return (1.0 - s) / np.hypot(1.0 - s, s)

    def sigma(self, tau):
        s = self.s(tau)
        return s / np.hypot(1.0 - s, s)

    def input_scale(self, tau):
        s = self.s(tau)
        return np.hypot(1.0 - s, s)

    def model_alpha(self, tau):
        return 1.0 - self.s(tau)

    def model_sigma(self, tau):
        return self.s(tau)

    def timesteps(self, num_steps: int, spacing: str, t_start: float | None = None, t_end: float | None = None,
                  rho: float = 7.0) -> np.ndarray:
        """The spacing's grid on the unshifted s, then shifted (class docstring)."""
        if self.shift == 1.0:
            return super().timesteps(num_steps, spacing, t_start, t_end, rho)
        a = self.t_max if t_start is None else float(t_start)
        b = self.t_min if t_end is None else float(t_end)
        base = Flow(1.0, self.time_scale)
        ua, ub = (float(flow_time_unshift(self.s(v), self.shift)) * self.time_scale for v in (a, b))
        ts = flow_time_shift(base.timesteps(num_steps, spacing, ua, ub, rho) / self.time_scale,
                             self.shift) * self.time_scale
        ts[0], ts[-1] = a, b
        return ts


KINDS = {"discrete": Discrete, "vp_linear": VPLinear, "ve": VE, "flow": Flow}
DYNAMIC_SHIFT_KEYS = ("base_shift", "max_shift", "base_image_seq_len", "max_image_seq_len", "time_shift_type")


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

    def model_alpha(self, tau):
        return self.base.model_alpha(tau)

    def model_sigma(self, tau):
        return self.base.model_sigma(tau)

    def model_rates(self, tau):
        return self.base.model_rates(tau)

    def network_time(self, tau):
        return self.base.network_time(tau)

    @property
    def clean_tau(self):
        return self.base.clean_tau

    @property
    def default_spacings(self):
        return self.base.default_spacings

    def timesteps(self, num_steps: int, spacing: str, t_start: float | None = None, t_end: float | None = None,
                  rho: float = 7.0) -> np.ndarray:
        """The base schedule's grid (a Flow's shifted one included), from t_start by default."""
        return self.base.timesteps(num_steps, spacing, self.t_max if t_start is None else t_start, t_end, rho)



def default_spacing(paper: str, schedule) -> str:
    """The spacing `spacing=default` means for a sampler whose own default is `paper`, on `schedule`: a Schedule, a
    kind name of KINDS, or None (unknown: the paper's)."""
    if isinstance(schedule, str):
        schedule = KINDS.get(schedule)
    return (getattr(schedule, "default_spacings", None) or {}).get(paper, paper)


def as_schedule(betas_or_schedule) -> Schedule:
    """A Schedule as given, or a plain 1-D betas array as the Discrete schedule (the API's historical meaning)."""
    return betas_or_schedule if isinstance(betas_or_schedule, Schedule) else Discrete(betas_or_schedule)


def from_config(cfg) -> Schedule:
    """A schedule from a config value: a kind name (its default parameters) or a mapping {kind: ..., params}.

    discrete takes betas, or num_train_timesteps / beta_start / beta_end (Ho et al.'s linear schedule);
    vp_linear takes beta_min, beta_max, t_min; ve takes sigma_min, sigma_max; flow takes shift, time_scale, convention,
    or use_dynamic_shifting: true with image_seq_len (and diffusers' base_shift, max_shift, base_image_seq_len,
    max_image_seq_len, time_shift_type) for Flux's resolution-dependent shift (dynamic_shift).
    """
    params = {"kind": cfg} if isinstance(cfg, str) else dict(cfg or {})
    kind = params.pop("kind", None)
    if kind not in KINDS:
        raise ScheduleError(f"unknown schedule kind {kind!r}; allowed: {', '.join(KINDS)}")
    if kind == "flow" and params.pop("use_dynamic_shifting", False):
        allowed = ("image_seq_len", "time_scale", "convention") + DYNAMIC_SHIFT_KEYS
        bad = sorted(set(params) - set(allowed))
        if bad:
            raise ScheduleError(f"unknown parameter {bad[0]!r} for a dynamic-shift flow schedule; allowed: "
                                f"{', '.join(allowed)}")
        shift = dynamic_shift(params.pop("image_seq_len", None), **{k: params.pop(k) for k in DYNAMIC_SHIFT_KEYS
                                                                      if k in params})
        return Flow(shift=shift, **params)
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

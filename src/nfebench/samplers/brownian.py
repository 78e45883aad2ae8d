"""Noise for the SDE solvers: per-step Gaussian draws, or increments of one Brownian motion per sample.

An SDE solver asks its noise for a standard normal per step s -> t (k-diffusion's noise_sampler(sigma, sigma_next)).
With `noise_sampler=gaussian` that is a fresh draw from the sample's own generator. With `noise_sampler=brownian` it
is (W(t) - W(s)) / sqrt|t - s| for one Brownian motion W per sample, in EDM sigma on [sigma_min, sigma_max] as
k-diffusion's BrownianTreeNoiseSampler: the same W whatever the grid, so a refined grid sees the same path and
strong (pathwise) convergence can be measured.

W is a Brownian tree (Levy's construction; Gaines & Lyons 1997, as torchsde.BrownianTree): W(t0) = 0,
W(t1) = sqrt(t1 - t0) N_root, and the midpoint of an interval [a, b] is the Brownian bridge value
(W(a) + W(b)) / 2 + sqrt(b - a) / 2 N_node. A query bisects down to the interval of width (t1 - t0) 2^-DEPTH that
holds t and interpolates linearly inside it. Every N_node is a pure function of (the sample's key, the node, the
element), computed by a counter-based hash (splitmix64) for the whole batch at once: no generator per sample, and
a sample's path does not depend on the batch it runs in.
"""

from __future__ import annotations

import math

import numpy as np
import torch

DEPTH = 24  # bisection levels: resolution (sigma_max - sigma_min) * 6e-8
_M64 = (1 << 64) - 1


def _i64(v: int) -> int:
    """A 64-bit pattern as a signed int64 value (torch has no uint64 arithmetic)."""
    v &= _M64
    return v - (1 << 64) if v >= 1 << 63 else v


_GOLD, _C1, _C2 = _i64(0x9E3779B97F4A7C15), _i64(0xBF58476D1CE4E5B9), _i64(0x94D049BB133111EB)


def _lsr(z: torch.Tensor, k: int) -> torch.Tensor:
    """Logical right shift of int64 patterns."""
    return (z >> k) & ((1 << (64 - k)) - 1)


def _mix(z: torch.Tensor) -> torch.Tensor:
    """splitmix64's finalizer (Steele, Lea, Flood 2014) on int64 tensors; multiplication wraps modulo 2^64."""
    z = (z ^ _lsr(z, 30)) * _C1
    z = (z ^ _lsr(z, 27)) * _C2
    return z ^ _lsr(z, 31)


def element_codes(numel: int, device="cpu") -> torch.Tensor:
    """The hashed element indices 0..2 ceil(numel/2) - 1 (the same for every node and sample: computed once)."""
    m = (numel + 1) // 2
    return _mix(torch.arange(2 * m, dtype=torch.int64, device=device) * _GOLD)


def hashed_normal(keys: torch.Tensor, node: int, numel: int, codes: torch.Tensor | None = None) -> torch.Tensor:
    """[B, numel] float64 standard normals, a pure function of (keys[b], node, element index): 53-bit uniforms from
    splitmix64, both outputs of each Box-Muller pair used."""
    codes = element_codes(numel, keys.device) if codes is None else codes
    m = codes.numel() // 2
    base = _mix(keys + _i64(node * 0x632BE59BD9B4E019 + 1))  # [B]
    bits = _lsr(_mix(base[:, None] ^ codes[None]), 11).double()  # 53 random bits
    u = (bits + 0.5) * 2.0**-53  # in (0, 1)
    r, a = torch.sqrt(-2.0 * torch.log(u[:, :m])), (2.0 * math.pi) * u[:, m:]
    return torch.cat([r * torch.cos(a), r * torch.sin(a)], dim=1)[:, :numel]


def seed_keys(seeds) -> torch.Tensor:
    """One 64-bit key per sample from its seed (mixed, so the tree is independent of the seed's Gaussian stream)."""
    return _mix(torch.tensor([_i64(int(s) ^ 0x5EED_B40C) for s in seeds], dtype=torch.int64))


class BrownianTree:
    """One Brownian motion per sample on [t0, t1] (EDM sigma), queried as W(t) for the whole batch."""

    def __init__(self, keys: torch.Tensor, shape, t0: float, t1: float, dtype=torch.float64, device="cpu"):
        if not t0 < t1:
            raise ValueError(f"Brownian tree needs t0 < t1, got {t0}, {t1}")
        self.keys, self.shape, self.t0, self.t1 = keys, tuple(shape), float(t0), float(t1)
        self.numel = int(np.prod(self.shape)) if self.shape else 1
        self.dtype, self.device = dtype, device
        self._codes = element_codes(self.numel, keys.device)
        zero = torch.zeros(len(keys), self.numel, dtype=torch.float64)
        self._end = math.sqrt(self.t1 - self.t0) * hashed_normal(keys, 0, self.numel, self._codes)
        self._cache = {self.t0: zero, self.t1: self._end}

    def w(self, t: float) -> torch.Tensor:
        """W(t) [B, numel] in float64 (t clamped to [t0, t1])."""
        t = min(max(float(t), self.t0), self.t1)
        if t in self._cache:
            return self._cache[t]
        a, b, wa, wb, node = self.t0, self.t1, self._cache[self.t0], self._end, 1
        for _ in range(DEPTH):
            m = 0.5 * (a + b)
            wm = 0.5 * (wa + wb) + 0.5 * math.sqrt(b - a) * hashed_normal(self.keys, node, self.numel, self._codes)
            if t == m:
                a, wa = m, wm
                break
            if t < m:
                b, wb, node = m, wm, 2 * node
            else:
                a, wa, node = m, wm, 2 * node + 1
        out = wa if t == a else wa + (t - a) / (b - a) * (wb - wa)
        self._cache[t] = out
        return out

    def __call__(self, s: float, t: float) -> torch.Tensor:
        """The normalized increment (W(t) - W(s)) / sqrt|t - s|, shaped [B, *shape] (k-diffusion's convention)."""
        inc = (self.w(t) - self.w(s)) / math.sqrt(abs(float(t) - float(s)))
        return inc.reshape(len(self.keys), *self.shape).to(self.dtype).to(self.device)


NOISE_SAMPLERS = ("gaussian", "brownian")


def check_noise_sampler(kind: str) -> str:
    from .registry import SamplerError

    if kind not in NOISE_SAMPLERS:
        raise SamplerError(f"unknown noise_sampler {kind!r}; allowed: {', '.join(NOISE_SAMPLERS)}")
    return kind


def path_keys(noise, n: int) -> torch.Tensor:
    """One key per sample: from its seed (PerSampleNoise), else seeds drawn once from the noise's generator."""
    seeds = getattr(noise, "seeds", None)
    if seeds is None:
        seeds = torch.randint(0, 2**62, (n,), generator=getattr(noise, "generator", None)).tolist()
    if len(seeds) != n:
        raise ValueError(f"batch of {n} but {len(seeds)} per-sample seeds")
    return seed_keys(seeds)


class StepNoise:
    """Per-step standard normals for an SDE solver (its option noise_sampler): fresh Gaussian draws from `noise`
    (gaussian), or the increments of one Brownian path per sample (brownian), keyed by the sample's seed. Called
    as noise(sigma, sigma_next) -> a tensor shaped like x."""

    def __init__(self, noise, x: torch.Tensor, sigma_min: float, sigma_max: float, kind: str = "gaussian"):
        self.noise, self.x, self.tree = noise, x, None
        if check_noise_sampler(kind) == "brownian":
            self.tree = BrownianTree(path_keys(noise, x.shape[0]), x.shape[1:], sigma_min, sigma_max, x.dtype,
                                     x.device)

    def __call__(self, sigma: float, sigma_next: float) -> torch.Tensor:
        if self.tree is None:
            return self.noise.randn_like(self.x)
        return self.tree(sigma, sigma_next)

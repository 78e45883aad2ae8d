"""Shared by the speed benchmarks: robust timing (the machine description is nfebench.machine)."""

from __future__ import annotations

import statistics
import time

import torch


def sync(device) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device="cpu") -> float:
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def median(xs):
    return statistics.median(xs)

"""Shared by the bench scripts: machine description and robust timing."""

from __future__ import annotations

import os
import platform
import statistics
import time

import torch


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ", no GPU"
    return (f"{os.cpu_count()} vCPU ({cpu}), torch {torch.__version__}, {torch.get_num_threads()} torch thread(s)"
            f"{gpu}")


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


def write_json(path, args, results) -> None:
    """The bench scripts' --json output: the machine, the arguments and the results, side by side."""
    import json
    from pathlib import Path

    Path(path).write_text(json.dumps({"machine": machine(), "args": vars(args), "results": results}, indent=1))

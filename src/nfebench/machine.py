"""The machine a measurement ran on, and the --json output shared by the bench/ (speed) and studies/ scripts."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

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


def write_json(path, args, results) -> None:
    """A script's --json output: the machine, the arguments and the results, side by side."""
    Path(path).write_text(json.dumps({"machine": machine(), "args": vars(args), "results": results}, indent=1))

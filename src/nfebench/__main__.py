"""`python -m nfebench [overrides]` / `nfebench [overrides]`: one benchmark point per Hydra job.

Bad input ends with a one-line `nfebench: error: ...` and exit code 2 (add --debug, or set HYDRA_FULL_ERROR=1,
for the traceback).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

ROOT = Path(__file__).resolve().parents[2]  # the repository (nfebench is installed editable)
CONF_DIR = ROOT / "conf"

if not OmegaConf.has_resolver("nfebench_root"):
    OmegaConf.register_new_resolver("nfebench_root", lambda: str(ROOT))

DEBUG = "--debug" in sys.argv or os.environ.get("HYDRA_FULL_ERROR") == "1"


def user_errors() -> tuple:
    """Exception types that mean bad input, reported in one line (imported lazily: torch is slow to import)."""
    from .leaderboard import LeaderboardError
    from .metrics.fidelity import MetricsError
    from .models import ModelError
    from .run import ConfigError
    from .samplers import SamplerError
    from .data import DataError  # >>> gpu: datasets, runtime options, torchrun
    from .distributed import DistributedError
    from .runtime import RuntimeConfigError  # <<< gpu

    return (ConfigError, SamplerError, ModelError, MetricsError, LeaderboardError,
            DataError, DistributedError, RuntimeConfigError)


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
def _app(cfg: DictConfig) -> None:
    from .run import run

    try:
        run(cfg)
    except user_errors() as e:
        if DEBUG:
            raise
        print(f"nfebench: error: {e}", file=sys.stderr)
        sys.exit(2)


def main() -> None:
    if "--debug" in sys.argv:
        sys.argv.remove("--debug")
    _app()


if __name__ == "__main__":
    main()

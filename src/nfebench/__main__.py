"""`python -m nfebench [overrides]` / `nfebench [overrides]`: one benchmark point per Hydra job.

Bad input ends with a one-line `nfebench: error: ...` and exit code 2 (add --debug, or set HYDRA_FULL_ERROR=1,
for the traceback).
"""

from __future__ import annotations

import os
import secrets
import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from .paths import CONF_DIR, ROOT  # noqa: E402  (the repository, installed editable, and its conf/)

if not OmegaConf.has_resolver("nfebench_root"):
    OmegaConf.register_new_resolver("nfebench_root", lambda: str(ROOT))


def _sweep_uid() -> str:
    """A random token per sweep, kept in the environment so launcher worker processes agree on it."""
    return os.environ.setdefault("NFEBENCH_SWEEP_UID", secrets.token_hex(3))


if not OmegaConf.has_resolver("nfebench_uid"):
    OmegaConf.register_new_resolver("nfebench_uid", _sweep_uid)

if not OmegaConf.has_resolver("nfebench_set"):  # true when a value is given (metrics=t2i: FID with reference_stats)
    OmegaConf.register_new_resolver("nfebench_set", lambda v: v is not None and v != "")

DEBUG = "--debug" in sys.argv or os.environ.get("HYDRA_FULL_ERROR") == "1"


def user_errors() -> tuple:
    """Exception types that mean bad input, reported in one line (imported lazily: torch is slow to import)."""
    from .leaderboard import LeaderboardError
    from .metrics.fidelity import MetricsError
    from .metrics.nll import NLLError
    from .analytic_dpm import MomentsError
    from .models import ModelError
    from .point import ConfigError
    from .run import RunFailed
    from .samplers import SamplerError
    from .data import DataError
    from .distributed import DistributedError
    from .runtime import RuntimeConfigError
    from .schedules import ScheduleError
    from .prompts import PromptsError
    from .storage import StorageError

    return (ConfigError, SamplerError, ModelError, MetricsError, LeaderboardError, RunFailed, NLLError, MomentsError,
            DataError, DistributedError, RuntimeConfigError, ScheduleError, PromptsError, StorageError)


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
def _app(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from .run import run

    try:
        run(cfg)
    except user_errors() as e:
        if DEBUG:
            raise
        hc = HydraConfig.get()
        if hc.mode == RunMode.MULTIRUN:  # one bad point must not stop a long sweep: report it and go on
            print(f"nfebench: error: job {hc.job.num} ({' '.join(hc.overrides.task)}): {e}", file=sys.stderr)
            return f"nfebench: error: {e}"  # the SLURM launcher reports it with the sweep's failed points
        print(f"nfebench: error: {e}", file=sys.stderr)
        sys.exit(2)


GROUPS = ("model", "sampler", "dataset", "metrics", "experiment")


def check_group_choices(args: list[str]) -> str | None:
    """A one-line error for `group=choice` overrides naming a config that does not exist (Hydra's own message
    spans a dozen lines). Sweeps (`sampler=ddim,dpm`) are checked choice by choice."""
    for arg in args:
        key, sep, value = arg.lstrip("+~").partition("=")
        if not sep or key not in GROUPS or value in ("null", ""):
            continue
        allowed = sorted(p.relative_to(CONF_DIR / key).with_suffix("").as_posix()  # sampler=ui/NAME: a subfolder
                         for p in (CONF_DIR / key).rglob("*.yaml"))
        for choice in value.split(","):
            if choice not in allowed:
                return f"unknown {key} {choice!r}; allowed: {', '.join(allowed)}"
    return None


def exit_on_user_error(call, extra: tuple = ()):
    """call(); bad input (user_errors() + extra) ends with one line and exit code 2 (the traceback with --debug)."""
    try:
        return call()
    except user_errors() + extra as e:
        if DEBUG:
            raise
        print(f"nfebench: error: {e}", file=sys.stderr)
        sys.exit(2)


def launch(app, rewrite=lambda arg: arg) -> None:
    """The entry of each `python -m nfebench...` command: drop --debug, rewrite the overrides, refuse unknown group
    choices in one line, then run the Hydra app."""
    if "--debug" in sys.argv:
        sys.argv.remove("--debug")
    sys.argv[1:] = [rewrite(a) for a in sys.argv[1:]]
    from .cluster import check_launcher_overrides

    bad = check_group_choices(sys.argv[1:]) or check_launcher_overrides(sys.argv[1:])
    if bad:
        print(f"nfebench: error: {bad}", file=sys.stderr)
        sys.exit(2)
    app()


def main() -> None:
    launch(_app)


if __name__ == "__main__":
    main()

"""Sweeps on a SLURM cluster (docs/cluster.md): which points still need a job, why a job failed, which GPU a job got,
and a one-line check of launcher overrides.

The launcher itself is `hydra_plugins.nfebench_launcher.NfebenchSlurmLauncher` (conf/hydra/launcher/slurm.yaml); it
calls these functions and keeps no logic of its own beyond submitting and waiting.
"""

from __future__ import annotations

import os
import re
from dataclasses import fields, is_dataclass


class LauncherError(ValueError):
    """A launcher override naming a resource the launcher does not have."""


class SweepFailed(RuntimeError):
    """Some points of a sweep failed; the message names each one and why, in one line."""


def launcher_fields(name: str) -> list[str] | None:
    """The resource names `hydra.launcher.<name>=` accepts for the launcher config `name` (None: unknown here)."""
    try:
        if name in ("slurm", "submitit_slurm"):
            from hydra_plugins.hydra_submitit_launcher.config import SlurmQueueConf as conf
        elif name == "submitit_local":
            from hydra_plugins.hydra_submitit_launcher.config import LocalQueueConf as conf
        elif name == "joblib":
            from hydra_plugins.hydra_joblib_launcher.config import JobLibLauncherConf as conf
        elif name == "basic":
            from hydra._internal.core_plugins.basic_launcher import BasicLauncherConf as conf
        else:
            return None
    except ImportError:
        return None
    return sorted(f.name for f in fields(conf) if not f.name.startswith("_")) if is_dataclass(conf) else None


def check_launcher_overrides(args: list[str]) -> str | None:
    """A one-line error for `hydra.launcher.KEY=...` naming a resource the chosen launcher lacks (Hydra's own error
    spans many lines and does not list what is allowed); None when all are known."""
    launcher = "basic"
    for a in args:
        key, sep, value = a.lstrip("+~").partition("=")
        if sep and key == "hydra/launcher":
            launcher = value
    allowed = launcher_fields(launcher)
    if allowed is None:
        return None
    for a in args:
        key, sep, _ = a.lstrip("+~").partition("=")
        if sep and key.startswith("hydra.launcher."):
            name = key[len("hydra.launcher."):].split(".")[0]
            if name not in allowed:
                return (f"unknown launcher resource {name!r} ({a}) for hydra/launcher={launcher}; allowed: "
                        f"{', '.join(allowed)}")
    return None


def pending(cfgs: list, board_for=None) -> list[bool]:
    """For each composed point config: True when it still needs a job (its row is not in its leaderboard, or it
    cannot be validated here, in which case the job reports the error). Used to submit only the missing points."""
    from omegaconf import OmegaConf, open_dict

    from .point import _done_ids, run_key, validate

    out = []
    for cfg in cfgs:
        try:
            cfg = cfg.copy()
            with open_dict(cfg):
                cfg.pop("hydra", None)  # the job's config, as the task function sees it
            p = validate(OmegaConf.to_container(cfg, resolve=True))
            out.append(p.force or not _done_ids(p.results_dir / "leaderboard.csv", run_key(p)))
        except Exception:  # noqa: BLE001  (bad points are submitted: their job names the error)
            out.append(True)
    return out


_STATE = re.compile(r"\(state: ([^)]*)\)")


def failure_reason(err: BaseException) -> str:
    """Why a submitit job failed, short: SLURM's state (CANCELLED by 0, FAILED, OUT_OF_MEMORY, TIMEOUT, ...) when
    the job left no result, else the last line of the error it raised."""
    text = str(err)
    m = _STATE.search(text)
    if m:
        return m.group(1).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return (lines[-1] if lines else type(err).__name__)[:300]


def failure_report(failed: list[tuple[int, list[str], str, str]], total: int, board: str) -> str:
    """One line: how many points failed and, for each, its job number, overrides, SLURM job id and reason."""
    parts = [f"#{num} {' '.join(ov)} (job {jid}: {why})" for num, ov, jid, why in failed]
    return (f"{len(failed)} of {total} submitted points failed: {'; '.join(parts)}; the other points' rows are in "
            f"{board}; re-run the same command to run only the missing points")


def queued_job_ids() -> set[str] | None:
    """Ids of the jobs SLURM still queues or runs (array tasks one by one, as `123_4`); None if squeue fails."""
    import subprocess

    try:
        out = subprocess.run(["squeue", "-h", "-r", "-o", "%i"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return set(out.stdout.split()) if out.returncode == 0 else None


def slurm_gpus() -> list[str] | None:
    """The GPUs SLURM allocated to this job (SLURM_JOB_GPUS / SLURM_STEP_GPUS, as SLURM numbers them), [] for a job
    without GPUs, None outside a SLURM job. SLURM exports CUDA_VISIBLE_DEVICES for them, so cuda:0 in the job is the
    first allocated GPU: device=auto (or cuda) uses it, nothing is assumed. None also where SLURM sets neither
    variable (GPUs not managed as GRES)."""
    if "SLURM_JOB_ID" not in os.environ:
        return None
    ids = os.environ.get("SLURM_STEP_GPUS", os.environ.get("SLURM_JOB_GPUS"))
    if ids is None:  # a cluster that does not manage GPUs as GRES: nothing to check against
        return None
    return [g for g in ids.split(",") if g]


def check_slurm_device(device: str) -> None:
    """Inside a SLURM job, an explicit device=cuda:N must be one of the job's allocated GPUs (0..k-1 after SLURM's
    CUDA_VISIBLE_DEVICES), and a job without an allocated GPU must not ask for CUDA."""
    gpus = slurm_gpus()
    if gpus is None or not isinstance(device, str) or not device.startswith("cuda"):
        return
    from .point import ConfigError

    if not gpus:
        raise ConfigError(f"device={device!r} but SLURM job {os.environ['SLURM_JOB_ID']} was allocated no GPU; "
                          f"ask for one (hydra.launcher.gpus_per_node=1) or use device=auto or cpu")
    index = device.partition(":")[2]
    if index and (not index.isdigit() or int(index) >= len(gpus)):
        raise ConfigError(f"device={device!r} but SLURM job {os.environ['SLURM_JOB_ID']} was allocated "
                          f"{len(gpus)} GPU(s) (SLURM ids {','.join(gpus)}); allowed: auto, cuda, "
                          f"cuda:0..cuda:{len(gpus) - 1}")

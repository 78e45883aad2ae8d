"""nfebench's SLURM launcher for Hydra sweeps (conf/hydra/launcher/slurm.yaml; docs/cluster.md).

hydra-submitit-launcher's SlurmLauncher, changed in three ways:
- points whose row is already in their leaderboard are not submitted (a re-run runs only the missing points);
- it waits for every job, then ends the sweep with one line naming each failed point, its SLURM job and why
  (cancelled, killed, failed, or the point's own error), exit code 1; successful rows are all kept;
- nothing else: resources, array_parallelism, job arrays and logs are submitit's (`.submitit/` in the sweep dir).
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher
from omegaconf import OmegaConf

log = logging.getLogger(__name__)


def wait_all(pending: list, grace_s: float = 10.0, poll_s: float = 3.0):
    """Yield (point, job, JobReturn or reason) for every job as it ends. A job that is neither in squeue nor in
    sacct for grace_s (an array task cancelled before it started leaves no accounting record in SLURM 22.05, and
    submitit would wait on it forever) ends as failed."""
    from nfebench.cluster import failure_reason, queued_job_ids

    unknown_since: dict = {}
    while pending:
        pending[0][1].watcher.update_if_long_enough(mode="force")  # one sacct call for all jobs, every poll_s
        queued, still = None, []
        for point, job in pending:
            if job.done():
                try:
                    yield point, job, job.results()[0]
                except Exception as e:  # noqa: BLE001  (cancelled, killed, timed out, or failed outside the point)
                    yield point, job, failure_reason(e)
                continue
            if job.state.upper() == "UNKNOWN":
                queued = queued_job_ids() if queued is None else queued
                if queued is not None and job.job_id not in queued:
                    first = unknown_since.setdefault(job.job_id, time.monotonic())
                    if time.monotonic() - first > grace_s:
                        yield point, job, "left the queue with no accounting record (cancelled before it started?)"
                        continue
                else:
                    unknown_since.pop(job.job_id, None)
            still.append((point, job))
        pending = still
        if pending:
            time.sleep(poll_s)


class NfebenchSlurmLauncher(SlurmLauncher):
    def _executor(self):
        import submitit

        params = dict(self.params)
        executor = submitit.AutoExecutor(cluster="slurm", folder=params.pop("submitit_folder"),
                                         slurm_max_num_timeout=params.pop("max_num_timeout", 0))
        base = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items()})
        return executor

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from nfebench.cluster import failure_reason, failure_report, pending

        assert self.config is not None and self.hydra_context is not None
        loader = self.hydra_context.config_loader
        points = [(initial_job_idx + i, list(ov)) for i, ov in enumerate(job_overrides)]
        cfgs = [loader.load_sweep_config(self.config, ov) for _, ov in points]
        todo = [pt for pt, need in zip(points, pending(cfgs)) if need]
        board = str(Path(str(self.config.results_dir)) / "leaderboard.csv")
        if len(todo) < len(points):
            print(f"[nfebench] {len(points) - len(todo)} of {len(points)} points already in their leaderboard: not submitted")
        if not todo:
            return []
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        print(f"[nfebench] SLURM sweep: {len(todo)} job(s), logs in {sweep_dir}/.submitit", flush=True)
        for num, ov in todo:
            log.info(f"\t#{num} : {' '.join(filter_overrides(ov))}")
        args = [(ov, "hydra.sweep.dir", num, f"job_id_for_{num}", Singleton.get_state()) for num, ov in todo]
        jobs = self._executor().map_array(self, *zip(*args))
        results, failed = [], []
        varying = {o for _, ov in todo for o in ov} - set.intersection(*({*ov} for _, ov in todo))
        shown = (lambda ov: [o for o in filter_overrides(ov) if o in varying] or filter_overrides(ov))
        for (num, ov), job, outcome in wait_all(list(zip(todo, jobs))):
            if isinstance(outcome, str):  # the job vanished or raised: outcome is the reason
                failed.append((num, shown(ov), job.job_id, outcome))
            elif outcome.status == JobStatus.FAILED:
                failed.append((num, shown(ov), job.job_id, failure_reason(outcome._return_value)))
            elif isinstance(outcome.return_value, str) and outcome.return_value.startswith("nfebench: error:"):
                why = outcome.return_value[len("nfebench: error:"):].strip()
                failed.append((num, shown(ov), job.job_id, why))
            else:
                results.append(outcome)
        if failed:
            print(f"nfebench: error: {failure_report(failed, len(todo), board)}", file=sys.stderr, flush=True)
            sys.exit(1)
        return results

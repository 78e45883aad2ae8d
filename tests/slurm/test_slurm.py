"""nfebench on a real SLURM (`make test-slurm`; marker `slurm`, not part of `make test`).

The cluster_env fixture starts a single-node cluster with accounting (tests/slurm/cluster.sh) under a temporary
directory and stops every daemon afterwards; it skips where that cannot work (not root, packages missing and not
installable). Jobs are tiny (digits, a few dozen samples, one thread): the whole module takes a few minutes.
"""

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.slurm

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "cluster.sh"
SRC = str(HERE.parents[1] / "src")
# small jobs: one CPU, 1 GB; the node advertises 16 CPUs / 2 fake GPUs, so the shipped 1-GPU defaults are accepted
TINY = ["hydra/launcher=slurm", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1",
        "num_samples=48", "batch_size=16"]


def _installed() -> bool:
    return all(shutil.which(b) for b in ("munged", "mariadbd", "slurmdbd", "slurmctld", "slurmd", "sbatch"))


@pytest.fixture(scope="module")
def cluster_env():
    if os.geteuid() != 0:
        pytest.skip("a real SLURM needs root (slurmd, munged)")
    if not _installed() and (not shutil.which("apt-get") or subprocess.run(
            [str(SCRIPT), "install"], capture_output=True, timeout=900).returncode != 0):
        pytest.skip("slurm-wlm / munge / MariaDB are not installed and cannot be installed here")
    d = Path(tempfile.mkdtemp(prefix="nfebench-slurm-"))  # under /tmp: the munge user must reach its socket
    t0 = time.monotonic()
    r = subprocess.run([str(SCRIPT), "start", str(d)], capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        subprocess.run([str(SCRIPT), "stop", str(d)], timeout=120)
        shutil.rmtree(d, ignore_errors=True)
        pytest.fail(f"the test cluster did not start: {r.stderr[-2000:]}")
    print(f"\n[slurm] cluster up in {time.monotonic() - t0:.1f} s under {d}")
    env = {**os.environ, "SLURM_CONF": str(d / "slurm.conf"), "OMP_NUM_THREADS": "1", "PYTHONPATH": SRC}
    env.pop("HYDRA_FULL_ERROR", None)
    try:
        yield env
    finally:
        subprocess.run(["scancel", "--user=root"], env=env, timeout=60)
        subprocess.run([str(SCRIPT), "stop", str(d)], timeout=120)
        shutil.rmtree(d, ignore_errors=True)


def sweep(env, *args, background=False):
    cmd = [sys.executable, "-m", "nfebench", "-m", *TINY, *args]
    if background:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)


def rows(results: Path) -> pd.DataFrame:
    return pd.read_csv(results / "leaderboard.csv")


def test_a_6_point_sweep_through_the_shipped_launcher_lands_6_rows(cluster_env, tmp_path):
    t0 = time.monotonic()
    r = sweep(cluster_env, f"results_dir={tmp_path}", "sampler=ddim,dpm,unipc", "nfe=5,10")
    print(f"[slurm] 6-point sweep: {time.monotonic() - t0:.1f} s")
    assert r.returncode == 0, r.stderr[-3000:]
    df = rows(tmp_path)
    assert len(df) == 6 and df.run_id.is_unique and df.fid.notna().all()
    assert sorted(zip(df.sampler, df.nfe)) == [(s, n) for s in ("ddim", "dpm", "unipc") for n in (5, 10)]
    r = sweep(cluster_env, f"results_dir={tmp_path}", "sampler=ddim,dpm,unipc", "nfe=5,10")  # nothing to submit
    assert r.returncode == 0 and "6 of 6 points already in their leaderboard: not submitted" in r.stdout
    assert len(rows(tmp_path)) == 6


def test_a_cancelled_job_ends_the_sweep_with_one_line_and_a_rerun_completes_it(cluster_env, tmp_path):
    # two quick points and a long one; the long one is cancelled while it runs, once the others' rows are in
    args = [f"results_dir={tmp_path}", "sampler=ddim", "nfe=5,400,10"]
    proc = sweep(cluster_env, *args, background=True)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and not (
            (tmp_path / "leaderboard.csv").exists() and len(rows(tmp_path)) == 2):
        time.sleep(1)
    out = subprocess.run(["squeue", "-h", "-r", "-t", "RUNNING", "-o", "%i"], env=cluster_env, capture_output=True,
                         text=True)
    (victim,) = [j for j in out.stdout.split() if j.endswith("_1")]  # the nfe=400 point, still running
    subprocess.run(["scancel", victim], env=cluster_env, check=True)
    t_cancel = time.monotonic()
    _, err = proc.communicate(timeout=300)
    waited = time.monotonic() - t_cancel
    print(f"[slurm] cancelled {victim} while it ran: the sweep ended {waited:.1f} s later")
    assert proc.returncode == 1 and waited < 60
    (line,) = [ln for ln in err.splitlines() if "nfebench: error:" in ln]
    assert f"1 of 3 submitted points failed: #1 nfe=400 (job {victim}: CANCELLED by 0)" in line, line
    assert "re-run the same command to run only the missing points" in line
    before = rows(tmp_path)
    assert sorted(before.nfe) == [5, 10]
    r = sweep(cluster_env, *args)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "2 of 3 points already in their leaderboard: not submitted" in r.stdout
    after = rows(tmp_path)
    assert sorted(after.nfe) == [5, 10, 400] and after.run_id.is_unique
    pd.testing.assert_frame_equal(after.iloc[:2], before)  # the earlier rows untouched


def test_a_pending_array_task_cancelled_before_it_starts_does_not_hang_the_sweep(cluster_env, tmp_path):
    # SLURM 22.05 keeps no accounting record of it: submitit alone would wait forever
    args = [f"results_dir={tmp_path}", "sampler=ddim", "nfe=5,6", "hydra.launcher.array_parallelism=1"]
    proc = sweep(cluster_env, *args, background=True)
    victim, deadline = None, time.monotonic() + 300
    while victim is None and time.monotonic() < deadline:
        out = subprocess.run(["squeue", "-h", "-r", "-t", "PENDING", "-o", "%i"], env=cluster_env,
                             capture_output=True, text=True)
        victim = next((j for j in out.stdout.split() if j.endswith("_1")), None)
        time.sleep(0.3)
    assert victim, "the sweep's second task never appeared pending"
    subprocess.run(["scancel", victim], env=cluster_env, check=True)
    _, err = proc.communicate(timeout=400)
    assert proc.returncode == 1
    (line,) = [ln for ln in err.splitlines() if "nfebench: error:" in ln]
    assert f"1 of 2 submitted points failed: #1 nfe=6 (job {victim}: " in line, line
    assert len(rows(tmp_path)) == 1


def test_a_point_sharded_over_3_array_tasks_equals_one_job(cluster_env, tmp_path):
    one, sharded = tmp_path / "one", tmp_path / "sharded"
    common = ["sampler=dpm", "nfe=10", "num_samples=80"]
    r = sweep(cluster_env, f"results_dir={one}", *common)
    assert r.returncode == 0, r.stderr[-3000:]
    r = sweep(cluster_env, f"results_dir={sharded}", *common, "shard=0/3,1/3,2/3")
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = rows(one), rows(sharded)
    assert len(b) == 1 and b.run_id[0] == a.run_id[0] and b.fid[0] == a.fid[0] and b.kid_mean[0] == a.kid_mean[0]
    for name in ("samples.npz", "features.npz"):
        with np.load(one / "runs" / a.run_id[0] / name) as x, np.load(sharded / "runs" / b.run_id[0] / name) as y:
            assert all(np.array_equal(x[k], y[k]) for k in x.files)

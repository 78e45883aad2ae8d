"""Interruptions, concurrency and bad input: nothing lost, nothing torn, one-line errors."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch

from nfebench.leaderboard import COLUMNS, append_row

from .test_cli import SRC, error_lines, run_cli


def cli_env():
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": SRC}
    env.pop("HYDRA_FULL_ERROR", None)
    return env


def test_kill_9_mid_sampling_then_resume_gives_identical_samples_and_one_row(tmp_path, tiny_unet_dir):
    args = [f"model.path={tiny_unet_dir}", "num_samples=120", "batch_size=4", "nfe=40", "sampler=ddpm",
            "metrics=none"]
    ref = run_cli(*args, f"results_dir={tmp_path / 'ref'}")
    assert ref.returncode == 0, ref.stderr[-1500:]

    res = tmp_path / "res"
    proc = subprocess.Popen([sys.executable, "-m", "nfebench", *args, f"results_dir={res}"], env=cli_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        shards = list(res.glob("runs/*/shards/*.npz"))
        if len(shards) >= 3:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.05)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed; make it longer"
    assert not (res / "leaderboard.csv").exists()
    finished = len(list(res.glob("runs/*/shards/*.npz")))
    assert 3 <= finished < 30

    again = run_cli(*args, f"results_dir={res}")
    assert again.returncode == 0, again.stderr[-1500:]
    a = np.load(next((tmp_path / "ref").glob("runs/*/samples.npz")))["samples"]
    b = np.load(next(res.glob("runs/*/samples.npz")))["samples"]
    assert a.dtype == np.uint8 and a.shape == (120, 1, 8, 8)
    assert np.array_equal(a, b)
    assert len(pd.read_csv(res / "leaderboard.csv")) == 1
    assert not list(res.glob("runs/*/shards"))  # shards are folded into samples.npz once it is written


def _append_many(board, worker, n):
    for i in range(n):
        append_row(board, {"run_id": f"w{worker}-{i}", "sampler": "dpm", "nfe": i, "nfe_used": i,
                           "sampler_options": json.dumps({"order": 3, "note": "x" * 200}), "fid": worker + i / 1000})


def test_8_processes_x_50_appends_lose_and_tear_nothing(tmp_path):
    board = tmp_path / "leaderboard.csv"
    code = ("import sys; from tests.test_robustness import _append_many; "
            "_append_many(sys.argv[1], int(sys.argv[2]), 50)")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    procs = [subprocess.Popen([sys.executable, "-c", code, str(board), str(w)], cwd=root, env=cli_env())
             for w in range(8)]
    assert all(p.wait(timeout=300) == 0 for p in procs)
    df = pd.read_csv(board)
    assert list(df.columns) == COLUMNS and len(df) == 400
    assert set(df.run_id) == {f"w{w}-{i}" for w in range(8) for i in range(50)}
    for _, r in df.iterrows():
        w, i = (int(v) for v in r.run_id[1:].split("-"))
        assert r.nfe == i and r.fid == pytest.approx(w + i / 1000)
        assert json.loads(r.sampler_options) == {"order": 3, "note": "x" * 200}


def test_nan_is_reported_with_step_and_timestep_samples_kept_no_row(tmp_path, tiny_unet_dir):
    from safetensors.torch import load_file, save_file

    bad = tmp_path / "nan-unet"
    shutil.copytree(tiny_unet_dir, bad)
    w = load_file(bad / "diffusion_pytorch_model.safetensors")
    w["conv_out.bias"] = torch.full_like(w["conv_out.bias"], float("nan"))
    save_file(w, bad / "diffusion_pytorch_model.safetensors")
    res = tmp_path / "res"
    r = run_cli(f"model.path={bad}", f"results_dir={res}", "num_samples=8", "nfe=5")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    line = error_lines(r)
    assert len(line) == 1 and "NaN/Inf" in line[0] and "evaluation 1 (timestep 999)" in line[0], r.stderr[-1500:]
    run_dir = next(res.glob("runs/*"))
    assert json.loads((run_dir / "status.json").read_text())["status"] == "failed"
    assert list(run_dir.glob("failed-*.npz"))
    assert not (res / "leaderboard.csv").exists() and not (run_dir / "metrics.json").exists()


def test_force_reruns_without_overwriting_the_earlier_run(tmp_path, tiny_unet_dir):
    args = [f"model.path={tiny_unet_dir}", f"results_dir={tmp_path}", "num_samples=6", "nfe=3", "metrics=none"]
    assert run_cli(*args).returncode == 0
    first = next(tmp_path.glob("runs/*/samples.npz")).read_bytes()
    r = run_cli(*args, "force=true")
    assert r.returncode == 0, r.stderr[-1000:]
    df = pd.read_csv(tmp_path / "leaderboard.csv")
    assert len(df) == 2 and df.run_id[1] == df.run_id[0] + ".2"
    assert (tmp_path / "runs" / df.run_id[0] / "samples.npz").read_bytes() == first
    assert (tmp_path / "runs" / df.run_id[1] / "samples.npz").exists()


@pytest.mark.parametrize("case", ["unwritable", "corrupt", "no_weights"])
def test_more_bad_input_is_one_line(tmp_path, tiny_unet_dir, case):
    model = tiny_unet_dir
    results = tmp_path / "res"
    if case == "unwritable":
        (tmp_path / "afile").write_text("x")
        results, needle = tmp_path / "afile" / "res", "is not writable"
    elif case == "corrupt":
        model = tmp_path / "corrupt"
        shutil.copytree(tiny_unet_dir, model)
        (model / "diffusion_pytorch_model.safetensors").write_bytes(b"not a safetensors file")
        needle = "cannot load the UNet"
    else:
        model = tmp_path / "noweights"
        model.mkdir()
        shutil.copy(tiny_unet_dir / "config.json", model)
        needle = "no weights"
    r = run_cli(f"model.path={model}", f"results_dir={results}", "num_samples=4", "nfe=3")
    err = error_lines(r)
    assert r.returncode == 2 and len(err) == 1 and needle in err[0] and "Traceback" not in r.stderr, r.stderr[-1500:]
    assert not (results / "leaderboard.csv").exists()

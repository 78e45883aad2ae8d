"""Issue 6 offline: public-checkpoint architecture, CIFAR-10 layout, folder datasets, Inception weights, runtime
options, and the one-line errors when a file is missing. Every stand-in is in the real on-disk format."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from .gpu_helpers import cli, save_cifar10_unet, save_random_inception, write_fake_cifar10
from nfebench.data import DataError, load_split
from nfebench.metrics import fidelity
from nfebench.metrics.fidelity import INCEPTION_URL, MetricsError, compute_fidelity, inception_weights_path

INCEPTION_FILE = INCEPTION_URL.rsplit("/", 1)[1]


@pytest.fixture(scope="session")
def cifar_unet_dir(tmp_path_factory):
    return save_cifar10_unet(tmp_path_factory.mktemp("ddpm-cifar10-arch"))


@pytest.fixture(scope="session")
def fake_cifar(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar")
    return root, write_fake_cifar10(root)


@pytest.fixture(scope="session")
def inception_weights(tmp_path_factory):
    return save_random_inception(tmp_path_factory.mktemp("inception") / INCEPTION_FILE)


@pytest.fixture(autouse=True)
def isolated_caches(tmp_path, monkeypatch):
    """No test reads or writes the user's feature cache, torch hub or Hugging Face cache."""
    import huggingface_hub.constants as hfc

    monkeypatch.setattr(fidelity, "DEFAULT_CACHE", tmp_path / "fidelity-cache")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.setattr(hfc, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))


def test_cifar10_architecture_runs_through_model_diffusers(monkeypatch, capsys, tmp_path, cifar_unet_dir):
    code, out, err = cli(monkeypatch, capsys, "model=diffusers", f"model.path={cifar_unet_dir}", "metrics=none",
                         "sampler=ddim", "nfe=2", "num_samples=3", "batch_size=2", f"results_dir={tmp_path}")
    assert code == 0, err[-2000:]
    row = pd.read_csv(tmp_path / "leaderboard.csv").iloc[0]
    assert (row.model, row.nfe_used, row.num_samples, row.world_size, row.batch_size_used) == ("diffusers", 2, 3, 1, 2)
    assert row.precision == "fp32" and not row.channels_last and not row.compiled and pd.isna(row.peak_gpu_mem_mb)
    with np.load(tmp_path / "runs" / row.run_id / "samples.npz") as z:
        assert z["samples"].shape == (3, 3, 32, 32) and z["samples"].dtype == np.uint8


def test_named_configs_carry_model_cards():
    from omegaconf import OmegaConf

    conf = Path(__file__).resolve().parents[1] / "conf" / "model"
    c = OmegaConf.load(conf / "ddpm_cifar10.yaml")
    assert c.path == "google/ddpm-cifar10-32" and c.kind == "diffusers" and c.dataset == "cifar10"
    assert "non-EMA" in c.note and "12.1-12.4" in c.note and "3.17" in c.note
    for short in ("celebahq", "church", "bedroom", "cat"):
        c = OmegaConf.load(conf / f"ddpm_{short}_256.yaml")
        assert c.path == f"google/ddpm-{short}-256" and c.note and set(c) == {"kind", "name", "path", "dataset", "note"}


def test_fake_cifar10_pickles_load_in_order(fake_cifar):
    root, arrays = fake_cifar
    train = load_split("cifar10", "train", root=str(root), download=False)
    test = load_split("cifar10", "test", root=str(root), download=False)
    assert train.dtype == torch.uint8 and train.shape == (10, 3, 32, 32) and test.shape == (3, 3, 32, 32)
    expect = np.concatenate([arrays[f"data_batch_{i}"] for i in range(1, 6)]).reshape(-1, 3, 32, 32)
    assert np.array_equal(train.numpy(), expect)  # row-major CHW as in the CIFAR-10 format: R plane, G, B
    assert np.array_equal(test.numpy(), arrays["test_batch"].reshape(-1, 3, 32, 32))


def test_folder_dataset(tmp_path):
    rng = np.random.RandomState(0)
    imgs = rng.randint(0, 256, size=(3, 16, 16, 3), dtype=np.uint8)
    (tmp_path / "a" / "sub").mkdir(parents=True)
    for i, a in enumerate(imgs):
        Image.fromarray(a).save(tmp_path / "a" / ("sub" if i == 2 else ".") / f"{i}.png")
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    x = load_split("folder", "train", path=str(tmp_path / "a"))
    assert x.shape == (3, 3, 16, 16) and np.array_equal(x.numpy(), imgs.transpose(0, 3, 1, 2))
    assert load_split("folder", "train", path=str(tmp_path / "a"), resolution=8).shape == (3, 3, 8, 8)
    Image.fromarray(imgs[0][:8]).save(tmp_path / "a" / "3.png")  # 16 wide, 8 high
    with pytest.raises(DataError, match="dataset.resolution=R"):
        load_split("folder", "train", path=str(tmp_path / "a"))
    with pytest.raises(DataError, match="dataset.test_path is not set"):
        load_split("folder", "test", path=str(tmp_path / "a"))


def test_inception_weights_from_hub_cache_or_path(tmp_path, inception_weights):
    hub = Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE
    assert str(tmp_path) in str(hub)  # isolated
    with pytest.raises(MetricsError, match="are missing and could not be downloaded"):
        inception_weights_path(None, download=False)
    assert inception_weights_path(str(inception_weights)) == str(inception_weights)
    hub.parent.mkdir(parents=True)
    hub.symlink_to(inception_weights)
    assert inception_weights_path(None) == str(hub)


def test_random_inception_scores_through_the_cli_and_caches_the_reference(monkeypatch, capsys, tmp_path,
                                                                          cifar_unet_dir, fake_cifar, inception_weights):
    root, _ = fake_cifar
    args = ["model=diffusers", f"model.path={cifar_unet_dir}", "dataset=cifar10", f"dataset.root={root}",
            "dataset.download=false", f"metrics.feature_extractor_weights_path={inception_weights}", "sampler=ddim",
            "nfe=2", "num_samples=4", "batch_size=4", f"results_dir={tmp_path / 'res'}"]
    code, out, err = cli(monkeypatch, capsys, *args)
    assert code == 0, err[-2000:]
    row = pd.read_csv(tmp_path / "res" / "leaderboard.csv").iloc[0]
    assert row.feature_extractor == "inception-v3-compat" and row.reference == "cifar10/train/10"
    assert row.num_samples == 4 and np.isfinite(row.fid) and np.isfinite(row.kid_mean)
    cached = sorted(p.name for p in (tmp_path / "fidelity-cache").iterdir())
    assert cached and all(n.startswith("cifar10-train-10-inception-v3-compat-") for n in cached), cached
    # the reference is featurized once: a second scoring (new samples) reuses the cached reference statistics
    calls = []
    real = fidelity.torch_fidelity.utils.get_featuresdict_from_dataset
    monkeypatch.setattr(fidelity.torch_fidelity.utils, "get_featuresdict_from_dataset",
                        lambda inp, *a, **k: calls.append(len(inp)) or real(inp, *a, **k))
    ref = load_split("cifar10", "train", root=str(root), download=False)
    compute_fidelity(ref[:4].flip(2), ref, "cifar10-train-10", "inception-v3-compat", weights_path=str(inception_weights),
                     isc=False, kid=False, verbose=False)
    assert calls == [4], calls  # only the 4 samples, not the 10 reference images


def _error(monkeypatch, capsys, tmp_path, *args):
    code, out, err = cli(monkeypatch, capsys, f"results_dir={tmp_path / 'res'}", "num_samples=2", "nfe=2", *args)
    lines = err.strip().splitlines()
    assert code == 2, (code, err[-2000:])
    assert len(lines) == 1 and lines[0].startswith("nfebench: error: "), err[-2000:]
    assert "Traceback" not in err + out
    assert not (tmp_path / "res" / "leaderboard.csv").exists()
    return lines[0]


def test_error_hub_id_not_in_cache(monkeypatch, capsys, tmp_path):
    msg = _error(monkeypatch, capsys, tmp_path, "model=ddpm_cifar10", "metrics=none")
    assert "'google/ddpm-cifar10-32'" in msg and str(tmp_path / "hf-cache") in msg and "huggingface-cli download" in msg


def test_error_model_dir_missing_or_unset(monkeypatch, capsys, tmp_path):
    msg = _error(monkeypatch, capsys, tmp_path, "model=diffusers", f"model.path={tmp_path}/nope", "metrics=none")
    assert f"{tmp_path}/nope" in msg and "save_pretrained" in msg
    msg = _error(monkeypatch, capsys, tmp_path, "model=diffusers", "metrics=none")
    assert "model.path is not set" in msg


def test_error_cifar10_missing(monkeypatch, capsys, tmp_path, tiny_unet_dir):
    msg = _error(monkeypatch, capsys, tmp_path, "model=diffusers", f"model.path={tiny_unet_dir}", "dataset=cifar10",
                 f"dataset.root={tmp_path}/data", "dataset.download=false")
    assert f"{tmp_path}/data/cifar-10-batches-py/data_batch_1" in msg and "cifar-10-python.tar.gz" in msg
    assert "dataset.download=true" in msg


def test_error_inception_weights_missing(monkeypatch, capsys, tmp_path, tiny_unet_dir, fake_cifar):
    msg = _error(monkeypatch, capsys, tmp_path, "model=diffusers", f"model.path={tiny_unet_dir}", "dataset=cifar10",
                 f"dataset.root={fake_cifar[0]}", "dataset.download=false")
    hub = tmp_path / "torch-home" / "hub" / "checkpoints" / INCEPTION_FILE
    assert f"Inception weights '{hub}' are missing" in msg and INCEPTION_URL in msg
    assert "metrics.feature_extractor_weights_path=" in msg
    msg = _error(monkeypatch, capsys, tmp_path, "model=diffusers", f"model.path={tiny_unet_dir}", "dataset=cifar10",
                 f"dataset.root={fake_cifar[0]}", "dataset.download=false",
                 f"metrics.feature_extractor_weights_path={tmp_path}/w.pth")
    assert f"'{tmp_path}/w.pth' not found" in msg


def test_error_model_scored_against_another_dataset(monkeypatch, capsys, tmp_path, cifar_unet_dir):
    msg = _error(monkeypatch, capsys, tmp_path, "model=ddpm_cifar10", f"model.path={cifar_unet_dir}")
    assert "'ddpm_cifar10' was trained on cifar10 but dataset=digits" in msg and "add dataset=cifar10" in msg


def test_error_folder_and_runtime_options(monkeypatch, capsys, tmp_path, tiny_unet_dir):
    msg = _error(monkeypatch, capsys, tmp_path, "model=diffusers", f"model.path={tiny_unet_dir}", "dataset=folder")
    assert "dataset.path is not set" in msg
    msg = _error(monkeypatch, capsys, tmp_path, f"model.path={tiny_unet_dir}", "metrics=none", "++runtime.autocast=fp16")
    assert "unknown runtime.autocast 'fp16'; allowed: null, bf16" in msg


def test_runtime_options_recorded(monkeypatch, capsys, tmp_path, tiny_unet_dir):
    """bf16 autocast and channels_last on CPU (the GPU path is the same code with device_type cuda)."""
    code, out, err = cli(monkeypatch, capsys, f"model.path={tiny_unet_dir}", "metrics=none", "nfe=3", "num_samples=4",
                         f"results_dir={tmp_path}", "++runtime.autocast=bf16", "++runtime.channels_last=true")
    assert code == 0, err[-2000:]
    row = pd.read_csv(tmp_path / "leaderboard.csv").iloc[0]
    assert row.precision == "bf16" and row.channels_last and row.nfe_used == 3


def test_oom_backoff_halves_the_batch(monkeypatch):
    from nfebench.runtime import RuntimeConfigError, RuntimeOptions, generate_with_backoff
    from nfebench.run import validate

    p = validate({"model": {"kind": "gmm"}, "sampler": {"name": "ddim"}, "dataset": {"name": "digits"},
                  "metrics": {}, "nfe": 2, "num_samples": 8, "batch_size": 8, "device": "cpu"})
    p.device = "cuda:0"  # pretend: the backoff only acts on CUDA out-of-memory errors
    seen = []

    def gen(q, seeds):
        seen.append(q.batch_size)
        if q.batch_size > 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return torch.zeros(len(seeds), 1, 2, 2, dtype=torch.uint8), 2, 0.1

    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    out, nfe_used, secs, bs = generate_with_backoff(gen, p, list(range(8)), RuntimeOptions())
    assert seen == [8, 4, 2] and bs == 2 and out.shape[0] == 8
    seen.clear()
    with pytest.raises(RuntimeConfigError, match="out of GPU memory at batch_size=8 on cuda:0"):
        generate_with_backoff(gen, p, list(range(8)), RuntimeOptions(oom_backoff=False))

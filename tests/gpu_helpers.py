"""Stand-ins in the real on-disk formats (no internet here): the google/ddpm-cifar10-32 architecture with random
weights, CIFAR-10 python pickles, torch-fidelity's Inception state dict; and an in-process `python -m nfebench`."""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

import numpy as np
import torch

CIFAR10_UNET = dict(sample_size=32, in_channels=3, out_channels=3, layers_per_block=2,
                    block_out_channels=(128, 256, 256, 256),
                    down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
                    up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"))


def save_cifar10_unet(d: Path) -> Path:
    from diffusers import DDPMScheduler, UNet2DModel

    torch.manual_seed(0)
    UNet2DModel(**CIFAR10_UNET).save_pretrained(d)
    DDPMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear").save_pretrained(d)
    return d


def write_fake_cifar10(root: Path, per_batch: int = 2, n_test: int = 3, seed: int = 0) -> dict:
    """cifar-10-batches-py/{data_batch_1..5,test_batch} pickles (latin1 dicts with 'data' [N,3072] uint8, 'labels')."""
    rng = np.random.RandomState(seed)
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for name, n in [(f"data_batch_{i}", per_batch) for i in range(1, 6)] + [("test_batch", n_test)]:
        data = rng.randint(0, 256, size=(n, 3072), dtype=np.uint8)
        with (base / name).open("wb") as f:
            pickle.dump({"batch_label": name, "labels": list(rng.randint(0, 10, n)), "data": data,
                         "filenames": [f"{name}_{i}.png" for i in range(n)]}, f, protocol=2)
        arrays[name] = data
    return arrays


def save_random_inception(path: Path) -> Path:
    """A random-weight state dict with exactly the keys and shapes of torch-fidelity's Inception weights."""
    import torch_fidelity.feature_extractor_inceptionv3 as inc

    real_load, real_url = inc.FeatureExtractorInceptionV3.load_state_dict, inc.load_state_dict_from_url
    inc.FeatureExtractorInceptionV3.load_state_dict = lambda self, sd, *a, **k: None
    inc.load_state_dict_from_url = lambda *a, **k: {}
    try:
        torch.manual_seed(0)
        net = inc.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    finally:
        inc.FeatureExtractorInceptionV3.load_state_dict, inc.load_state_dict_from_url = real_load, real_url
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), path)
    return path


def cli(monkeypatch, capsys, *args) -> tuple[int, str, str]:
    """`python -m nfebench *args` in this process (no 10 s interpreter start): (exit code, stdout, stderr)."""
    import nfebench.__main__ as entry

    monkeypatch.setattr(sys, "argv", ["nfebench", *args])
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    capsys.readouterr()
    code = 0
    try:
        entry.main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    out = capsys.readouterr()
    return code, out.out, out.err

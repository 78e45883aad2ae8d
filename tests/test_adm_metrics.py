"""ADM's conventions: sFID on a stand-in Inception with random weights equals a direct implementation (the same
layer, the same channels); an ADM-format reference batch round-trips; bad reference batches and an extractor
without a spatial layer are one-line errors."""

from __future__ import annotations

import os
import re

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from nfebench.metrics import adm  # noqa: E402
from nfebench.metrics.fidelity import MetricsError  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def random_inception(tmp_path_factory):
    """torch-fidelity's Inception with its default random initialization (no download), saved as a weights file."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    torch.manual_seed(0)
    orig_sd, orig_load = FeatureExtractorInceptionV3.load_state_dict, torch.load
    FeatureExtractorInceptionV3.load_state_dict, torch.load = (lambda self, sd: None), (lambda *a, **k: {})
    try:
        net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path="random")
    finally:
        FeatureExtractorInceptionV3.load_state_dict, torch.load = orig_sd, orig_load
    path = tmp_path_factory.mktemp("inception") / "random-inception.pth"
    torch.save(net.state_dict(), path)
    return str(path), net


def images(n, seed, size=32):
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (n, 3, size, size), dtype=np.uint8))


def direct_spatial(net, x):
    """The layers of the graph up to mixed_6/conv, called one by one: resize to 299 as TF 1.x, (x - 128) / 128,
    the stem, Mixed_5b..Mixed_6c, then Mixed_6d's 1x1 branch; its first 7 channels, flattened."""
    import torch.nn.functional as F
    from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x

    with torch.no_grad():
        h = interpolate_bilinear_2d_like_tensorflow1x(x.float(), size=(299, 299), align_corners=False)
        h = (h - 128) / 128
        h = net.Conv2d_2b_3x3(net.Conv2d_2a_3x3(net.Conv2d_1a_3x3(h)))
        h = net.MaxPool_1(h)
        h = net.MaxPool_2(net.Conv2d_4a_3x3(net.Conv2d_3b_1x1(h)))
        for block in ("Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c"):
            h = getattr(net, block)(h)
        h = net.Mixed_6d.branch1x1.conv(h)
        h = F.relu(net.Mixed_6d.branch1x1.bn(h))
    assert h.shape[1:] == (192, 17, 17)
    return h[:, :7].reshape(x.shape[0], -1).double().numpy()


def frechet_small_n(a, b):
    """The Frechet distance of two sets of few rows, without d x d matrices: tr (S_a S_b)^1/2 is the nuclear norm of
    A_c B_c^T / (n - 1) (A_c, B_c the centred rows; the nonzero eigenvalues of S_a S_b are those of
    (A_c B_c^T)(B_c A_c^T) / (n - 1)^2)."""
    ac, bc = a - a.mean(0), b - b.mean(0)
    n = a.shape[0]
    nuclear = np.linalg.svd(ac @ bc.T, compute_uv=False).sum() / (n - 1)
    return float(((a.mean(0) - b.mean(0)) ** 2).sum() + (ac ** 2).sum() / (n - 1) + (bc ** 2).sum() / (n - 1)
                 - 2 * nuclear)


def test_sfid_equals_a_direct_implementation(random_inception):
    path, net = random_inception
    x, ref = images(6, 1), images(6, 2)
    feats = adm.spatial_features(x, "inception-v3-compat", path, batch_size=3)
    assert feats.shape == (6, adm.SFID_DIMS)
    want = direct_spatial(net, x)
    np.testing.assert_allclose(feats.double().numpy(), want, rtol=1e-4, atol=1e-5 * np.abs(want).max())
    ref_feats = direct_spatial(net, ref)
    got = adm.frechet(feats, ref_feats)
    assert got == pytest.approx(frechet_small_n(want, ref_feats), rel=1e-4)
    assert got > 0


def test_reference_batch_round_trips(tmp_path, random_inception):
    path, _ = random_inception
    x = images(20, 3)
    f, s = np.random.default_rng(0).normal(size=(20, 2048)), np.random.default_rng(1).normal(size=(20, adm.SFID_DIMS))
    adm.write_reference_batch(tmp_path / "ref.npz", x, feats=f, spatial=s)
    z = np.load(tmp_path / "ref.npz")
    assert sorted(z.files) == ["arr_0", "mu", "mu_s", "sigma", "sigma_s"] and z["arr_0"].shape == (20, 32, 32, 3)
    b = adm.load_reference_batch(tmp_path / "ref.npz", (32, 32))
    assert torch.equal(b["images"], x) and b["label"].startswith("adm:ref.npz@")
    np.testing.assert_allclose(b["mu"], f.mean(0))
    np.testing.assert_allclose(b["sigma"], np.cov(f, rowvar=False))
    np.testing.assert_allclose(b["sigma_s"], np.cov(s, rowvar=False))
    # statistics only (as a published file without images): the reference is those statistics
    adm.write_reference_batch(tmp_path / "stats.npz", x, feats=f)
    only = dict(np.load(tmp_path / "stats.npz"))
    only.pop("arr_0")
    np.savez(tmp_path / "stats.npz", **only)
    b = adm.load_reference_batch(tmp_path / "stats.npz", (32, 32))
    assert b["images"] is None and b["mu_s"] is None
    np.testing.assert_array_equal(b["mu"], f.mean(0))


@pytest.mark.parametrize("arrays, size, needle", [
    ({"labels": np.zeros(3)}, (32, 32), "has neither images (arr_0) nor statistics"),
    ({"arr_0": np.zeros((2, 64, 64, 3), np.uint8)}, (32, 32), "has 64x64 images but the samples are 32x32"),
    ({"arr_0": np.zeros((2, 3, 32, 32), np.uint8)}, (32, 32), "arr_0 must be uint8 images [N, H, W, 3]"),
    ({"mu": np.zeros(2048)}, (32, 32), "mu must be [2048] and sigma [2048, 2048] together"),
])
def test_bad_reference_batch_is_one_line_error(tmp_path, arrays, size, needle):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(MetricsError, match=re.escape(needle)) as e:
        adm.load_reference_batch(tmp_path / "bad.npz", size)
    assert "\n" not in str(e.value)
    with pytest.raises(MetricsError, match="not found"):
        adm.load_reference_batch(tmp_path / "missing.npz")


def test_sfid_without_a_spatial_layer_is_an_error_before_sampling(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    import nfebench

    env = {**os.environ, "PYTHONPATH": str(Path(nfebench.__file__).parents[1])}
    p = subprocess.run([sys.executable, "-m", "nfebench", "model=gmm_digits", "nfe=4", "num_samples=4",
                        "metrics.sfid=true", "device=cpu", f"results_dir={tmp_path}"], capture_output=True, text=True,
                       env=env)
    assert p.returncode == 2 and p.stderr.strip().count("\n") == 0, p.stderr
    assert "metrics.sfid needs a feature extractor with a spatial layer; digits-cnn has none" in p.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())

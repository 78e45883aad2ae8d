"""DINOv2 features (metrics.feature_extractor=dinov2-vit-l-14) from local files, tested with a random-weight
stand-in: a hub repository in the torch hub cache whose `dinov2_vitl14` entry builds a small network, and its
state dict saved as the weights file. The real ViT-L/14 code and weights are not available offline."""

import pytest
import torch

from nfebench.metrics.fidelity import MetricsError, check_extractor, compute_fidelity, dinov2_sources

HUBCONF = '''
import torch.nn as nn

def dinov2_vitl14(pretrained=True):
    return nn.Sequential(nn.Conv2d(3, 8, 14, stride=14), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten())
'''


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """A torch hub cache with the stand-in repository; returns (hub dir, weights file)."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    repo = tmp_path / "hub" / "facebookresearch_dinov2_main"
    repo.mkdir(parents=True)
    (repo / "hubconf.py").write_text(HUBCONF)
    torch.manual_seed(0)
    net = torch.hub.load(str(repo), "dinov2_vitl14", source="local", pretrained=False, trust_repo=True)
    weights = tmp_path / "hub" / "checkpoints" / "dinov2_vitl14_pretrain.pth"
    weights.parent.mkdir()
    torch.save(net.state_dict(), weights)
    return tmp_path / "hub", weights


def images(n, seed):
    return torch.randint(0, 256, (n, 3, 16, 16), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def test_dinov2_fid_from_the_hub_cache_or_a_path(hub, tmp_path):
    hub_dir, weights = hub
    ref, near, far = images(60, 0), images(60, 1), images(60, 2) // 4
    kw = dict(reference_name="r", feature_extractor="dinov2-vit-l-14", isc=False, cache_dir=tmp_path / "c",
              verbose=False)
    same = compute_fidelity(near, ref, **kw)["frechet_inception_distance"]
    other = compute_fidelity(far, ref, **kw)["frechet_inception_distance"]
    assert 0 < same < other
    moved = tmp_path / "elsewhere.pth"
    weights.rename(moved)
    assert compute_fidelity(near, ref, weights_path=str(moved), **kw)["frechet_inception_distance"] == \
        pytest.approx(same, rel=1e-9)


def test_dinov2_missing_code_weights_or_logits_are_one_line_errors(hub, tmp_path):
    hub_dir, weights = hub
    with pytest.raises(MetricsError, match="metrics.isc=true needs class logits, which dinov2-vit-l-14"):
        check_extractor("dinov2-vit-l-14", None, isc=True)
    with pytest.raises(MetricsError, match="/no/dino.pth.*not found"):
        dinov2_sources("dinov2-vit-l-14", "/no/dino.pth")
    weights.unlink()
    with pytest.raises(MetricsError, match="weights .*dinov2_vitl14_pretrain.pth.* are missing .*download disabled"):
        dinov2_sources("dinov2-vit-l-14", None, download=False)
    (hub_dir / "facebookresearch_dinov2_main" / "hubconf.py").unlink()
    with pytest.raises(MetricsError, match="needs the DINOv2 code in the torch hub cache"):
        dinov2_sources("dinov2-vit-l-14", None, download=False)
    with pytest.raises(MetricsError, match="needs RGB images"):
        check_extractor("dinov2-vit-l-14", str(tmp_path), ("samples", torch.zeros(1, 1, 8, 8)))

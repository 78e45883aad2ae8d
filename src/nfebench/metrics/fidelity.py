"""FID / IS / KID through torch-fidelity's calculate_metrics, with nfebench's feature extractors registered.

Feature extractors (the name is recorded in every leaderboard row, so a digits FID is never taken for an
Inception FID):
  digits-cnn             nfebench's digits classifier (checkpoints/digits-cnn): 64-d penultimate features for FID
                         and KID, 10 logits for IS.
  inception-v3-compat    torch-fidelity's standard Inception (2048-d pool3 for FID/KID, logits_unbiased for IS).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
import torch_fidelity
from torch_fidelity.feature_extractor_base import FeatureExtractorBase
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

from .digits_cnn import DigitsCNN

# result keys, as torch-fidelity names them
FID, IS_MEAN, IS_STD = torch_fidelity.KEY_METRIC_FID, torch_fidelity.KEY_METRIC_ISC_MEAN, torch_fidelity.KEY_METRIC_ISC_STD
KID_MEAN, KID_STD = torch_fidelity.KEY_METRIC_KID_MEAN, torch_fidelity.KEY_METRIC_KID_STD

DEFAULT_CACHE = Path.home() / ".cache" / "nfebench" / "fidelity"


class MetricsError(ValueError):
    """Metrics that cannot be computed as configured: the message names the bad value or missing file."""


class DigitsCNNExtractor(FeatureExtractorBase):
    """torch-fidelity wrapper of DigitsCNN: features 'penultimate' (FID, KID) and 'logits_unbiased' (IS)."""

    def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
        super().__init__(name, features_list)
        if feature_extractor_weights_path is None:
            raise MetricsError("digits-cnn needs metrics.feature_extractor_weights_path")
        self.net = DigitsCNN()
        self.net.load_state_dict(torch.load(feature_extractor_weights_path, map_location="cpu", weights_only=True))
        self.net.eval()

    @staticmethod
    def get_provided_features_list():
        return ("penultimate", "logits_unbiased")

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        return {"isc": "logits_unbiased", "fid": "penultimate", "kid": "penultimate"}[metric]

    @staticmethod
    def can_be_compiled():
        return False

    @staticmethod
    def get_dummy_input_for_compile():
        return torch.zeros(1, 1, 8, 8, dtype=torch.uint8)

    def forward(self, x):
        f = self.net.features(x)
        out = {"penultimate": f, "logits_unbiased": self.net.head(f)}
        return tuple(out[k] for k in self.features_list)


if "digits-cnn" not in FEATURE_EXTRACTORS_REGISTRY:
    torch_fidelity.register_feature_extractor("digits-cnn", DigitsCNNExtractor)

FEATURE_LAYERS = {
    "digits-cnn": dict(fid="penultimate", kid="penultimate", isc="logits_unbiased"),
    "inception-v3-compat": dict(fid="2048", kid="2048", isc="logits_unbiased"),
}


class TensorDataset(torch.utils.data.Dataset):
    """uint8 images [N, C, H, W] as torch-fidelity wants them: one uint8 CHW tensor per item."""

    def __init__(self, images: torch.Tensor):
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise TypeError(f"expected uint8 images [N, C, H, W], got {images.dtype} {tuple(images.shape)}")
        self.images = images

    def __len__(self):
        return self.images.shape[0]

    def __getitem__(self, i):
        return self.images[i]


def _file_digest(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]


# Inception weights: the torch hub cache or an explicit file, with a one-line error when neither is there
INCEPTION_URL = "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth"


def inception_weights_path(weights_path: str | None = None, download: bool = True) -> str:
    """The Inception weights file to use: `weights_path` if given, else torch-fidelity's file in the torch hub cache
    (downloaded there when missing and the network allows). A MetricsError names the file and both ways to supply it.
    """
    if weights_path is not None:
        if not Path(weights_path).expanduser().is_file():
            raise MetricsError(f"Inception weights {str(weights_path)!r} not found (metrics.feature_extractor_weights_"
                               f"path); put {INCEPTION_URL.rsplit('/', 1)[1]} from {INCEPTION_URL} there")
        return str(Path(weights_path).expanduser())
    hub_file = Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_URL.rsplit("/", 1)[1]
    if hub_file.is_file():
        return str(hub_file)
    reason = "download disabled"
    if download:
        try:
            hub_file.parent.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(INCEPTION_URL, str(hub_file), progress=False)
            return str(hub_file)
        except Exception as e:  # offline, proxy, disk
            reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:120]
    raise MetricsError(f"Inception weights {str(hub_file)!r} are missing and could not be downloaded ({reason}); "
                       f"copy {INCEPTION_URL} to that path (the torch hub cache, $TORCH_HOME/hub/checkpoints), or pass "
                       f"metrics.feature_extractor_weights_path=/path/to/{hub_file.name}")


def _tensor_digest(x: torch.Tensor) -> str:
    """Content digest of the reference images: two references that share a name but not their pixels (two folders,
    a partial CIFAR-10 copy) never share cached features."""
    h = hashlib.sha256(str((tuple(x.shape), str(x.dtype))).encode())
    h.update(x.contiguous().numpy().tobytes())
    return h.hexdigest()[:12]


def compute_fidelity(samples: torch.Tensor, reference: torch.Tensor, reference_name: str, feature_extractor: str,
                     weights_path: str | None = None, fid=True, isc=True, kid=True, batch_size: int = 500,
                     device="cpu", cache_dir: str | Path | None = None, verbose=True) -> dict:
    """FID/IS/KID of uint8 `samples` against uint8 `reference` with torch-fidelity.

    The reference features are cached under cache_dir, keyed by reference_name, extractor and weights digest.
    KID's subset size adapts to small sample counts: min(1000, len(samples), len(reference)).
    """
    if feature_extractor not in FEATURE_LAYERS:
        raise MetricsError(f"unknown feature extractor {feature_extractor!r}; allowed: {', '.join(FEATURE_LAYERS)}")
    if feature_extractor == "inception-v3-compat":
        weights_path = inception_weights_path(weights_path)
        for what, x in (("samples", samples), ("reference images", reference)):
            if x.shape[1] != 3:
                raise MetricsError(f"inception-v3-compat needs RGB images but the {what} have {x.shape[1]} "
                                   f"channel(s); use a dataset of RGB images or the dataset's own extractor")
    if weights_path is not None and not Path(weights_path).is_file():
        raise MetricsError(f"feature-extractor weights {str(weights_path)!r} not found")
    layers = FEATURE_LAYERS[feature_extractor]
    tag = _file_digest(weights_path) if weights_path else "default"
    tag += "-" + _tensor_digest(reference)  # gpu: the cache key includes the reference pixels
    n = min(samples.shape[0], reference.shape[0])
    try:  # a weights file of the wrong format is a one-line error, not a traceback
        out = _calculate(samples, reference, reference_name, feature_extractor, weights_path, fid, isc, kid, layers,
                         n, batch_size, device, cache_dir, verbose, tag)
    except RuntimeError as e:
        if "state_dict" not in str(e):
            raise
        raise MetricsError(f"feature-extractor weights {str(weights_path)!r} do not fit {feature_extractor} "
                           f"({str(e).strip().splitlines()[0][:120]})") from None
    return {k: float(v) for k, v in out.items()}


def _calculate(samples, reference, reference_name, feature_extractor, weights_path, fid, isc, kid, layers, n,
               batch_size, device, cache_dir, verbose, tag):
    return torch_fidelity.calculate_metrics(
        input1=TensorDataset(samples), input2=TensorDataset(reference), cuda=str(device).startswith("cuda"),
        fid=fid, isc=isc, kid=kid, feature_extractor=feature_extractor,
        feature_layer_fid=layers["fid"], feature_layer_kid=layers["kid"], feature_layer_isc=layers["isc"],
        feature_extractor_weights_path=weights_path, kid_subset_size=min(1000, n), isc_splits=10,
        batch_size=batch_size, save_cpu_ram=True,
        verbose=verbose and feature_extractor != "digits-cnn",  # its printout says "Inception"; digits scores in <1 s
        cache=True, cache_root=str(cache_dir or DEFAULT_CACHE), input1_cache_name=None,
        input2_cache_name=f"{reference_name}-{feature_extractor}-{tag}",
    )
    # input1 must never be cached: torch-fidelity caches only named inputs, and input1 has no name.


# --- FID against precomputed reference statistics (metrics.reference_stats=FILE.npz) -----------------------------
FEATURE_DIMS = {"digits-cnn": 64, "inception-v3-compat": 2048}  # the FID layer's width


def load_reference_stats(path, feature_extractor: str) -> tuple:
    """(mu [D], sigma [D, D], label) from an .npz with keys mu and sigma, as pytorch-fid, EDM and ADM publish them.
    label names the file and its content hash (the row's `reference`). Every problem is a one-line MetricsError."""
    import numpy as np

    p = Path(str(path)).expanduser()
    if not p.is_file():
        raise MetricsError(f"reference statistics file {str(p)!r} not found (metrics.reference_stats)")
    try:
        with np.load(p, allow_pickle=False) as z:
            keys = sorted(z.files)
            mu, sigma = (np.asarray(z[k], dtype=np.float64) for k in ("mu", "sigma")) if {"mu", "sigma"} <= set(
                keys) else (None, None)
    except Exception as e:  # not a zip / npz, or a corrupt one
        raise MetricsError(f"reference statistics file {str(p)!r} is not a readable .npz ({type(e).__name__})") from None
    if mu is None or mu.ndim != 1 or sigma.shape != (mu.size, mu.size):
        got = "keys " + ", ".join(keys) if mu is None else f"mu {list(mu.shape)}, sigma {list(sigma.shape)}"
        raise MetricsError(f"reference statistics file {str(p)!r} must hold mu [D] and sigma [D, D]; got {got}")
    want = FEATURE_DIMS.get(feature_extractor)
    if want is not None and mu.size != want:
        raise MetricsError(f"reference statistics in {str(p)!r} are {mu.size}-dimensional but feature extractor "
                           f"{feature_extractor} gives {want}-dimensional features")
    return mu, sigma, f"stats:{p.name}@{_file_digest(p)}"


def fid_against_stats(samples: torch.Tensor, stats_path, feature_extractor: str, weights_path: str | None = None,
                      isc=True, batch_size: int = 500, device="cpu", verbose=True) -> dict:
    """FID of uint8 samples against precomputed (mu, sigma) (Heusel et al. 2017, Eq. 6, torch-fidelity's
    implementation), and IS of the samples (which needs no reference). Returns {FID, IS_MEAN, IS_STD, "reference"}."""
    from torch_fidelity.metric_fid import fid_featuresdict_to_statistics, fid_statistics_to_metric
    from torch_fidelity.utils import create_feature_extractor, extract_featuresdict_from_input_id

    mu, sigma, label = load_reference_stats(stats_path, feature_extractor)
    if feature_extractor not in FEATURE_LAYERS:
        raise MetricsError(f"unknown feature extractor {feature_extractor!r}; allowed: {', '.join(FEATURE_LAYERS)}")
    if feature_extractor == "inception-v3-compat":
        weights_path = inception_weights_path(weights_path)
    layers = FEATURE_LAYERS[feature_extractor]
    cuda = str(device).startswith("cuda")
    wanted = [layers["fid"]] + ([layers["isc"]] if isc else [])
    fx = create_feature_extractor(feature_extractor, list(dict.fromkeys(wanted)), cuda=cuda,
                                  feature_extractor_weights_path=weights_path)
    feats = extract_featuresdict_from_input_id(1, fx, input1=TensorDataset(samples), batch_size=batch_size,
                                               cuda=cuda, verbose=False, save_cpu_ram=True)
    stats = {k: v.astype("float64") for k, v in fid_featuresdict_to_statistics(feats, layers["fid"]).items()}
    out = {FID: float(fid_statistics_to_metric(stats, {"mu": mu, "sigma": sigma}, verbose=False)[FID]),
           "reference": label}
    if isc:
        from torch_fidelity.metric_isc import isc_featuresdict_to_metric

        res = isc_featuresdict_to_metric(feats, layers["isc"], isc_splits=10, verbose=False)  # as compute_fidelity
        out[IS_MEAN], out[IS_STD] = float(res[IS_MEAN]), float(res[IS_STD])
    return out

"""FID / IS / KID: features by torch-fidelity's extractors (nfebench's registered beside its own), metrics computed
from those features by nfebench.metrics.from_features (tested equal to torch-fidelity's values on the same features).

Feature extractors (the name is recorded in every leaderboard row, so a digits FID is never taken for an
Inception FID):
  digits-cnn             nfebench's digits classifier (checkpoints/digits-cnn): 64-d penultimate features for FID
                         and KID, 10 logits for IS.
  inception-v3-compat    torch-fidelity's standard Inception (2048-d pool3 for FID/KID, logits_unbiased for IS).
  dinov2-vit-l-14        DINOv2 ViT-L/14's 1024-d class token for FID/KID (Stein et al. 2023); no IS (no logits).
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import torch
import torch_fidelity
from torch_fidelity.feature_extractor_base import FeatureExtractorBase
from torch_fidelity.feature_extractor_dinov2 import FeatureExtractorDinoV2
from torch_fidelity.metric_prc import KEY_METRIC_PRECISION as PRECISION, KEY_METRIC_RECALL as RECALL
from torch_fidelity.metric_prc import prc_features_to_metric
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY
import torch_fidelity.utils

from ..leaderboard import atomic_write_bytes

from .digits_cnn import DigitsCNN

# result keys, as torch-fidelity names them
FID, IS_MEAN, IS_STD = torch_fidelity.KEY_METRIC_FID, torch_fidelity.KEY_METRIC_ISC_MEAN, torch_fidelity.KEY_METRIC_ISC_STD
KID_MEAN, KID_STD = torch_fidelity.KEY_METRIC_KID_MEAN, torch_fidelity.KEY_METRIC_KID_STD
FID_INF = "frechet_inception_distance_infinity"  # ours: Chong & Forsyth's extrapolated FID

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

# DINOv2 ViT-L/14 (Oquab et al. 2023), the feature space Stein et al. 2023 (sec. 4) recommend for Frechet distances:
# torch-fidelity's extractor (its resizing to 224 and ImageNet normalization), with the network built from the
# facebookresearch/dinov2 code in the torch hub cache and its weights from that cache or a path, so it runs offline.
DINOV2 = {"dinov2-vit-l-14": "dinov2_vitl14"}
DINOV2_REPO = "facebookresearch/dinov2"
DINOV2_URL = "https://dl.fbaipublicfiles.com/dinov2/{0}/{0}_pretrain.pth"


def _first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:120]


def dinov2_sources(name: str, weights_path: str | None = None, download: bool = True) -> tuple[str, str]:
    """(code directory, weights file) of a DINOv2 extractor: the facebookresearch/dinov2 repository in the torch hub
    cache (fetched there when missing and the network allows), and `weights_path` or the hub cache's
    `<model>_pretrain.pth` (downloaded likewise). A MetricsError names what is missing and how to supply it."""
    arch = DINOV2[name]
    hub = Path(torch.hub.get_dir())
    repo = hub / f"{DINOV2_REPO.replace('/', '_')}_main"
    if not (repo / "hubconf.py").is_file():
        reason = "download disabled"
        if download:
            try:
                torch.hub.list(DINOV2_REPO, trust_repo=True)  # fetches the code into the hub cache
            except Exception as e:  # offline, proxy, rate limit
                reason = _first_line(e)
        if not (repo / "hubconf.py").is_file():
            raise MetricsError(f"{name} needs the DINOv2 code in the torch hub cache ({repo}), which is missing and "
                               f"could not be fetched ({reason}); clone https://github.com/{DINOV2_REPO} there")
    url = DINOV2_URL.format(arch)
    if weights_path is not None:
        if not Path(weights_path).expanduser().is_file():
            raise MetricsError(f"{name} weights {str(weights_path)!r} not found (metrics.feature_extractor_weights_"
                               f"path); put {url.rsplit('/', 1)[1]} from {url} there")
        return str(repo), str(Path(weights_path).expanduser())
    hub_file = hub / "checkpoints" / url.rsplit("/", 1)[1]
    if not hub_file.is_file():
        reason = "download disabled"
        if download:
            try:
                hub_file.parent.mkdir(parents=True, exist_ok=True)
                torch.hub.download_url_to_file(url, str(hub_file), progress=False)
            except Exception as e:
                reason = _first_line(e)
        if not hub_file.is_file():
            raise MetricsError(f"{name} weights {str(hub_file)!r} are missing and could not be downloaded ({reason}); "
                               f"copy {url} to that path, or pass metrics.feature_extractor_weights_path=/path/to/"
                               f"{hub_file.name}")
    return str(repo), str(hub_file)


class DinoV2Extractor(FeatureExtractorDinoV2):
    """torch-fidelity's DINOv2 extractor, loading code and weights from local files (dinov2_sources)."""

    def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
        FeatureExtractorBase.__init__(self, name, features_list)
        repo, weights = dinov2_sources(name, feature_extractor_weights_path)
        self.feature_extractor_internal_dtype = torch.float32
        self.model = torch.hub.load(repo, DINOV2[name], source="local", pretrained=False, trust_repo=True)
        self.model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        self.requires_grad_(False)
        self.eval()


for _name in DINOV2:  # replaces torch-fidelity's entry, which can only download
    FEATURE_EXTRACTORS_REGISTRY[_name] = DinoV2Extractor

FEATURE_LAYERS = {  # layer per metric; isc None: the extractor has no class logits, so no Inception Score
    "digits-cnn": dict(fid="penultimate", kid="penultimate", isc="logits_unbiased"),
    "inception-v3-compat": dict(fid="2048", kid="2048", isc="logits_unbiased"),
    **{name: dict(fid="dinov2", kid="dinov2", isc=None) for name in DINOV2},
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
            reason = _first_line(e)
    raise MetricsError(f"Inception weights {str(hub_file)!r} are missing and could not be downloaded ({reason}); "
                       f"copy {INCEPTION_URL} to that path (the torch hub cache, $TORCH_HOME/hub/checkpoints), or pass "
                       f"metrics.feature_extractor_weights_path=/path/to/{hub_file.name}")


def _tensor_digest(x: torch.Tensor) -> str:
    """Content digest of the reference images: two references that share a name but not their pixels (two folders,
    a partial CIFAR-10 copy) never share cached features."""
    h = hashlib.sha256(str((tuple(x.shape), str(x.dtype))).encode())
    h.update(x.contiguous().numpy().tobytes())
    return h.hexdigest()[:12]


def check_extractor(feature_extractor: str, weights_path: str | None, *images: tuple[str, torch.Tensor],
                    isc: bool = False) -> str | None:
    """Validate the extractor name, its weights (and code), the images' channels and, with isc, that it gives class
    logits; returns the weights path to use."""
    if feature_extractor not in FEATURE_LAYERS:
        raise MetricsError(f"unknown feature extractor {feature_extractor!r}; allowed: {', '.join(FEATURE_LAYERS)}")
    if isc and FEATURE_LAYERS[feature_extractor]["isc"] is None:
        raise MetricsError(f"metrics.isc=true needs class logits, which {feature_extractor} does not give; add "
                           "metrics.isc=false")
    if feature_extractor != "digits-cnn":  # the ImageNet-trained extractors take RGB images
        for what, x in images:
            if x.shape[1] != 3:
                raise MetricsError(f"{feature_extractor} needs RGB images but the {what} have {x.shape[1]} "
                                   f"channel(s); use a dataset of RGB images or the dataset's own extractor")
    if feature_extractor in DINOV2:
        weights_path = dinov2_sources(feature_extractor, weights_path)[1]
    elif feature_extractor == "inception-v3-compat":
        weights_path = inception_weights_path(weights_path)
    if weights_path is not None and not Path(weights_path).is_file():
        raise MetricsError(f"feature-extractor weights {str(weights_path)!r} not found")
    return weights_path


def featurize(images: torch.Tensor, feature_extractor: str, weights_path: str | None = None, batch_size: int = 500,
              device="cpu", verbose=False) -> dict[str, torch.Tensor]:
    """Features of uint8 images [N, C, H, W] by torch-fidelity's extractor: {"fid": [N, d] (the FID/KID layer),
    "isc": [N, classes] (the logits IS uses)}, float32 on the CPU. Call check_extractor first."""
    layers = FEATURE_LAYERS[feature_extractor]
    cuda = str(device).startswith("cuda")
    tf = torch_fidelity.utils
    try:  # a weights file of the wrong format is a one-line error, not a traceback
        fe = tf.create_feature_extractor(feature_extractor, sorted({layers["fid"], layers["isc"]} - {None}), cuda=cuda,
                                         feature_extractor_weights_path=weights_path, verbose=False)
    except RuntimeError as e:
        if "state_dict" not in str(e):
            raise
        raise MetricsError(f"feature-extractor weights {str(weights_path)!r} do not fit {feature_extractor} "
                           f"({_first_line(e)})") from None
    out = tf.get_featuresdict_from_dataset(TensorDataset(images), fe, batch_size, cuda, save_cpu_ram=True,
                                           verbose=verbose and feature_extractor != "digits-cnn")
    return {role: out[layers[role]].float() for role in ("fid", "isc") if layers[role] is not None}


def reference_features(reference: torch.Tensor, reference_name: str, feature_extractor: str,
                       weights_path: str | None = None, batch_size: int = 500, device="cpu",
                       cache_dir: str | Path | None = None, verbose=False) -> dict[str, torch.Tensor]:
    """featurize() of the reference images, cached once per protocol under cache_dir as
    `<reference_name>-<extractor>-<weights digest>-<pixels digest>-features.npz`."""
    tag = (_file_digest(weights_path) if weights_path else "default") + "-" + _tensor_digest(reference)
    path = Path(cache_dir or DEFAULT_CACHE) / f"{reference_name}-{feature_extractor}-{tag}-features.npz"
    if path.is_file():
        with np.load(path) as z:
            return {k: torch.from_numpy(z[k]) for k in z.files}
    feats = featurize(reference, feature_extractor, weights_path, batch_size, device, verbose)
    buf = io.BytesIO()
    np.savez(buf, **{k: v.numpy() for k, v in feats.items()})
    atomic_write_bytes(path, buf.getvalue())
    return feats


def fidelity_from_features(feats: dict, ref_feats: dict, fid=True, isc=True, kid=True, fid_infinity=False,
                           prc=False, device="cpu") -> dict:
    """The metrics of stored features against the reference's (torch-fidelity's result keys, plus FID_INF).
    ref_feats: the reference's features, or a from_features.GaussianRef of precomputed statistics
    (reference_statistics), against which only FID (and the samples' own IS) can be computed.

    FID/IS/KID by nfebench.metrics.from_features (torch-fidelity's definitions, subsets and seed; float64 on
    `device`); KID's subset size adapts to small sample counts: min(1000, N, N_ref). Precision/recall is
    torch-fidelity's own (Kynkaanniemi et al. 2019, k = 3) in the FID feature space.
    """
    from . import from_features as F

    if isinstance(ref_feats, F.GaussianRef):  # precomputed statistics (metrics.reference_stats): FID and IS only
        if kid or fid_infinity or prc:
            raise MetricsError("metrics.reference_stats gives FID (and IS) only: KID, FID_inf and precision/recall "
                               "need the reference images' features")
        out = {FID: F.frechet_to_reference(F.as_tensor(feats["fid"], device), ref_feats)[0]} if fid else {}
        if isc:
            out[IS_MEAN], out[IS_STD] = F.inception_score(feats["isc"], device=device)
        return {k: float(v) for k, v in out.items()}
    x, y = feats["fid"], ref_feats["fid"]
    out = {}
    if fid:
        out[FID] = F.fid(x, y, device)
    if isc:
        out[IS_MEAN], out[IS_STD] = F.inception_score(feats["isc"], device=device)
    if kid:
        out[KID_MEAN], out[KID_STD] = F.kid(x, y, subset_size=min(1000, x.shape[0], y.shape[0]), device=device)
    if fid_infinity:
        try:
            out[FID_INF] = F.fid_infinity(x, y, device=device)
        except ValueError as e:
            raise MetricsError(f"metrics.fid_infinity: {e}") from None
    if prc:
        res = prc_features_to_metric(x.to(device), y.to(device), prc_neighborhood=3, prc_batch_size=10000,
                                     verbose=False)
        out[PRECISION], out[RECALL] = res[PRECISION], res[RECALL]
    return {k: float(v) for k, v in out.items()}


def compute_fidelity(samples: torch.Tensor, reference: torch.Tensor, reference_name: str, feature_extractor: str,
                     weights_path: str | None = None, fid=True, isc=True, kid=True, batch_size: int = 500,
                     device="cpu", cache_dir: str | Path | None = None, verbose=True) -> dict:
    """FID/IS/KID of uint8 `samples` against uint8 `reference`: torch-fidelity's features, our arithmetic.

    The reference features are cached under cache_dir (reference_features).
    """
    weights_path = check_extractor(feature_extractor, weights_path, ("samples", samples),
                                   ("reference images", reference), isc=isc)
    ref = reference_features(reference, reference_name, feature_extractor, weights_path, batch_size, device,
                             cache_dir, verbose)
    feats = featurize(samples, feature_extractor, weights_path, batch_size, device, verbose)
    return fidelity_from_features(feats, ref, fid=fid, isc=isc, kid=kid, device=device)


# --- FID against precomputed reference statistics (metrics.reference_stats=FILE.npz) -----------------------------
FEATURE_DIMS = {"digits-cnn": 64, "inception-v3-compat": 2048, "dinov2-vit-l-14": 1024}  # the FID layer's width


def load_reference_stats(path, feature_extractor: str) -> tuple:
    """(mu [D], sigma [D, D], label) from an .npz with keys mu and sigma, as pytorch-fid, EDM and ADM publish them.
    label names the file and its content hash (the row's `reference`). Every problem is a one-line MetricsError."""
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


def reference_statistics(path, feature_extractor: str, device="cpu") -> tuple:
    """(GaussianRef, label) of a statistics file: the reference side of fidelity_from_features."""
    from . import from_features as F

    mu, sigma, label = load_reference_stats(path, feature_extractor)
    cov = torch.as_tensor(sigma, dtype=F.FLOAT, device=device)
    return F.GaussianRef(torch.as_tensor(mu, dtype=F.FLOAT, device=device), F.sqrt_psd(cov), torch.trace(cov)), label


def fid_against_stats(samples: torch.Tensor, stats_path, feature_extractor: str, weights_path: str | None = None,
                      isc=True, batch_size: int = 500, device="cpu", verbose=True) -> dict:
    """FID of uint8 samples against precomputed (mu, sigma) (Heusel et al. 2017, Eq. 6), and the samples' IS
    (which needs no reference). Returns {FID, IS_MEAN, IS_STD, "reference"}."""
    ref, label = reference_statistics(stats_path, feature_extractor, device)
    weights_path = check_extractor(feature_extractor, weights_path, ("samples", samples), isc=isc)
    feats = featurize(samples, feature_extractor, weights_path, batch_size, device, verbose)
    return {**fidelity_from_features(feats, ref, fid=True, isc=isc, kid=False, device=device), "reference": label}

"""ADM's evaluator's conventions (Dhariwal & Nichol 2021, openai/guided-diffusion evaluations/): sFID and the
reference batch files. docs/metrics.md has the conventions and how the torch Inception differs from ADM's graph.

sFID (Nash et al. 2021, "Generating images with sparse representations", sec. 4.1) as ADM computes it: the Frechet
distance of the first 7 channels of Inception's `mixed_6/conv` tensor, flattened over its 17 x 17 positions
(7 x 17 x 17 = 2023 dimensions). In the TF 2015-12-05 graph the mixed blocks are named mixed (torchvision's
Mixed_5b), mixed_1 (5c), mixed_2 (5d), mixed_3 (6a), mixed_4 (6b), mixed_5 (6c), mixed_6 (6d), ...; `mixed_6/conv`
is the 1x1 branch of Mixed_6d, after its batch norm and ReLU (the output of the node named `conv`). Here that is
torch-fidelity's port of the same graph and weights, `Mixed_6d.branch1x1`.

Reference batches: an .npz with `arr_0` (uint8 images [N, H, W, 3]) and, where precomputed, `mu`, `sigma` (pool_3,
2048-d) and `mu_s`, `sigma_s` (the 2023-d spatial features), as ADM's VIRTUAL_imagenet256_labeled.npz. As ADM's
evaluator does, the file's statistics are the reference of FID and sFID where present; its images are the reference
of precision/recall (and of FID / sFID where the statistics are absent, featurized here).
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import torch

from .fidelity import DEFAULT_CACHE, MetricsError, _file_digest, _tensor_digest

# extractor -> (module whose output is the spatial layer, channels kept): ADM's mixed_6/conv, first 7 channels
SPATIAL_LAYERS = {"inception-v3-compat": ("Mixed_6d.branch1x1", 7)}
SFID_DIMS = 7 * 17 * 17


def check_spatial(feature_extractor: str) -> None:
    if feature_extractor not in SPATIAL_LAYERS:
        raise MetricsError(f"metrics.sfid needs a feature extractor with a spatial layer; {feature_extractor} has none "
                           f"(allowed: {', '.join(SPATIAL_LAYERS)}: Inception's mixed_6/conv, as ADM's sFID)")


def spatial_features(images: torch.Tensor, feature_extractor: str, weights_path: str | None, batch_size: int = 500,
                     device="cpu") -> torch.Tensor:
    """[N, 2023] float32: the first 7 channels of the spatial layer (SPATIAL_LAYERS) of uint8 RGB images, flattened
    channel-major (channel, row, column), as ADM's `mixed_6/conv[..., :7]` reshaped (its NHWC order differs only by a
    permutation of the dimensions, which leaves the Frechet distance unchanged)."""
    import torch_fidelity.utils as tf

    check_spatial(feature_extractor)
    layer, channels = SPATIAL_LAYERS[feature_extractor]
    cuda = str(device).startswith("cuda")
    fe = tf.create_feature_extractor(feature_extractor, ["768"], cuda=cuda, feature_extractor_weights_path=weights_path,
                                     verbose=False)
    captured = []
    hook = fe.get_submodule(layer).register_forward_hook(
        lambda mod, inp, out: captured.append(out[:, :channels].flatten(1).float().cpu()))
    try:
        with torch.no_grad():
            for batch in images.split(batch_size):
                fe(batch.to("cuda" if cuda else "cpu"))
    finally:
        hook.remove()
    return torch.cat(captured)


def cached_spatial_features(images: torch.Tensor, name: str, feature_extractor: str, weights_path: str | None,
                            batch_size: int = 500, device="cpu", cache_dir=None) -> torch.Tensor:
    """spatial_features of reference images, cached as reference_features caches the FID layer."""
    from ..leaderboard import atomic_write_bytes

    tag = (_file_digest(weights_path) if weights_path else "default") + "-" + _tensor_digest(images)
    path = Path(cache_dir or DEFAULT_CACHE) / f"{name}-{feature_extractor}-{tag}-spatial.npz"
    if path.is_file():
        with np.load(path) as z:
            return torch.from_numpy(z["spatial"])
    feats = spatial_features(images, feature_extractor, weights_path, batch_size, device)
    buf = io.BytesIO()
    np.savez(buf, spatial=feats.numpy())
    atomic_write_bytes(path, buf.getvalue())
    return feats


# ---------------------------------------------------------------------------------------- reference batches


def load_reference_batch(path, image_size: tuple | None = None) -> dict:
    """An ADM reference batch: {"images": uint8 [N, 3, H, W] or None, "mu", "sigma", "mu_s", "sigma_s" (float64 or
    None), "label"}. image_size (H, W): the samples' resolution, which the images must have. Every problem is a
    one-line MetricsError naming the file and what is wrong."""
    p = Path(str(path)).expanduser()
    if not p.is_file():
        raise MetricsError(f"reference batch {str(p)!r} not found (metrics.reference_batch)")
    try:
        with np.load(p, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as e:
        raise MetricsError(f"reference batch {str(p)!r} is not a readable .npz ({type(e).__name__})") from None
    out = {"images": None, "label": f"adm:{p.name}@{_file_digest(p)}"}
    for mu, sigma, dims in (("mu", "sigma", 2048), ("mu_s", "sigma_s", SFID_DIMS)):
        m, s = arrays.get(mu), arrays.get(sigma)
        if (m is None) != (s is None) or (m is not None and (m.shape != (dims,) or s.shape != (dims, dims))):
            got = ", ".join(f"{k} {list(arrays[k].shape)}" for k in (mu, sigma) if k in arrays)
            raise MetricsError(f"reference batch {str(p)!r}: {mu} must be [{dims}] and {sigma} [{dims}, {dims}] "
                               f"together; got {got}")
        out[mu], out[sigma] = (None, None) if m is None else (m.astype(np.float64), s.astype(np.float64))
    x = arrays.get("arr_0")
    if x is not None:
        if x.dtype != np.uint8 or x.ndim != 4 or x.shape[-1] != 3:
            raise MetricsError(f"reference batch {str(p)!r}: arr_0 must be uint8 images [N, H, W, 3], got "
                               f"{x.dtype} {list(x.shape)}")
        if image_size is not None and tuple(x.shape[1:3]) != tuple(image_size):
            raise MetricsError(f"reference batch {str(p)!r} has {x.shape[1]}x{x.shape[2]} images but the samples are "
                               f"{image_size[0]}x{image_size[1]}; use the reference batch of the samples' resolution")
        out["images"] = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    if out["images"] is None and out["mu"] is None and out["mu_s"] is None:
        raise MetricsError(f"reference batch {str(p)!r} has neither images (arr_0) nor statistics (mu, sigma / mu_s, "
                           f"sigma_s); keys: {', '.join(sorted(arrays)) or 'none'}")
    return out


def statistics(feats) -> tuple[np.ndarray, np.ndarray]:
    """(mu, sigma) as ADM's evaluator computes them: np.mean(axis=0), np.cov(rowvar=False) (ddof = 1), float64."""
    x = np.asarray(feats, dtype=np.float64)
    return x.mean(0), np.cov(x, rowvar=False)


def write_reference_batch(path, images: torch.Tensor, feats=None, spatial=None) -> None:
    """An ADM-format reference batch: arr_0 (uint8 [N, H, W, 3]) and, given the features, mu/sigma and mu_s/sigma_s."""
    from ..leaderboard import atomic_write_bytes

    arrays = {"arr_0": images.permute(0, 2, 3, 1).contiguous().numpy()}
    if feats is not None:
        arrays["mu"], arrays["sigma"] = statistics(feats)
    if spatial is not None:
        arrays["mu_s"], arrays["sigma_s"] = statistics(spatial)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def gaussian(mu, sigma, device="cpu"):
    from . import from_features as F

    cov = torch.as_tensor(sigma, dtype=F.FLOAT, device=device)
    return F.GaussianRef(torch.as_tensor(mu, dtype=F.FLOAT, device=device), F.sqrt_psd(cov), torch.trace(cov))


def frechet(feats, ref, device="cpu") -> float:
    """Frechet distance of feature rows [N, d] to a GaussianRef or to reference rows [M, d]."""
    from . import from_features as F

    g = ref if isinstance(ref, F.GaussianRef) else F.GaussianRef.of(F.as_tensor(ref, device))
    return float(F.frechet_to_reference(F.as_tensor(feats, device), g)[0])


def digest(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]


def preflight(metrics: dict, image_size: tuple) -> None:
    """Fail before sampling: sfid with an extractor without a spatial layer; a bad reference batch (its images of
    another resolution than the samples' image_size); metrics the batch cannot give."""
    if metrics.get("sfid"):
        check_spatial(metrics.get("feature_extractor"))
    if metrics.get("reference_batch"):
        if metrics.get("reference_stats"):
            raise MetricsError("metrics.reference_batch and metrics.reference_stats are two references; set one")
        batch = load_reference_batch(metrics["reference_batch"], image_size)
        if batch["images"] is None and (metrics.get("prc") or metrics.get("fid_infinity")):
            raise MetricsError(f"reference batch {metrics['reference_batch']!r} has no images (arr_0): precision/"
                               "recall and FID_inf need them; set metrics.prc=false and metrics.fid_infinity=false")
        if batch["images"] is None and metrics.get("sfid") and batch["mu_s"] is None:
            raise MetricsError(f"reference batch {metrics['reference_batch']!r} has neither images nor mu_s/sigma_s: "
                               "sFID needs one; set metrics.sfid=false")
        if metrics.get("feature_extractor") != "inception-v3-compat":
            raise MetricsError(f"metrics.reference_batch holds Inception statistics and RGB images; feature extractor "
                               f"{metrics.get('feature_extractor')} cannot use it (metrics=adm or inception)")


def adm_metrics(samples: torch.Tensor, feats: dict, p, weights_path, progress=True) -> dict:
    """What ADM's conventions add to run.score's results: FID against a reference batch's own mu/sigma where it has
    them (torch-fidelity's FID key), and sFID (key "sfid") against its mu_s/sigma_s, else against the spatial
    features of its images (or of the dataset's train split)."""
    from ..data import load_split
    from .fidelity import FID

    m = p.metrics
    preflight(m, tuple(samples.shape[2:]))
    batch = load_reference_batch(m["reference_batch"], tuple(samples.shape[2:])) if m.get("reference_batch") else None
    out = {}
    if batch is not None and batch["mu"] is not None and m.get("fid"):
        out[FID] = frechet(feats["fid"], gaussian(batch["mu"], batch["sigma"], p.device), p.device)
    if m.get("sfid"):
        bs = m.get("batch_size", 500)
        spatial = spatial_features(samples, m["feature_extractor"], weights_path, bs, p.device)
        if batch is not None and batch["mu_s"] is not None:
            ref = gaussian(batch["mu_s"], batch["sigma_s"], p.device)
        elif batch is not None:
            ref = cached_spatial_features(batch["images"], batch["label"].replace(":", "-"), m["feature_extractor"],
                                          weights_path, bs, p.device)
        else:
            images = load_split(p.dataset["name"], "train", **p.dataset.get("options", {}))
            ref = cached_spatial_features(images, f"{p.dataset['name']}-train-{images.shape[0]}", m["feature_extractor"],
                                          weights_path, bs, p.device)
        out["sfid"] = frechet(spatial, ref, p.device)
    return out

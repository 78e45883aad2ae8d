"""Text-image metrics in a CLIP space: CLIP score and CMMD (docs/t2i.md).

CLIP score (Hessel et al. 2021, in torchmetrics' convention, torchmetrics.multimodal.CLIPScore): for each sample,
100 cos(E_I, E_C) between the CLIP image embedding of the sample and the text embedding of its caption; the run's
score is the mean over samples floored at 0, max(mean, 0), as CLIPScore.compute does. Images and captions go through
the CLIP model's own processor the way torchmetrics sends them (uint8 images; captions padded, token ids cut at the
text model's max_position_embeddings). The backbone is recorded (`clip_model`): ViT-L/14 by default (torchmetrics'
default); solver papers use open_clip ViT-g-14 x100 and the clip-score package ViT-B/32 without x100, and the three
do not compare.

CMMD (Jayasumana et al. 2024, Eq. 3 and google-research/cmmd): the squared MMD between the CLIP image embeddings
(L2-normalised) of the samples X and of a reference set Y with the Gaussian RBF kernel k(x, y) =
exp(-||x - y||^2 / (2 sigma^2)), sigma = 10, scaled by 1000, all pairs averaged (diagonals included, as the authors'
code does):  CMMD = 1000 (mean k(X, X) + mean k(Y, Y) - 2 mean k(X, Y)).
The paper embeds with ViT-L/14@336; here the run's clip_model is used for both metrics and recorded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .fidelity import MetricsError

CMMD_SIGMA, CMMD_SCALE = 10.0, 1000.0
DEFAULT_CLIP = "openai/clip-vit-large-patch14"


def _missing(name) -> MetricsError:
    return MetricsError(f"CLIP model {name!r} is neither a local directory nor in the Hugging Face cache; run "
                        f"`huggingface-cli download {name}` on a machine with internet (and copy the cache here), "
                        f"or pass metrics.clip_model=DIR (a CLIPModel saved with save_pretrained)")


def check_clip(m: dict) -> None:
    """Before sampling: the CLIP model is on this machine and CMMD has a reference (one-line errors)."""
    if not (m.get("clip_score") or m.get("cmmd")):
        return
    name = m.get("clip_model") or DEFAULT_CLIP
    local = Path(str(name)).expanduser()
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise MetricsError(f"metrics.clip_model {str(local)!r} has no config.json: not a CLIP model saved with "
                               f"save_pretrained")
    else:
        try:
            from huggingface_hub import snapshot_download

            snapshot_download(str(name), local_files_only=True)
        except Exception:
            raise _missing(name) from None
    ref = m.get("cmmd_reference")
    if m.get("cmmd") and not (ref and Path(str(ref)).expanduser().exists()):
        raise MetricsError(f"metrics.cmmd needs metrics.cmmd_reference, a folder of reference images or an .npz with "
                           f"their CLIP 'embeddings'; got {ref!r}")


def load_clip(name: str, device="cpu"):
    """(CLIPModel, CLIPProcessor) from a local directory in transformers' format or a hub id in the local cache."""
    from transformers import CLIPModel, CLIPProcessor

    local = Path(str(name)).expanduser()
    try:
        kw = {} if local.is_dir() else {"local_files_only": True}
        model = CLIPModel.from_pretrained(str(local) if local.is_dir() else name, **kw)
        processor = CLIPProcessor.from_pretrained(str(local) if local.is_dir() else name, **kw)
    except Exception as e:
        if local.is_dir():
            msg = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            raise MetricsError(f"cannot load the CLIP model in {str(local)!r}: {msg}") from None
        raise _missing(name) from None
    return model.to(device).eval().requires_grad_(False), processor


def _features(out) -> torch.Tensor:
    """transformers 4 returns the projected features; 5 a ModelOutput whose pooler_output holds them."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def image_embeddings(images: torch.Tensor, model, processor, batch_size: int = 64) -> torch.Tensor:
    """L2-normalised CLIP image embeddings [N, D] (float64) of uint8 images [N, 3, H, W] (or a list of [3, H, W])."""
    dev = next(model.parameters()).device
    out = []
    with torch.no_grad():
        for i in range(0, len(images), batch_size):
            px = processor(images=[im.cpu() for im in images[i:i + batch_size]], return_tensors="pt", padding=True)
            out.append(_features(model.get_image_features(px["pixel_values"].to(dev))).double().cpu())
    e = torch.cat(out)
    return e / e.norm(dim=-1, keepdim=True)


def text_embeddings(texts: list[str], model, processor, batch_size: int = 64) -> torch.Tensor:
    """L2-normalised CLIP text embeddings [N, D] (float64), tokenised as torchmetrics does."""
    dev = next(model.parameters()).device
    limit = model.config.text_config.max_position_embeddings
    out = []
    with torch.no_grad():
        for i in range(0, len(texts), batch_size):
            tok = processor(text=list(texts[i:i + batch_size]), return_tensors="pt", padding=True)
            ids, mask = tok["input_ids"][..., :limit], tok["attention_mask"][..., :limit]
            out.append(_features(model.get_text_features(ids.to(dev), mask.to(dev))).double().cpu())
    e = torch.cat(out)
    return e / e.norm(dim=-1, keepdim=True)


def clip_score(per_sample: torch.Tensor) -> float:
    """The run's CLIP score from the per-sample 100 cos values: max(mean, 0)."""
    return max(float(per_sample.double().mean()), 0.0)


def cmmd(x: torch.Tensor, y: torch.Tensor, sigma: float = CMMD_SIGMA, scale: float = CMMD_SCALE) -> float:
    """CMMD between embeddings x [N, D] and y [M, D] (module docstring), in float64."""
    x, y = x.double(), y.double()
    gamma = 1.0 / (2.0 * sigma**2)

    def k(a, b):
        d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
        return torch.exp(-gamma * d2).mean()

    return float(scale * (k(x, x) + k(y, y) - 2.0 * k(x, y)))


def reference_embeddings(ref: str, model, processor, batch_size: int) -> torch.Tensor:
    """CMMD's reference side: an .npz with `embeddings` [M, D] (computed with the same CLIP) or a folder of images."""
    path = Path(str(ref)).expanduser()
    if path.is_file() and path.suffix == ".npz":
        with np.load(path) as z:
            if "embeddings" not in z:
                raise MetricsError(f"metrics.cmmd_reference {str(path)!r} has no 'embeddings' array")
            e = torch.from_numpy(z["embeddings"]).double()
        return e / e.norm(dim=-1, keepdim=True)
    if path.is_dir():
        from PIL import Image

        from ..data.folder import EXTENSIONS

        files = sorted(f for f in path.rglob("*") if f.suffix.lower() in EXTENSIONS)
        if not files:
            raise MetricsError(f"metrics.cmmd_reference {str(path)!r} has no images ({', '.join(EXTENSIONS)})")
        imgs = [torch.from_numpy(np.asarray(Image.open(f).convert("RGB"), dtype=np.uint8).transpose(2, 0, 1).copy())
                for f in files]
        return image_embeddings(imgs, model, processor, batch_size)
    raise MetricsError(f"metrics.cmmd_reference {str(ref)!r} is neither a folder of images nor an .npz with "
                       f"'embeddings'")


def clip_metrics(samples: torch.Tensor, prompts, m: dict, device, path: Path | None = None,
                 progress: bool = True, seeds=None) -> dict:
    """The row's clip_score / cmmd / clip_model for uint8 samples [N, 3, H, W] and their captions; per-sample
    values saved at path (clip.npz: seeds, clip_score [N], image_embeddings [N, D], and with CMMD the reference's
    reference_embeddings [M, D]) for nfebench.compare's paired intervals."""
    want_score, want_cmmd = bool(m.get("clip_score")), bool(m.get("cmmd"))
    if want_score and prompts is None:
        raise MetricsError("metrics.clip_score needs a caption per sample: a text-to-image model (model=pipeline)")
    if want_cmmd and not m.get("cmmd_reference"):
        raise MetricsError("metrics.cmmd needs metrics.cmmd_reference: a folder of reference images or an .npz "
                           "with their CLIP 'embeddings'")
    name = m.get("clip_model") or DEFAULT_CLIP
    model, processor = load_clip(name, device)
    bs = int(m.get("batch_size") or 64)
    img = image_embeddings(samples, model, processor, bs)
    row, arrays = {"clip_model": str(name)}, {"image_embeddings": img.float().numpy()}
    if seeds is not None:
        arrays["seeds"] = np.asarray(seeds, dtype=np.uint32)
    if want_score:
        per = 100.0 * (img * text_embeddings(list(prompts), model, processor, bs)).sum(-1)
        row["clip_score"], arrays["clip_score"] = clip_score(per), per.numpy()
    if want_cmmd:
        ref = reference_embeddings(m["cmmd_reference"], model, processor, bs)
        row["cmmd"], arrays["reference_embeddings"] = cmmd(img, ref), ref.float().numpy()
    if path is not None:
        from ..storage import save_npz as _save_npz

        _save_npz(path, compress=False, **arrays)
    return row

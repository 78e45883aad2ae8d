"""Covariance heads for SN-DPM and NPR-DPM (Bao, Li, Sun, Zhu, Zhang 2022, ICML, "Estimating the optimal covariance
with imperfect mean in diffusion probabilistic models", arXiv 2206.07309).

The optimal diagonal covariance of the reverse step s -> t (Sec. 3, with the pretrained, imperfect mean eps_hat) needs
one more moment per pixel given x_s. Two heads estimate it (Sec. 3.1 and 3.2):

    sn  : h(x_s) ~ E[eps^2 | x_s]                   trained with || h(x_s) - eps^2 ||^2           ("squared noise")
    npr : h(x_s) ~ E[(eps - eps_hat(x_s))^2 | x_s]  trained with || h(x_s) - (eps - eps_hat)^2 ||^2 ("noise prediction
                                                                                                      residual")

both on x_s = a_s x_0 + s_s eps, s ~ U{0..T-1}, with the noise-prediction network frozen (as the paper does). A head
here is a small convolutional network on the UNet's last feature map (the input of its `conv_out`, read by a forward
hook), so it shares the network's forward pass: a sampler that uses it still spends one evaluation per step.

`attach_heads(model, kind)` returns an EpsModel whose fn returns the pair (eps, h(x)); the evaluation counter
(samplers.common.CountedEps) hands eps to the sampler and keeps h as the evaluation's auxiliary output. On the
exact-score oracle the two moments are closed-form (GaussianMixtureVP.eps_moments), which gives the exact-covariance
limit without training.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
from torch import nn

from .models.base import EpsModel, ModelError

KINDS = ("sn", "npr")
HEADS_DIR = "cov_heads"  # beside the checkpoint: <model dir>/cov_heads/{config.json, heads.safetensors, README.md}
WEIGHTS = "heads.safetensors"


class CovarianceHead(nn.Module):
    """Three 3x3 convolutions with SiLU on the UNet's last feature map -> one moment per pixel."""

    def __init__(self, in_channels: int, out_channels: int, hidden: int = 64):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(in_channels, hidden, 3, padding=1), nn.SiLU(),
                                 nn.Conv2d(hidden, hidden, 3, padding=1), nn.SiLU(),
                                 nn.Conv2d(hidden, out_channels, 3, padding=1))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features)


def head_targets(eps: torch.Tensor, eps_hat: torch.Tensor) -> dict:
    """The regression targets of the two heads (Bao et al. 2022, Eq. 9 and Eq. 11)."""
    return {"sn": eps**2, "npr": (eps - eps_hat) ** 2}


class FeatureTap:
    """Records the input of `unet.conv_out` (the last feature map) at every forward of the UNet."""

    def __init__(self, unet: nn.Module):
        if not hasattr(unet, "conv_out"):
            raise ModelError(f"covariance heads need a UNet with a conv_out layer; got {type(unet).__name__}")
        self.features = None
        self.in_channels = unet.conv_out.in_channels
        self.handle = unet.conv_out.register_forward_pre_hook(self._keep)

    def _keep(self, module, inputs):
        self.features = inputs[0]

    def take(self) -> torch.Tensor:
        f, self.features = self.features, None
        if f is None:
            raise RuntimeError("the UNet ran no forward pass since the last head evaluation")
        return f


def new_heads(in_channels: int, out_channels: int, hidden: int = 64) -> nn.ModuleDict:
    return nn.ModuleDict({k: CovarianceHead(in_channels, out_channels, hidden) for k in KINDS})


def save_heads(heads: nn.ModuleDict, out: Path, config: dict) -> None:
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in heads.state_dict().items()}, str(out / WEIGHTS))
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")


def load_heads(path) -> tuple[nn.ModuleDict, dict]:
    """(heads, config) from a directory written by save_heads (`python -m nfebench.train cov_heads`)."""
    from safetensors.torch import load_file

    d = Path(path)
    if not (d / "config.json").exists() or not (d / WEIGHTS).exists():
        raise ModelError(f"no covariance heads in {str(d)!r} (config.json and {WEIGHTS}); train them with "
                         f"`python -m nfebench.train cov_heads --model MODEL_DIR --out MODEL_DIR/{HEADS_DIR}`")
    cfg = json.loads((d / "config.json").read_text())
    heads = new_heads(cfg["in_channels"], cfg["out_channels"], cfg["hidden"])
    heads.load_state_dict(load_file(str(d / WEIGHTS)))
    return heads.eval().requires_grad_(False), cfg


def attach_heads(model: EpsModel, kind: str, path=None) -> EpsModel:
    """The model with covariance head `kind` (sn | npr): its fn returns (eps, moment), both shaped as x.

    A network model reads the heads from `path` (default: cov_heads/ beside its checkpoint); they must have been
    trained on these very weights. The oracle (model.gmm) uses its exact moments instead.
    """
    if kind not in KINDS:
        raise ModelError(f"unknown covariance head {kind!r}; allowed: {', '.join(KINDS)}")
    if hasattr(model, "gmm"):
        gmm = model.gmm

        def exact(x, t):
            e1, e2 = gmm.eps_moments(x, t)
            moment = e2 if kind == "sn" else e2 - e1**2  # the oracle's eps_hat is exact: the residual is Var[eps|x]
            return e1.to(dtype=x.dtype, device=x.device), moment.to(dtype=x.dtype, device=x.device)

        return dataclasses.replace(model, fn=exact, calls=0)
    if model.module is None or model.source is None:
        raise ModelError(f"covariance heads need a network loaded from a checkpoint; {model.name!r} has none")
    from .analytic_dpm import weights_digest

    heads, cfg = load_heads(Path(model.source) / HEADS_DIR if path is None else path)
    if cfg.get("base_digest") != weights_digest(model.source):
        raise ModelError(f"the covariance heads in {str(path or Path(model.source) / HEADS_DIR)!r} were trained on "
                         f"other weights than {model.source!r}; retrain them (python -m nfebench.train cov_heads)")
    head = heads[kind].to(device=model.device, dtype=model.dtype)
    tap, base_fn = FeatureTap(model.module), model.fn

    def with_head(x, t):
        e = base_fn(x, t)
        return e, head(tap.take()).to(e.dtype)

    return dataclasses.replace(model, fn=with_head, calls=0)

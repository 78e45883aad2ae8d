"""Train the small embedded models shipped in checkpoints/.

    python -m nfebench.train ddpm        --steps 8000 --out checkpoints/digits-ddpm
    python -m nfebench.train ddpm        --num-classes 10 --label-dropout 0.15 --out checkpoints/digits-cond
    python -m nfebench.train flow        --steps 2000 --threads 1 --out checkpoints/digits-flow
    python -m nfebench.train classifier  --steps 3000  --out checkpoints/digits-cnn
    python -m nfebench.train cd          --steps 6000 --batch-size 64 --threads 1 --max-minutes 28 \
                                         --model checkpoints/digits-ddpm --out checkpoints/digits-cm
    python -m nfebench.train cov_heads   --steps 3000 --threads 1 --model checkpoints/digits-ddpm \
                                         --out checkpoints/digits-ddpm/cov_heads

`ddpm`: an eps-prediction DDPM (Ho et al. 2020, L_simple) with linear betas 1e-4..0.02, T=1000, as a diffusers
UNet2DModel, on the digits train split; EMA weights are saved with save_pretrained (+ scheduler_config.json).
With `--num-classes K` it is class-conditional for classifier-free guidance (Ho & Salimans 2022, Sec. 3.2, Alg. 1):
the UNet has K + 1 class embeddings, the last one the null label, and each training label is replaced by the null
label with probability `--label-dropout`, so one network learns eps(x, n, y) and eps(x, n, null).
`flow`: a flow-matching (rectified-flow) model with the same UNet: x_s = (1 - s) x_0 + s eps, s ~ U(0, 1), the network
called at tau = 1000 s and trained to predict v = eps - x_0 by MSE (Lipman et al. 2023, Eq. 23 with sigma_min = 0;
Liu et al. 2023, Eq. 1), saved with a FlowMatchEulerDiscreteScheduler config (shift 1): nfebench loads it as
flow_prediction on Flow(shift=1, time_scale=1000), as diffusers' flow pipelines call their networks.
`classifier`: the digits CNN whose penultimate features are nfebench's digits FID/KID features and whose logits are its
IS logits (see nfebench.metrics.digits_cnn); reports held-out accuracy on the test split.
`cov_heads`: SN-DPM's and NPR-DPM's covariance heads (nfebench.cov_heads) on the frozen network of --model, on the
digits train split; reports each head's held-out loss on the test split.
`cd`: consistency distillation of --model (Song et al. 2023, Alg. 2; train_cd) into a student with LCM's boundary
scalings (lcm_boundary), sampled by `sampler=consistency` (model=digits_cm).
All write a model card (README.md) beside the weights: command, steps, final loss, wall time, evaluation.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .data import load_split
from .images import to_model_range
from .schedule import linear_betas


def digits_unet_config() -> dict:
    """The embedded model's architecture: ~1.05 M parameters (4 MB), 8x8 -> 4x4 -> 2x2, no attention.

    Chosen for CPU speed: attention layers cost 2x per step on 2 cores and bought nothing visible on 8x8 digits.
    """
    return dict(
        sample_size=8, in_channels=1, out_channels=1, layers_per_block=1,
        block_out_channels=(32, 64, 64),
        down_block_types=("DownBlock2D", "DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D", "UpBlock2D"),
        norm_num_groups=8, add_attention=False,
    )


def ddpm_loss(model, x0: torch.Tensor, alphas_cumprod: torch.Tensor, generator=None,
              weight_cap: float = 1.0, class_labels: torch.Tensor | None = None) -> torch.Tensor:
    """L_simple (Ho et al. 2020, Eq. 14): || eps - eps_theta(sqrt(ab) x0 + sqrt(1-ab) eps, n) ||^2, n ~ U{0..T-1}.

    With weight_cap W > 1, each sample's eps-MSE is weighted by w = clip(sigma^2 / alpha^2, 1, W) and the batch loss is
    sum(w * mse) / sum(w). sigma^2/alpha^2 * eps-MSE is the x0-MSE, so this is L_simple at low noise and a truncated
    x0-loss at high noise, where L_simple gives the network almost no gradient (docs/dpm_fast_digits.md).
    class_labels (one per sample) are passed to a class-conditional model as its `class_labels`.
    """
    n = torch.randint(0, alphas_cumprod.numel(), (x0.shape[0],), generator=generator)
    eps = torch.randn(x0.shape, generator=generator)
    ab = alphas_cumprod[n].view(-1, 1, 1, 1)
    x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * eps
    eps_hat = (model(x_t, n) if class_labels is None else model(x_t, n, class_labels=class_labels)).sample
    if weight_cap <= 1:
        return F.mse_loss(eps_hat, eps)
    mse = (eps_hat - eps).pow(2).mean((1, 2, 3))
    w = high_noise_weights(ab.view(-1), weight_cap)
    return (w * mse).sum() / w.sum()


def high_noise_weights(alphas_cumprod_n: torch.Tensor, weight_cap: float) -> torch.Tensor:
    """clip(sigma^2 / alpha^2, 1, weight_cap) per sample: the eps-MSE -> truncated x0-MSE weights of ddpm_loss."""
    return ((1 - alphas_cumprod_n) / alphas_cumprod_n).clamp(1, weight_cap)


def fit(model, ema, opt, sched, steps: int, ema_decay: float, log_every: int, desc: str, batch_loss):
    """The training loop of the embedded diffusion and flow models: batch_loss() -> the loss of a fresh batch; Adam step
    with gradient-norm clipping at 1, the LR schedule, and an EMA with warm-up d = min(ema_decay, (1 + k) / (10 + k)).
    Returns (per-step losses, wall seconds)."""
    from tqdm import tqdm

    losses, t0 = [], time.time()
    bar = tqdm(range(steps), desc=desc, mininterval=2)
    for step in bar:
        loss = batch_loss()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        with torch.no_grad():
            d = min(ema_decay, (1 + step) / (10 + step))
            for pe, pm in zip(ema.parameters(), model.parameters()):
                pe.lerp_(pm, 1 - d)
        losses.append(loss.item())
        if (step + 1) % log_every == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-log_every:]):.4f}")
    wall = time.time() - t0
    return losses, wall


def train_ddpm(steps: int, batch_size: int, lr: float, ema_decay: float, seed: int, out: Path, log_every: int = 500,
               weight_cap: float = 1.0, lr_schedule: str = "constant", dropout: float = 0.0,
               num_classes: int | None = None, label_dropout: float = 0.0):
    from diffusers import DDPMScheduler, UNet2DModel

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    images, labels = load_split("digits", "train", with_labels=True)
    data = to_model_range(images)
    betas = linear_betas(1000, 1e-4, 0.02)
    alphas_cumprod = torch.tensor(np.cumprod(1 - betas), dtype=torch.float32)
    conditional = {} if num_classes is None else dict(num_class_embeds=num_classes + 1)  # the last one: null label
    model = UNet2DModel(**digits_unet_config(), dropout=dropout, **conditional)
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    opt = torch.optim.Adam(model.parameters(), lr=lr)

    def lr_factor(s: int) -> float:  # 500 warm-up steps, then constant or cosine decay to 0
        decay = 0.5 * (1 + np.cos(np.pi * s / steps)) if lr_schedule == "cosine" else 1.0
        return min(1.0, (s + 1) / 500) * decay

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    def batch_loss():
        idx = torch.randint(0, data.shape[0], (batch_size,), generator=gen)
        y = None if num_classes is None else drop_labels(labels[idx], num_classes, label_dropout, gen)
        return ddpm_loss(model, data[idx], alphas_cumprod, gen, weight_cap, y)

    losses, wall = fit(model, ema, opt, sched, steps, ema_decay, log_every, "train ddpm", batch_loss)
    out.mkdir(parents=True, exist_ok=True)
    ema.save_pretrained(out)
    DDPMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
                  prediction_type="epsilon").save_pretrained(out)
    # held-out L_simple of the EMA model on the test split (fixed noise), as a sanity number for the card
    test, test_labels = load_split("digits", "test", with_labels=True)
    test, test_labels = to_model_range(test), (None if num_classes is None else test_labels)
    with torch.no_grad():
        g = torch.Generator().manual_seed(1234)
        test_loss = float(np.mean([ddpm_loss(ema, test, alphas_cumprod, g, class_labels=test_labels).item()
                                   for _ in range(20)]))
    n_params = sum(p.numel() for p in ema.parameters())
    stats = dict(steps=steps, batch_size=batch_size, lr=lr, lr_schedule=lr_schedule, ema_decay=ema_decay,
                 weight_cap=weight_cap, dropout=dropout, num_classes=num_classes, label_dropout=label_dropout, seed=seed,
                 final_train_loss=float(np.mean(losses[-1000:])), test_loss_ema=test_loss,
                 wall_seconds=round(wall, 1), parameters=n_params, torch=torch.__version__)
    (out / "training_stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    return stats


def flow_loss(model, x0: torch.Tensor, generator=None) -> torch.Tensor:
    """The conditional flow-matching loss: || (eps - x_0) - v_theta((1 - s) x_0 + s eps, 1000 s) ||^2, s ~ U(0, 1)."""
    s = torch.rand((x0.shape[0],), generator=generator)
    eps = torch.randn(x0.shape, generator=generator)
    sv = s.view(-1, 1, 1, 1)
    x_s = (1 - sv) * x0 + sv * eps
    return F.mse_loss(model(x_s, 1000.0 * s).sample, eps - x0)


def train_flow(steps: int, batch_size: int, lr: float, ema_decay: float, seed: int, out: Path, log_every: int = 500):
    """The flow-matching twin of train_ddpm: same data, UNet, optimiser, warm-up, clipping and EMA (module docstring)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, UNet2DModel

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    data = to_model_range(load_split("digits", "train"))
    model = UNet2DModel(**digits_unet_config())
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 500))
    def batch_loss():
        idx = torch.randint(0, data.shape[0], (batch_size,), generator=gen)
        return flow_loss(model, data[idx], gen)

    losses, wall = fit(model, ema, opt, sched, steps, ema_decay, log_every, "train flow", batch_loss)
    out.mkdir(parents=True, exist_ok=True)
    ema.save_pretrained(out)
    FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0).save_pretrained(out)
    test = to_model_range(load_split("digits", "test"))
    with torch.no_grad():
        g = torch.Generator().manual_seed(1234)
        test_loss = float(np.mean([flow_loss(ema, test, g).item() for _ in range(20)]))
    stats = dict(steps=steps, batch_size=batch_size, lr=lr, ema_decay=ema_decay, seed=seed,
                 final_train_loss=float(np.mean(losses[-1000:])), test_loss_ema=test_loss,
                 wall_seconds=round(wall, 1), parameters=sum(p.numel() for p in ema.parameters()),
                 torch=torch.__version__)
    (out / "training_stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    return stats


def drop_labels(labels: torch.Tensor, num_classes: int, p: float, generator=None) -> torch.Tensor:
    """Classifier-free guidance's label dropout (Ho & Salimans 2022, Alg. 1): each label -> null (= num_classes) w.p. p."""
    drop = torch.rand(labels.shape, generator=generator) < p
    return torch.where(drop, torch.full_like(labels, num_classes), labels)


def train_classifier(steps: int, batch_size: int, lr: float, seed: int, out: Path):
    from tqdm import tqdm

    from .metrics.digits_cnn import DigitsCNN

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    x, y = load_split("digits", "train", with_labels=True)
    xt, yt = load_split("digits", "test", with_labels=True)
    net = DigitsCNN()
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    t0, losses = time.time(), []
    for _ in tqdm(range(steps), desc="train classifier", mininterval=2):
        idx = torch.randint(0, x.shape[0], (batch_size,), generator=gen)
        xb = x[idx]
        # augmentation: random 1-pixel shifts, so features are robust to the small misplacements samples show
        sh = torch.randint(-1, 2, (2,), generator=gen).tolist()
        xb = torch.roll(xb, shifts=sh, dims=(2, 3))
        loss = F.cross_entropy(net.logits(xb), y[idx], label_smoothing=0.05)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    net.eval()
    with torch.no_grad():
        acc = (net.logits(xt).argmax(1) == yt).float().mean().item()
        train_acc = (net.logits(x).argmax(1) == y).float().mean().item()
    out.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), out / "digits_cnn.pt")
    stats = dict(steps=steps, batch_size=batch_size, lr=lr, seed=seed, final_train_loss=float(np.mean(losses[-200:])),
                 test_accuracy=round(acc, 4), train_accuracy=round(train_acc, 4), wall_seconds=round(time.time() - t0, 1),
                 parameters=sum(p.numel() for p in net.parameters()), torch=torch.__version__)
    (out / "training_stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    return stats


def cov_heads_loss(unet, tap, heads, x0: torch.Tensor, alphas_cumprod: torch.Tensor, generator=None) -> dict:
    """Per-head regression losses (Bao et al. 2022, Eq. 9 and 11) at n ~ U{0..T-1}; the network is frozen."""
    from .cov_heads import head_targets

    n = torch.randint(0, alphas_cumprod.numel(), (x0.shape[0],), generator=generator)
    eps = torch.randn(x0.shape, generator=generator)
    ab = alphas_cumprod[n].view(-1, 1, 1, 1)
    with torch.no_grad():
        eps_hat = unet(ab.sqrt() * x0 + (1 - ab).sqrt() * eps, n).sample
        features = tap.take()
    targets = head_targets(eps, eps_hat)
    return {k: F.mse_loss(heads[k](features), targets[k]) for k in heads}


def train_cov_heads(model_dir: Path, steps: int, batch_size: int, lr: float, seed: int, out: Path,
                    log_every: int = 500):
    from diffusers import UNet2DModel
    from tqdm import tqdm

    from .analytic_dpm import weights_digest
    from .cov_heads import FeatureTap, new_heads, save_heads
    from .models.diffusers_unet import betas_from_scheduler_config

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    unet = UNet2DModel.from_pretrained(model_dir).eval().requires_grad_(False)
    betas = betas_from_scheduler_config(json.loads((model_dir / "scheduler_config.json").read_text()))
    alphas_cumprod = torch.tensor(np.cumprod(1 - betas), dtype=torch.float32)
    tap = FeatureTap(unet)
    hidden = 64
    heads = new_heads(tap.in_channels, unet.config.out_channels, hidden)
    opt = torch.optim.Adam(heads.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 200)
                                              * 0.5 * (1 + np.cos(np.pi * s / steps)))
    data = to_model_range(load_split("digits", "train"))
    losses, t0 = {k: [] for k in heads}, time.time()
    bar = tqdm(range(steps), desc="train cov_heads", mininterval=2)
    for step in bar:
        idx = torch.randint(0, data.shape[0], (batch_size,), generator=gen)
        parts = cov_heads_loss(unet, tap, heads, data[idx], alphas_cumprod, gen)
        opt.zero_grad(set_to_none=True)
        sum(parts.values()).backward()
        opt.step()
        sched.step()
        for k, v in parts.items():
            losses[k].append(v.item())
        if (step + 1) % log_every == 0:
            bar.set_postfix({k: f"{np.mean(v[-log_every:]):.4f}" for k, v in losses.items()})
    wall = time.time() - t0
    heads.eval()
    test = to_model_range(load_split("digits", "test"))
    with torch.no_grad():  # held-out losses on the test split, fixed noise and timesteps
        g = torch.Generator().manual_seed(1234)
        held = [cov_heads_loss(unet, tap, heads, test, alphas_cumprod, g) for _ in range(20)]
    config = dict(in_channels=tap.in_channels, out_channels=unet.config.out_channels, hidden=hidden,
                  kinds=list(heads), base_digest=weights_digest(model_dir), feature_layer="conv_out input")
    save_heads(heads, out, config)
    stats = dict(steps=steps, batch_size=batch_size, lr=lr, lr_schedule="200 warm-up, cosine", seed=seed,
                 final_train_loss={k: float(np.mean(v[-500:])) for k, v in losses.items()},
                 test_loss={k: float(np.mean([h[k].item() for h in held])) for k in heads},
                 wall_seconds=round(wall, 1), parameters=sum(p.numel() for p in heads.parameters()),
                 torch=torch.__version__, base_model=str(model_dir))
    (out / "training_stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    return stats


def lcm_boundary(tau: torch.Tensor, sigma_data: float = 0.5, timestep_scaling: float = 10.0):
    """LCM's boundary-condition scalings on a discrete schedule (Luo et al. 2023; diffusers LCMScheduler's
    get_scalings_for_boundary_condition_discrete): with s = timestep_scaling * tau, c_skip = sd^2 / (s^2 + sd^2),
    c_out = s / sqrt(s^2 + sd^2), so f(x, 0) = x exactly (the consistency models' boundary condition)."""
    s = tau.double() * timestep_scaling
    return sigma_data**2 / (s**2 + sigma_data**2), s / (s**2 + sigma_data**2).sqrt()


def consistency_fn(unet, x: torch.Tensor, n: torch.Tensor, alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """f(x, n) = c_skip(n) x + c_out(n) x0_hat(x, n), x0_hat the eps-network's (x - sigma eps) / alpha."""
    ab = alphas_cumprod[n].view(-1, 1, 1, 1)
    x0 = (x - (1 - ab).sqrt() * unet(x, n).sample) / ab.sqrt()
    c_skip, c_out = (c.float().view(-1, 1, 1, 1) for c in lcm_boundary(n))
    return c_skip * x + c_out * x0


def cd_levels(num_levels: int, T: int = 1000) -> torch.Tensor:
    """The distillation's discretisation of the teacher's time: 0 (the boundary) and num_levels evenly spaced
    integer timesteps ending at T - 1 (with 50 levels: 0, 19, 39, ..., 999, LCM's skipping-step grid of k = 20)."""
    step = T // num_levels
    return torch.tensor([0] + [step * (i + 1) - 1 for i in range(num_levels)], dtype=torch.long)


def cd_loss(student, target, teacher, x0: torch.Tensor, alphas_cumprod: torch.Tensor, levels: torch.Tensor,
            generator=None) -> torch.Tensor:
    """Consistency distillation (Song et al. 2023, Alg. 2) with a DDIM step of the teacher as the ODE solver and the
    pseudo-Huber distance (Song & Dhariwal 2023, iCT): n ~ U{0..N-1}, x_{n+1} = alpha x0 + sigma z, x_n-hat = the
    teacher's DDIM step from t_{n+1} to t_n, loss d(f_theta(x_{n+1}, t_{n+1}), f_target(x_n-hat, t_n))."""
    i = torch.randint(0, levels.numel() - 1, (x0.shape[0],), generator=generator)
    t_hi, t_lo = levels[i + 1], levels[i]
    ab_hi, ab_lo = (alphas_cumprod[t].view(-1, 1, 1, 1) for t in (t_hi, t_lo))
    x_hi = ab_hi.sqrt() * x0 + (1 - ab_hi).sqrt() * torch.randn(x0.shape, generator=generator)
    with torch.no_grad():
        eps = teacher(x_hi, t_hi).sample
        x0_teacher = (x_hi - (1 - ab_hi).sqrt() * eps) / ab_hi.sqrt()
        x_lo = ab_lo.sqrt() * x0_teacher + (1 - ab_lo).sqrt() * eps  # DDIM (Song et al. 2021, Eq. 12, eta = 0)
        y = consistency_fn(target, x_lo, t_lo, alphas_cumprod)
    d = (consistency_fn(student, x_hi, t_hi, alphas_cumprod) - y).pow(2).flatten(1).sum(1)
    c = 0.00054 * x0[0].numel() ** 0.5
    return ((d + c**2).sqrt() - c).mean()


def train_cd(teacher_dir: Path, steps: int, batch_size: int, lr: float, seed: int, out: Path, num_levels: int = 50,
             target_decay: float = 0.95, ema_decay: float = 0.999, max_seconds: float | None = None,
             log_every: int = 100):
    """Distil the teacher into a consistency model (cd_loss); the student starts from the teacher's weights."""
    from diffusers import UNet2DModel
    from tqdm import tqdm

    from .models.diffusers_unet import betas_from_scheduler_config

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    teacher = UNet2DModel.from_pretrained(teacher_dir).eval().requires_grad_(False)
    scheduler_config = json.loads((teacher_dir / "scheduler_config.json").read_text())
    betas = betas_from_scheduler_config(scheduler_config)
    alphas_cumprod = torch.tensor(np.cumprod(1 - betas), dtype=torch.float32)
    levels = cd_levels(num_levels, betas.size)
    student = copy.deepcopy(teacher).train().requires_grad_(True)
    target = copy.deepcopy(teacher)
    ema = copy.deepcopy(teacher)
    opt = torch.optim.Adam(student.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 200))
    data = to_model_range(load_split("digits", "train"))
    losses, t0, done = [], time.time(), 0
    bar = tqdm(range(steps), desc="train cd", mininterval=5)
    for step in bar:
        idx = torch.randint(0, data.shape[0], (batch_size,), generator=gen)
        loss = cd_loss(student, target, teacher, data[idx], alphas_cumprod, levels, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        opt.step()
        sched.step()
        with torch.no_grad():
            d = min(ema_decay, (1 + step) / (10 + step))
            for pt, pe, ps in zip(target.parameters(), ema.parameters(), student.parameters()):
                pt.lerp_(ps, 1 - target_decay)
                pe.lerp_(ps, 1 - d)
        losses.append(loss.item())
        done = step + 1
        if done % log_every == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-log_every:]):.4f}")
        if max_seconds is not None and time.time() - t0 > max_seconds:
            break
    wall = time.time() - t0
    out.mkdir(parents=True, exist_ok=True)
    ema.save_pretrained(out)
    (out / "scheduler_config.json").write_text(json.dumps(scheduler_config, indent=2) + "\n")
    test = to_model_range(load_split("digits", "test"))
    with torch.no_grad():  # held-out CD loss of the EMA weights (target = EMA too), fixed noise
        g = torch.Generator().manual_seed(1234)
        test_loss = float(np.mean([cd_loss(ema, ema, teacher, test, alphas_cumprod, levels, g).item()
                                   for _ in range(10)]))
    stats = dict(method="consistency distillation (Song et al. 2023, Alg. 2), DDIM teacher step, pseudo-Huber",
                 teacher=str(teacher_dir), steps=done, steps_requested=steps, batch_size=batch_size, lr=lr, seed=seed,
                 num_levels=num_levels, target_decay=target_decay, ema_decay=ema_decay,
                 boundary=dict(kind="lcm", sigma_data=0.5, timestep_scaling=10.0),
                 final_train_loss=float(np.mean(losses[-200:])), test_loss_ema=test_loss,
                 wall_seconds=round(wall, 1), threads=torch.get_num_threads(),
                 parameters=sum(p.numel() for p in ema.parameters()), torch=torch.__version__)
    (out / "training_stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    return stats


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m nfebench.train", description=__doc__.split("\n\n")[0])
    p.add_argument("what", choices=["ddpm", "flow", "classifier", "cov_heads", "cd"])
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--ema-decay", type=float, default=0.999)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--weight-cap", type=float, default=1.0,
                   help="ddpm: weight each sample's eps-MSE by clip(sigma^2/alpha^2, 1, W); 1 = L_simple")
    p.add_argument("--lr-schedule", choices=["constant", "cosine"], default="constant",
                   help="ddpm: after 500 warm-up steps, keep lr or decay it to 0 by a half cosine")
    p.add_argument("--dropout", type=float, default=0.0, help="ddpm: dropout in the UNet's ResNet blocks")
    p.add_argument("--num-classes", type=int, default=None,
                   help="ddpm: class-conditional on the digit labels, with num_classes + 1 embeddings (last: null)")
    p.add_argument("--label-dropout", type=float, default=0.0,
                   help="ddpm with --num-classes: probability of training on the null label (CFG)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--model", type=Path, default=Path("checkpoints/digits-ddpm"),
                   help="cov_heads, cd: the (frozen) diffusers model directory the heads are trained on")
    p.add_argument("--max-minutes", type=float, default=None, help="cd: stop after this many minutes of training")
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args(argv)
    if a.num_classes is not None and a.num_classes < 1:
        p.error(f"--num-classes {a.num_classes}: must be >= 1")
    if not 0 <= a.label_dropout < 1 or (a.label_dropout and a.num_classes is None):
        p.error(f"--label-dropout {a.label_dropout}: must be in [0, 1) and needs --num-classes")
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.what == "ddpm":
        stats = train_ddpm(a.steps or 8000, a.batch_size, a.lr or 1e-3, a.ema_decay, a.seed, a.out,
                           weight_cap=a.weight_cap, lr_schedule=a.lr_schedule, dropout=a.dropout,
                           num_classes=a.num_classes, label_dropout=a.label_dropout)
    elif a.what == "flow":
        stats = train_flow(a.steps or 2000, a.batch_size, a.lr or 1e-3, a.ema_decay, a.seed, a.out)
    elif a.what == "cd":
        stats = train_cd(a.model, a.steps or 4000, a.batch_size, a.lr or 2e-4, a.seed, a.out,
                         max_seconds=None if a.max_minutes is None else 60 * a.max_minutes)
    elif a.what == "cov_heads":
        stats = train_cov_heads(a.model, a.steps or 3000, a.batch_size, a.lr or 1e-3, a.seed, a.out)
    else:
        stats = train_classifier(a.steps or 3000, a.batch_size, a.lr or 2e-3, a.seed, a.out)
    stats["command"] = "python -m nfebench.train " + " ".join(sys.argv[1:] if argv is None else argv)
    (a.out / "training_stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    print(json.dumps(stats, indent=2))


if __name__ == "__main__":
    main()

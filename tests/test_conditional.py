"""Class conditioning and classifier-free guidance (issue 14) on the exact-score class-conditional oracle: one
Gaussian per digit class, the null label the whole mixture."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import nfebench
from nfebench.models import ModelError
from nfebench.models.gmm import load_gmm
from nfebench.models.parametrization import PARAMETRIZATIONS
from nfebench.samplers import SAMPLERS

NULL = 10
NFE = {"pndm": 13, "restart": 12, "rk45": 400, "ggf": 400}  # others: 8 (for rk45 and ggf a cap)
# SN/NPR read covariance heads from the model's auxiliary output, which guidance does not combine (a one-line error)
GUIDED_SAMPLERS = sorted(n for n in SAMPLERS if not n.startswith(("sn_", "npr_")))
OPTIONS = {"analytic_ddpm": {"moments": np.full(1000, 0.9)}, "analytic_ddim": {"moments": np.full(1000, 0.9)}}


def cond_oracle(prediction_type="epsilon"):
    return load_gmm(conditional=True, prediction_type=prediction_type)


def noise(m, n, seed=0):
    return torch.randn(n, *m.sample_shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_the_conditional_oracle_has_one_gaussian_per_class_and_a_null_label():
    m = cond_oracle()
    assert (m.num_classes, m.null_class, m.gmm.K) == (10, 10, 10)
    x, t = noise(m, 4), torch.full((4,), 500.0, dtype=torch.float64)
    mixture = m.gmm.eps(x, t)
    assert torch.equal(m.gmm.eps(x, t, torch.full((4,), NULL)), mixture)
    assert not torch.allclose(m.gmm.eps(x, t, torch.tensor([0, 1, 2, 3])), mixture)


@pytest.mark.parametrize("label", [0, 3, 8])
def test_guidance_1_samples_the_class_component(label):
    m, n = cond_oracle(), 600
    x0 = nfebench.sample(m.network, m.schedule, noise(m, n, label), "dpm", 30,
                         class_labels=torch.full((n,), label), guidance_scale=1.0, null_class=NULL)
    x = x0.reshape(n, -1)
    mu, cov = m.gmm.mean_cov(component=label)
    others = min((m.gmm.mu[k] - mu).norm() for k in range(10) if k != label)
    # the mean is the class's own (sampling error ~ sqrt(tr C / n) ~ 0.07, 10x below the nearest other class)
    assert (x.mean(0) - mu).norm() < 0.15 * others
    assert abs(torch.trace(torch.cov(x.T)) / torch.trace(cov) - 1) < 0.1


def test_guidance_0_samples_the_mixture():
    m, n = cond_oracle(), 1000
    x0 = nfebench.sample(m.network, m.schedule, noise(m, n), "dpm", 30,
                         class_labels=torch.zeros(n, dtype=torch.long), guidance_scale=0.0, null_class=NULL)
    x = x0.reshape(n, -1)
    mu, cov = m.gmm.mean_cov()
    class0 = m.gmm.mu[0]
    assert (x.mean(0) - mu).norm() < 0.15 * (class0 - mu).norm()  # the mixture's mean, not class 0's
    assert abs(torch.trace(torch.cov(x.T)) / torch.trace(cov) - 1) < 0.1


@pytest.mark.parametrize("sampler", GUIDED_SAMPLERS)
def test_cfg_inside_sample_equals_a_hand_guided_eps(sampler):
    """CFG in nfebench.sample is eps_u + w (eps_c - eps_u) on the plain API, to 1e-6, stochastic samplers with the
    same generator."""
    m, w = cond_oracle(), 2.5
    y = torch.tensor([0, 4, 7])
    x_T, nfe, opts = noise(m, 3), NFE.get(sampler, 8), OPTIONS.get(sampler, {})

    def hand(x, tau):
        c, u = m.network(x, tau, y), m.network(x, tau, torch.full_like(y, NULL))
        return u + w * (c - u)

    guided = nfebench.sample(m.network, m.schedule, x_T, sampler, nfe, torch.Generator().manual_seed(5),
                             class_labels=y, guidance_scale=w, null_class=NULL, **opts)
    plain = nfebench.sample(hand, m.schedule, x_T, sampler, nfe, torch.Generator().manual_seed(5), **opts)
    torch.testing.assert_close(guided, plain, rtol=1e-6, atol=1e-6)
    conditional = nfebench.sample(lambda x, t: m.network(x, t, y), m.schedule, x_T, sampler, nfe,
                                  torch.Generator().manual_seed(5), **opts)
    assert not torch.allclose(guided, conditional, atol=1e-3)  # guidance changed the samples


def test_guidance_with_covariance_heads_is_a_one_line_error():
    m = cond_oracle()
    heads = lambda x, t, y: (m.network(x, t, y), torch.ones_like(x))  # noqa: E731
    with pytest.raises(ModelError, match="guidance with an auxiliary network output"):
        nfebench.sample(heads, m.schedule, noise(m, 2), "sn_ddpm", 5, class_labels=torch.tensor([0, 1]),
                        guidance_scale=2.0, null_class=NULL)


@pytest.mark.parametrize("sampler", ["ddim", "dpmpp", "ddpm"])
def test_guidance_is_the_same_field_in_every_parametrization(sampler):
    """CFG is applied in eps after each parametrization's conversion: the oracle presented as epsilon, sample,
    v_prediction or score gives the same guided samples."""
    y, outs = torch.tensor([1, 2, 9]), []
    for ptype in (p for p in PARAMETRIZATIONS if p != "flow_prediction"):  # a VP oracle (flow: tests/test_flow.py)
        m = cond_oracle(ptype)
        outs.append(nfebench.sample(m.network, m.schedule, noise(m, 3), sampler, 10, torch.Generator().manual_seed(1),
                                    ptype, class_labels=y, guidance_scale=4.0, null_class=NULL))
    for o in outs[1:]:
        torch.testing.assert_close(o, outs[0], rtol=1e-6, atol=1e-6)


def test_a_guided_evaluation_is_one_nfe_and_one_forward_of_2b():
    m, batches = cond_oracle(), []

    def net(x, tau, labels):
        batches.append(labels.tolist())
        return m.network(x, tau, labels)

    _, used = nfebench.sample(net, m.schedule, noise(m, 2), "ddim", 5, class_labels=[3, 5], guidance_scale=2.0,
                              null_class=NULL, return_nfe=True)
    assert used == 5 and batches == [[3, 5, NULL, NULL]] * 5
    batches.clear()
    nfebench.sample(net, m.schedule, noise(m, 2), "ddim", 5, class_labels=[3, 5], guidance_scale=0.0, null_class=NULL)
    assert batches == [[NULL, NULL]] * 5


def test_conditioning_errors_are_one_line():
    m = cond_oracle()
    with pytest.raises(ModelError, match="guidance_scale=2.0 needs a model with a null label"):
        nfebench.sample(m.network, m.schedule, noise(m, 2), "ddim", 5, class_labels=[1, 2], guidance_scale=2.0)
    with pytest.raises(ModelError, match="class_labels has 3 labels for a batch of 2 samples"):
        nfebench.sample(m.network, m.schedule, noise(m, 2), "ddim", 5, class_labels=[1, 2, 3], null_class=NULL)
    with pytest.raises(ModelError, match="guidance_scale=1.5 needs class_labels"):
        nfebench.sample(m.network, m.schedule, noise(m, 2), "ddim", 5, guidance_scale=1.5)
    with pytest.raises(ModelError, match="guidance_scale must be a finite number >= 0"):
        nfebench.sample(m.network, m.schedule, noise(m, 2), "ddim", 5, class_labels=[1, 2], guidance_scale=-1.0,
                        null_class=NULL)


def test_the_embedded_conditional_model_loads_with_its_null_label():
    from pathlib import Path

    from nfebench.models import load_model

    path = Path(__file__).resolve().parents[1] / "checkpoints" / "digits-cond"
    m = load_model("diffusers", path=str(path))
    assert (m.num_classes, m.null_class, m.sample_shape) == (10, 10, (1, 8, 8))
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([700.0, 700.0])
    c, u = (m(x, t, class_labels=torch.tensor([3, 3]), guidance_scale=w, null_class=10) for w in (1.0, 0.0))
    assert not torch.allclose(c, u)  # the label changes eps: it was trained conditionally


def test_conditioning_keys_at_their_defaults_leave_the_run_key_unchanged():
    """Rows recorded before guidance existed keep their run_id; guidance or a conditional oracle is a new point."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    import nfebench.__main__ as entry
    from nfebench.run import run_key, validate

    with initialize_config_dir(config_dir=str(entry.CONF_DIR), version_base="1.3"):
        cfg = OmegaConf.to_container(compose(config_name="config", overrides=["model=gmm_digits", "device=cpu"]))
    old = {k: v for k, v in cfg.items() if k not in ("guidance_scale", "class_labels")}
    old["model"] = {k: v for k, v in cfg["model"].items() if k != "conditional"}
    assert run_key(validate(cfg)) == run_key(validate(old))
    cond = {**cfg, "model": {**cfg["model"], "conditional": True}}
    assert len({run_key(validate(c)) for c in (cfg, cond, {**cond, "guidance_scale": 2.0})}) == 3

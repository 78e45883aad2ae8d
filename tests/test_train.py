import numpy as np
import torch


def test_a_few_training_steps_lower_the_loss():
    from diffusers import UNet2DModel

    from nfebench.data import load_split
    from nfebench.images import to_model_range
    from nfebench.train import ddpm_loss, digits_unet_config

    torch.manual_seed(0)
    model = UNet2DModel(**digits_unet_config())
    x = to_model_range(load_split("digits", "train"))[:64]
    ab = torch.tensor(np.cumprod(1 - np.linspace(1e-4, 0.02, 1000)), dtype=torch.float32)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def eval_loss():  # same noise and timesteps each time, so the numbers are comparable
        with torch.no_grad():
            return ddpm_loss(model, x, ab, torch.Generator().manual_seed(7)).item()

    before = eval_loss()
    for i in range(30):
        loss = ddpm_loss(model, x, ab, torch.Generator().manual_seed(100 + i))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert eval_loss() < 0.7 * before


def test_digits_split_is_fixed_and_disjoint():
    from nfebench.data import load_split

    tr, te = load_split("digits", "train"), load_split("digits", "test")
    assert tr.shape == (1500, 1, 8, 8) and te.shape == (297, 1, 8, 8) and tr.dtype == torch.uint8
    rows = {bytes(r) for r in tr.reshape(1500, -1).numpy()}
    assert sum(bytes(r) in rows for r in te.reshape(297, -1).numpy()) < 5  # (a few digits are exact duplicates)
    assert torch.equal(load_split("digits", "test"), te)


def test_weight_cap_shifts_the_loss_towards_high_noise():
    """weight_cap=W weights each sample by clip(sigma^2/alpha^2, 1, W): a network that is wrong only at low noise
    (here the identity, eps_hat = x_t, whose error vanishes as alpha -> 0) must score far lower with a large cap."""
    from types import SimpleNamespace

    from nfebench.train import ddpm_loss

    x0 = torch.rand(512, 1, 8, 8) * 2 - 1
    ab = torch.tensor(np.cumprod(1 - np.linspace(1e-4, 0.02, 1000)), dtype=torch.float32)
    identity = lambda x_t, n: SimpleNamespace(sample=x_t)  # noqa: E731

    def loss(cap):
        return ddpm_loss(identity, x0, ab, torch.Generator().manual_seed(3), weight_cap=cap).item()

    plain, capped = loss(1.0), loss(1000.0)
    assert plain == loss(0.5)  # caps <= 1 are L_simple
    assert capped < 0.2 * plain
    assert loss(10.0) < plain and capped < loss(10.0)


def test_label_dropout_replaces_labels_by_null_at_its_rate():
    from nfebench.train import drop_labels

    y = torch.arange(10).repeat(2000)
    d = drop_labels(y, 10, 0.15, torch.Generator().manual_seed(0))
    dropped = d == 10
    assert abs(dropped.float().mean().item() - 0.15) < 0.01
    assert torch.equal(d[~dropped], y[~dropped])
    assert torch.equal(drop_labels(y, 10, 0.0), y)


def test_conditional_training_makes_a_unet_with_a_null_embedding(tmp_path):
    from diffusers import UNet2DModel

    from nfebench.train import train_ddpm

    stats = train_ddpm(3, 8, 1e-3, 0.999, 0, tmp_path, num_classes=10, label_dropout=0.15)
    model = UNet2DModel.from_pretrained(tmp_path)
    assert model.config.num_class_embeds == 11 and stats["num_classes"] == 10
    x, n = torch.randn(2, 1, 8, 8), torch.tensor([500, 500])
    with torch.no_grad():  # the label reaches the network: two labels, two outputs
        a, b = (model(x, n, class_labels=torch.tensor([c, c])).sample for c in (3, 10))
    assert not torch.allclose(a, b)




def test_digits_are_read_as_scikit_learn_reads_them_without_importing_sklearn_datasets(monkeypatch):
    """The images and labels equal sklearn.datasets.load_digits' (their digest, taken from load_digits with
    scikit-learn 1.9.1), read without importing sklearn.datasets."""
    import hashlib
    import sys

    from nfebench.data import digits

    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)  # importing it now fails
    digits._digits_arrays.cache_clear()
    images, labels, _, _ = digits._digits_arrays()
    assert hashlib.sha256(images.tobytes() + labels.tobytes()).hexdigest() == \
        "0b7e9c3202d7bcd255d6a19a238d3743bf5e320ba74812a6679958a017c55382"
    assert images.shape == (1797, 1, 8, 8) and images.dtype == np.uint8 and labels.dtype == np.int64

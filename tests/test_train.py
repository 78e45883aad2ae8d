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

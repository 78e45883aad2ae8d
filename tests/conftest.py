import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_unet_dir(tmp_path_factory):
    """A random-weight UNet2DModel (8x8, 1 channel) saved with save_pretrained, plus a scheduler config."""
    from diffusers import DDPMScheduler, UNet2DModel

    d = tmp_path_factory.mktemp("tiny-unet")
    torch.manual_seed(0)
    UNet2DModel(sample_size=8, in_channels=1, out_channels=1, layers_per_block=1, block_out_channels=(16, 32),
                 down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                 norm_num_groups=8, add_attention=False).save_pretrained(d)
    DDPMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02).save_pretrained(d)
    return d

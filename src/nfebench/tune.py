"""`python -m nfebench.tune model=... sampler=... nfe=... [tune.num_noise=64 tune.seed=1 tune.teacher_nfe=200]`

Tunes the sampler's timestep grid for this model and budget (nfebench.tuning) and caches it, with its provenance,
under results_dir/schedules/; `python -m nfebench ... sampler.spacing=tuned` then samples on it. Bad input ends
with a one-line `nfebench: error: ...` and exit code 2, as `python -m nfebench`.

This module is the command's entry only: import nfebench.tuning (importing nfebench.tune would replace the function
nfebench.tune by this module on the package).
"""

from __future__ import annotations


import hydra
from omegaconf import DictConfig

from .__main__ import exit_on_user_error, launch
from .paths import CONF_DIR


@hydra.main(config_path=str(CONF_DIR), config_name="tune", version_base="1.3")
def _app(cfg: DictConfig) -> None:
    from .tuning import tune_point

    exit_on_user_error(lambda: tune_point(cfg))


if __name__ == "__main__":
    launch(_app)

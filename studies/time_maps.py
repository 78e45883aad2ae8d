"""How far apart are k-diffusion's and nfebench's maps from a noise level sigma to the model's timestep? (issue 28)

    PYTHONPATH=src OMP_NUM_THREADS=1 python studies/time_maps.py

k-diffusion's DiscreteSchedule.sigma_to_t (k_diffusion/external.py, used by DiscreteEpsDDPMDenoiser, by A1111 and
ComfyUI) interpolates log(sigma) linearly between integer timesteps; nfebench's Discrete schedule interpolates
log(alpha_bar) (DPM-Solver's convention). At integer timesteps they agree; in between they differ. Printed: the
largest |t_kd - t_nfebench| over a dense sigma range covering the whole schedule (and where), and over the 20
evaluation points of a Karras grid (rho = 7), on the linear-beta schedule (1e-4..0.02, T = 1000) and SD1.5's.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from nfebench.samplers.common import eval_points  # noqa: E402
from nfebench.schedules import Discrete, linear_betas  # noqa: E402


def kd_sigma_to_t(sched: Discrete, sigma: np.ndarray) -> np.ndarray:
    """k-diffusion 0.1.1.post1's DiscreteSchedule.sigma_to_t on this schedule's training sigmas."""
    from tests.kdiffusion_ref import kdiffusion_sampling

    kdiffusion_sampling()  # registers the k_diffusion package without its heavy __init__
    from k_diffusion.external import DiscreteSchedule

    sigmas = torch.from_numpy(np.sqrt((1 - sched.alphas_cumprod) / sched.alphas_cumprod))
    return DiscreteSchedule(sigmas, quantize=False).sigma_to_t(torch.from_numpy(sigma)).numpy()


def compare(sched: Discrete) -> dict:
    lo, hi = float(sched.edm_sigma(0)), float(sched.edm_sigma(sched.t_max))
    dense = np.exp(np.linspace(np.log(lo), np.log(hi), 20001))
    d = np.abs(kd_sigma_to_t(sched, dense) - sched.tau_from_edm_sigma(dense))
    karras = sched.edm_sigma(eval_points(sched, 20, "karras"))
    dk = np.abs(kd_sigma_to_t(sched, karras) - sched.tau_from_edm_sigma(karras))
    return {"max_dense": float(d.max()), "at_t": float(sched.tau_from_edm_sigma(dense[d.argmax()])),
            "max_karras20": float(dk.max())}


SCHEDULES = {"linear 1e-4..0.02": Discrete(linear_betas()),
             "SD1.5 scaled_linear": Discrete(np.linspace(0.00085**0.5, 0.012**0.5, 1000) ** 2)}

if __name__ == "__main__":
    print("| schedule | max over all sigma | at t | max on a 20-step Karras grid |")
    print("|---|---|---|---|")
    for name, s in SCHEDULES.items():
        r = compare(s)
        print(f"| {name} | {r['max_dense']:.3f} | {r['at_t']:.2f} | {r['max_karras20']:.3f} |")

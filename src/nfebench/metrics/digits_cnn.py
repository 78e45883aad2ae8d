"""The digits feature extractor: a small CNN classifier trained by nfebench on the digits train split.

Penultimate features (64-d, after ReLU) play the role of Inception's pool3 for FID and KID; logits play the role
of Inception's logits for IS. A digits FID is *not* an Inception FID: rows record feature_extractor=digits-cnn.
Input contract (as torch-fidelity's): uint8 images [N, 1, 8, 8] (a 3-channel grey image is averaged to 1 channel).
"""

from __future__ import annotations

import torch
import torch.nn as nn

FEATURES_DIM = 64


class DigitsCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(),
            nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 4x4
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 2x2
            nn.Flatten(), nn.Linear(256, FEATURES_DIM), nn.ReLU(),
        )
        self.head = nn.Linear(FEATURES_DIM, 10)

    @staticmethod
    def prepare(x_uint8: torch.Tensor) -> torch.Tensor:
        if x_uint8.dtype != torch.uint8:
            raise TypeError(f"digits-cnn expects uint8 images, got {x_uint8.dtype}")
        x = x_uint8.float()
        if x.shape[1] == 3:
            x = x.mean(1, keepdim=True)
        return x / 127.5 - 1.0

    def features(self, x_uint8: torch.Tensor) -> torch.Tensor:
        return self.body(self.prepare(x_uint8))

    def logits(self, x_uint8: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x_uint8))

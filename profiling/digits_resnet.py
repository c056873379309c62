"""A small residual CNN for scikit-learn's 8x8 digits: the second real, measured network.

Why a second network: an accuracy model calibrated on one architecture may only describe that
architecture. This one differs from the digits CNN where it matters for quantization: batch
normalisation, skip connections (an error in a block's weights reaches the output through two
paths), strided convolutions instead of pooling, and global average pooling before one small
classifier. Its units are the profiler's cut points: the stem, each residual block (the block
input is alive inside it, so a block is never cut), the pooling and the classifier.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn


class BasicBlock(nn.Module):
    """conv-BN-ReLU-conv-BN plus the input (1x1 strided conv + BN when the shape changes)."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU()
        self.down: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.down = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False),
                                      nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(y)) + self.down(x))


def build_digits_resnet() -> nn.Sequential:
    """Stem (16 ch, 8x8), three residual blocks (16 ch 8x8, 32 ch 4x4, 64 ch 2x2), global
    average pooling, one linear classifier: 6 units, about 77,000 parameters."""
    return nn.Sequential(
        OrderedDict(
            [
                ("stem", nn.Sequential(nn.Conv2d(1, 16, 3, padding=1, bias=False),
                                       nn.BatchNorm2d(16), nn.ReLU())),
                ("block1", BasicBlock(16, 16, 1)),
                ("block2", BasicBlock(16, 32, 2)),
                ("block3", BasicBlock(32, 64, 2)),
                ("pool", nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())),
                ("fc", nn.Linear(64, 10)),
            ]
        )
    )

from __future__ import annotations

import math

import torch
import torch.nn as nn
from monai.networks.layers.factories import Act, Pool

__all__ = ["ECA", "eca_kernel_size"]


def eca_kernel_size(channels: int, gamma: int = 2, beta: int = 1) -> int:
    """
    Adaptive kernel size of ECA: ``t = int(|(log2(C) + beta) / gamma|)``, rounded up to the next odd number.

    With the defaults, C = 8..64 gives 3 and C = 128..1024 gives 5.

    Args:
        channels: number of channels C.
        gamma: divisor of the mapping. Defaults to 2.
        beta: offset of the mapping. Defaults to 1.
    """
    t = int(abs((math.log2(channels) + beta) / gamma))
    return t if t % 2 == 1 else t + 1


class ECA(nn.Module):
    """
    Efficient channel attention: global average pool, 1D conv across channels, sigmoid, scale the input.

    Reference: Wang et al., "ECA-Net: Efficient Channel Attention for Deep Convolutional Neural Networks",
    CVPR 2020, https://arxiv.org/abs/1910.03151.

    Args:
        spatial_dims: number of spatial dimensions, 2 or 3.
        channels: number of input (and output) channels C.
        kernel_size: odd kernel size of the 1D conv; ``None`` uses :func:`eca_kernel_size` of ``channels``.

    Input and output shape: (B, C, *spatial).
    """

    def __init__(self, spatial_dims: int, channels: int, kernel_size: int | None = None) -> None:
        super().__init__()
        if kernel_size is None:
            kernel_size = eca_kernel_size(channels)
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size}.")
        self.kernel_size = kernel_size
        self.avg_pool = Pool[Pool.ADAPTIVEAVG, spatial_dims](1)
        # the conv runs along the channel axis, so it is 1D whatever spatial_dims is
        self.conv = nn.Conv1d(1, 1, kernel_size=kernel_size, padding=(kernel_size - 1) // 2, bias=False)
        self.sigmoid = Act[Act.SIGMOID]()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.avg_pool(x)
        weights = self.sigmoid(self.conv(pooled.flatten(1).unsqueeze(1)))
        return x * weights.reshape_as(pooled)

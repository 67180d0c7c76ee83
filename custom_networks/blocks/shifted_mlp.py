from __future__ import annotations

import math
from typing import List

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.layers.factories import Conv

__all__ = ["shift_channel_groups", "ShiftedMLPBlock"]


def shift_channel_groups(x: torch.Tensor, dim: int, groups: int = 5) -> torch.Tensor:
    """
    Shift channel groups of ``x`` by different offsets along one spatial axis, filling with zeros.

    The channels are split into ``groups`` chunks with ``torch.chunk`` (the last chunk may be smaller, and
    fewer than ``groups`` chunks come back when there are few channels); chunk ``g`` is shifted by
    ``g - groups // 2`` positions along tensor dimension ``dim``. A positive offset moves content towards
    higher indices (``out[..., i, ...] = x[..., i - offset, ...]``). Positions shifted in from outside are
    zero; nothing wraps around (UNeXt pads, rolls and crops, which is the same thing).

    Args:
        x: channel-first tensor (B, C, *spatial).
        dim: tensor dimension to shift along, a spatial one (2 for H in 2D, 2/3/4 for D/H/W in 3D);
            negative values count from the end.
        groups: number of channel groups. Defaults to 5 (offsets -2..2).

    Returns:
        tensor of the same shape as ``x``.
    """
    if dim < 0:
        dim += x.dim()
    if dim < 2 or dim >= x.dim():
        raise ValueError(f"dim must be a spatial dimension of a {x.dim()}-d tensor, got {dim}.")
    max_offset = groups // 2
    size = x.shape[dim]
    # F.pad lists padding from the last dimension backwards: zeros for the dims after `dim`, then `dim`.
    padding: List[int] = [0] * (2 * (x.dim() - 1 - dim)) + [max_offset, max_offset]
    padded = F.pad(x, padding)
    shifted: List[torch.Tensor] = []
    for group, chunk in enumerate(torch.chunk(padded, groups, dim=1)):
        offset = group - max_offset
        shifted.append(torch.narrow(chunk, dim, max_offset - offset, size))
    return torch.cat(shifted, dim=1)


class ShiftedMLPBlock(nn.Module):
    """
    Shifted MLP block of UNeXt: ``x + MLP(LayerNorm(x))`` with channel groups shifted along each spatial axis.

    Reference: Valanarasu and Patel, "UNeXt: MLP-based Rapid Medical Image Segmentation Network",
    MICCAI 2022, https://arxiv.org/abs/2203.04967.

    The MLP is: shift along the first spatial axis, Linear(dim, hidden), depthwise 3x3 conv (bias), GELU,
    dropout, shift along each remaining spatial axis in turn, Linear(hidden, dim), dropout. In 2D that is
    the paper's shift along H before the first Linear and along W before the second. In 3D (ours) D is
    shifted before the first Linear, H and then W before the second, so every axis is shifted once.
    Shifts use ``shift_channel_groups`` (zero fill). LayerNorm and Linear act on the channels of each
    position (every voxel is a token); tensors stay channel-first between layers. Linear and conv weights are
    initialised as in the reference code (truncated normal std 0.02; normal with std sqrt(2 / fan_out)).

    Args:
        spatial_dims: number of spatial dimensions, 2 or 3.
        dim: number of channels (token width).
        mlp_ratio: hidden width of the MLP relative to ``dim``. Defaults to 1 (as in UNeXt).
        shift_groups: number of channel groups for the shifts. Defaults to 5.
        drop: dropout probability after the activation and after the second Linear; 0 adds no dropout layer.
            Defaults to 0.

    Input and output shape: (B, dim, *spatial).
    """

    def __init__(
        self, spatial_dims: int, dim: int, mlp_ratio: float = 1.0, shift_groups: int = 5, drop: float = 0.0
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}.")
        hidden = int(dim * mlp_ratio)
        self.shift_groups = shift_groups
        self.first_shift_dim = 2
        self.later_shift_dims: List[int] = list(range(3, 2 + spatial_dims))
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = Conv[Conv.CONV, spatial_dims](hidden, hidden, kernel_size=3, padding=1, groups=hidden, bias=True)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop: nn.Module = nn.Dropout(drop) if drop else nn.Identity()
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.trunc_normal_(module.weight, std=0.02)
            nn.init.zeros_(module.bias)
        elif isinstance(module, (nn.Conv2d, nn.Conv3d)):
            fan_out = math.prod(module.kernel_size) * module.out_channels // module.groups
            nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / fan_out))
            nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Positive dims: the ONNX exporter writes movedim's negative dims into Transpose perms unresolved.
        last = x.dim() - 1
        y = self.norm(x.movedim(1, last)).movedim(last, 1)
        y = shift_channel_groups(y, self.first_shift_dim, self.shift_groups)
        y = self.fc1(y.movedim(1, last)).movedim(last, 1)
        y = self.drop(self.act(self.dwconv(y)))
        for shift_dim in self.later_shift_dims:
            y = shift_channel_groups(y, shift_dim, self.shift_groups)
        y = self.drop(self.fc2(y.movedim(1, last))).movedim(last, 1)
        return x + y

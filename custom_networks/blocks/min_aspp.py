from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
from monai.networks.blocks import Convolution
from monai.networks.layers.factories import Pool, split_args

__all__ = ["MinASPP"]


class MinASPP(nn.Module):
    """
    Reduced atrous spatial pyramid pooling for a small bottleneck map, with a global-average-pool branch.

    Reference: Chen et al., "Rethinking Atrous Convolution for Semantic Image Segmentation" (DeepLabv3),
    https://arxiv.org/abs/1706.05587; reduced form as used at the bottleneck of the AG + Min-ASPP U-Net.

    Branches, each with ``out_channels`` channels: a 1x1 conv, one 3x3 conv per dilation rate, and image
    pooling (global average pool, 1x1 conv, act, broadcast back to the map size). The branches are
    concatenated and projected by a 1x1 conv (norm, act). MONAI's ``SimpleASPP`` has no pooling branch,
    hence this block. The pooling branch sees a single value per channel and sample, so batch norm there
    fails for batch size 1 in training and instance norm is undefined; ``pool_norm`` may only be a norm
    over channels such as ``("group", {"num_groups": 1})``, or ``None``.

    Args:
        spatial_dims: number of spatial dimensions, 2 or 3.
        in_channels: number of input channels.
        out_channels: number of channels of every branch and of the output.
        dilations: dilation rates of the 3x3 branches; small rates suit a 16x16 bottleneck.
            Defaults to (2, 4, 6).
        norm: norm of the 1x1, atrous and projection convs (MONAI form). Defaults to "batch".
        act: activation of every conv (MONAI form). Defaults to ``("relu", {"inplace": True})``.
        pool_norm: norm of the pooling branch conv, ``None`` or a norm over channels. Defaults to None.

    Input shape (B, in_channels, *S); output shape (B, out_channels, *S).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        dilations: Sequence[int] = (2, 4, 6),
        norm: tuple | str | None = "batch",
        act: tuple | str | None = ("relu", {"inplace": True}),
        pool_norm: tuple | str | None = None,
    ) -> None:
        super().__init__()
        if pool_norm is not None and split_args(pool_norm)[0].lower() in ("batch", "syncbatch", "instance"):
            raise ValueError(f"pool_norm must not be batch or instance norm (1x1 pooled map), got {pool_norm}.")
        self.conv1x1 = Convolution(
            spatial_dims, in_channels, out_channels, kernel_size=1, act=act, norm=norm, bias=norm is None
        )
        self.atrous = nn.ModuleList(
            [
                Convolution(
                    spatial_dims,
                    in_channels,
                    out_channels,
                    kernel_size=3,
                    dilation=rate,
                    act=act,
                    norm=norm,
                    bias=norm is None,
                )
                for rate in dilations
            ]
        )
        self.pool = nn.Sequential(
            Pool[Pool.ADAPTIVEAVG, spatial_dims](1),
            Convolution(
                spatial_dims,
                in_channels,
                out_channels,
                kernel_size=1,
                act=act,
                norm=pool_norm,
                bias=pool_norm is None,
            ),
        )
        self.project = Convolution(
            spatial_dims,
            out_channels * (len(dilations) + 2),
            out_channels,
            kernel_size=1,
            act=act,
            norm=norm,
            bias=norm is None,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        local = self.conv1x1(x)
        branches = [local]
        for branch in self.atrous:
            branches.append(branch(x))
        branches.append(self.pool(x).expand_as(local))
        return self.project(torch.cat(branches, dim=1))

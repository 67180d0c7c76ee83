from __future__ import annotations

import torch
import torch.nn as nn
from monai.networks.blocks import Convolution
from monai.networks.layers.factories import Act, Conv, Pool

from custom_networks.blocks.one_channel_norm import one_channel_norm

__all__ = ["ChannelGate", "SpatialGate", "CBAM"]


class ChannelGate(nn.Module):
    """
    Channel attention of CBAM: a shared MLP on the average- and max-pooled descriptors, summed, sigmoid.

    Reference: Woo et al., "CBAM: Convolutional Block Attention Module", ECCV 2018,
    https://arxiv.org/abs/1807.06521.

    The MLP is two 1x1 convolutions with bias (C -> max(1, C // reduction) -> C) and ReLU between them,
    as in the authors' code; the hidden width is kept at least 1 so that narrow layers (C < reduction)
    still work.

    Args:
        spatial_dims: number of spatial dimensions, 2 or 3.
        channels: number of input (and output) channels C.
        reduction: reduction ratio r of the MLP. Defaults to 16.

    Input and output shape: (B, C, *spatial).
    """

    def __init__(self, spatial_dims: int, channels: int, reduction: int = 16) -> None:
        super().__init__()
        if reduction < 1:
            raise ValueError(f"reduction must be a positive integer, got {reduction}.")
        self.hidden_channels = max(1, channels // reduction)
        conv_type = Conv[Conv.CONV, spatial_dims]
        self.avg_pool = Pool[Pool.ADAPTIVEAVG, spatial_dims](1)
        self.max_pool = Pool[Pool.ADAPTIVEMAX, spatial_dims](1)
        self.mlp = nn.Sequential(
            conv_type(channels, self.hidden_channels, kernel_size=1, bias=True),
            Act[Act.RELU](inplace=True),
            conv_type(self.hidden_channels, channels, kernel_size=1, bias=True),
        )
        self.sigmoid = Act[Act.SIGMOID]()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = self.sigmoid(self.mlp(self.avg_pool(x)) + self.mlp(self.max_pool(x)))
        return x * weights


class SpatialGate(nn.Module):
    """
    Spatial attention of CBAM: channel-wise max and mean maps, a k x k (x k) conv to one channel, sigmoid.

    Reference: Woo et al., "CBAM: Convolutional Block Attention Module", ECCV 2018,
    https://arxiv.org/abs/1807.06521.

    The two descriptor maps are concatenated in the order [max, mean], as in the authors' code
    (some public copies, e.g. timm, use [mean, max]; the order only matters when loading foreign weights).

    Args:
        spatial_dims: number of spatial dimensions, 2 or 3.
        kernel_size: size of the conv kernel in every spatial dimension, 7 (paper) or 3. Defaults to 7.
        norm: norm after the conv (MONAI form, e.g. "batch"; group norm is applied with one group to the
            one-channel map); ``None`` gives a conv with bias instead. Defaults to "batch".

    Input and output shape: (B, C, *spatial).
    """

    def __init__(self, spatial_dims: int, kernel_size: int = 7, norm: tuple | str | None = "batch") -> None:
        super().__init__()
        if kernel_size not in (3, 7):
            raise ValueError(f"kernel_size must be 3 or 7, got {kernel_size}.")
        self.conv = Convolution(
            spatial_dims,
            in_channels=2,
            out_channels=1,
            kernel_size=kernel_size,
            act=None,
            norm=one_channel_norm(norm),
            bias=norm is None,
        )
        self.sigmoid = Act[Act.SIGMOID]()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        descriptors = torch.cat([torch.amax(x, dim=1, keepdim=True), torch.mean(x, dim=1, keepdim=True)], dim=1)
        return x * self.sigmoid(self.conv(descriptors))


class CBAM(nn.Module):
    """
    Convolutional block attention module: channel gate followed by spatial gate.

    Reference: Woo et al., "CBAM: Convolutional Block Attention Module", ECCV 2018,
    https://arxiv.org/abs/1807.06521.

    Args:
        spatial_dims: number of spatial dimensions, 2 or 3.
        channels: number of input (and output) channels C.
        reduction: reduction ratio r of the channel MLP. Defaults to 16.
        spatial_kernel_size: kernel size of the spatial gate conv, 7 or 3. Defaults to 7.
        norm: norm after the spatial gate conv (MONAI form); ``None`` for a conv with bias. Defaults to "batch".
        residual: ``False`` (the paper): ``y = gated(x)``; ``True``: ``y = x + gated(x)``, so the gates can
            emphasise features but never shut a block's output (see docs/ablations.md, issue 22).
        gates: which gates run, in this order: ``("channel", "spatial")`` (the paper), or one of them alone.

    Input and output shape: (B, C, *spatial).
    """

    def __init__(
        self,
        spatial_dims: int,
        channels: int,
        reduction: int = 16,
        spatial_kernel_size: int = 7,
        norm: tuple | str | None = "batch",
        residual: bool = False,
        gates: tuple[str, ...] = ("channel", "spatial"),
    ) -> None:
        super().__init__()
        unknown = set(gates) - {"channel", "spatial"}
        if unknown or not gates:
            raise ValueError(f"gates must name 'channel' and/or 'spatial', got {gates}.")
        identity = nn.Identity()
        self.channel_gate = ChannelGate(spatial_dims, channels, reduction) if "channel" in gates else identity
        self.spatial_gate = SpatialGate(spatial_dims, spatial_kernel_size, norm) if "spatial" in gates else identity
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gated = self.spatial_gate(self.channel_gate(x))
        return x + gated if self.residual else gated

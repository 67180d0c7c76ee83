from __future__ import annotations

import torch
import torch.nn as nn
from monai.networks.blocks import ChannelSELayer, Convolution
from monai.networks.layers.utils import get_act_layer

from custom_networks.blocks.cbam import CBAM

__all__ = ["ResidualAttentionBlock"]

ATTENTION_IN_BLOCK = (None, "se", "cbam")


class ResidualAttentionBlock(nn.Module):
    """
    Residual block with optional channel attention before the addition (AttentionResUNet, after SE-ResNet):
    ``residual.conv_0`` (3x3 conv, norm, dropout, act), ``residual.conv_1`` (3x3 conv, norm),
    ``residual.attention`` (SE or CBAM, absent for None), plus a shortcut (1x1 conv + norm when the width
    changes, identity otherwise), then the activation. Convs carry a bias only when there is no norm.

    MONAI's ``UnetResBlock`` has the same residual layout but no place for an attention module before the
    addition, hence this block.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels.
        attention: None, ``"se"`` (MONAI ``ChannelSELayer``) or ``"cbam"``.
        reduction: channel reduction of the attention MLP (clipped so the hidden width is at least 1).
        act: activation type and arguments.
        norm: normalization type and arguments, or None.
        dropout: dropout ratio after the first conv unit; 0 adds no dropout layer.

    Shapes: ``(B, in_channels, *S) -> (B, out_channels, *S)``.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        attention: str | None = None,
        reduction: int = 16,
        act: str | tuple = ("relu", {"inplace": True}),
        norm: str | tuple | None = "batch",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if attention not in ATTENTION_IN_BLOCK:
            raise ValueError(f"attention must be one of {ATTENTION_IN_BLOCK}, got {attention!r}.")
        self.residual = nn.Sequential()
        self.residual.add_module(
            "conv_0",
            Convolution(
                spatial_dims, in_channels, out_channels, act=act, norm=norm, dropout=dropout or None,
                bias=norm is None,
            ),
        )
        self.residual.add_module(
            "conv_1", Convolution(spatial_dims, out_channels, out_channels, act=None, norm=norm, bias=norm is None)
        )
        if attention == "se":
            self.residual.add_module(
                "attention", ChannelSELayer(spatial_dims, out_channels, r=min(reduction, out_channels))
            )
        elif attention == "cbam":
            self.residual.add_module("attention", CBAM(spatial_dims, out_channels, reduction=reduction, norm=norm))
        if in_channels == out_channels:
            self.shortcut: nn.Module = nn.Identity()
        else:
            self.shortcut = Convolution(
                spatial_dims, in_channels, out_channels, kernel_size=1, act=None, norm=norm, bias=norm is None
            )
        self.act = get_act_layer(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.residual(x) + self.shortcut(x))

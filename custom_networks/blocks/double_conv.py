from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn
from monai.networks.blocks import Convolution

__all__ = ["DoubleConv"]


class DoubleConv(nn.Module):
    """
    The double conv block of a U-Net level: two conv units ``conv_0``, ``conv_1``, then optionally ``attention``,
    and optionally a ``shortcut`` from the block's input added to the result.

    By default each unit is a MONAI ``Convolution``: 3x3 (3x3x3 in 3D) conv, norm, dropout, act, with a bias
    only when there is no norm. The state-dict keys are those of the double conv of MONAI's ``BasicUNet``
    (``conv_0.conv.weight``, ``conv_0.adn.N.weight``, ...), less ``conv.bias`` where a norm follows. A variant
    swaps the units through ``unit`` (e.g. GSConv) and appends channel or spatial attention through
    ``attention`` (e.g. ECA, CBAM); with neither the block is the plain one, so switching a variant's options
    off gives the plain U-Net's modules and keys. ``shortcut=True`` adds a linear path, a 1x1 conv with the norm
    and no activation from the block's input, to the output: the shortcut of the GS bottleneck of the slim-neck
    design (Li et al.), which keeps a path to the next layer that no activation can switch off (issue 22).

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels of both units.
        act: activation of the default units (MONAI form).
        norm: normalization of the default units (MONAI form), or None (the convs then get a bias).
        dropout: dropout ratio of the default units; 0 adds no dropout layer.
        unit: ``(in_channels, out_channels) -> nn.Module`` building each unit instead of the default one
            (``act``, ``norm`` and ``dropout`` are then up to the factory).
        attention: module applied after ``conv_1``, mapping ``(B, out_channels, *S)`` to the same shape.
        shortcut: add ``shortcut(x)``, a 1x1 conv and ``norm`` (a bias without norm), after the attention.

    Shapes: ``(B, in_channels, *S) -> (B, out_channels, *S)``.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        act: str | tuple = ("relu", {"inplace": True}),
        norm: str | tuple | None = "batch",
        dropout: float = 0.0,
        unit: Callable[[int, int], nn.Module] | None = None,
        attention: nn.Module | None = None,
        shortcut: bool = False,
    ) -> None:
        super().__init__()

        def conv_unit(c_in: int, c_out: int) -> Convolution:
            return Convolution(
                spatial_dims, c_in, c_out, kernel_size=3, act=act, norm=norm, dropout=dropout or None,
                bias=norm is None,
            )

        make_unit = unit or conv_unit
        self.conv_0 = make_unit(in_channels, out_channels)
        self.conv_1 = make_unit(out_channels, out_channels)
        self.attention = attention
        self.shortcut = (
            Convolution(
                spatial_dims, in_channels, out_channels, kernel_size=1, act=None, norm=norm, bias=norm is None,
                conv_only=norm is None,
            )
            if shortcut
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv_1(self.conv_0(x))
        if self.attention is not None:
            out = self.attention(out)
        if self.shortcut is not None:
            out = out + self.shortcut(x)
        return out

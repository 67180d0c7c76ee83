from __future__ import annotations

import torch
import torch.nn as nn
from monai.networks.blocks import Convolution
from monai.networks.layers.factories import Conv

__all__ = ["GSConv", "interleave_halves"]


def interleave_halves(x: torch.Tensor) -> torch.Tensor:
    """
    Channel shuffle of GSConv: interleave the first and second channel halves.

    With channels ``[a0, ..., a(m-1), b0, ..., b(m-1)]`` the output order is ``[a0, b0, a1, b1, ...]``.

    Args:
        x: tensor of shape (B, C, *spatial) with C even.

    Returns:
        tensor of the same shape with the channels reordered.
    """
    if x.shape[1] % 2 != 0:
        raise ValueError(f"interleave_halves needs an even number of channels, got {x.shape[1]}.")
    first, second = torch.chunk(x, 2, dim=1)
    return interleave(first, second)


def interleave(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """Channels ``[a0, b0, a1, b1, ...]`` from ``first = [a0, a1, ...]`` and ``second = [b0, b1, ...]``,
    i.e. ``interleave_halves(torch.cat((first, second), 1))`` without materialising the concatenation."""
    return torch.stack((first, second), dim=2).flatten(1, 2)


class GSConv(nn.Module):
    """
    GSConv of the slim-neck design: dense conv to half the channels, depthwise 5x5 conv on it, concat, shuffle.

    Reference: Li et al., "Slim-neck by GSConv: a lightweight-design for real-time detector architectures",
    https://arxiv.org/abs/2206.02424. Used by the GSConv-ECA U-Net and, with ``gated=True``, by the
    AG + Min-ASPP U-Net whose paper describes a "gated spatial convolution".

    The dense k x k conv (norm, act; carries the stride) maps ``in_channels`` to ``out_channels // 2``
    channels ``a``; a depthwise 5x5 conv (norm, act) maps ``a`` to ``b``; ``[a, b]`` is then shuffled by
    :func:`interleave_halves` into ``a0, b0, a1, b1, ...`` so that every dense channel sits next to its own
    depthwise refinement. Public copies also use a second order: the slim-neck reference code reshapes
    channel pairs and concatenates the even-indexed channels before the odd-indexed ones
    (``a0, a2, ..., b0, b2, ..., a1, a3, ..., b1, b3, ...``). The interleaving order is chosen (and pinned by
    the project spec) because it is the ShuffleNet channel shuffle with two groups, the operation the
    module's name refers to, and because it mixes the dense and depthwise halves uniformly: every
    contiguous channel group a later grouped layer may take holds matching dense and depthwise channels.

    With ``gated=True`` the output is multiplied by ``sigmoid(gate(x))`` where ``gate`` is a 1x1 conv with
    bias on the input (same stride, ``in_channels`` -> ``out_channels``, no norm): the gate weights are
    generated from the input features.

    Args:
        spatial_dims: number of spatial dimensions, 2 or 3.
        in_channels: number of input channels.
        out_channels: number of output channels; must be even.
        kernel_size: kernel size of the dense conv. Defaults to 3.
        strides: stride of the dense conv (and of the gate). Defaults to 1.
        act: activation after both convs (MONAI form). Defaults to ``("relu", {"inplace": True})``.
        norm: norm after both convs (MONAI form); with ``None`` the convs get a bias. Defaults to "batch".
        gated: multiply the output by a sigmoid gate computed from the input. Defaults to False.
        dropout: dropout ratio on the output (after the gate); 0 adds no dropout layer. Defaults to 0.

    Input shape (B, in_channels, *S); output shape (B, out_channels, *S / strides).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        strides: int = 1,
        act: tuple | str | None = ("relu", {"inplace": True}),
        norm: tuple | str | None = "batch",
        gated: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if out_channels % 2 != 0 or out_channels < 2:
            raise ValueError(f"GSConv needs an even out_channels >= 2, got {out_channels}.")
        half_channels = out_channels // 2
        self.dense = Convolution(
            spatial_dims,
            in_channels,
            half_channels,
            strides=strides,
            kernel_size=kernel_size,
            act=act,
            norm=norm,
            bias=norm is None,
        )
        self.depthwise = Convolution(
            spatial_dims,
            half_channels,
            half_channels,
            kernel_size=5,
            groups=half_channels,
            act=act,
            norm=norm,
            bias=norm is None,
        )
        self.gate: nn.Module | None = None
        if gated:
            self.gate = Conv[Conv.CONV, spatial_dims](
                in_channels, out_channels, kernel_size=1, stride=strides, bias=True
            )
        self.dropout: nn.Module | None = nn.Dropout(dropout) if dropout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dense = self.dense(x)
        out = interleave(dense, self.depthwise(dense))
        if self.gate is not None:
            out = out * torch.sigmoid(self.gate(x))
        if self.dropout is not None:
            out = self.dropout(out)
        return out

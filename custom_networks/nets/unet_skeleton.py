from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn as nn
from monai.networks.layers.factories import Conv, Pool

from custom_networks.nets.spatial_size import check_divisible

__all__ = ["UNetSkeleton", "SkipPassThrough"]


class SkipPassThrough(nn.Module):
    """Skip connection without a gate: returns the skip features unchanged (the gating signal is unused)."""

    def forward(self, skip: torch.Tensor, gating: torch.Tensor) -> torch.Tensor:
        return skip


class UNetSkeleton(nn.Module):
    """
    Encoder-decoder with concatenated skip connections (Ronneberger et al., 2015), shared by the U-Net variants.

    The variants differ only in what sits at each place of the classic layout, so each passes factories:
    ``make_block`` for every encoder and decoder conv block, optionally ``make_bottleneck`` for the deepest
    block and ``make_skip_gate`` for a module that reweights each skip given the coarser decoder map.
    Between encoder levels: 2x max-pool; decoder: 2x2 transposed conv halving the channels, concatenation
    with the (gated) skip, conv block.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels (logits, no activation).
        features: widths of the encoder levels, shallowest first; ``len(features) - 1`` poolings.
        make_block: ``(in_channels, out_channels) -> nn.Module`` for encoder and decoder conv blocks.
        make_bottleneck: ``(in_channels, out_channels) -> nn.Module`` for the deepest level; ``make_block``
            when None.
        make_skip_gate: ``(skip_channels, gating_channels) -> nn.Module`` whose ``forward(skip, gating)``
            returns the reweighted skip; skips pass unchanged when None.

    Input ``(B, in_channels, *S)`` with every size of ``S`` divisible by ``2 ** (len(features) - 1)``;
    output ``(B, out_channels, *S)``.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        features: Sequence[int],
        make_block: Callable[[int, int], nn.Module],
        make_bottleneck: Callable[[int, int], nn.Module] | None = None,
        make_skip_gate: Callable[[int, int], nn.Module] | None = None,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}.")
        if len(features) < 2:
            raise ValueError(f"features needs at least two levels, got {tuple(features)}.")
        features = tuple(features)
        self.multiple = 2 ** (len(features) - 1)
        self.network_name = type(self).__name__
        make_bottleneck = make_bottleneck or make_block

        self.encoder = nn.ModuleList(
            [make_block(c_in, c_out) for c_in, c_out in zip((in_channels,) + features[:-2], features[:-1], strict=True)]
        )
        self.pool = Pool[Pool.MAX, spatial_dims](kernel_size=2, stride=2)
        self.bottleneck = make_bottleneck(features[-2], features[-1])

        deep_to_shallow = list(zip(features[-1:0:-1], features[-2::-1], strict=True))  # (coarse width, skip width)
        conv_trans = Conv[Conv.CONVTRANS, spatial_dims]
        self.upsample = nn.ModuleList([conv_trans(c, s, kernel_size=2, stride=2) for c, s in deep_to_shallow])
        self.skip_gates = nn.ModuleList(
            [make_skip_gate(s, c) if make_skip_gate else SkipPassThrough() for c, s in deep_to_shallow]
        )
        self.decoder = nn.ModuleList([make_block(2 * s, s) for _, s in deep_to_shallow])
        self.head = Conv[Conv.CONV, spatial_dims](features[0], out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_divisible(x, self.multiple, self.network_name)
        skips: list[torch.Tensor] = []
        for block in self.encoder:
            x = block(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottleneck(x)
        for upsample, skip_gate, block in zip(self.upsample, self.skip_gates, self.decoder, strict=True):
            skip = skip_gate(skips.pop(), x)
            x = block(torch.cat([skip, upsample(x)], dim=1))
        return self.head(x)

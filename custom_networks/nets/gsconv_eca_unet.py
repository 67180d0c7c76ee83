from __future__ import annotations

from collections.abc import Sequence

import torch.nn as nn

from monai.networks.nets.basic_unet import TwoConv

from custom_networks.blocks.eca import ECA
from custom_networks.blocks.gsconv import GSConv
from custom_networks.nets.unet_skeleton import UNetSkeleton

__all__ = ["GSConvECAUNet"]


class GSConvECAUNet(UNetSkeleton):
    """
    U-Net whose double-conv blocks are two GSConv units followed by ECA channel attention (paper 000,
    brain tumour MRI). ``use_gsconv=False, use_eca=False`` gives :class:`ClassicUNet` exactly.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels (logits).
        features: widths of the five levels; spatial size must be divisible by ``2 ** (len(features) - 1)``.
        use_gsconv: GSConv units (dense conv to half width + depthwise 5x5, interleaved) instead of 3x3 convs.
        use_eca: ECA at the end of every conv block.
        eca_kernel_size: fixed ECA kernel; adaptive from the width when None.
        act: activation type and arguments.
        norm: normalization type and arguments, or None.
        dropout: dropout ratio after each conv unit.

    Shapes: ``(B, in_channels, *S) -> (B, out_channels, *S)``.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        features: Sequence[int] = (64, 128, 256, 512, 1024),
        use_gsconv: bool = True,
        use_eca: bool = True,
        eca_kernel_size: int | None = None,
        act: str | tuple = ("relu", {"inplace": True}),
        norm: str | tuple | None = "batch",
        dropout: float = 0.0,
    ) -> None:
        def make_block(c_in: int, c_out: int) -> nn.Sequential:
            if use_gsconv:
                block = nn.Sequential(
                    GSConv(spatial_dims, c_in, c_out, act=act, norm=norm),
                    nn.Dropout(dropout),
                    GSConv(spatial_dims, c_out, c_out, act=act, norm=norm),
                    nn.Dropout(dropout),
                )
            else:
                block = nn.Sequential(TwoConv(spatial_dims, c_in, c_out, act=act, norm=norm, bias=True, dropout=dropout))
            if use_eca:
                block.append(ECA(spatial_dims, c_out, kernel_size=eca_kernel_size))
            return block

        super().__init__(spatial_dims, in_channels, out_channels, features, make_block)

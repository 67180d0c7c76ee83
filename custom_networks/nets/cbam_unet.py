from __future__ import annotations

from collections.abc import Sequence

import torch.nn as nn

from monai.networks.nets.basic_unet import TwoConv

from custom_networks.blocks.cbam import CBAM
from custom_networks.nets.unet_skeleton import UNetSkeleton

__all__ = ["CBAMUNet"]


class CBAMUNet(UNetSkeleton):
    """
    U-Net with CBAM after every encoder and decoder conv block (paper 001, TCGA/LGG brain tumour MRI).
    ``use_cbam=False`` gives :class:`ClassicUNet` exactly. The paper's tables show no normalization
    (``norm=None``); batch norm is the default here because it trains far more reliably.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels (3 for the LGG slices: pre-contrast, FLAIR, post-contrast).
        out_channels: output channels (logits; 2 in the paper).
        features: widths of the five levels; spatial size must be divisible by ``2 ** (len(features) - 1)``.
        use_cbam: CBAM (channel gate, then spatial gate) after each conv block.
        reduction: CBAM channel-MLP reduction ratio.
        spatial_kernel_size: CBAM spatial-gate kernel (7, or 3).
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
        use_cbam: bool = True,
        reduction: int = 16,
        spatial_kernel_size: int = 7,
        act: str | tuple = ("relu", {"inplace": True}),
        norm: str | tuple | None = "batch",
        dropout: float = 0.0,
    ) -> None:
        def make_block(c_in: int, c_out: int) -> nn.Sequential:
            block = nn.Sequential(TwoConv(spatial_dims, c_in, c_out, act=act, norm=norm, bias=True, dropout=dropout))
            if use_cbam:
                block.append(CBAM(spatial_dims, c_out, reduction, spatial_kernel_size, norm=norm))
            return block

        super().__init__(spatial_dims, in_channels, out_channels, features, make_block)

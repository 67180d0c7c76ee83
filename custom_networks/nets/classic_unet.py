from __future__ import annotations

from collections.abc import Sequence

from custom_networks.blocks.double_conv import DoubleConv
from custom_networks.nets.unet_skeleton import UNetSkeleton

__all__ = ["ClassicUNet"]


class ClassicUNet(UNetSkeleton):
    """
    The classic U-Net: two 3x3 conv-norm-act units per level (:class:`DoubleConv`), 2x max-pool, 2x2
    transposed-conv upsampling, concatenated skips, 1x1 head. The plain baseline of every non-residual U-Net
    variant in this package, built by the same :class:`UNetSkeleton`; their switches off give this network's
    modules and state-dict keys exactly.

    Reference: Ronneberger, Fischer and Brox, "U-Net: Convolutional Networks for Biomedical Image
    Segmentation", MICCAI 2015, https://arxiv.org/abs/1505.04597.

    Unlike MONAI's ``UNet`` (strided convs, residual units) and ``BasicUNet`` (different widths and
    upsampling), this is the paper layout the variants were published against. Convs carry a bias only
    without norm; with ``norm=None`` and the default widths it has 31,031,745 parameters for 3 input and 1
    output channel.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels (logits).
        features: widths of the levels; spatial size must be divisible by ``2 ** (len(features) - 1)``.
        act: activation type and arguments.
        norm: normalization type and arguments, or None.
        dropout: dropout ratio in each conv unit; 0 adds no dropout layer.

    Shapes: ``(B, in_channels, *S) -> (B, out_channels, *S)``.

    Examples::

        # 2D, the paper's widths (64 ... 1024)
        >>> net = ClassicUNet(spatial_dims=2, in_channels=3, out_channels=2)

        # 3D with small widths and instance norm
        >>> net = ClassicUNet(spatial_dims=3, in_channels=1, out_channels=2, features=(16, 32, 64), norm="instance")
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        features: Sequence[int] = (64, 128, 256, 512, 1024),
        act: str | tuple = ("relu", {"inplace": True}),
        norm: str | tuple | None = "batch",
        dropout: float = 0.0,
    ) -> None:
        def make_block(c_in: int, c_out: int) -> DoubleConv:
            return DoubleConv(spatial_dims, c_in, c_out, act=act, norm=norm, dropout=dropout)

        super().__init__(spatial_dims, in_channels, out_channels, features, make_block)

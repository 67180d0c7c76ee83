from __future__ import annotations

from collections.abc import Sequence

from monai.networks.nets.basic_unet import TwoConv

from custom_networks.nets.unet_skeleton import UNetSkeleton

__all__ = ["ClassicUNet"]


class ClassicUNet(UNetSkeleton):
    """
    The classic U-Net (Ronneberger et al., 2015): two 3x3 conv-norm-act units per level, 2x max-pool,
    2x2 transposed-conv upsampling, concatenated skips, 1x1 head. The plain baseline of every U-Net
    variant in this package, built by the same :class:`UNetSkeleton`.

    Unlike MONAI's ``UNet`` (strided convs, residual units) and ``BasicUNet`` (different widths and
    upsampling), this is the paper layout the variants were published against. With ``norm=None`` and
    the default widths it has 31,031,745 parameters for 3 input and 1 output channel.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels (logits).
        features: widths of the five levels; spatial size must be divisible by ``2 ** (len(features) - 1)``.
        act: activation type and arguments.
        norm: normalization type and arguments, or None.
        dropout: dropout ratio after each conv unit.
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
        def make_block(c_in: int, c_out: int) -> TwoConv:
            return TwoConv(spatial_dims, c_in, c_out, act=act, norm=norm, bias=True, dropout=dropout)

        super().__init__(spatial_dims, in_channels, out_channels, features, make_block)

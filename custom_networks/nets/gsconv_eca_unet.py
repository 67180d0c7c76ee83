from __future__ import annotations

from collections.abc import Sequence

from custom_networks.blocks.double_conv import DoubleConv
from custom_networks.blocks.eca import ECA
from custom_networks.blocks.gsconv import GSConv
from custom_networks.nets.switches import check_switches
from custom_networks.nets.unet_skeleton import UNetSkeleton

__all__ = ["GSConvECAUNet"]


class GSConvECAUNet(UNetSkeleton):
    """
    U-Net whose double-conv blocks are two GSConv units followed by ECA channel attention (brain tumour MRI).
    ``use_gsconv=False, use_eca=False`` gives :class:`ClassicUNet` exactly (same modules and state-dict keys).

    Reference: Qiyuan Tian, Zhuoyue Wang and Xiaoling Cui, "Improved Unet brain tumor image segmentation
    based on GSConv module and ECA attention mechanism" (the paper text names no venue).

    Each level is a :class:`DoubleConv` with ``conv_0``, ``conv_1`` (GSConv units, or 3x3 conv units) and,
    with ``use_eca``, an ``attention`` child (ECA).

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels (logits).
        features: widths of the levels (even with GSConv); spatial size must be divisible by
            ``2 ** (len(features) - 1)``.
        use_gsconv: GSConv units (dense conv to half width + depthwise 5x5, interleaved) instead of 3x3 convs.
        use_eca: ECA at the end of every conv block.
        gsconv_shortcut: with ``use_gsconv``, each block also adds a 1x1 conv + norm of its input to its output
            (the shortcut of slim-neck's GS bottleneck; the paper has none). Without it the last decoder block
            can switch its GSConv units off on a small lesion, which then gets only the head's bias: the bundle
            sets it (docs/ablations.md, issue 22).
        eca_kernel_size: fixed ECA kernel; adaptive from the width when None.
        act: activation type and arguments.
        norm: normalization type and arguments, or None.
        dropout: dropout ratio after each conv unit; 0 adds no dropout layer.

    Shapes: ``(B, in_channels, *S) -> (B, out_channels, *S)``.

    Examples::

        # 2D, the paper's widths (64 ... 1024)
        >>> net = GSConvECAUNet(spatial_dims=2, in_channels=1, out_channels=2)

        # as the brain tumour bundle builds it: GSConv blocks with the GS bottleneck's shortcut
        >>> net = GSConvECAUNet(2, 1, 2, features=(16, 32, 64, 128, 256), gsconv_shortcut=True)

        # ablations: GSConv only, and the plain baseline
        >>> gsconv_only = GSConvECAUNet(2, 1, 2, use_eca=False)
        >>> plain = GSConvECAUNet(2, 1, 2, use_gsconv=False, use_eca=False)  # ClassicUNet exactly

        # 3D with small widths
        >>> net = GSConvECAUNet(spatial_dims=3, in_channels=4, out_channels=3, features=(16, 32, 64, 128))
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        features: Sequence[int] = (64, 128, 256, 512, 1024),
        use_gsconv: bool = True,
        use_eca: bool = True,
        gsconv_shortcut: bool = False,
        eca_kernel_size: int | None = None,
        act: str | tuple = ("relu", {"inplace": True}),
        norm: str | tuple | None = "batch",
        dropout: float = 0.0,
    ) -> None:
        check_switches(type(self).__name__, use_gsconv=use_gsconv, use_eca=use_eca, gsconv_shortcut=gsconv_shortcut)

        def gsconv_unit(c_in: int, c_out: int) -> GSConv:
            return GSConv(spatial_dims, c_in, c_out, act=act, norm=norm, dropout=dropout)

        def make_block(c_in: int, c_out: int) -> DoubleConv:
            return DoubleConv(
                spatial_dims, c_in, c_out, act=act, norm=norm, dropout=dropout,
                unit=gsconv_unit if use_gsconv else None,
                attention=ECA(spatial_dims, c_out, kernel_size=eca_kernel_size) if use_eca else None,
                shortcut=use_gsconv and gsconv_shortcut,
            )

        super().__init__(spatial_dims, in_channels, out_channels, features, make_block)

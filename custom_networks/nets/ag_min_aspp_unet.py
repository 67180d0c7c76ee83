from __future__ import annotations

from collections.abc import Sequence

from custom_networks.blocks.attention_gate import AttentionGate
from custom_networks.blocks.double_conv import DoubleConv
from custom_networks.blocks.gsconv import GSConv
from custom_networks.blocks.min_aspp import MinASPP
from custom_networks.nets.switches import check_switches
from custom_networks.nets.unet_skeleton import UNetSkeleton

__all__ = ["AGMinASPPUNet"]

CONV_BLOCKS = ("gsconv", "gated", "standard")


class AGMinASPPUNet(UNetSkeleton):
    """
    U-Net with GSConv conv blocks, a Min-ASPP bottleneck and attention gates on the skips (lung field in chest
    X-ray). ``conv_block="standard", use_aspp=False, use_attention_gate=False`` gives :class:`ClassicUNet`
    exactly (same modules and state-dict keys).

    Reference: Zhuo Xu and Ningning Xu, "Improved Unet Model for Lung X-ray Image Segmentation Based on AG
    Attention Mechanism with Min-ASPP Module Fused with GSConv Module" (the paper text names no venue).

    Each level is a :class:`DoubleConv` with units ``conv_0``, ``conv_1`` (GSConv, gated GSConv or 3x3
    conv). The attention gates follow Oktay et al.: the skip is projected onto the coarser grid of the
    gating signal (the decoder map before upsampling), and the coefficients are resampled back. The Min-ASPP
    replaces the bottleneck's double conv (1x1, one 3x3 atrous branch per dilation and a pooling branch).

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels (logits).
        features: widths of the levels (even with GSConv); spatial size must be divisible by
            ``2 ** (len(features) - 1)``.
        conv_block: ``"gsconv"`` (two GSConv units), ``"gated"`` (two sigmoid-gated GSConv units) or
            ``"standard"`` (two 3x3 conv units).
        use_aspp: Min-ASPP at the bottleneck.
        use_attention_gate: attention gates on the skip connections.
        gsconv_shortcut: with GSConv blocks (``"gsconv"``, ``"gated"``), each also adds a 1x1 conv + norm of its
            input to its output (the shortcut of slim-neck's GS bottleneck; the paper has none). Without it the
            GSConv blocks fail to learn small lesions (docs/ablations.md, issue 22): the bundle sets it.
        aspp_dilations: dilation rates of the atrous branches (small: the bottleneck map is 16x16 at 256).
        act: activation type and arguments.
        norm: normalization type and arguments, or None.
        dropout: dropout ratio after each conv unit (not in the Min-ASPP); 0 adds no dropout layer.

    Shapes: ``(B, in_channels, *S) -> (B, out_channels, *S)``.

    Examples::

        # 2D chest X-ray, one channel, lung mask
        >>> net = AGMinASPPUNet(spatial_dims=2, in_channels=1, out_channels=1)

        # as the chest X-ray bundle builds it: GSConv blocks with the GS bottleneck's shortcut
        >>> net = AGMinASPPUNet(2, 1, 1, gsconv_shortcut=True)

        # the paper's "gated spatial convolution" reading
        >>> gated = AGMinASPPUNet(2, 1, 1, conv_block="gated")

        # all switches off: ClassicUNet exactly
        >>> plain = AGMinASPPUNet(2, 1, 1, conv_block="standard", use_aspp=False, use_attention_gate=False)

        # 3D with small widths
        >>> net = AGMinASPPUNet(spatial_dims=3, in_channels=1, out_channels=2, features=(16, 32, 64, 128))
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        features: Sequence[int] = (64, 128, 256, 512, 1024),
        conv_block: str = "gsconv",
        use_aspp: bool = True,
        use_attention_gate: bool = True,
        gsconv_shortcut: bool = False,
        aspp_dilations: Sequence[int] = (2, 4, 6),
        act: str | tuple = ("relu", {"inplace": True}),
        norm: str | tuple | None = "batch",
        dropout: float = 0.0,
    ) -> None:
        check_switches(
            type(self).__name__, use_aspp=use_aspp, use_attention_gate=use_attention_gate,
            gsconv_shortcut=gsconv_shortcut,
        )
        if conv_block not in CONV_BLOCKS:
            raise ValueError(f"conv_block must be one of {CONV_BLOCKS}, got {conv_block!r}.")

        def gsconv_unit(c_in: int, c_out: int) -> GSConv:
            return GSConv(spatial_dims, c_in, c_out, act=act, norm=norm, gated=conv_block == "gated", dropout=dropout)

        def make_block(c_in: int, c_out: int) -> DoubleConv:
            if conv_block == "standard":
                return DoubleConv(spatial_dims, c_in, c_out, act=act, norm=norm, dropout=dropout)
            return DoubleConv(
                spatial_dims, c_in, c_out, act=act, norm=norm, dropout=dropout, unit=gsconv_unit,
                shortcut=gsconv_shortcut,
            )

        def make_aspp(c_in: int, c_out: int) -> MinASPP:
            return MinASPP(spatial_dims, c_in, c_out, dilations=aspp_dilations, norm=norm, act=act)

        def make_gate(skip_channels: int, gating_channels: int) -> AttentionGate:
            return AttentionGate(spatial_dims, skip_channels, gating_channels, norm=norm)

        super().__init__(
            spatial_dims,
            in_channels,
            out_channels,
            features,
            make_block,
            make_bottleneck=make_aspp if use_aspp else None,
            make_skip_gate=make_gate if use_attention_gate else None,
        )

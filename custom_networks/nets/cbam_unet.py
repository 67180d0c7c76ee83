from __future__ import annotations

from collections.abc import Sequence

from custom_networks.blocks.cbam import CBAM
from custom_networks.blocks.double_conv import DoubleConv
from custom_networks.nets.switches import check_switches
from custom_networks.nets.unet_skeleton import UNetSkeleton

__all__ = ["CBAMUNet"]


class CBAMUNet(UNetSkeleton):
    """
    U-Net with CBAM after every encoder and decoder conv block (TCGA/LGG brain tumour MRI).
    ``use_cbam=False`` gives :class:`ClassicUNet` exactly (same modules and state-dict keys). The paper's
    tables show no normalization (``norm=None``); batch norm is the default here because it trains far
    more reliably.

    Reference: Yudian Pan, "Deep Learning-Based Medical Image Segmentation for Brain Tumors" (the paper
    text names no venue).

    Each level is a :class:`DoubleConv` with ``conv_0``, ``conv_1`` (3x3 conv units) and, with ``use_cbam``,
    an ``attention`` child (CBAM).

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels (3 for the LGG slices: pre-contrast, FLAIR, post-contrast).
        out_channels: output channels (logits; 2 in the paper).
        features: widths of the levels; spatial size must be divisible by ``2 ** (len(features) - 1)``.
        use_cbam: CBAM (channel gate, then spatial gate) after each conv block.
        reduction: CBAM channel-MLP reduction ratio.
        spatial_kernel_size: CBAM spatial-gate kernel (7, or 3).
        act: activation type and arguments.
        norm: normalization type and arguments, or None (also used by the CBAM spatial gate).
        dropout: dropout ratio in each conv unit; 0 adds no dropout layer.
        norm_spatial_gate: batch (or the network's) norm on CBAM's one-channel spatial map, as in the CBAM
            authors' code; False gives a conv with bias there.
        residual_gates: False (the paper): each block's output is the gated features; True: features plus
            gated features, so a gate cannot shut a block. The ``lgg_mri_cbam_unet`` bundle sets True: in the
            paper's form the spatial gate of the first block learns to shut small lesions (gate 0.04 on lesion
            pixels, 0.50 elsewhere) and the network never segments them (docs/ablations.md, issue 22).
        gate_last_block: CBAM also after the last decoder block, right before the 1x1 head (the paper: after
            every block).
        cbam_gates: CBAM's gates, ``("channel", "spatial")`` (the paper) or one of them alone.

    Shapes: ``(B, in_channels, *S) -> (B, out_channels, *S)``.

    Examples::

        # 2D, the paper's widths (64 ... 1024), three MRI channels, two classes
        >>> net = CBAMUNet(spatial_dims=2, in_channels=3, out_channels=2)

        # the paper's configuration without normalization, the bundle's gates (x + CBAM(x)), the plain baseline
        >>> paper = CBAMUNet(2, 3, 2, norm=None)
        >>> bundled = CBAMUNet(2, 3, 2, residual_gates=True)
        >>> plain = CBAMUNet(2, 3, 2, use_cbam=False)  # ClassicUNet exactly

        # 3D with small widths and a 3x3x3 spatial gate
        >>> net = CBAMUNet(spatial_dims=3, in_channels=1, out_channels=2, features=(16, 32, 64), spatial_kernel_size=3)
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
        norm_spatial_gate: bool = True,
        residual_gates: bool = False,
        gate_last_block: bool = True,
        cbam_gates: Sequence[str] = ("channel", "spatial"),
    ) -> None:
        check_switches(
            type(self).__name__, use_cbam=use_cbam, norm_spatial_gate=norm_spatial_gate, residual_gates=residual_gates,
            gate_last_block=gate_last_block,
        )
        blocks_made = []
        n_blocks = 2 * len(features) - 1  # encoder, bottleneck, decoder; the last one made feeds the head

        def make_block(c_in: int, c_out: int) -> DoubleConv:
            blocks_made.append(c_out)
            gated = use_cbam and (gate_last_block or len(blocks_made) < n_blocks)
            attention = (
                CBAM(
                    spatial_dims, c_out, reduction, spatial_kernel_size,
                    norm=norm if norm_spatial_gate else None, residual=residual_gates, gates=tuple(cbam_gates),
                )
                if gated
                else None
            )
            return DoubleConv(spatial_dims, c_in, c_out, act=act, norm=norm, dropout=dropout, attention=attention)

        super().__init__(spatial_dims, in_channels, out_channels, features, make_block)

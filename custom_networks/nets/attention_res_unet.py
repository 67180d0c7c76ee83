from __future__ import annotations

from collections.abc import Sequence

from custom_networks.blocks.attention_gate import AttentionGate
from custom_networks.blocks.residual_block import ResidualAttentionBlock
from custom_networks.nets.unet_skeleton import UNetSkeleton

__all__ = ["AttentionResUNet"]

ATTENTIONS = (None, "ag", "se", "cbam")


class AttentionResUNet(UNetSkeleton):
    """
    Residual U-Net with one choice of attention (brain tumour MRI, int8-quantized for CPU): ``"ag"`` puts
    attention gates on the skips, ``"se"`` and ``"cbam"`` sit inside every residual block before the
    addition (``residual.attention``); ``attention=None`` gives :class:`ResidualUNet` exactly (same modules
    and state-dict keys). With the default widths, 3 input and 1 output channel it has 33,481,801 parameters
    with attention gates and 32,436,353 without (the paper reports about 32 M, 127 MB in fp32).

    Reference: "Brain Tumor Segmentation Meets Efficiency: Res-UNet Improved by Attention Mechanisms and
    Quantization" (the stored text, an abstract page, names neither the authors nor the venue).

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels (logits).
        features: widths of the levels; spatial size must be divisible by ``2 ** (len(features) - 1)``.
        attention: None, ``"ag"``, ``"se"`` or ``"cbam"``.
        reduction: channel reduction ratio of SE and CBAM.
        act: activation type and arguments.
        norm: normalization type and arguments, or None.
        dropout: dropout ratio inside each residual block; 0 adds no dropout layer.

    Shapes: ``(B, in_channels, *S) -> (B, out_channels, *S)``.

    Examples::

        # 2D with attention gates (the paper's best model)
        >>> net = AttentionResUNet(spatial_dims=2, in_channels=3, out_channels=1)

        # SE or CBAM inside the residual blocks, and the plain baseline
        >>> se = AttentionResUNet(2, 3, 1, attention="se")
        >>> plain = AttentionResUNet(2, 3, 1, attention=None)  # ResidualUNet exactly

        # 3D with small widths
        >>> net = AttentionResUNet(spatial_dims=3, in_channels=4, out_channels=3, features=(16, 32, 64, 128))
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        features: Sequence[int] = (64, 128, 256, 512, 1024),
        attention: str | None = "ag",
        reduction: int = 16,
        act: str | tuple = ("relu", {"inplace": True}),
        norm: str | tuple | None = "batch",
        dropout: float = 0.0,
    ) -> None:
        if attention not in ATTENTIONS:
            raise ValueError(f"attention must be one of {ATTENTIONS}, got {attention!r}.")
        block_attention = attention if attention in ("se", "cbam") else None

        def make_block(c_in: int, c_out: int) -> ResidualAttentionBlock:
            return ResidualAttentionBlock(
                spatial_dims, c_in, c_out, attention=block_attention, reduction=reduction, act=act, norm=norm,
                dropout=dropout,
            )

        def make_gate(skip_channels: int, gating_channels: int) -> AttentionGate:
            return AttentionGate(spatial_dims, skip_channels, gating_channels, norm=norm)

        super().__init__(
            spatial_dims,
            in_channels,
            out_channels,
            features,
            make_block,
            make_skip_gate=make_gate if attention == "ag" else None,
        )

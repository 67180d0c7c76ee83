from __future__ import annotations

from collections.abc import Sequence

from custom_networks.blocks.residual_block import ResidualAttentionBlock
from custom_networks.nets.unet_skeleton import UNetSkeleton

__all__ = ["ResidualUNet"]


class ResidualUNet(UNetSkeleton):
    """
    The plain residual U-Net (Res-UNet): the :class:`ClassicUNet` layout with every double conv replaced by a
    residual block (conv-norm-act, conv-norm, plus a shortcut, then act; He et al., "Deep Residual Learning
    for Image Recognition", CVPR 2016). The baseline of :class:`AttentionResUNet`, whose ``attention=None``
    gives this network exactly (same modules and state-dict keys).

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels (logits).
        features: widths of the levels; spatial size must be divisible by ``2 ** (len(features) - 1)``.
        act: activation type and arguments.
        norm: normalization type and arguments, or None.
        dropout: dropout ratio inside each residual block; 0 adds no dropout layer.

    Shapes: ``(B, in_channels, *S) -> (B, out_channels, *S)``.

    Examples::

        # 2D, widths 64 ... 1024
        >>> net = ResidualUNet(spatial_dims=2, in_channels=3, out_channels=1)

        # 3D with small widths
        >>> net = ResidualUNet(spatial_dims=3, in_channels=4, out_channels=3, features=(16, 32, 64, 128))
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
        def make_block(c_in: int, c_out: int) -> ResidualAttentionBlock:
            return ResidualAttentionBlock(
                spatial_dims, c_in, c_out, attention=None, act=act, norm=norm, dropout=dropout
            )

        super().__init__(spatial_dims, in_channels, out_channels, features, make_block)

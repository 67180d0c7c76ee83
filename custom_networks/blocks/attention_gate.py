from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.blocks import Convolution
from monai.networks.layers.factories import Act, Conv

from custom_networks.blocks.one_channel_norm import one_channel_norm

__all__ = ["AttentionGate"]


class AttentionGate(nn.Module):
    """
    Additive attention gate on a skip connection: scale skip features by coefficients computed with a gating signal.

    Reference: Oktay et al., "Attention U-Net: Learning Where to Look for the Pancreas", MIDL 2018,
    https://arxiv.org/abs/1804.03999.

    This is the variant of the paper: the skip features ``x`` are projected onto the grid of the coarser
    gating signal ``g`` (2x2 conv, stride 2), added to the 1x1 projection of ``g``, passed through ReLU, a
    1x1 conv to one channel (and ``norm``) and a sigmoid; the coefficients are then resampled
    (bilinear/trilinear, ``align_corners=False``) to the grid of ``x`` and multiply ``x``. MONAI's
    ``monai.networks.nets.attentionunet.AttentionBlock`` instead expects ``g`` already upsampled to the grid
    of ``x``; that case is ``gating_stride=1`` here (1x1 projection of ``x``, no resampling).

    Args:
        spatial_dims: number of spatial dimensions, 2 or 3.
        skip_channels: number of channels Cx of the skip features ``x``.
        gating_channels: number of channels Cg of the gating signal ``g``.
        inter_channels: width of the intermediate projections; ``None`` gives ``max(1, skip_channels // 2)``.
        norm: norm after the one-channel conv (MONAI form; group norm is applied with one group); with
            ``None`` that conv gets a bias. Defaults to "batch".
        gating_stride: 2 when ``g`` is on a grid twice as coarse as ``x`` (paper), 1 when ``g`` is on the
            grid of ``x``. Defaults to 2.

    Inputs: ``x`` of shape (B, Cx, *S) and ``g`` of shape (B, Cg, *S / gating_stride).
    Output: shape (B, Cx, *S).
    """

    def __init__(
        self,
        spatial_dims: int,
        skip_channels: int,
        gating_channels: int,
        inter_channels: int | None = None,
        norm: tuple | str | None = "batch",
        gating_stride: int = 2,
    ) -> None:
        super().__init__()
        if gating_stride not in (1, 2):
            raise ValueError(f"gating_stride must be 1 or 2, got {gating_stride}.")
        if inter_channels is None:
            inter_channels = max(1, skip_channels // 2)
        conv_type = Conv[Conv.CONV, spatial_dims]
        self.gating_stride = gating_stride
        self.mode = "bilinear" if spatial_dims == 2 else "trilinear"
        self.project_skip = conv_type(
            skip_channels, inter_channels, kernel_size=gating_stride, stride=gating_stride, bias=False
        )
        self.project_gating = conv_type(gating_channels, inter_channels, kernel_size=1, bias=True)
        self.relu = Act[Act.RELU]()
        self.psi = Convolution(
            spatial_dims, inter_channels, 1, kernel_size=1, act=None, norm=one_channel_norm(norm), bias=norm is None
        )
        self.sigmoid = Act[Act.SIGMOID]()

    def coefficients(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """
        Attention coefficients in (0, 1) of shape (B, 1, *S), on the grid of the skip features ``x``.
        """
        alpha = self.sigmoid(self.psi(self.relu(self.project_skip(x) + self.project_gating(g))))
        if self.gating_stride != 1:
            alpha = F.interpolate(alpha, size=x.shape[2:], mode=self.mode, align_corners=False)
        return alpha

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return x * self.coefficients(x, g)

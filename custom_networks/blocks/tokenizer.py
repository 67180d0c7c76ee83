from __future__ import annotations

import math

import torch
import torch.nn as nn
from monai.networks.layers.factories import Conv

__all__ = ["OverlapPatchEmbedding"]


class OverlapPatchEmbedding(nn.Module):
    """
    Overlapping patch embedding (tokenizer) of UNeXt: strided conv, then LayerNorm over the channels.

    Reference: Valanarasu and Patel, "UNeXt: MLP-based Rapid Medical Image Segmentation Network",
    MICCAI 2022, https://arxiv.org/abs/2203.04967.

    Every output position is one token of ``embed_dim`` features, normalised over the channels. The output
    stays channel-first (B, embed_dim, *spatial) rather than UNeXt's flattened (B, N, C) token list, so the
    following blocks need no explicit spatial size. The conv weight is initialised as in the reference code
    (normal with std sqrt(2 / fan_out), zero bias).

    Args:
        spatial_dims: number of spatial dimensions, 2 or 3.
        in_channels: number of input channels.
        embed_dim: number of output channels (token width).
        kernel_size: conv kernel size, padding ``kernel_size // 2``. Defaults to 3.
        stride: conv stride. Defaults to 2.

    Input shape (B, in_channels, *spatial); output shape (B, embed_dim, *spatial / stride).
    """

    def __init__(
        self, spatial_dims: int, in_channels: int, embed_dim: int, kernel_size: int = 3, stride: int = 2
    ) -> None:
        super().__init__()
        self.proj = Conv[Conv.CONV, spatial_dims](
            in_channels, embed_dim, kernel_size=kernel_size, stride=stride, padding=kernel_size // 2, bias=True
        )
        fan_out = kernel_size**spatial_dims * embed_dim
        nn.init.normal_(self.proj.weight, 0.0, math.sqrt(2.0 / fan_out))
        nn.init.zeros_(self.proj.bias)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)
        # Positive dims: the ONNX exporter writes movedim's negative dims into Transpose perms unresolved.
        last = x.dim() - 1
        return self.norm(x.movedim(1, last)).movedim(last, 1)

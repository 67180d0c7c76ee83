from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import List

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.blocks import Convolution
from monai.networks.layers.factories import Conv, Pool
from monai.networks.layers.utils import get_act_layer

from custom_networks.blocks.shifted_mlp import ShiftedMLPBlock
from custom_networks.blocks.tokenizer import OverlapPatchEmbedding
from custom_networks.nets.spatial_size import check_divisible

__all__ = ["UNeXt"]

UNEXT_FEATURES = {"s": (8, 16, 32, 64, 128), "base": (16, 32, 128, 160, 256)}


class ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over the channels of a channel-first tensor (B, C, *spatial): every position is a token."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Positive dims: the ONNX exporter writes movedim's negative dims into Transpose perms unresolved.
        last = x.dim() - 1
        normed = F.layer_norm(x.movedim(1, last), self.normalized_shape, self.weight, self.bias, self.eps)
        return normed.movedim(last, 1)


class AddSkip(nn.Module):
    """UNeXt's skip connection: the upsampled decoder map plus the encoder map."""

    def forward(self, upsampled: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return upsampled + skip


class LastLevel(nn.Module):
    """Output of a decoder without pyramid fusion: the last (full-resolution) decoder level."""

    def forward(self, levels: List[torch.Tensor]) -> torch.Tensor:
        return levels[-1]


class UNeXtDecoderStage(nn.Module):
    """
    One UNeXt decoder level: upsample the deeper map, join the encoder skip, then mix.

    Args:
        upsample: module mapping the deeper decoder map to the skip's width and resolution.
        skip_fusion: module ``(upsampled, skip) -> fused``.
        mixer: module applied to the fused map (shifted MLP + LayerNorm at token levels, else identity).
    """

    def __init__(self, upsample: nn.Module, skip_fusion: nn.Module, mixer: nn.Module) -> None:
        super().__init__()
        self.upsample = upsample
        self.skip_fusion = skip_fusion
        self.mixer = mixer

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.mixer(self.skip_fusion(self.upsample(x), skip))


class UNeXt(nn.Module):
    """
    UNeXt: convolutional stages plus tokenized shifted-MLP stages, a light U-Net for 2D or 3D segmentation.

    Reference: Valanarasu and Patel, "UNeXt: MLP-based Rapid Medical Image Segmentation Network",
    MICCAI 2022, https://arxiv.org/abs/2203.04967 (layout of the authors' ``UNext`` / ``UNext_S``).

    Encoder: three conv stages (3x3 conv, norm, 2x max-pool, act) and two tokenized MLP stages
    (``OverlapPatchEmbedding`` with stride 2, ``ShiftedMLPBlock``, LayerNorm), halving the size five times.
    Decoder: at each level 3x3 conv, norm, 2x bilinear/trilinear upsampling (align_corners=False), act, then
    the encoder skip is added; the two token-resolution levels (1/16 and 1/8) follow with a shifted MLP block
    and LayerNorm. A last 3x3 conv (no norm), upsampling and act reach full size; a 1x1 conv gives logits.
    The shifted MLP blocks use GELU and LayerNorm whatever ``act`` and ``norm`` are. Skip joins
    (``decoder[i].skip_fusion``) and the choice of the output level (``level_fusion``) are modules built by
    ``make_skip_fusion`` and ``make_level_fusion``, the hooks through which ``SCUNeXt`` builds its variant.
    With batch norm, training with batch size 1 needs inputs of at least 64 per axis (the first decoder conv
    normalises the 1/32-size bottleneck).

    Convs followed by a norm carry no bias (the reference code has one, which the norm cancels). At
    3x256x256 input and 1 output channel: size "s" has 253,385 parameters and 0.099 GMACs, size "base"
    1,471,409 parameters and 0.562 GMACs (the reference UNeXt-S and UNeXt: 253,561 and 1,471,921, i.e.
    176 and 512 such biases more).

    Args:
        spatial_dims: number of spatial dimensions, 2 or 3.
        in_channels: number of input channels.
        out_channels: number of output channels (logits, no activation).
        size: "s" for widths (8, 16, 32, 64, 128) or "base" for (16, 32, 128, 160, 256). Defaults to "s".
        features: five widths (three conv stages, two token stages); overrides ``size`` when given.
        act: activation of the conv stages and decoder convs (MONAI form). Defaults to "relu".
        norm: norm of the conv stages and decoder convs (MONAI form). Defaults to "batch".
        dropout: dropout probability inside the shifted MLP blocks. Defaults to 0.
        make_skip_fusion: ``(level, channels) -> nn.Module`` whose ``forward(upsampled, skip)`` joins the
            skip at decoder level ``level`` (0 to 3, coarsest first; levels 0 and 1 are the token levels at
            1/16 and 1/8 size) of width ``channels``. Defaults to ``AddSkip`` (addition).
        make_level_fusion: ``(level_channels) -> nn.Module`` whose ``forward(levels)`` maps the list of the
            four decoder level outputs plus the full-size map (widths ``level_channels``, coarsest first)
            to the map the head sees. Defaults to ``LastLevel`` (the full-size map).

    Input shape (B, in_channels, *spatial) with every spatial size divisible by 32 (a ``ValueError``
    names the size otherwise); output shape (B, out_channels, *spatial).

    Examples::

        # UNeXt-S for 2D RGB images, one-channel mask
        >>> net = UNeXt(spatial_dims=2, in_channels=3, out_channels=1)

        # the larger reference UNeXt
        >>> net = UNeXt(spatial_dims=2, in_channels=3, out_channels=1, size="base")

        # 3D with small widths and group norm
        >>> net = UNeXt(3, 1, 2, features=(4, 8, 16, 24, 32), norm=("group", {"num_groups": 2}))
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        size: str = "s",
        features: Sequence[int] | None = None,
        act: tuple | str = "relu",
        norm: tuple | str | None = "batch",
        dropout: float = 0.0,
        make_skip_fusion: Callable[[int, int], nn.Module] | None = None,
        make_level_fusion: Callable[[Sequence[int]], nn.Module] | None = None,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}.")
        if features is None:
            if size not in UNEXT_FEATURES:
                raise ValueError(f"size must be one of {sorted(UNEXT_FEATURES)}, got {size!r}.")
            features = UNEXT_FEATURES[size]
        if len(features) != 5:
            raise ValueError(f"features must have 5 widths (3 conv stages, 2 token stages), got {features}.")
        self.network_name = type(self).__name__
        self.features = tuple(features)
        f0, f1, f2, f3, f4 = self.features

        self.encoder = nn.ModuleList(
            [
                self._conv_stage(spatial_dims, in_channels, f0, act, norm),
                self._conv_stage(spatial_dims, f0, f1, act, norm),
                self._conv_stage(spatial_dims, f1, f2, act, norm),
                self._token_stage(spatial_dims, f2, f3, dropout),
                self._token_stage(spatial_dims, f3, f4, dropout),
            ]
        )
        decoder_levels = [(f4, f3, True), (f3, f2, True), (f2, f1, False), (f1, f0, False)]
        self.decoder = nn.ModuleList(
            UNeXtDecoderStage(
                self._upsample(spatial_dims, deeper, width, act, norm),
                make_skip_fusion(level, width) if make_skip_fusion else AddSkip(),
                self._token_mixer(spatial_dims, width, dropout) if tokens else nn.Identity(),
            )
            for level, (deeper, width, tokens) in enumerate(decoder_levels)
        )
        self.final_upsample = self._upsample(spatial_dims, f0, f0, act, None)
        level_channels = (f3, f2, f1, f0, f0)
        self.level_fusion = make_level_fusion(level_channels) if make_level_fusion else LastLevel()
        self.head = Conv[Conv.CONV, spatial_dims](f0, out_channels, kernel_size=1)

    @staticmethod
    def _conv_stage(
        spatial_dims: int, in_channels: int, out_channels: int, act: tuple | str, norm: tuple | str | None
    ) -> nn.Sequential:
        # The reference pools between norm and activation, so MONAI's Convolution carries no act here.
        return nn.Sequential(
            Convolution(
                spatial_dims, in_channels, out_channels, kernel_size=3, act=None, norm=norm, bias=norm is None
            ),
            Pool[Pool.MAX, spatial_dims](kernel_size=2),
            get_act_layer(act),
        )

    @staticmethod
    def _token_stage(spatial_dims: int, in_channels: int, out_channels: int, dropout: float) -> nn.Sequential:
        return nn.Sequential(
            OverlapPatchEmbedding(spatial_dims, in_channels, out_channels),
            ShiftedMLPBlock(spatial_dims, out_channels, drop=dropout),
            ChannelLayerNorm(out_channels),
        )

    @staticmethod
    def _token_mixer(spatial_dims: int, channels: int, dropout: float) -> nn.Sequential:
        return nn.Sequential(ShiftedMLPBlock(spatial_dims, channels, drop=dropout), ChannelLayerNorm(channels))

    @staticmethod
    def _upsample(
        spatial_dims: int, in_channels: int, out_channels: int, act: tuple | str, norm: tuple | str | None
    ) -> nn.Sequential:
        # Conv at the coarse size, then interpolation, then act (reference order), so no MONAI UpSample block.
        return nn.Sequential(
            Convolution(
                spatial_dims,
                in_channels,
                out_channels,
                kernel_size=3,
                act=None,
                norm=norm,
                bias=norm is None,
                conv_only=norm is None,
            ),
            nn.Upsample(scale_factor=2, mode="bilinear" if spatial_dims == 2 else "trilinear", align_corners=False),
            get_act_layer(act),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_divisible(x, 32, self.network_name)
        skips: List[torch.Tensor] = []
        for stage in self.encoder:
            x = stage(x)
            skips.append(x)
        levels: List[torch.Tensor] = []
        for i, stage in enumerate(self.decoder):
            x = stage(x, skips[-2 - i])
            levels.append(x)
        levels.append(self.final_upsample(x))
        return self.head(self.level_fusion(levels))

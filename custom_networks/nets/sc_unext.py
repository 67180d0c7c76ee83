from __future__ import annotations

from collections.abc import Sequence
from typing import List

import torch
import torch.nn as nn
from monai.networks.blocks import Convolution

from custom_networks.blocks.cbam import CBAM
from custom_networks.nets.switches import check_switches
from custom_networks.nets.unext import UNeXt

__all__ = ["SCUNeXt"]


class SCSkipFusion(nn.Module):
    """
    Skip connection of SC-UNeXt: ``z = CBAM(f(up * skip + up))``, each part optional.

    With ``sc_skip`` the upsampled decoder map ``up`` gates the encoder map by element-wise multiplication
    and ``up`` is added back; without it the two maps are added as in UNeXt. ``f`` is a 3x3 conv, norm and
    act keeping the width when ``fusion_conv`` is set (and ``sc_skip`` on), else identity. With
    ``use_cbam`` CBAM (reduction 16, 7x7 spatial gate with ``norm``) re-weights the fused map.

    Args:
        spatial_dims: number of spatial dimensions, 2 or 3.
        channels: width of both maps (and of the output).
        sc_skip: multiplicative fusion instead of addition.
        use_cbam: apply CBAM to the fused map.
        fusion_conv: follow the multiplicative fusion with the conv ``f``.
        act: activation of ``f`` (MONAI form).
        norm: norm of ``f`` and of the CBAM spatial gate (MONAI form), or None (those convs then get a bias).

    Inputs: upsampled map and skip map, both (B, channels, *spatial); output of the same shape.
    """

    def __init__(
        self,
        spatial_dims: int,
        channels: int,
        sc_skip: bool,
        use_cbam: bool,
        fusion_conv: bool,
        act: tuple | str,
        norm: tuple | str | None,
    ) -> None:
        super().__init__()
        self.sc_skip = sc_skip
        self.f: nn.Module = nn.Identity()
        if sc_skip and fusion_conv:
            self.f = Convolution(
                spatial_dims, channels, channels, kernel_size=3, act=act, norm=norm, bias=norm is None
            )
        self.attention: nn.Module = CBAM(spatial_dims, channels, norm=norm) if use_cbam else nn.Identity()

    def forward(self, upsampled: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        if self.sc_skip:
            fused = self.f(upsampled * skip + upsampled)
        else:
            fused = upsampled + skip
        return self.attention(fused)


class PyramidFusion(nn.Module):
    """
    Pyramid feature fusion module (PFM) of SC-UNeXt: every decoder level brought to full size and summed.

    Each coarser level goes through a chain of 2x transposed convs (kernel 2, stride 2, then norm and act);
    the first maps its width to the full-resolution width, the rest keep it. The results are added to the
    full-resolution level element-wise.

    Args:
        spatial_dims: number of spatial dimensions, 2 or 3.
        level_channels: widths of the decoder levels from coarsest to full resolution; level ``i`` is
            ``2 ** (len - 1 - i)`` times smaller than the last one.
        act: activation after each transposed conv (MONAI form).
        norm: norm after each transposed conv (MONAI form), or None (the convs then get a bias).

    Input: list of (B, level_channels[i], *spatial / 2 ** (len - 1 - i)); output (B, level_channels[-1], *spatial).
    """

    def __init__(
        self, spatial_dims: int, level_channels: Sequence[int], act: tuple | str, norm: tuple | str | None
    ) -> None:
        super().__init__()
        out_channels = level_channels[-1]
        num_levels = len(level_channels)
        paths = []
        for i, channels in enumerate(level_channels[:-1]):
            widths = [channels] + [out_channels] * (num_levels - 1 - i)
            paths.append(
                nn.Sequential(
                    *[
                        Convolution(
                            spatial_dims,
                            c_in,
                            c_out,
                            strides=2,
                            kernel_size=2,
                            padding=0,
                            output_padding=0,
                            act=act,
                            norm=norm,
                            bias=norm is None,
                            is_transposed=True,
                        )
                        for c_in, c_out in zip(widths[:-1], widths[1:], strict=True)
                    ]
                )
            )
        self.paths = nn.ModuleList(paths)

    def forward(self, levels: List[torch.Tensor]) -> torch.Tensor:
        fused = levels[-1]
        for i, path in enumerate(self.paths):
            fused = fused + path(levels[i])
        return fused


class SCUNeXt(UNeXt):
    """
    SC-UNeXt: UNeXt-S with multiplicative skip fusion, CBAM on the skips and pyramid feature fusion.

    Reference: John Smith, "Advanced Medical Image Segmentation with Multi-Scale Feature Fusion and
    Attention Mechanisms" (the paper text names no venue), built on Valanarasu and Patel, "UNeXt: MLP-based
    Rapid Medical Image Segmentation Network", MICCAI 2022, https://arxiv.org/abs/2203.04967.

    The encoder, decoder convs and shifted MLP blocks are those of ``UNeXt``; three switches add the
    paper's changes through UNeXt's ``make_skip_fusion`` and ``make_level_fusion`` hooks, and with all three
    off the network is exactly ``UNeXt`` with the same ``features`` (same modules and state-dict keys):

    - ``sc_skip``: at each of the four skips, ``z_l = f([up2(z_{l+1}) * x_l] + up2(z_{l+1}))`` where
      ``up2`` is UNeXt's decoder conv + upsampling and ``x_l`` the encoder map (see ``SCSkipFusion``). At the
      two conv-resolution skips (1/4 and 1/2) ``f`` is a new 3x3 conv, norm, act keeping the width. At the
      two token-resolution skips (1/16 and 1/8) ``f`` is the shifted MLP block (+ LayerNorm) that UNeXt
      already applies there; a dense 3x3 conv at those widths (64, 32) would add 46 k parameters, which
      contradicts the paper's SC-UNeXt being no larger than UNeXt.
    - ``use_cbam``: CBAM (reduction 16, 7x7 spatial gate with ``norm``) on each of the four fused skip
      maps, i.e. after ``f`` at conv levels and before the shifted MLP block at token levels.
    - ``pyramid_fusion``: PFM (see ``PyramidFusion``); the four skip-level decoder outputs are brought to
      full size by chains of 2x transposed convs of width ``features[0]`` and added to the full-resolution
      decoder output, then the 1x1 head.

    Measured at 3x256x256 input and 1 output channel (FlopCounterMode, MACs = FLOPs / 2): all switches on
    263,065 parameters and 0.143 GMACs (paper: about 249.5 k, 0.13 G); UNeXt-S 253,385 and 0.099 G.

    Args:
        spatial_dims: number of spatial dimensions, 2 or 3.
        in_channels: number of input channels.
        out_channels: number of output channels (logits, no activation).
        features: five widths (three conv stages, two token stages). Defaults to UNeXt-S (8, 16, 32, 64, 128).
        sc_skip: multiplicative skip fusion with conv ``f``. Defaults to True.
        use_cbam: CBAM on the fused skip maps. Defaults to True.
        pyramid_fusion: pyramid feature fusion before the head. Defaults to True.
        act: activation of the conv stages, decoder convs, ``f`` and the PFM (MONAI form). Defaults to "relu".
        norm: norm of the conv stages, decoder convs, ``f``, CBAM and the PFM (MONAI form). Defaults to "batch".
        dropout: dropout probability inside the shifted MLP blocks. Defaults to 0.

    Input shape (B, in_channels, *spatial) with every spatial size divisible by 32 (a ``ValueError``
    names the size otherwise); output shape (B, out_channels, *spatial).

    Examples::

        # 2D skin lesion images (RGB), one-channel mask
        >>> net = SCUNeXt(spatial_dims=2, in_channels=3, out_channels=1)

        # one switch at a time, and the plain baseline
        >>> pfm_only = SCUNeXt(2, 3, 1, sc_skip=False, use_cbam=False)
        >>> plain = SCUNeXt(2, 3, 1, sc_skip=False, use_cbam=False, pyramid_fusion=False)  # UNeXt(2, 3, 1) exactly

        # 3D with small widths
        >>> net = SCUNeXt(spatial_dims=3, in_channels=1, out_channels=2, features=(4, 8, 16, 24, 32))
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        features: Sequence[int] = (8, 16, 32, 64, 128),
        sc_skip: bool = True,
        use_cbam: bool = True,
        pyramid_fusion: bool = True,
        act: tuple | str = "relu",
        norm: tuple | str | None = "batch",
        dropout: float = 0.0,
    ) -> None:
        check_switches(type(self).__name__, sc_skip=sc_skip, use_cbam=use_cbam, pyramid_fusion=pyramid_fusion)

        def make_skip_fusion(level: int, channels: int) -> SCSkipFusion:
            # Levels 0 and 1 are token levels: the shifted MLP block after the skip already plays the part of f.
            return SCSkipFusion(spatial_dims, channels, sc_skip, use_cbam, level >= 2, act, norm)

        def make_level_fusion(level_channels: Sequence[int]) -> PyramidFusion:
            return PyramidFusion(spatial_dims, level_channels, act, norm)

        super().__init__(
            spatial_dims,
            in_channels,
            out_channels,
            features=features,
            act=act,
            norm=norm,
            dropout=dropout,
            make_skip_fusion=make_skip_fusion if sc_skip or use_cbam else None,
            make_level_fusion=make_level_fusion if pyramid_fusion else None,
        )

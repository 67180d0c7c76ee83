"""The five papers' networks, their baselines and the U-Net skeleton they share."""

from custom_networks.nets.ag_min_aspp_unet import AGMinASPPUNet
from custom_networks.nets.attention_res_unet import AttentionResUNet
from custom_networks.nets.cbam_unet import CBAMUNet
from custom_networks.nets.classic_unet import ClassicUNet
from custom_networks.nets.gsconv_eca_unet import GSConvECAUNet
from custom_networks.nets.residual_unet import ResidualUNet
from custom_networks.nets.sc_unext import SCUNeXt
from custom_networks.nets.unet_skeleton import UNetSkeleton
from custom_networks.nets.unext import UNeXt

__all__ = [
    "AGMinASPPUNet",
    "AttentionResUNet",
    "CBAMUNet",
    "ClassicUNet",
    "GSConvECAUNet",
    "ResidualUNet",
    "SCUNeXt",
    "UNeXt",
    "UNetSkeleton",
]

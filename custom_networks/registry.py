from __future__ import annotations

from monai.utils.component_store import ComponentStore

from custom_networks.nets.ag_min_aspp_unet import AGMinASPPUNet
from custom_networks.nets.attention_res_unet import AttentionResUNet
from custom_networks.nets.cbam_unet import CBAMUNet
from custom_networks.nets.classic_unet import ClassicUNet
from custom_networks.nets.gsconv_eca_unet import GSConvECAUNet
from custom_networks.nets.sc_unext import SCUNeXt
from custom_networks.nets.unext import UNeXt

__all__ = ["NETWORKS"]

NETWORKS = ComponentStore("custom_networks", "Attention U-Net variants from five papers and their baselines")
NETWORKS.add("GSConvECAUNet", "U-Net with GSConv blocks and ECA channel attention (paper 000, brain MRI)", GSConvECAUNet)
NETWORKS.add("CBAMUNet", "U-Net with CBAM after every conv block (paper 001, TCGA/LGG brain MRI)", CBAMUNet)
NETWORKS.add("AGMinASPPUNet", "U-Net with GSConv, Min-ASPP and attention gates (paper 002, chest X-ray)", AGMinASPPUNet)
NETWORKS.add("SCUNeXt", "UNeXt-S with multiplicative skips, CBAM and pyramid fusion (paper 004, skin)", SCUNeXt)
NETWORKS.add("UNeXt", "Tokenized-MLP U-Net, sizes 's' and 'base' (Valanarasu & Patel 2022; baseline of 004)", UNeXt)
NETWORKS.add("AttentionResUNet", "Residual U-Net with AG, SE or CBAM attention (paper 003, int8 for CPU)", AttentionResUNet)
NETWORKS.add("ClassicUNet", "Classic U-Net (Ronneberger 2015): the plain baseline of the U-Net variants", ClassicUNet)

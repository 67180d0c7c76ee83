from __future__ import annotations

from monai.utils.component_store import ComponentStore

from custom_networks.nets.ag_min_aspp_unet import AGMinASPPUNet
from custom_networks.nets.attention_res_unet import AttentionResUNet
from custom_networks.nets.cbam_unet import CBAMUNet
from custom_networks.nets.classic_unet import ClassicUNet
from custom_networks.nets.gsconv_eca_unet import GSConvECAUNet
from custom_networks.nets.residual_unet import ResidualUNet
from custom_networks.nets.sc_unext import SCUNeXt
from custom_networks.nets.unext import UNeXt

__all__ = ["NETWORKS"]

NETWORKS = ComponentStore("custom_networks", "Attention U-Net variants from five papers and their baselines")
NETWORKS.add(
    "GSConvECAUNet", "U-Net with GSConv blocks and ECA attention (Tian, Wang, Cui; brain tumour MRI)", GSConvECAUNet
)
NETWORKS.add("CBAMUNet", "U-Net with CBAM after every conv block (Pan; TCGA/LGG brain MRI)", CBAMUNet)
NETWORKS.add(
    "AGMinASPPUNet", "U-Net with GSConv, Min-ASPP and attention gates (Xu and Xu; lung X-ray)", AGMinASPPUNet
)
NETWORKS.add(
    "AttentionResUNet",
    "Res-UNet with AG, SE or CBAM attention (Res-UNet improved by attention and quantization; brain MRI)",
    AttentionResUNet,
)
NETWORKS.add("SCUNeXt", "UNeXt-S with multiplicative skips, CBAM and pyramid fusion (Smith; skin lesions)", SCUNeXt)
NETWORKS.add("UNeXt", "Tokenized-MLP U-Net, sizes 's' and 'base' (Valanarasu and Patel, MICCAI 2022)", UNeXt)
NETWORKS.add(
    "ClassicUNet", "Classic U-Net (Ronneberger et al., MICCAI 2015): baseline of the non-residual variants", ClassicUNet
)
NETWORKS.add("ResidualUNet", "Plain residual U-Net: baseline of AttentionResUNet", ResidualUNet)

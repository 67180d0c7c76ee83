"""
Attention U-Net variants from five papers, as MONAI networks.

Every network is importable as ``custom_networks.<Name>`` (so bundle configs can say
``"_target_": "custom_networks.CBAMUNet"``) and listed with a description in ``custom_networks.NETWORKS``.
"""

from custom_networks.losses import DiceCEEdgeLoss
from custom_networks.nets import (
    AGMinASPPUNet,
    AttentionResUNet,
    CBAMUNet,
    ClassicUNet,
    GSConvECAUNet,
    ResidualUNet,
    SCUNeXt,
    UNetSkeleton,
    UNeXt,
)
from custom_networks.registry import NETWORKS

__all__ = [
    "AGMinASPPUNet",
    "AttentionResUNet",
    "CBAMUNet",
    "ClassicUNet",
    "DiceCEEdgeLoss",
    "GSConvECAUNet",
    "NETWORKS",
    "ResidualUNet",
    "SCUNeXt",
    "UNeXt",
    "UNetSkeleton",
]

__version__ = "0.1.0"

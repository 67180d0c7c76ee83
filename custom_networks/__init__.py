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
    SCUNeXt,
    UNeXt,
    UNetSkeleton,
)
from custom_networks.registry import NETWORKS

__version__ = "0.1.0"

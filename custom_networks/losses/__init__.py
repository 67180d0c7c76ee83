"""Losses beyond MONAI's: the SC-UNeXt joint region + edge loss."""

from custom_networks.losses.dice_ce_edge_loss import DiceCEEdgeLoss

__all__ = ["DiceCEEdgeLoss"]

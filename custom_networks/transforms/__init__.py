"""Transforms the bundles need that MONAI lacks."""

from custom_networks.transforms.channel_argmax import ChannelArgmax, ChannelArgmaxd
from custom_networks.transforms.resize_in_plane import ResizeInPlane, ResizeInPlaned
from custom_networks.transforms.union_mask_channels import UnionMaskChannels, UnionMaskChannelsd

__all__ = [
    "ChannelArgmax",
    "ChannelArgmaxd",
    "ResizeInPlane",
    "ResizeInPlaned",
    "UnionMaskChannels",
    "UnionMaskChannelsd",
]

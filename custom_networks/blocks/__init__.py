"""Building blocks of the networks, one per module; MONAI's own blocks are used where they exist."""

from custom_networks.blocks.attention_gate import AttentionGate
from custom_networks.blocks.cbam import CBAM, ChannelGate, SpatialGate
from custom_networks.blocks.double_conv import DoubleConv
from custom_networks.blocks.eca import ECA, eca_kernel_size
from custom_networks.blocks.gsconv import GSConv, interleave_halves
from custom_networks.blocks.min_aspp import MinASPP
from custom_networks.blocks.residual_block import ResidualAttentionBlock
from custom_networks.blocks.shifted_mlp import ShiftedMLPBlock, shift_channel_groups
from custom_networks.blocks.tokenizer import OverlapPatchEmbedding

__all__ = [
    "AttentionGate",
    "CBAM",
    "ChannelGate",
    "DoubleConv",
    "ECA",
    "GSConv",
    "MinASPP",
    "OverlapPatchEmbedding",
    "ResidualAttentionBlock",
    "ShiftedMLPBlock",
    "SpatialGate",
    "eca_kernel_size",
    "interleave_halves",
    "shift_channel_groups",
]

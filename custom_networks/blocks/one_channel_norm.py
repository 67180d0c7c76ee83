from __future__ import annotations

from monai.networks.layers.factories import split_args

__all__ = ["one_channel_norm"]


def one_channel_norm(norm: tuple | str | None) -> tuple | str | None:
    """
    The norm (MONAI form) for a one-channel map such as an attention logit: group norm gets one group, since
    the network's ``num_groups`` cannot divide a single channel; every other norm is returned unchanged.

    Args:
        norm: the network's norm, e.g. ``"batch"`` or ``("group", {"num_groups": 8})``, or None.
    """
    if norm is None:
        return None
    name, args = split_args(norm)
    if name.lower() == "group":
        return name, {**args, "num_groups": 1}
    return norm

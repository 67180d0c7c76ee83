from __future__ import annotations

from typing import List

import torch

__all__ = ["check_divisible"]


def check_divisible(x: torch.Tensor, multiple: int, network: str) -> None:
    """
    Raise a ``ValueError`` unless every spatial size of ``x`` is a multiple of ``multiple``.

    A U-Net with ``k`` halvings needs sizes divisible by ``2**k``; failing here gives a message naming the
    size instead of a shape mismatch deep inside a ``torch.cat``. Pad inputs with ``DivisiblePadd`` or use
    an inferer whose ``roi_size`` is a multiple.

    Args:
        x: input of shape (B, C, *spatial).
        multiple: required divisor of every spatial size.
        network: class name used in the message.
    """
    spatial: List[int] = list(x.shape[2:])
    for size in spatial:
        if size % multiple != 0:
            raise ValueError(
                f"{network}: input spatial size {spatial} is not divisible by {multiple}; every spatial "
                f"size must be a multiple of {multiple} (pad with DivisiblePadd(k={multiple}))."
            )

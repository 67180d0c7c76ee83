"""The two ``torchvision.utils`` names monailabel 0.8.5 imports; see the package docstring for why."""

from __future__ import annotations

__all__ = ["make_grid", "save_image"]

_MESSAGE = (
    "torchvision is not installed in the MONAI Label environment (no CPU build for torch 2.13 on PyPI); "
    "this app serves no task that draws image grids"
)


def make_grid(*args, **kwargs):
    """Not available: raises ``NotImplementedError``."""
    raise NotImplementedError(_MESSAGE)


def save_image(*args, **kwargs):
    """Not available: raises ``NotImplementedError``."""
    raise NotImplementedError(_MESSAGE)

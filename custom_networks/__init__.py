"""
Attention U-Net variants from five papers, as MONAI networks and bundles.

``custom_networks.segment(input, output, bundle=...)`` segments files, folders or in-memory images with a bundle
(:mod:`custom_networks.python_api`). Every network is importable as ``custom_networks.<Name>`` (so bundle configs
can say ``"_target_": "custom_networks.CBAMUNet"``) and listed with a description in ``custom_networks.NETWORKS``.
The names load on first use (PEP 562), so that ``import custom_networks.cli`` for ``--help`` or an error message
does not import torch and MONAI first.
"""

from __future__ import annotations

import importlib

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
    "segment",
]

__version__ = "0.1.0"

# public name -> module that defines it
_HOMES = {name: "custom_networks.nets" for name in __all__}
_HOMES.update(DiceCEEdgeLoss="custom_networks.losses", NETWORKS="custom_networks.registry",
              segment="custom_networks.python_api")


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module 'custom_networks' has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOMES[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)

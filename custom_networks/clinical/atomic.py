"""``AtomicNibabelWriter``: MONAI's NIfTI writer through :func:`~custom_networks.atomic_files.atomic_path`."""

from __future__ import annotations

from monai.config import PathLike
from monai.data import NibabelWriter

from custom_networks.atomic_files import TEMP_PREFIX, atomic_path

__all__ = ["TEMP_PREFIX", "AtomicNibabelWriter", "atomic_path"]


class AtomicNibabelWriter(NibabelWriter):
    """MONAI's ``NibabelWriter`` writing through :func:`atomic_path`.

    Use it from ``SaveImage(d)`` with ``writer="custom_networks.clinical.atomic.AtomicNibabelWriter"``.
    """

    def write(self, filename: PathLike, verbose: bool = False, **obj_kwargs) -> None:
        with atomic_path(filename) as temporary:
            super().write(temporary, verbose=verbose, **obj_kwargs)

from __future__ import annotations

from collections.abc import Hashable, Mapping

import numpy as np
import torch

from monai.config import KeysCollection, PathLike
from monai.data.meta_tensor import get_spatial_ndim
from monai.transforms import MapTransform, SaveImage

__all__ = ["SaveMaskd"]


class SaveMaskd(MapTransform):
    """
    Save binary masks as PNG when they are 2D (0/255, like the public datasets' masks) and as NIfTI when 3D (0/1).

    The bundles segment 2D images and, slice by slice, 3D volumes with the same inference config. One
    ``SaveImaged`` has one extension, and MONAI's PNG writer silently keeps the first slice of a volume, so
    this transform holds two ``SaveImage`` writers and picks one per item by its spatial rank. Geometry is
    taken from the item's metadata (run ``Invertd`` first); nothing is resampled.

    Args:
        keys: keys of the masks to save; each is (1, H, W) or (1, H, W, D) with values 0 and 1.
        output_dir: folder to write into.
        output_postfix: appended to the input file name, ``<name>_<postfix><ext>``. Defaults to "seg".
        output_ext_2d: extension of 2D masks. Defaults to ".png".
        output_ext_3d: extension of 3D masks. Defaults to ".nii.gz".
        separate_folder: write each mask in a sub-folder named after its input. Defaults to False.
        allow_missing_keys: don't raise an exception if a key is missing.
    """

    def __init__(
        self,
        keys: KeysCollection,
        output_dir: PathLike,
        output_postfix: str = "seg",
        output_ext_2d: str = ".png",
        output_ext_3d: str = ".nii.gz",
        separate_folder: bool = False,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        common = {
            "output_dir": output_dir,
            "output_postfix": output_postfix,
            "output_dtype": np.uint8,
            "resample": False,
            "separate_folder": separate_folder,
        }
        self.saver_2d = SaveImage(output_ext=output_ext_2d, scale=255, **common)
        self.saver_3d = SaveImage(output_ext=output_ext_3d, **common)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            saver = self.saver_3d if get_spatial_ndim(d[key]) >= 3 else self.saver_2d
            d[key] = saver(d[key])
        return d

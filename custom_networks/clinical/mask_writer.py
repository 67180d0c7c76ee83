"""``SaveClinicalMaskd``: a label map saved with its input's geometry, as NIfTI or, for 2D image files, as PNG."""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import numpy as np
import torch
from monai.config import KeysCollection, PathLike
from monai.data import MetaTensor, NibabelWriter, PILWriter
from monai.transforms import SaveImage, SaveImaged

from custom_networks.atomic_files import atomic_path
from custom_networks.clinical.meta import INPUT_KIND_KEY, KIND_IMAGE_2D, OUTPUTS_KEY

__all__ = ["AtomicNibabelWriter", "AtomicPILWriter", "SaveClinicalMaskd"]


class AtomicNibabelWriter(NibabelWriter):
    """MONAI's ``NibabelWriter`` writing through :func:`~custom_networks.atomic_files.atomic_path`."""

    def write(self, filename: PathLike, verbose: bool = False, **obj_kwargs) -> None:
        with atomic_path(filename) as temporary:
            super().write(temporary, verbose=verbose, **obj_kwargs)


class AtomicPILWriter(PILWriter):
    """MONAI's ``PILWriter`` writing through :func:`~custom_networks.atomic_files.atomic_path`."""

    def write(self, filename: PathLike, verbose: bool = False, **kwargs) -> None:
        with atomic_path(filename) as temporary:
            super().write(temporary, verbose=verbose, **kwargs)


class SaveClinicalMaskd(SaveImaged):
    """Save each label map in its input's voxel grid: PNG (0/255) for PNG/JPG/TIFF/BMP inputs, NIfTI otherwise.

    A NIfTI, DICOM series or DICOM radiograph input gets a NIfTI mask (``uint8`` label values) with the input's
    affine, and a 2D image file a PNG mask of the same size, as the public datasets store masks. Nothing is
    resampled: the label must already be in the input's grid (the clinical inferers return it there). The kind of
    input is read from the ``clinical_input_kind`` meta-data that ``LoadClinicalImaged`` sets; files are written
    under a temporary name, then renamed, and each path is appended to the label's ``clinical_outputs`` meta-data.

    It is a ``SaveImaged`` so that MONAI Label, which drops ``SaveImaged`` from a bundle's postprocessing and
    writes the result itself, drops it too.

    Args:
        keys: label maps ``(1, *spatial)`` with integer values.
        output_dir: folder to write into.
        output_postfix: appended to the input's name: ``<name>_<postfix>.nii.gz`` / ``.png``.
        image_scale: multiplier of label values in PNG masks (255: label 1 is white).
        separate_folder: one folder per case, as ``SaveImage``.
        data_root_dir: keep the input's folders relative to this, as ``SaveImage``.
        allow_missing_keys: do not raise for absent keys.
    """

    def __init__(
        self,
        keys: KeysCollection,
        output_dir: PathLike,
        output_postfix: str = "seg",
        image_scale: int = 255,
        separate_folder: bool = False,
        data_root_dir: PathLike = "",
        allow_missing_keys: bool = False,
    ) -> None:
        common = {
            "output_dir": output_dir,
            "output_postfix": output_postfix,
            "output_dtype": np.uint8,
            "resample": False,
            "separate_folder": separate_folder,
            "data_root_dir": str(data_root_dir),
            "print_log": False,
            "savepath_in_metadict": True,
        }
        super().__init__(
            keys, output_ext=".nii.gz", writer=AtomicNibabelWriter, allow_missing_keys=allow_missing_keys, **common
        )
        self.image_saver = SaveImage(output_ext=".png", scale=image_scale, writer=AtomicPILWriter, **common)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            label = d[key]
            if not isinstance(label, MetaTensor):
                raise TypeError(f"{key!r} must be a MetaTensor carrying its input's meta-data, got {type(label)}")
            saver = self.image_saver if label.meta.get(INPUT_KIND_KEY) == KIND_IMAGE_2D else self.saver
            saved = saver(label)
            saved_to = str(saved.meta.pop("saved_to"))
            label.meta.setdefault(OUTPUTS_KEY, []).append(saved_to)
        return d

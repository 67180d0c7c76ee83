"""Single-frame projection radiographs (CR, DX, ...): pixel values, MONOCHROME1 inversion and pixel spacing.

The array is indexed ``[column, row]`` like MONAI's ``PILReader`` output for a PNG, so a radiograph and its PNG
export load to the same array. A radiograph has no patient coordinate frame, so the affine only scales by the
pixel spacing (as MONAI gives an identity affine for a PNG).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from monai.config import PathLike
from pydicom.dataset import Dataset

from custom_networks.clinical.dicom_files import check_image_object, read_float_values, read_pixels, stored_value_range
from custom_networks.clinical.errors import CaseError

__all__ = ["RADIOGRAPH_MODALITIES", "is_radiograph", "load_radiograph", "pixel_spacing"]

RADIOGRAPH_MODALITIES = frozenset({"CR", "DX", "MG", "RG", "IO", "PX"})
_GREY = ("MONOCHROME1", "MONOCHROME2")
_COLOUR = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT")


def is_radiograph(header: Dataset) -> bool:
    """A projection image: a radiography modality, or any image without a position in a patient frame."""
    return str(header.get("Modality", "")).upper() in RADIOGRAPH_MODALITIES or "ImagePositionPatient" not in header


def pixel_spacing(path: PathLike, header: Dataset) -> tuple[np.ndarray, str]:
    """(row spacing, column spacing) in mm and the attribute it came from.

    PixelSpacing (calibrated to the patient) wins over ImagerPixelSpacing (at the detector); without either the
    spacing is 1 and the source is ``"none"``.
    """
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        if keyword in header and header[keyword].value:
            return read_float_values(path, header, keyword, 2), keyword
    return np.ones(2), "none"


def load_radiograph(path: PathLike, header: Dataset) -> tuple[np.ndarray, np.ndarray, dict]:
    """Read a single-frame radiograph whose ``header`` came from :func:`~.dicom_files.read_header`.

    Returns:
        the image ``(channels, columns, rows)`` float32 (grey: modality LUT applied and MONOCHROME1 inverted so that
        higher values are brighter, as in MONOCHROME2; colour: RGB channels), the 4x4 affine, and meta entries
        ``photometric_interpretation`` and ``pixel_spacing_source``.
    """
    path = Path(path)
    check_image_object(path, header)
    photometric = str(header.get("PhotometricInterpretation", "")).upper()
    if photometric not in _GREY + _COLOUR:
        raise CaseError(path, f"unsupported PhotometricInterpretation {photometric or '(missing)'}")
    pixels, dataset = read_pixels(path)
    if photometric == "MONOCHROME1":
        # invert within the range the stored bits can hold, so the result does not depend on image content
        low, high = stored_value_range(dataset)
        pixels = np.float32(low + high) - pixels
    channels_last = pixels[..., None] if pixels.ndim == 2 else pixels
    spacing, spacing_source = pixel_spacing(path, header)
    affine = np.diag([spacing[1], spacing[0], 1.0, 1.0])
    image = np.ascontiguousarray(np.transpose(channels_last, (2, 1, 0)))
    return image, affine, {"photometric_interpretation": photometric, "pixel_spacing_source": spacing_source}

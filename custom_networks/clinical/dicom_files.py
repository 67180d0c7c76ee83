"""Reading one DICOM file safely: headers only, image checks, decoder availability, pixel values.

Every problem becomes a :class:`~custom_networks.clinical.errors.CaseError` naming the file.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pydicom
from monai.config import PathLike
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID, MediaStorageDirectoryStorage

from custom_networks.clinical.errors import CaseError

# ``pydicom.pixels`` (pydicom 3) is imported where used, so that the package imports under pydicom 2 too: the
# MONAI Label environment (docs/monailabel.md) has pydicom 2, and reads images that MONAI Label converted to NIfTI.

__all__ = [
    "check_decodable",
    "check_image_object",
    "is_directory_record",
    "is_image_sop_class",
    "read_float_values",
    "read_header",
    "read_pixels",
    "sop_class_name",
    "stored_value_range",
]

# values larger than this (pixel data) are left in the file until needed, so headers cost little to read
_DEFER_SIZE = "4 KB"
_UNDEFINED_LENGTH = 0xFFFFFFFF
_PIXEL_DATA_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


def read_header(path: PathLike) -> Dataset:
    """Read a DICOM file without loading its pixel data; reject files that are not DICOM, truncated or corrupt."""
    path = Path(path)
    try:
        dataset = pydicom.dcmread(path, defer_size=_DEFER_SIZE)
    except InvalidDicomError:
        raise CaseError(path, "not a DICOM file (no DICM prefix or file meta information)") from None
    except Exception as error:
        raise CaseError(path, f"truncated or corrupt DICOM file ({type(error).__name__}: {error})") from error
    _check_complete(path, dataset)
    if "SOPClassUID" not in dataset:
        raise CaseError(path, "corrupt DICOM file: no SOP Class UID (0008,0016)")
    return dataset


def _check_complete(path: Path, dataset: Dataset) -> None:
    """pydicom stops quietly at the end of a truncated file; the last element read shows whether it was cut."""
    tags = list(dataset.keys())
    if not tags:
        raise CaseError(path, "truncated or corrupt DICOM file: no data elements")
    element = dataset.get_item(tags[-1])
    length = getattr(element, "length", _UNDEFINED_LENGTH)
    value_tell = getattr(element, "value_tell", None)
    if value_tell is None or length == _UNDEFINED_LENGTH:
        return
    file_size = path.stat().st_size
    value = getattr(element, "value", None)
    if value_tell + length > file_size or (isinstance(value, bytes) and len(value) < length):
        raise CaseError(
            path,
            f"truncated DICOM file: element {element.tag} needs {length} bytes from offset {value_tell}, "
            f"the file has {file_size} bytes",
        )


def sop_class_name(dataset: Dataset) -> str:
    return UID(str(dataset.get("SOPClassUID", ""))).name


def is_image_sop_class(dataset: Dataset) -> bool:
    """Image storage SOP classes (CT, MR, CR, DX, secondary capture, ...); SEG, SR, RT plan/dose/struct are not."""
    return "Image Storage" in sop_class_name(dataset)


def is_directory_record(dataset: Dataset) -> bool:
    return dataset.get("SOPClassUID") == MediaStorageDirectoryStorage


def check_image_object(path: PathLike, dataset: Dataset) -> None:
    """Reject non-image objects, multi-frame images and images without pixel data or a usable transfer syntax."""
    if not is_image_sop_class(dataset):
        modality = dataset.get("Modality", "?")
        raise CaseError(
            path, f"not an image: {sop_class_name(dataset)} (Modality {modality}) holds no pixels to segment"
        )
    frames = int(dataset.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise CaseError(path, f"multi-frame image ({frames} frames) is not supported; give single-frame slices")
    if not any(keyword in dataset for keyword in _PIXEL_DATA_KEYWORDS):
        raise CaseError(path, "missing pixel data: no Pixel Data (7FE0,0010) element")
    check_decodable(path, dataset)


def check_decodable(path: PathLike, dataset: Dataset) -> None:
    """Fail early, with the package to install, when pydicom has no decoder for the file's transfer syntax."""
    transfer_syntax = getattr(dataset.file_meta, "TransferSyntaxUID", None) if hasattr(dataset, "file_meta") else None
    if transfer_syntax is None or not transfer_syntax.is_compressed:
        return
    from pydicom.pixels import get_decoder

    try:
        decoder = get_decoder(transfer_syntax)
    except NotImplementedError:
        raise CaseError(
            path, f"transfer syntax {transfer_syntax.name} ({transfer_syntax}) cannot be decoded by pydicom"
        ) from None
    if not decoder.is_available:
        needs = "; ".join(decoder.missing_dependencies)
        raise CaseError(
            path,
            f"compressed transfer syntax {transfer_syntax.name} ({transfer_syntax}) has no decoder installed "
            f"(one of: {needs})",
        )


def read_float_values(path: PathLike, dataset: Dataset, keyword: str, count: int) -> np.ndarray:
    """A required multi-valued numeric attribute (e.g. ImagePositionPatient) as finite floats."""
    if keyword not in dataset or dataset[keyword].value in (None, ""):
        tag = pydicom.datadict.tag_for_keyword(keyword)
        raise CaseError(path, f"missing {keyword} ({tag >> 16:04X},{tag & 0xFFFF:04X}), needed for the geometry")
    raw = dataset[keyword].value
    values = np.asarray(raw if isinstance(raw, Sequence) and not isinstance(raw, str) else [raw], dtype=float)
    if values.shape != (count,) or not np.isfinite(values).all():
        raise CaseError(path, f"invalid {keyword} {list(values)}: expected {count} finite numbers")
    return values


def stored_value_range(dataset: Dataset) -> tuple[float, float]:
    """Smallest and largest value ``BitsStored`` can hold, after the modality LUT (rescale)."""
    from pydicom.pixels import apply_modality_lut

    bits = int(dataset.BitsStored)
    if int(dataset.get("PixelRepresentation", 0)) == 1:
        stored = np.array([-(2 ** (bits - 1)), 2 ** (bits - 1) - 1])
    else:
        stored = np.array([0, 2**bits - 1])
    mapped = np.asarray(apply_modality_lut(stored, dataset), dtype=float)
    return float(mapped.min()), float(mapped.max())


def read_pixels(path: PathLike, apply_modality: bool = True) -> tuple[np.ndarray, Dataset]:
    """Decode one single-frame file: ``(rows, columns)`` or ``(rows, columns, samples)`` float32, and its dataset.

    ``apply_modality`` maps stored values through the modality LUT (RescaleSlope/Intercept: HU for CT).
    """
    from pydicom.pixels import apply_modality_lut

    path = Path(path)
    try:
        dataset = pydicom.dcmread(path)
        pixels = dataset.pixel_array
    except Exception as error:
        raise CaseError(
            path, f"unreadable pixel data, the file may be truncated or corrupt ({type(error).__name__}: {error})"
        ) from error
    if apply_modality and int(dataset.get("SamplesPerPixel", 1)) == 1:
        pixels = apply_modality_lut(pixels, dataset)
    return np.asarray(pixels, dtype=np.float32), dataset

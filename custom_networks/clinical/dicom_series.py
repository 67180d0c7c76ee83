"""DICOM series in a folder: discovery from headers, choice by rules, validation, slice order and geometry.

Slices are ordered by their position along the slice normal (never by InstanceNumber or file name) and the
volume is indexed ``[column, row, slice]`` with an affine to RAS, the layout and affine MONAI's ``ITKReader``
and ``PydicomReader`` give, so a series loaded here matches its NIfTI twin after ``Orientation("RAS")``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from monai.config import PathLike
from pydicom.dataset import Dataset

from custom_networks.clinical.dicom_files import (
    check_image_object,
    is_directory_record,
    is_image_sop_class,
    read_float_values,
    read_header,
    read_pixels,
    sop_class_name,
)
from custom_networks.clinical.errors import CaseError

__all__ = [
    "LPS_TO_RAS",
    "DicomSeries",
    "SeriesRules",
    "SortedSeries",
    "discover_series",
    "read_volume",
    "select_series",
    "sort_series",
]

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])

# direction cosines equal within this are the same orientation (DS values carry about 6 decimals)
_ORIENTATION_TOLERANCE = 1e-4
_PIXEL_SPACING_RELATIVE_TOLERANCE = 1e-3
# slice positions within this distance (mm) along the normal are duplicates
_DUPLICATE_MM = 1e-2
# a slice step may differ from the median step by this fraction (plus the DS rounding allowance) before it is a gap
_STEP_RELATIVE_TOLERANCE = 0.01
_POSITION_ROUNDING_MM = 0.02


@dataclass(frozen=True, eq=False)
class DicomSeries:
    """The files of one SeriesInstanceUID found in a folder, with their headers (no pixel data read)."""

    series_instance_uid: str
    files: tuple[Path, ...]
    headers: tuple[Dataset, ...]

    @property
    def modality(self) -> str:
        return str(self.headers[0].get("Modality", ""))

    @property
    def description(self) -> str:
        return str(self.headers[0].get("SeriesDescription", ""))

    @property
    def is_image(self) -> bool:
        return all(is_image_sop_class(header) for header in self.headers)

    def describe(self) -> str:
        number = self.headers[0].get("SeriesNumber", "?")
        kind = "" if self.is_image else f", {sop_class_name(self.headers[0])}"
        return (
            f'series {number} {self.modality} "{self.description}" ({len(self.files)} files{kind}, '
            f"UID {self.series_instance_uid})"
        )


@dataclass(frozen=True)
class SeriesRules:
    """How to choose one image series when a case folder holds several.

    Args:
        modalities: accepted Modality values (e.g. ``("MR",)``); empty accepts any.
        description_pattern: regular expression searched, case-insensitively, in SeriesDescription.
        prefer_most_slices: when several series pass the filters, take the one with most slices (a tie is an error);
            if ``False`` several matches are an error.
    """

    modalities: tuple[str, ...] = ()
    description_pattern: str | None = None
    prefer_most_slices: bool = True

    def accepts(self, series: DicomSeries) -> bool:
        modality_ok = not self.modalities or series.modality.upper() in {m.upper() for m in self.modalities}
        pattern = self.description_pattern
        description_ok = not pattern or re.search(pattern, series.description, re.IGNORECASE) is not None
        return modality_ok and description_ok

    def describe(self) -> str:
        parts = []
        if self.modalities:
            parts.append(f"modality in {list(self.modalities)}")
        if self.description_pattern:
            parts.append(f"description matching /{self.description_pattern}/")
        return " and ".join(parts) or "no filter"


@dataclass(frozen=True, eq=False)
class SortedSeries:
    """A validated series in slice order with its geometry.

    ``lps_affine`` maps ``[column, row, slice]`` indices to patient LPS millimetres; ``ras_affine`` is the same
    in RAS, the convention of NIfTI and of MONAI's readers.
    """

    series: DicomSeries
    files: tuple[Path, ...]
    headers: tuple[Dataset, ...]
    lps_affine: np.ndarray
    rows: int
    columns: int

    @property
    def ras_affine(self) -> np.ndarray:
        return LPS_TO_RAS @ self.lps_affine

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.columns, self.rows, len(self.files)


def discover_series(folder: PathLike) -> list[DicomSeries]:
    """Group the DICOM files under ``folder`` (recursively) by SeriesInstanceUID, reading headers only.

    Files without the DICM prefix are ignored; DICOMDIR records are skipped.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise CaseError(folder, "not a folder")
    paths = sorted(p for p in folder.rglob("*") if p.is_file())
    if not paths:
        raise CaseError(folder, "empty folder: no files to read")
    grouped: dict[str, list[tuple[Path, Dataset]]] = {}
    for path in paths:
        if not pydicom.misc.is_dicom(path):
            continue
        header = read_header(path)
        if is_directory_record(header):
            continue
        uid = str(header.get("SeriesInstanceUID", ""))
        if not uid:
            raise CaseError(path, "missing SeriesInstanceUID (0020,000E)")
        grouped.setdefault(uid, []).append((path, header))
    if not grouped:
        raise CaseError(folder, f"no DICOM files among the {len(paths)} file(s) in the folder")
    return [
        DicomSeries(uid, tuple(p for p, _ in members), tuple(h for _, h in members)) for uid, members in grouped.items()
    ]


def select_series(folder: PathLike, found: Sequence[DicomSeries], rules: SeriesRules = SeriesRules()) -> DicomSeries:
    """The one image series of ``found`` that ``rules`` pick, or an error listing every series found."""
    images = [series for series in found if series.is_image]
    listing = "; ".join(series.describe() for series in found)
    if not images:
        raise CaseError(folder, f"no image series, only non-image DICOM objects: {listing}")
    matching = [series for series in images if rules.accepts(series)]
    if len(matching) == 1:
        return matching[0]
    if len(matching) > 1 and rules.prefer_most_slices:
        most = max(len(series.files) for series in matching)
        largest = [series for series in matching if len(series.files) == most]
        if len(largest) == 1:
            return largest[0]
        problem = f"{len(largest)} series tie for most slices ({most})"
    elif matching:
        problem = f"{len(matching)} series match and prefer_most_slices is off"
    else:
        problem = "no series matches"
    raise CaseError(
        folder, f"{len(images)} image series found, rules ({rules.describe()}): {problem}. Found: {listing}"
    )


def sort_series(series: DicomSeries) -> SortedSeries:
    """Validate ``series`` and order its slices along the normal; raise :class:`CaseError` on anything unsafe.

    Checks: image objects with pixel data and a decodable transfer syntax; ImagePositionPatient,
    ImageOrientationPatient and PixelSpacing present and finite; one orientation, pixel spacing and matrix size;
    no duplicate positions; uniform steps between slices (no gaps); positions on one line.
    """
    first_path = series.files[0]
    orientation = None
    pixel_spacing = None
    size = None
    positions = []
    for path, header in zip(series.files, series.headers, strict=True):
        check_image_object(path, header)
        position = read_float_values(path, header, "ImagePositionPatient", 3)
        cosines = read_float_values(path, header, "ImageOrientationPatient", 6)
        spacing = read_float_values(path, header, "PixelSpacing", 2)
        this_size = (int(header.Rows), int(header.Columns))
        if orientation is None:
            orientation, pixel_spacing, size = cosines, spacing, this_size
        elif np.abs(cosines - orientation).max() > _ORIENTATION_TOLERANCE:
            raise CaseError(
                path,
                f"mixed orientation: ImageOrientationPatient {_fmt(cosines)} differs from {_fmt(orientation)} "
                f"of {first_path.name}",
            )
        elif np.abs(spacing - pixel_spacing).max() > _PIXEL_SPACING_RELATIVE_TOLERANCE * pixel_spacing.max():
            raise CaseError(
                path, f"PixelSpacing {_fmt(spacing)} differs from {_fmt(pixel_spacing)} of {first_path.name}"
            )
        elif this_size != size:
            raise CaseError(
                path, f"matrix {this_size[0]}x{this_size[1]} differs from {size[0]}x{size[1]} of {first_path.name}"
            )
        positions.append(position)

    row_direction, column_direction = orientation[:3], orientation[3:]
    normal = np.cross(row_direction, column_direction)
    positions_array = np.asarray(positions)
    along_normal = positions_array @ normal
    order = np.argsort(along_normal, kind="stable")
    files = tuple(series.files[i] for i in order)
    headers = tuple(series.headers[i] for i in order)
    positions_array, along_normal = positions_array[order], along_normal[order]
    step = _slice_step(series, files, headers, positions_array, along_normal, normal)

    affine = np.eye(4)
    affine[:3, 0] = row_direction * pixel_spacing[1]
    affine[:3, 1] = column_direction * pixel_spacing[0]
    affine[:3, 2] = step
    affine[:3, 3] = positions_array[0]
    return SortedSeries(series, files, headers, affine, rows=size[0], columns=size[1])


def _slice_step(
    series: DicomSeries,
    files: tuple[Path, ...],
    headers: tuple[Dataset, ...],
    positions: np.ndarray,
    along_normal: np.ndarray,
    normal: np.ndarray,
) -> np.ndarray:
    """The vector from one slice position to the next, after checking for duplicates, gaps and stray slices."""
    if len(files) == 1:
        thickness = headers[0].get("SpacingBetweenSlices") or headers[0].get("SliceThickness") or 1.0
        return normal * float(thickness)
    gaps = np.diff(along_normal)
    for k, gap in enumerate(gaps):
        if gap <= _DUPLICATE_MM:
            raise CaseError(
                files[k + 1],
                f"duplicate slice: same position {along_normal[k]:.3f} mm along the slice normal as {files[k].name}",
            )
    typical = float(np.median(gaps))
    tolerance = _STEP_RELATIVE_TOLERANCE * typical + _POSITION_ROUNDING_MM
    for k, gap in enumerate(gaps):
        if abs(gap - typical) > tolerance:
            raise CaseError(
                series.files[0].parent,
                f"slice gap or uneven spacing: {gap:.3f} mm between {files[k].name} and {files[k + 1].name}, "
                f"{typical:.3f} mm elsewhere along the slice normal (missing slices?)",
            )
    step = (positions[-1] - positions[0]) / (len(files) - 1)
    expected = positions[0] + np.arange(len(files))[:, None] * step
    stray = np.linalg.norm(positions - expected, axis=1)
    if stray.max() > tolerance:
        k = int(stray.argmax())
        raise CaseError(files[k], f"slice position is {stray[k]:.3f} mm off the line through the other slices")
    return step


def read_volume(geometry: SortedSeries, dtype: np.dtype | type = np.float32) -> np.ndarray:
    """The ``[column, row, slice]`` volume of a sorted series, values through the modality LUT (CT in HU)."""
    volume = np.empty(geometry.shape, dtype=dtype)
    for k, path in enumerate(geometry.files):
        pixels, _ = read_pixels(path)
        if pixels.shape != (geometry.rows, geometry.columns):
            raise CaseError(
                path, f"pixel array {pixels.shape} is not one {geometry.rows}x{geometry.columns} greyscale frame"
            )
        volume[:, :, k] = pixels.T
    return volume


def _fmt(values: np.ndarray) -> str:
    return "[" + ", ".join(f"{v:.4g}" for v in values) + "]"

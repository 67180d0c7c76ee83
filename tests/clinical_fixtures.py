"""Writers of small, real DICOM / NIfTI inputs for the clinical I/O tests.

MR/CT series and CR/DX radiographs come from the package's writer (``custom_networks.clinical.dicom_writer``,
also used for the shipped sample study); the objects only tests need (SR, RT plan, a slice that declares a
compressed transfer syntax nothing can decode) and the marker volume are written here. See the writer's module
docstring for the geometry conventions.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
from pydicom.encaps import encapsulate
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

from custom_networks.clinical.dicom_writer import (
    MR_IMAGE,
    Study,
    WrittenSeries,
    base_dataset,
    series_lps_affine,
    set_pixels,
    write_radiograph,
    write_series,
)

__all__ = [
    "Study",
    "WrittenSeries",
    "marker_volume",
    "read_dataset",
    "rotation",
    "series_lps_affine",
    "write_nifti",
    "write_radiograph",
    "write_rt_plan",
    "write_series",
    "write_structured_report",
    "write_undecodable_slice",
]

BASIC_TEXT_SR = UID("1.2.840.10008.5.1.4.1.1.88.11")
RT_PLAN = UID("1.2.840.10008.5.1.4.1.1.481.5")


def rotation(angles_deg: Sequence[float]) -> np.ndarray:
    """Rotation matrix from x, y, z Euler angles in degrees (applied x first)."""
    ax, ay, az = np.deg2rad(angles_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def write_structured_report(path: Path, study: Study | None = None) -> Path:
    """A Basic Text SR: a DICOM object with no pixels."""
    ds = base_dataset(BASIC_TEXT_SR, "SR", study or Study(), generate_uid(), ExplicitVRLittleEndian)
    ds.InstanceNumber = 1
    ds.ValueType = "CONTAINER"
    ds.ContinuityOfContent = "SEPARATE"
    ds.CompletionFlag = "COMPLETE"
    ds.VerificationFlag = "UNVERIFIED"
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_rt_plan(path: Path, study: Study | None = None) -> Path:
    """An RT Plan: a DICOM object with no pixels."""
    ds = base_dataset(RT_PLAN, "RTPLAN", study or Study(), generate_uid(), ExplicitVRLittleEndian)
    ds.InstanceNumber = 1
    ds.RTPlanLabel = "PLAN1"
    ds.RTPlanGeometry = "PATIENT"
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_undecodable_slice(path: Path, transfer_syntax: str) -> Path:
    """An MR slice that declares a compressed ``transfer_syntax`` around bytes no decoder needs to see."""
    study = Study()
    ds = base_dataset(MR_IMAGE, "MR", study, generate_uid(), transfer_syntax)
    ds.FrameOfReferenceUID = study.frame_of_reference_uid
    ds.InstanceNumber = 1
    ds.ImagePositionPatient = [0, 0, 0]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [1, 1]
    set_pixels(ds, np.zeros((8, 8), np.uint16))
    ds.PixelData = encapsulate([b"\xff\xd8\xff\xc3" + b"\0" * 60])
    ds["PixelData"].VR = "OB"
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def marker_volume(shape: Sequence[int] = (20, 16, 10), value: int = 1000) -> np.ndarray:
    """Noise-free background of 100 with an L-shaped bright marker off every axis centre and mirror plane."""
    volume = np.full(shape, 100, dtype=np.int16)
    volume[2:6, 10:13, 6:8] = value
    volume[2:4, 10:13, 8:9] = value
    volume[13:14, 2:3, 1:2] = value
    return volume


def write_nifti(path: Path, array: np.ndarray, affine: np.ndarray, canonical: bool = False) -> Path:
    """Write ``array`` with ``affine`` (RAS); ``canonical`` reorders axes to the closest RAS+ as converters do."""
    image = nib.Nifti1Image(array, affine)
    if canonical:
        image = nib.as_closest_canonical(image)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(image, path)
    return path


def read_dataset(path: Path) -> pydicom.Dataset:
    return pydicom.dcmread(path)

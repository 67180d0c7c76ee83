"""Writers of small, real DICOM / NIfTI / PNG inputs for the clinical I/O tests.

Every DICOM object is built with pydicom from scratch (no sample data is downloaded) and carries the modules
highdicom needs to reference it from a DICOM SEG (patient, study, series, frame of reference, equipment).

Geometry conventions (DICOM PS3.3 C.7.6.2): ``ImageOrientationPatient`` holds the row direction (towards
increasing column index) then the column direction (towards increasing row index), ``PixelSpacing`` is
(spacing between rows, spacing between columns). Volumes handed to :func:`write_series` are indexed
``[column, row, slice]`` like MONAI's DICOM readers, so ``lps_affine`` maps those indices to patient LPS mm.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    RLELossless,
    generate_uid,
)

CT_IMAGE = UID("1.2.840.10008.5.1.4.1.1.2")
MR_IMAGE = UID("1.2.840.10008.5.1.4.1.1.4")
CR_IMAGE = UID("1.2.840.10008.5.1.4.1.1.1")
DX_IMAGE = UID("1.2.840.10008.5.1.4.1.1.1.1")
BASIC_TEXT_SR = UID("1.2.840.10008.5.1.4.1.1.88.11")
RT_PLAN = UID("1.2.840.10008.5.1.4.1.1.481.5")

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass
class Study:
    """Identifiers shared by every object written for one patient study."""

    study_instance_uid: str = field(default_factory=generate_uid)
    frame_of_reference_uid: str = field(default_factory=generate_uid)
    patient_id: str = "TEST-0001"
    patient_name: str = "Test^Patient"


@dataclass
class WrittenSeries:
    """A DICOM series written by :func:`write_series`: files in slice order and the geometry used."""

    files: list[Path]
    series_instance_uid: str
    study: Study
    lps_affine: np.ndarray

    @property
    def ras_affine(self) -> np.ndarray:
        return LPS_TO_RAS @ self.lps_affine


def rotation(angles_deg: Sequence[float]) -> np.ndarray:
    """Rotation matrix from x, y, z Euler angles in degrees (applied x first)."""
    ax, ay, az = np.deg2rad(angles_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def series_lps_affine(orientation: np.ndarray, spacing: Sequence[float], origin: Sequence[float]) -> np.ndarray:
    """LPS affine of ``[column, row, slice]`` indices: columns of ``orientation`` are row, column, slice directions."""
    affine = np.eye(4)
    affine[:3, :3] = orientation @ np.diag(spacing)
    affine[:3, 3] = origin
    return affine


def _base_dataset(
    sop_class_uid: str, modality: str, study: Study, series_uid: str, transfer_syntax: str
) -> FileDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class_uid
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = transfer_syntax
    ds = FileDataset("", Dataset(), file_meta=meta, preamble=b"\0" * 128)
    now = datetime.datetime(2024, 5, 17, 9, 30, 0)
    ds.SOPClassUID = sop_class_uid
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.PatientName = study.patient_name
    ds.PatientID = study.patient_id
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyInstanceUID = study.study_instance_uid
    ds.StudyID = "1"
    ds.StudyDate = now.strftime("%Y%m%d")
    ds.StudyTime = now.strftime("%H%M%S")
    ds.AccessionNumber = "A0001"
    ds.ReferringPhysicianName = ""
    ds.Modality = modality
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = 1
    ds.Manufacturer = "custom_networks tests"
    return ds


def _set_pixels(ds: Dataset, pixels: np.ndarray, photometric: str = "MONOCHROME2") -> None:
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1 if pixels.dtype == np.int16 else 0
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()


def write_series(
    folder: Path,
    volume: np.ndarray,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    orientation: np.ndarray | None = None,
    origin: Sequence[float] = (0.0, 0.0, 0.0),
    modality: str = "MR",
    study: Study | None = None,
    description: str = "T1 test",
    rescale: tuple[float, float] | None = None,
    transfer_syntax: str = ExplicitVRLittleEndian,
    shuffle_seed: int | None = 0,
) -> WrittenSeries:
    """Write ``volume[column, row, slice]`` as one single-frame file per slice.

    Args:
        folder: created if needed; files are named in a shuffled order (``shuffle_seed=None`` keeps slice order)
            and InstanceNumber is shuffled too, so only positions give the slice order.
        volume: stored integer values (int16 or uint16).
        spacing: column spacing, row spacing, slice spacing in mm.
        orientation: 3x3 matrix whose columns are the row, column and slice directions in LPS (default identity).
        origin: ImagePositionPatient of slice 0.
        rescale: (slope, intercept) written as RescaleSlope / RescaleIntercept.
        transfer_syntax: ``RLELossless`` compresses with pydicom's own encoder.
    """
    folder.mkdir(parents=True, exist_ok=True)
    orientation = np.eye(3) if orientation is None else np.asarray(orientation, dtype=float)
    study = study or Study()
    series_uid = generate_uid()
    sop_class = {"MR": MR_IMAGE, "CT": CT_IMAGE}[modality]
    affine = series_lps_affine(orientation, spacing, origin)
    n = volume.shape[2]
    order = np.arange(n) if shuffle_seed is None else np.random.default_rng(shuffle_seed).permutation(n)
    files = []
    for k in range(n):
        ds = _base_dataset(sop_class, modality, study, series_uid, ExplicitVRLittleEndian)
        ds.SeriesDescription = description
        ds.FrameOfReferenceUID = study.frame_of_reference_uid
        ds.PositionReferenceIndicator = ""
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.InstanceNumber = int(order[k]) + 1
        ds.ImagePositionPatient = [f"{v:.6f}" for v in (affine @ [0, 0, k, 1])[:3]]
        ds.ImageOrientationPatient = [f"{v:.8f}" for v in (*orientation[:, 0], *orientation[:, 1])]
        ds.PixelSpacing = [f"{spacing[1]:.6f}", f"{spacing[0]:.6f}"]
        ds.SliceThickness = f"{spacing[2]:.6f}"
        if rescale is not None:
            ds.RescaleSlope, ds.RescaleIntercept = (f"{v:g}" for v in rescale)
            ds.RescaleType = "HU" if modality == "CT" else "US"
        _set_pixels(ds, volume[:, :, k].T)
        if transfer_syntax == RLELossless:
            ds.compress(RLELossless)
        path = folder / f"IM{order[k]:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    return WrittenSeries(files, series_uid, study, affine)


def write_radiograph(
    path: Path,
    pixels: np.ndarray,
    photometric: str = "MONOCHROME2",
    modality: str = "CR",
    bits_stored: int = 12,
    imager_pixel_spacing: Sequence[float] | None = (0.2, 0.15),
    pixel_spacing: Sequence[float] | None = None,
    study: Study | None = None,
) -> Path:
    """Write a single-frame CR or DX image; ``pixels`` is ``[row, column]`` uint16 within ``bits_stored`` bits."""
    study = study or Study()
    sop_class = {"CR": CR_IMAGE, "DX": DX_IMAGE}[modality]
    ds = _base_dataset(sop_class, modality, study, generate_uid(), ExplicitVRLittleEndian)
    ds.SeriesDescription = "Chest PA"
    ds.InstanceNumber = 1
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.PatientOrientation = ["L", "F"]
    if modality == "DX":
        ds.PresentationIntentType = "FOR PRESENTATION"
    if imager_pixel_spacing is not None:
        ds.ImagerPixelSpacing = [f"{v:g}" for v in imager_pixel_spacing]
    if pixel_spacing is not None:
        ds.PixelSpacing = [f"{v:g}" for v in pixel_spacing]
    _set_pixels(ds, pixels.astype(np.uint16), photometric)
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_structured_report(path: Path, study: Study | None = None) -> Path:
    """A Basic Text SR: a DICOM object with no pixels."""
    ds = _base_dataset(BASIC_TEXT_SR, "SR", study or Study(), generate_uid(), ExplicitVRLittleEndian)
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
    ds = _base_dataset(RT_PLAN, "RTPLAN", study or Study(), generate_uid(), ExplicitVRLittleEndian)
    ds.InstanceNumber = 1
    ds.RTPlanLabel = "PLAN1"
    ds.RTPlanGeometry = "PATIENT"
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_undecodable_slice(path: Path, transfer_syntax: str) -> Path:
    """An MR slice that declares a compressed ``transfer_syntax`` around bytes no decoder needs to see."""
    study = Study()
    ds = _base_dataset(MR_IMAGE, "MR", study, generate_uid(), transfer_syntax)
    ds.FrameOfReferenceUID = study.frame_of_reference_uid
    ds.InstanceNumber = 1
    ds.ImagePositionPatient = [0, 0, 0]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [1, 1]
    _set_pixels(ds, np.zeros((8, 8), np.uint16))
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

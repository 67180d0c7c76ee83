"""Write arrays as real DICOM files with pydicom: single-frame MR/CT series and CR/DX radiographs.

Used for the shipped sample study, the benchmark inputs and the test fixtures. Every object carries the modules
highdicom needs to reference it from a DICOM SEG (patient, study, series, frame of reference, equipment).

Geometry conventions (DICOM PS3.3 C.7.6.2): ``ImageOrientationPatient`` holds the row direction (towards
increasing column index) then the column direction (towards increasing row index), ``PixelSpacing`` is
(spacing between rows, spacing between columns). Volumes handed to :func:`write_series` are indexed
``[column, row, slice]`` like ``LoadClinicalImage`` and MONAI's DICOM readers give them, so ``lps_affine`` maps
those indices to patient LPS millimetres.

UIDs are random unless ``uid_seed`` is given; with it every UID is derived from the seed, so the same call writes
byte-identical files.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from monai.config import PathLike
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, RLELossless, generate_uid

from custom_networks.clinical.dicom_series import LPS_TO_RAS

__all__ = [
    "CR_IMAGE",
    "CT_IMAGE",
    "DX_IMAGE",
    "MR_IMAGE",
    "Study",
    "WrittenSeries",
    "base_dataset",
    "derived_uid",
    "series_lps_affine",
    "set_pixels",
    "write_radiograph",
    "write_series",
]

CT_IMAGE = UID("1.2.840.10008.5.1.4.1.1.2")
MR_IMAGE = UID("1.2.840.10008.5.1.4.1.1.4")
CR_IMAGE = UID("1.2.840.10008.5.1.4.1.1.1")
DX_IMAGE = UID("1.2.840.10008.5.1.4.1.1.1.1")

_STUDY_TIME = datetime.datetime(2024, 5, 17, 9, 30, 0)


def derived_uid(seed: str | None, *parts: object) -> UID:
    """A new random UID, or with ``seed`` one derived from ``seed`` and ``parts`` (the same inputs, the same UID)."""
    if seed is None:
        return generate_uid()
    return generate_uid(entropy_srcs=[seed, *(str(part) for part in parts)])


@dataclass
class Study:
    """Identifiers shared by every object written for one patient study."""

    study_instance_uid: str = field(default_factory=generate_uid)
    frame_of_reference_uid: str = field(default_factory=generate_uid)
    patient_id: str = "TEST-0001"
    patient_name: str = "Test^Patient"

    @classmethod
    def seeded(cls, seed: str, patient_id: str = "TEST-0001", patient_name: str = "Test^Patient") -> Study:
        """A study whose UIDs are derived from ``seed``."""
        return cls(derived_uid(seed, "study"), derived_uid(seed, "frame of reference"), patient_id, patient_name)


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


def series_lps_affine(orientation: np.ndarray, spacing: Sequence[float], origin: Sequence[float]) -> np.ndarray:
    """LPS affine of ``[column, row, slice]`` indices: columns of ``orientation`` are row, column, slice directions."""
    affine = np.eye(4)
    affine[:3, :3] = np.asarray(orientation, dtype=float) @ np.diag(spacing)
    affine[:3, 3] = origin
    return affine


def base_dataset(
    sop_class_uid: str,
    modality: str,
    study: Study,
    series_uid: str,
    transfer_syntax: str = ExplicitVRLittleEndian,
    sop_instance_uid: str | None = None,
) -> FileDataset:
    """A dataset with file meta, patient, general study, general series and equipment attributes filled in."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class_uid
    meta.MediaStorageSOPInstanceUID = sop_instance_uid or generate_uid()
    meta.TransferSyntaxUID = transfer_syntax
    ds = FileDataset("", Dataset(), file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = sop_class_uid
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.PatientName = study.patient_name
    ds.PatientID = study.patient_id
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyInstanceUID = study.study_instance_uid
    ds.StudyID = "1"
    ds.StudyDate = _STUDY_TIME.strftime("%Y%m%d")
    ds.StudyTime = _STUDY_TIME.strftime("%H%M%S")
    ds.AccessionNumber = "A0001"
    ds.ReferringPhysicianName = ""
    ds.Modality = modality
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = 1
    ds.Manufacturer = "custom_networks"
    return ds


def set_pixels(ds: Dataset, pixels: np.ndarray, photometric: str = "MONOCHROME2") -> None:
    """Store ``pixels[row, column]`` (int16 or uint16) as 16-bit greyscale Pixel Data."""
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1 if pixels.dtype == np.int16 else 0
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()


def write_series(
    folder: PathLike,
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
    uid_seed: str | None = None,
    attributes: Mapping[str, object] | None = None,
) -> WrittenSeries:
    """Write ``volume[column, row, slice]`` as one single-frame file per slice.

    Args:
        folder: created if needed.
        volume: stored integer values (int16 or uint16).
        spacing: column spacing, row spacing, slice spacing in mm.
        orientation: 3x3 matrix whose columns are the row, column and slice directions in LPS (default identity).
        origin: ImagePositionPatient of slice 0.
        modality: "MR" or "CT".
        study: the study the series belongs to (a new one by default).
        description: SeriesDescription.
        rescale: (slope, intercept) written as RescaleSlope / RescaleIntercept.
        transfer_syntax: ``RLELossless`` compresses with pydicom's own encoder.
        shuffle_seed: files are named and InstanceNumber is assigned in an order shuffled by this seed, so only
            positions give the slice order; ``None`` keeps slice order.
        uid_seed: derive every UID from this string (reproducible files) instead of random UIDs.
        attributes: more attributes (keyword to value) set on every slice, e.g. ``{"EchoTime": 12}``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    orientation = np.eye(3) if orientation is None else np.asarray(orientation, dtype=float)
    study = study or Study()
    series_uid = derived_uid(uid_seed, "series")
    sop_class = {"MR": MR_IMAGE, "CT": CT_IMAGE}[modality]
    affine = series_lps_affine(orientation, spacing, origin)
    n = volume.shape[2]
    order = np.arange(n) if shuffle_seed is None else np.random.default_rng(shuffle_seed).permutation(n)
    files = []
    for k in range(n):
        sop_uid = derived_uid(uid_seed, "instance", k)
        ds = base_dataset(sop_class, modality, study, series_uid, ExplicitVRLittleEndian, sop_uid)
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
        for keyword, value in (attributes or {}).items():
            setattr(ds, keyword, value)
        set_pixels(ds, volume[:, :, k].T)
        if transfer_syntax == RLELossless:
            ds.compress(RLELossless)
        path = folder / f"IM{order[k]:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    return WrittenSeries(files, series_uid, study, affine)


def write_radiograph(
    path: PathLike,
    pixels: np.ndarray,
    photometric: str = "MONOCHROME2",
    modality: str = "CR",
    bits_stored: int = 12,
    imager_pixel_spacing: Sequence[float] | None = (0.2, 0.15),
    pixel_spacing: Sequence[float] | None = None,
    study: Study | None = None,
    uid_seed: str | None = None,
) -> Path:
    """Write a single-frame CR or DX image; ``pixels`` is ``[row, column]`` uint16 within ``bits_stored`` bits."""
    path = Path(path)
    study = study or Study()
    sop_class = {"CR": CR_IMAGE, "DX": DX_IMAGE}[modality]
    series_uid, sop_uid = derived_uid(uid_seed, "series"), derived_uid(uid_seed, "instance")
    ds = base_dataset(sop_class, modality, study, series_uid, ExplicitVRLittleEndian, sop_uid)
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
    set_pixels(ds, pixels.astype(np.uint16), photometric)
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path

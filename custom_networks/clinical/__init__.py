"""Clinical inputs and outputs: DICOM series, radiographs, NIfTI and PNG/JPG in; NIfTI, DICOM SEG and overlays out."""

from __future__ import annotations

from custom_networks.clinical.bundle_config import (
    bundle_metadata,
    is_on,
    segment_codes,
    segment_colours,
    segment_labels,
)
from custom_networks.clinical.cases import (
    Case,
    CaseOutcome,
    CaseOutcomeRecorder,
    ClinicalCaseDataset,
    MeasureSegmentsd,
    RecordCaseOutcomed,
    cases_datalist,
    discover_cases,
)
from custom_networks.clinical.dicom_series import SeriesRules, discover_series, select_series, sort_series
from custom_networks.clinical.errors import CaseError
from custom_networks.clinical.load_case import LoadClinicalImage, LoadClinicalImaged, input_form
from custom_networks.clinical.mask_writer import AtomicNibabelWriter, AtomicPILWriter, SaveClinicalMaskd
from custom_networks.clinical.overlay import SaveOverlayPNGd
from custom_networks.clinical.radiograph import load_radiograph
from custom_networks.clinical.slice_inferer import SliceWiseInferer

__all__ = [
    "AtomicNibabelWriter",
    "AtomicPILWriter",
    "Case",
    "CaseError",
    "CaseOutcome",
    "CaseOutcomeRecorder",
    "ClinicalCaseDataset",
    "LoadClinicalImage",
    "LoadClinicalImaged",
    "MeasureSegmentsd",
    "RecordCaseOutcomed",
    "SaveClinicalMaskd",
    "SaveDicomSegd",
    "SaveOverlayPNGd",
    "SeriesRules",
    "SliceWiseInferer",
    "bundle_metadata",
    "cases_datalist",
    "discover_cases",
    "discover_series",
    "input_form",
    "is_on",
    "load_radiograph",
    "segment_codes",
    "segment_colours",
    "segment_labels",
    "select_series",
    "sort_series",
]


def __getattr__(name: str):
    """``SaveDicomSegd`` is imported on first use: highdicom needs pydicom 3, and the MONAI Label environment
    (docs/monailabel.md), which never writes a SEG through it, has pydicom 2."""
    if name == "SaveDicomSegd":
        from custom_networks.clinical.seg_writer import SaveDicomSegd

        return SaveDicomSegd
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

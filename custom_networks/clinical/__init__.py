"""Clinical inputs and outputs: DICOM series, radiographs, NIfTI and PNG/JPG in; NIfTI, DICOM SEG, SR measurement
reports, overlays (PNG or DICOM Secondary Capture) out."""

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
    "SaveMeasurementReportd",
    "SaveOverlayPNGd",
    "SaveSecondaryCaptured",
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
    """The DICOM SEG, SR and Secondary Capture writers are imported on first use: highdicom needs pydicom 3, and
    the MONAI Label environment (docs/monailabel.md), which never writes these files through them, has pydicom 2."""
    if name == "SaveDicomSegd":
        from custom_networks.clinical.seg_writer import SaveDicomSegd

        return SaveDicomSegd
    if name == "SaveMeasurementReportd":
        from custom_networks.clinical.sr_writer import SaveMeasurementReportd

        return SaveMeasurementReportd
    if name == "SaveSecondaryCaptured":
        from custom_networks.clinical.secondary_capture import SaveSecondaryCaptured

        return SaveSecondaryCaptured
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""Names shared by the clinical loaders and writers: meta-data keys, kinds of loaded image, forms of case."""

from __future__ import annotations

__all__ = [
    "DICOM_KINDS",
    "FORM_DICOM_FILE",
    "FORM_DICOM_FOLDER",
    "FORM_IMAGE_FILE",
    "FORM_NIFTI_FILE",
    "INPUT_KIND_KEY",
    "KIND_DICOM_RADIOGRAPH",
    "KIND_DICOM_SERIES",
    "KIND_IMAGE_2D",
    "KIND_NIFTI",
    "OUTPUTS_KEY",
    "PATIENT_FRAME_KINDS",
    "SEG_SEGMENTS_KEY",
    "SEG_SERIES_UID_KEY",
    "SEG_SOP_UID_KEY",
    "SOURCE_FILES_KEY",
    "STAGE_SECONDS_KEY",
]

# meta-data entries added by LoadClinicalImage(d)
INPUT_KIND_KEY = "clinical_input_kind"
SOURCE_FILES_KEY = "dicom_source_files"
# meta-data entry the clinical writers append their output paths to
OUTPUTS_KEY = "clinical_outputs"
# label meta-data entries SaveDicomSegd adds, for the writers that reference the SEG (the SR measurement report):
# the SEG's SeriesInstanceUID and SOPInstanceUID, and per segment a dict {"value": label value, "number": segment
# number, "label": name, "tracking_uid", "tracking_id", "category" and "type": (value, scheme, meaning)}
SEG_SERIES_UID_KEY = "dicom_seg_series_uid"
SEG_SOP_UID_KEY = "dicom_seg_sop_uid"
SEG_SEGMENTS_KEY = "dicom_seg_segments"
# meta-data entry where a writer that takes noticeable time records it, {stage: seconds} (the SEG: "seg_encoding")
STAGE_SECONDS_KEY = "clinical_stage_seconds"

KIND_NIFTI = "nifti"
KIND_DICOM_SERIES = "dicom_series"
KIND_DICOM_RADIOGRAPH = "dicom_radiograph"
KIND_IMAGE_2D = "image_2d"

# kinds whose affine places voxels in the patient's RAS frame
PATIENT_FRAME_KINDS = (KIND_NIFTI, KIND_DICOM_SERIES)
DICOM_KINDS = (KIND_DICOM_SERIES, KIND_DICOM_RADIOGRAPH)

# forms a case takes on disk (the "kind" column of the run summary)
FORM_NIFTI_FILE = "nifti_file"
FORM_DICOM_FOLDER = "dicom_folder"
FORM_DICOM_FILE = "dicom_file"
FORM_IMAGE_FILE = "image_file"

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
    "SOURCE_FILES_KEY",
]

# meta-data entries added by LoadClinicalImage(d)
INPUT_KIND_KEY = "clinical_input_kind"
SOURCE_FILES_KEY = "dicom_source_files"
# meta-data entry the clinical writers append their output paths to
OUTPUTS_KEY = "clinical_outputs"

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

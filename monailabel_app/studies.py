"""A studies folder checked once at start-up: images that cannot be segmented are named and left out of the
listing, and a folder of DICOM files (which MONAI Label's local datastore does not list) gets a hint."""

from __future__ import annotations

import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
from monailabel.datastore.local import LocalDatastore
from PIL import Image

from custom_networks.clinical.errors import one_line
from custom_networks.clinical.load_case import IMAGE_SUFFIXES, NIFTI_SUFFIXES

__all__ = ["CheckedLocalDatastore", "dicom_hint", "image_problem"]

logger = logging.getLogger(__name__)



def image_problem(path: Path) -> str | None:
    """Why the image file ``path`` cannot be segmented by any bundle (unreadable, NaN values); ``None`` if it
    reads. Formats other than NIfTI and 2D images are not checked here."""
    name = path.name.lower()
    what = "NIfTI file" if name.endswith(NIFTI_SUFFIXES) else "image file"
    try:
        if name.endswith(NIFTI_SUFFIXES):
            data = np.asanyarray(nib.load(path).dataobj)
        elif name.endswith(IMAGE_SUFFIXES):
            with Image.open(path) as image:
                data = np.asarray(image)
        else:
            return None
    except Exception as error:
        return f"truncated or corrupt {what} ({type(error).__name__}: {one_line(error)})"
    if np.issubdtype(data.dtype, np.floating):
        non_finite = int((~np.isfinite(data)).sum())
        if non_finite:
            return f"{non_finite} NaN or infinite voxel values"
    return None


def dicom_hint(studies: Path, listed: int) -> str | None:
    """The hint for a studies folder holding DICOM files, which the local datastore does not list (``None`` when it
    holds none); ``listed`` is the number of images it does list."""
    dicom = [p for p in studies.rglob("*") if p.is_file() and "labels" not in p.relative_to(studies).parts
             and (p.suffix.lower() == ".dcm" or pydicom.misc.is_dicom(p))]
    if not dicom:
        return None
    where = "holds only DICOM files" if not listed else f"holds DICOM files ({len(dicom)}) besides {listed} images"
    return (f"studies folder {studies} {where}: MONAI Label does not list DICOM files from a folder; upload them "
            "to Orthanc and start with --studies http://127.0.0.1:8042/dicom-web (see docs/monailabel.md)")


class CheckedLocalDatastore(LocalDatastore):
    """MONAI Label's ``LocalDatastore`` whose listing leaves out the images that cannot be segmented, each named
    with its reason once (:func:`image_problem`, at start-up). The files stay where they are; asked for by id, such
    an image still gets its reason from the bundle."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.skipped: dict[str, str] = {}
        for image_id in super().list_images():
            path = Path(self.get_image_uri(image_id))
            problem = image_problem(path)
            if problem:
                self.skipped[image_id] = problem
                logger.warning(f"studies: {path.name} left out of the datastore: {problem}")

    def list_images(self) -> list[str]:
        return [i for i in super().list_images() if i not in self.skipped]

    def get_labeled_images(self, label_tag=None, labels=None) -> list[str]:
        return [i for i in super().get_labeled_images(label_tag, labels) if i not in self.skipped]

    def get_unlabeled_images(self, label_tag=None, labels=None) -> list[str]:
        return [i for i in super().get_unlabeled_images(label_tag, labels) if i not in self.skipped]

    def json(self) -> dict:
        listing = super().json()
        listing["objects"] = {k: v for k, v in listing.get("objects", {}).items() if k not in self.skipped}
        return listing

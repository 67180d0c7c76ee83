"""``SaveSecondaryCaptured``: the overlay mosaic as a DICOM Secondary Capture image, for viewers that cannot show SEG.

The picture is the one :class:`~custom_networks.clinical.overlay.SaveOverlayPNGd` writes as PNG (rendered by its
``mosaic``, with the same settings): label contours over the slices, captions, legend and, where demo weights ran,
the "DEMO WEIGHTS - NOT FOR CLINICAL USE" banners. It is stored as one RGB Secondary Capture image (highdicom
``SCImage``) in a new series of the source study: ImageType ``DERIVED\\SECONDARY``, BurnedInAnnotation ``YES``, the
source images shown referenced in the Source Image Sequence.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import highdicom as hd
import numpy as np
import pydicom
import torch
from monai.config import KeysCollection, PathLike
from monai.data import FolderLayout, MetaTensor
from monai.transforms import MapTransform
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from custom_networks.atomic_files import atomic_path
from custom_networks.clinical.dicom_series import LPS_TO_RAS
from custom_networks.clinical.meta import (
    DICOM_KINDS,
    INPUT_KIND_KEY,
    KIND_DICOM_SERIES,
    OUTPUTS_KEY,
    PATIENT_FRAME_KINDS,
    SOURCE_FILES_KEY,
)
from custom_networks.clinical.overlay import DEMO_MARK, OverlayMosaic, SaveOverlayPNGd, display_layout
from custom_networks.clinical.seg_writer import quiet_highdicom, result_uid
from custom_networks.clinical.sr_writer import InstanceUids

__all__ = ["SaveSecondaryCaptured", "deterministic_sc_uids", "mosaic_orientation"]

# patient directions of the LPS axes, positive then negative
_LPS_LETTERS = (("L", "R"), ("P", "A"), ("H", "F"))
# highdicom's SCImage (coordinate system "PATIENT") demands a PatientOrientation of single letters; DICOM also
# allows combined letters (an oblique "LP") and, in an SC image, an empty value, which the writer sets afterwards
_PLACEHOLDER_ORIENTATION = ("L", "F")


def deterministic_sc_uids(
    source_series_uid: str, algorithm_name: str, algorithm_version: str, weights_sha256: str
) -> InstanceUids:
    """The secondary capture's UIDs, derived from the same inputs as the SEG's (:func:`~custom_networks.clinical.
    seg_writer.deterministic_seg_uids`) with other names in them: a re-run of the same weights on the same series
    writes the same UIDs, so storing it again replaces the picture on a PACS instead of adding a second one.

    Args:
        source_series_uid: SeriesInstanceUID of the segmented series.
        algorithm_name: the bundle name.
        algorithm_version: the bundle version.
        weights_sha256: SHA-256 (hex) of the model file.
    """
    seed = (source_series_uid, algorithm_name, algorithm_version, weights_sha256)
    return InstanceUids(result_uid(*seed, "sc series"), result_uid(*seed, "sc instance"))


def mosaic_orientation(image: torch.Tensor, in_plane: tuple[int, int]) -> tuple[str, str] | None:
    """PatientOrientation of the tiles of a mosaic cut across axes ``in_plane`` of ``image`` (a ``MetaTensor`` in a
    patient frame): the patient directions of the picture's rows (towards the right of the picture) and columns
    (towards its bottom), by the dominant axis of each, as the overlay lays tiles out (:func:`~custom_networks.
    clinical.overlay.display_layout`); ``None`` without a patient frame."""
    if not isinstance(image, MetaTensor):
        return None
    lps = (LPS_TO_RAS @ image.affine.cpu().numpy())[:3, list(in_plane)].T
    transpose, flip_rows, flip_columns = display_layout(lps)
    # a tile is the [a, b] slice: its rows follow axis a, its columns axis b, swapped when transposed
    down, across = (lps[1], lps[0]) if transpose else (lps[0], lps[1])
    down, across = (-down if flip_rows else down), (-across if flip_columns else across)
    return _letter(across), _letter(down)


def _letter(direction: np.ndarray) -> str:
    axis = int(np.argmax(np.abs(direction)))
    return _LPS_LETTERS[axis][0 if direction[axis] > 0 else 1]


class SaveSecondaryCaptured(MapTransform):
    """Save the overlay mosaic of each label map under ``keys`` as a DICOM Secondary Capture image for inputs that
    came from DICOM; others pass unchanged.

    The mosaic is rendered as :class:`~custom_networks.clinical.overlay.SaveOverlayPNGd` renders it (the overlay
    arguments below are that writer's), so with the same settings the DICOM picture and the PNG are the same
    pixels. The image joins the source study in a new series; its PatientOrientation is that of the tiles
    (:func:`mosaic_orientation`; a radiograph's own), it references the source images shown and, made with demo
    weights, says so in ImageComments besides the banners drawn. The file is written under a temporary name, then
    renamed, and its path appended to the label's ``clinical_outputs`` meta-data entry.

    Args:
        keys: label maps ``(1, *spatial)`` in the source's voxel grid.
        output_dir: root folder of the files, laid out as MONAI's ``SaveImage`` does.
        channel_def: label value to name, as in a bundle's metadata; value 0 is background.
        algorithm_name: the bundle name (the device's model name, and in the series description).
        algorithm_version: the bundle version.
        image_key: the image as loaded from DICOM, in the same voxel grid as the labels.
        colours: as for ``SaveOverlayPNGd``.
        slice_axis: as for ``SaveOverlayPNGd``.
        min_slices: as for ``SaveOverlayPNGd``.
        tile_size: as for ``SaveOverlayPNGd``.
        max_size: as for ``SaveOverlayPNGd``.
        weights_sha256: SHA-256 of the model file; when given, the series and instance UIDs are derived from it, the
            source SeriesInstanceUID and the algorithm name and version (:func:`deterministic_sc_uids`); ``None``:
            new random UIDs.
        demo_weights: draw the demo-weights banners and write the mark into ImageComments.
        series_description: SeriesDescription; ``None``: "<algorithm_name> overlay".
        output_postfix: appended to the input's name.
        separate_folder: one folder per case, as ``SaveImage``.
        data_root_dir: keep the input's folders relative to this, as ``SaveImage``.
        manufacturer: written as Manufacturer.
        series_number: SeriesNumber.
        allow_missing_keys: do not raise for absent keys.
    """

    def __init__(
        self,
        keys: KeysCollection,
        output_dir: PathLike,
        channel_def: Mapping[str | int, str],
        algorithm_name: str,
        algorithm_version: str,
        image_key: str = "image",
        colours: Mapping[str | int, Sequence[int]] | None = None,
        slice_axis: int | None = None,
        min_slices: int = 8,
        tile_size: int = 256,
        max_size: int = 3072,
        weights_sha256: str | None = None,
        demo_weights: bool = False,
        series_description: str | None = None,
        output_postfix: str = "sc",
        separate_folder: bool = True,
        data_root_dir: PathLike = "",
        manufacturer: str = "custom_networks",
        series_number: int = 9003,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        # the overlay writer is used for its rendering only; it writes no PNG here
        self.overlay = SaveOverlayPNGd(
            keys,
            output_dir,
            channel_def,
            image_key=image_key,
            colours=colours,
            slice_axis=slice_axis,
            min_slices=min_slices,
            tile_size=tile_size,
            max_size=max_size,
            demo_weights=demo_weights,
        )
        self.algorithm_name = algorithm_name
        self.algorithm_version = str(algorithm_version)
        self.image_key = image_key
        self.slice_axis = slice_axis
        self.weights_sha256 = weights_sha256
        self.demo_weights = bool(demo_weights)
        self.series_description = series_description or f"{algorithm_name} overlay"
        self.manufacturer = manufacturer
        self.series_number = series_number
        self.layout = FolderLayout(
            output_dir, postfix=output_postfix, extension=".dcm", parent=separate_folder, data_root_dir=data_root_dir
        )

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        image = d[self.image_key]
        meta = image.meta if isinstance(image, MetaTensor) else {}
        if meta.get(INPUT_KIND_KEY) not in DICOM_KINDS:
            return d
        for key in self.key_iterator(d):
            label = d[key]
            path = self.write(image, label)
            if isinstance(label, MetaTensor):
                label.meta.setdefault(OUTPUTS_KEY, []).append(path)
        return d

    def write(self, image: MetaTensor, label: torch.Tensor) -> str:
        """Write the mosaic of ``label`` over ``image`` (loaded from DICOM) as a Secondary Capture; return its path."""
        meta = image.meta
        sources = [pydicom.dcmread(f, stop_before_pixels=True) for f in meta[SOURCE_FILES_KEY]]
        mosaic = self.overlay.mosaic(image, label)
        uids = self._uids(str(sources[0].SeriesInstanceUID))
        orientation = self._orientation(image, sources[0])
        with quiet_highdicom():
            picture = hd.sc.SCImage.from_ref_dataset(
                ref_dataset=sources[0],
                pixel_array=mosaic.picture,
                photometric_interpretation="RGB",
                bits_allocated=8,
                coordinate_system="PATIENT",
                series_instance_uid=uids.series_uid,
                series_number=self.series_number,
                sop_instance_uid=uids.sop_uid,
                instance_number=1,
                manufacturer=self.manufacturer,
                patient_orientation=orientation if _single_letters(orientation) else _PLACEHOLDER_ORIENTATION,
                series_description=self.series_description[:64],
                manufacturer_model_name=self.algorithm_name[:64],
                software_versions=self.algorithm_version[:64],
                device_serial_number="none",
            )
        picture.PatientOrientation = list(orientation)
        self._describe(picture, mosaic, sources, meta)
        path = str(self.layout.filename(subject=meta["filename_or_obj"]))
        with atomic_path(path) as temporary:
            picture.save_as(temporary)
        return path

    def _uids(self, source_series_uid: str) -> InstanceUids:
        if self.weights_sha256 is None:
            return InstanceUids(hd.UID(), hd.UID())
        return deterministic_sc_uids(
            source_series_uid, self.algorithm_name, self.algorithm_version, self.weights_sha256
        )

    def _orientation(self, image: MetaTensor, source: pydicom.Dataset) -> tuple[str, str]:
        if image.meta.get(INPUT_KIND_KEY) in PATIENT_FRAME_KINDS:
            axis = 2 if self.slice_axis is None else self.slice_axis
            first, second = (a for a in range(3) if a != axis)
            found = mosaic_orientation(image, (first, second))
            if found is not None:
                return found
        # a radiograph is shown as stored: its own orientation, when it has one
        given = [str(v) for v in source.get("PatientOrientation", [])]
        return (given[0], given[1]) if len(given) == 2 else ("", "")

    def _describe(
        self, picture: hd.sc.SCImage, mosaic: OverlayMosaic, sources: list[pydicom.Dataset], meta: Mapping
    ) -> None:
        """The derived-image attributes highdicom leaves out or sets otherwise."""
        picture.ImageType = ["DERIVED", "SECONDARY", "OTHER"]
        picture.BurnedInAnnotation = "YES"
        # highdicom says "DI" (digital interface); the picture is rendered by software, a workstation in DICOM terms
        picture.ConversionType = "WSD"
        picture.SecondaryCaptureDeviceManufacturer = self.manufacturer[:64]
        picture.SecondaryCaptureDeviceManufacturerModelName = self.algorithm_name[:64]
        picture.SecondaryCaptureDeviceSoftwareVersions = self.algorithm_version[:64]
        picture.DerivationDescription = (
            f"contours of the {self.algorithm_name} {self.algorithm_version} segmentation over the source images"
        )[:1024]
        picture.SourceImageSequence = [_source_reference(source) for source in self._shown(mosaic, sources, meta)]
        # General Series (highdicom copies neither): Laterality is required (Type 2C) unless BodyPartExamined names
        # an unpaired part; a source that names neither leaves it unknown, which is an empty value
        for keyword in ("BodyPartExamined", "Laterality"):
            if keyword in sources[0]:
                setattr(picture, keyword, sources[0][keyword].value)
        if "BodyPartExamined" not in picture and "Laterality" not in picture:
            picture.Laterality = ""
        if self.demo_weights:
            picture.ImageComments = DEMO_MARK

    def _shown(self, mosaic: OverlayMosaic, sources: list[pydicom.Dataset], meta: Mapping) -> list[pydicom.Dataset]:
        """The source images the tiles show: of a series cut along its slices, the slices of the tiles; else all."""
        along_slices = meta.get(INPUT_KIND_KEY) == KIND_DICOM_SERIES and self.slice_axis in (None, 2)
        if not along_slices:
            return sources
        return [sources[tile.index] for tile in mosaic.tiles if tile.index is not None]


def _single_letters(orientation: tuple[str, str]) -> bool:
    return all(len(letter) == 1 and letter in "LRAPHF" for letter in orientation)


def _source_reference(source: pydicom.Dataset) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = source.SOPClassUID
    item.ReferencedSOPInstanceUID = source.SOPInstanceUID
    item.PurposeOfReferenceCodeSequence = [
        hd.sr.CodedConcept.from_code(codes.DCM.SourceImageForImageProcessingOperation)
    ]
    return item

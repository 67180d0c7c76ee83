"""``SaveDicomSegd``: a label map as a DICOM Segmentation (highdicom) referencing its source DICOM images."""

from __future__ import annotations

import logging
from collections.abc import Hashable, Iterator, Mapping, Sequence
from contextlib import contextmanager

import highdicom as hd
import numpy as np
import pydicom
import torch
from monai.config import KeysCollection, PathLike
from monai.data import FolderLayout, MetaTensor
from monai.transforms import MapTransform
from monai.utils import MetaKeys
from pydicom.sr.codedict import codes

from custom_networks.atomic_files import atomic_path
from custom_networks.clinical.meta import (
    DICOM_KINDS,
    INPUT_KIND_KEY,
    KIND_DICOM_SERIES,
    OUTPUTS_KEY,
    SOURCE_FILES_KEY,
)

__all__ = ["SaveDicomSegd"]

# used when ``segment_codes`` names no codes for a segment: SNOMED CT "Tissue" for category and type
_DEFAULT_CODE = ("85756007", "SCT", "Tissue")
_AFFINE_TOLERANCE = 1e-3


@contextmanager
def _quiet_highdicom() -> Iterator[None]:
    """highdicom logs each module it copies at INFO level; bundle runs print INFO logs, so hold those back."""
    highdicom_logger = logging.getLogger("highdicom")
    level = highdicom_logger.level
    highdicom_logger.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        highdicom_logger.setLevel(level)


class SaveDicomSegd(MapTransform):
    """Save each label map under ``keys`` as a DICOM SEG for inputs that came from DICOM; others pass unchanged.

    The label must be in the source's own voxel grid (``[column, row, slice]`` as ``LoadClinicalImaged`` gives,
    after ``Invertd`` if the preprocessing resampled): frame ``k`` is built from slice ``k`` and references source
    file ``k`` of ``dicom_source_files``, so the SEG carries the source study, series and frame of reference.
    Empty frames are omitted (highdicom's default). The file is written under a temporary name, then renamed,
    and its path is appended to the label's ``clinical_outputs`` meta-data entry.

    Args:
        keys: label maps, channel-first ``(1, *spatial)`` integers whose values are ``channel_def`` keys.
        output_dir: root folder of the SEG files, laid out as MONAI's ``SaveImage`` does.
        channel_def: label value to segment label, as in a bundle's metadata (``{"0": "background", "1": "tumour"}``);
            value 0 is background and never a segment.
        algorithm_name: the algorithm identification (e.g. the bundle name); also the model name of the device.
        algorithm_version: the algorithm (bundle) version.
        source_key: key whose meta-data holds the DICOM source; ``None`` uses the label's own meta-data.
        output_postfix: appended to the input's name.
        separate_folder: one folder per case, as ``SaveImage``.
        data_root_dir: keep the input's folders relative to this, as ``SaveImage``.
        segmentation_type: ``"BINARY"`` (widely supported) or ``"LABELMAP"``.
        segment_codes: per segment label, ``{"category": [value, scheme, meaning], "type": [...]}``;
            segments not listed are coded as SNOMED CT "Tissue".
        manufacturer: written as Manufacturer of the SEG.
        series_number: SeriesNumber of the SEG.
        allow_missing_keys: do not raise for absent keys.
    """

    def __init__(
        self,
        keys: KeysCollection,
        output_dir: PathLike,
        channel_def: Mapping[str | int, str],
        algorithm_name: str,
        algorithm_version: str,
        source_key: str | None = None,
        output_postfix: str = "seg",
        separate_folder: bool = True,
        data_root_dir: PathLike = "",
        segmentation_type: str = "BINARY",
        segment_codes: Mapping[str, Mapping[str, Sequence[str]]] | None = None,
        manufacturer: str = "custom_networks",
        series_number: int = 9001,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.labels = {int(value): str(name) for value, name in channel_def.items() if int(value) != 0}
        if not self.labels:
            raise ValueError("channel_def names no segment besides background (value 0)")
        self.algorithm_name = algorithm_name
        self.algorithm_version = str(algorithm_version)
        self.source_key = source_key
        self.segmentation_type = segmentation_type
        self.segment_codes = dict(segment_codes or {})
        self.manufacturer = manufacturer
        self.series_number = series_number
        self.layout = FolderLayout(
            output_dir, postfix=output_postfix, extension=".dcm", parent=separate_folder, data_root_dir=data_root_dir
        )

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            label = d[key]
            source = d[self.source_key] if self.source_key is not None else label
            meta = source.meta if isinstance(source, MetaTensor) else {}
            if meta.get(INPUT_KIND_KEY) not in DICOM_KINDS:
                continue
            path = self.write(label, meta)
            if isinstance(label, MetaTensor):
                label.meta.setdefault(OUTPUTS_KEY, []).append(path)
        return d

    def write(self, label: torch.Tensor, source_meta: Mapping) -> str:
        """Write the SEG of ``label`` for the DICOM source described by ``source_meta``; return its path."""
        sources = [pydicom.dcmread(f, stop_before_pixels=True) for f in source_meta[SOURCE_FILES_KEY]]
        frames = self._frames(label, source_meta, sources)
        with _quiet_highdicom():
            segmentation = self._segmentation(sources, frames)
        path = str(self.layout.filename(subject=source_meta["filename_or_obj"]))
        with atomic_path(path) as temporary:
            segmentation.save_as(temporary)
        return path

    def _segmentation(self, sources: list[pydicom.Dataset], frames: np.ndarray) -> hd.seg.Segmentation:
        return hd.seg.Segmentation(
            source_images=sources,
            pixel_array=frames,
            segmentation_type=self.segmentation_type,
            segment_descriptions=self._segment_descriptions(),
            series_instance_uid=hd.UID(),
            series_number=self.series_number,
            sop_instance_uid=hd.UID(),
            instance_number=1,
            manufacturer=self.manufacturer,
            manufacturer_model_name=self.algorithm_name,
            software_versions=self.algorithm_version,
            device_serial_number="none",
            content_label="SEGMENTATION",
            content_description=f"{self.algorithm_name} {self.algorithm_version}"[:64],
            series_description=f"{self.algorithm_name} segmentation"[:64],
        )

    def _frames(self, label: torch.Tensor, source_meta: Mapping, sources: list[pydicom.Dataset]) -> np.ndarray:
        """``(slices, rows, columns)`` segment numbers, frame ``k`` from slice ``k`` of the source grid."""
        values = label.detach().cpu().numpy() if isinstance(label, torch.Tensor) else np.asarray(label)
        columns, rows = int(sources[0].Columns), int(sources[0].Rows)
        grid = (columns, rows, len(sources)) if source_meta[INPUT_KIND_KEY] == KIND_DICOM_SERIES else (columns, rows)
        if values.shape != (1, *grid) or self._affine_differs(label, source_meta):
            raise ValueError(
                f"label of shape {values.shape} is not in the DICOM source's voxel grid (1, *{grid}): "
                "invert resampling and reorientation (Invertd) before SaveDicomSegd"
            )
        unknown = sorted(set(np.unique(values).astype(int).tolist()) - set(self.labels) - {0})
        if unknown:
            raise ValueError(f"label values {unknown} are not in channel_def {self.labels}")
        numbers = np.zeros(values.shape[1:], dtype=np.uint16 if len(self.labels) > 255 else np.uint8)
        for number, value in enumerate(sorted(self.labels), start=1):
            numbers[values[0] == value] = number
        return np.transpose(numbers, (2, 1, 0)) if numbers.ndim == 3 else numbers.T[None]

    @staticmethod
    def _affine_differs(label: torch.Tensor, source_meta: Mapping) -> bool:
        original = source_meta.get(MetaKeys.ORIGINAL_AFFINE)
        if not isinstance(label, MetaTensor) or original is None:
            return False
        return not np.allclose(label.affine.cpu().numpy(), np.asarray(original), atol=_AFFINE_TOLERANCE)

    def _segment_descriptions(self) -> list[hd.seg.SegmentDescription]:
        algorithm = hd.AlgorithmIdentificationSequence(
            name=self.algorithm_name, family=codes.cid7162.ArtificialIntelligence, version=self.algorithm_version
        )
        descriptions = []
        for number, value in enumerate(sorted(self.labels), start=1):
            name = self.labels[value]
            coded = self.segment_codes.get(name, {})
            descriptions.append(
                hd.seg.SegmentDescription(
                    segment_number=number,
                    segment_label=name,
                    segmented_property_category=hd.sr.CodedConcept(*coded.get("category", _DEFAULT_CODE)),
                    segmented_property_type=hd.sr.CodedConcept(*coded.get("type", _DEFAULT_CODE)),
                    algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                    algorithm_identification=algorithm,
                    tracking_uid=hd.UID(),
                    tracking_id=f"{name} {number}",
                )
            )
        return descriptions

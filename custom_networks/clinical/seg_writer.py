"""``SaveDicomSegd``: a label map as a DICOM Segmentation (highdicom) referencing its source DICOM images."""

from __future__ import annotations

import logging
import time
from collections.abc import Hashable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import highdicom as hd
import numpy as np
import pydicom
import torch
from monai.config import KeysCollection, PathLike
from monai.data import FolderLayout, MetaTensor
from monai.transforms import MapTransform
from monai.utils import MetaKeys
from pydicom.sr.codedict import codes
from pydicom.uid import UID, generate_uid

from custom_networks.atomic_files import atomic_path
from custom_networks.clinical.meta import (
    DICOM_KINDS,
    INPUT_KIND_KEY,
    KIND_DICOM_SERIES,
    OUTPUTS_KEY,
    SEG_SEGMENTS_KEY,
    SEG_SERIES_UID_KEY,
    SEG_SOP_UID_KEY,
    SOURCE_FILES_KEY,
    STAGE_SECONDS_KEY,
)

__all__ = ["SaveDicomSegd", "SegUids", "deterministic_seg_uids", "quiet_highdicom", "result_uid"]

_AFFINE_TOLERANCE = 1e-3
_CODE_FIELDS = ("value", "scheme", "meaning")


@dataclass(frozen=True)
class SegUids:
    """The UIDs of one SEG: its series, its SOP instance and the tracking UID of each segment (by segment number)."""

    series_uid: UID
    sop_uid: UID
    tracking_uids: tuple[UID, ...]


def result_uid(
    source_series_uid: str, algorithm_name: str, algorithm_version: str, weights_sha256: str, *what: str
) -> UID:
    """A UID derived from what makes a result (source series, algorithm, its version and weights) and ``what``
    names in it (``"seg instance"``, ``"sr series"``, ...): the same inputs give the same UID.

    Args:
        source_series_uid: SeriesInstanceUID of the segmented series.
        algorithm_name: the bundle name.
        algorithm_version: the bundle version.
        weights_sha256: SHA-256 (hex) of the model file.
        what: the object and attribute the UID is for, distinct for every UID derived from one result.
    """
    return generate_uid(entropy_srcs=[source_series_uid, algorithm_name, str(algorithm_version), weights_sha256, *what])


def deterministic_seg_uids(
    source_series_uid: str, algorithm_name: str, algorithm_version: str, weights_sha256: str, n_segments: int
) -> SegUids:
    """UIDs derived from what makes a result (source series, algorithm, its version and weights): the same inputs
    give the same SEG UIDs, so storing a result again replaces it on a PACS instead of adding a second copy.

    Args:
        source_series_uid: SeriesInstanceUID of the segmented series.
        algorithm_name: the bundle name.
        algorithm_version: the bundle version.
        weights_sha256: SHA-256 (hex) of the model file.
        n_segments: number of segments (one tracking UID each).
    """

    def derive(*what: str) -> UID:
        return result_uid(source_series_uid, algorithm_name, algorithm_version, weights_sha256, *what)

    return SegUids(
        derive("seg series"),
        derive("seg instance"),
        tuple(derive("segment", str(number)) for number in range(1, n_segments + 1)),
    )


@contextmanager
def quiet_highdicom() -> Iterator[None]:
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
    and its path is appended to the label's ``clinical_outputs`` meta-data entry; the SEG's series and SOP instance
    UIDs and its segments (number, label value, tracking UID, codes) are recorded in the label's meta-data
    (``SEG_SERIES_UID_KEY``, ``SEG_SOP_UID_KEY``, ``SEG_SEGMENTS_KEY`` of :mod:`custom_networks.clinical.meta`), for
    the writers that reference the SEG.

    Args:
        keys: label maps, channel-first ``(1, *spatial)`` integers whose values are ``channel_def`` keys.
        output_dir: root folder of the SEG files, laid out as MONAI's ``SaveImage`` does.
        channel_def: label value to segment label, as in a bundle's metadata (``{"0": "background", "1": "tumour"}``);
            value 0 is background and never a segment.
        algorithm_name: the algorithm identification (e.g. the bundle name); also the model name of the device.
        algorithm_version: the algorithm (bundle) version.
        segment_codes: per label value of ``channel_def`` (background excepted), its SegmentedPropertyCategory and
            SegmentedPropertyType codes and, optionally, its recommended display colour, as a bundle's metadata
            holds them (``network_data_format.outputs.pred.dicom_segments``): ``{"1": {"category": {"scheme":
            "SCT", "value": "49755003", "meaning": "Morphologically abnormal structure"}, "type": {...},
            "color_rgb": [255, 40, 40]}}`` (written as RecommendedDisplayCIELabValue).
        source_key: key whose meta-data holds the DICOM source; ``None`` uses the label's own meta-data.
        output_postfix: appended to the input's name.
        separate_folder: one folder per case, as ``SaveImage``.
        data_root_dir: keep the input's folders relative to this, as ``SaveImage``.
        segmentation_type: ``"BINARY"`` (widely supported) or ``"LABELMAP"``.
        manufacturer: written as Manufacturer of the SEG.
        series_number: SeriesNumber of the SEG.
        weights_sha256: SHA-256 of the model file; when given, the SEG's series, instance and tracking UIDs are
            derived from it, the source SeriesInstanceUID and the algorithm name and version
            (:func:`deterministic_seg_uids`), so a repeated run writes the same UIDs; ``None``: new random UIDs.
        allow_missing_keys: do not raise for absent keys.

    Raises:
        ValueError: a segment of ``channel_def`` has no codes in ``segment_codes`` (the message names its label).
    """

    def __init__(
        self,
        keys: KeysCollection,
        output_dir: PathLike,
        channel_def: Mapping[str | int, str],
        algorithm_name: str,
        algorithm_version: str,
        segment_codes: Mapping[str | int, Mapping],
        source_key: str | None = None,
        output_postfix: str = "seg",
        separate_folder: bool = True,
        data_root_dir: PathLike = "",
        segmentation_type: str = "BINARY",
        manufacturer: str = "custom_networks",
        series_number: int = 9001,
        weights_sha256: str | None = None,
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
        self.segment_codes = _parse_segment_codes(self.labels, segment_codes)
        self.manufacturer = manufacturer
        self.series_number = series_number
        self.weights_sha256 = weights_sha256
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
            start = time.perf_counter()
            path = self.write(label, meta)
            if isinstance(label, MetaTensor):
                label.meta.setdefault(OUTPUTS_KEY, []).append(path)
                seconds = label.meta.setdefault(STAGE_SECONDS_KEY, {})
                seconds["seg_encoding"] = seconds.get("seg_encoding", 0.0) + time.perf_counter() - start
        return d

    def write(self, label: torch.Tensor, source_meta: Mapping) -> str:
        """Write the SEG of ``label`` for the DICOM source described by ``source_meta``; return its path.

        A ``MetaTensor`` label gets the SEG's UIDs and segments in its meta-data (see the class description)."""
        sources = [pydicom.dcmread(f, stop_before_pixels=True) for f in source_meta[SOURCE_FILES_KEY]]
        frames = self._frames(label, source_meta, sources)
        uids = self._uids(str(sources[0].SeriesInstanceUID))
        with quiet_highdicom():
            segmentation = self._segmentation(sources, frames, uids)
        path = str(self.layout.filename(subject=source_meta["filename_or_obj"]))
        with atomic_path(path) as temporary:
            segmentation.save_as(temporary)
        if isinstance(label, MetaTensor):
            label.meta.update(self._seg_meta(uids))
        return path

    def _seg_meta(self, uids: SegUids) -> dict[str, object]:
        """What the label's meta-data records of the SEG written with ``uids``."""
        segments = []
        for number, value in enumerate(sorted(self.labels), start=1):
            coded = self.segment_codes[value]
            segments.append(
                {
                    "value": value,
                    "number": number,
                    "label": self.labels[value],
                    "tracking_uid": str(uids.tracking_uids[number - 1]),
                    "tracking_id": f"{self.labels[value]} {number}",
                    "category": (coded.category.value, coded.category.scheme_designator, coded.category.meaning),
                    "type": (coded.type.value, coded.type.scheme_designator, coded.type.meaning),
                }
            )
        return {
            SEG_SERIES_UID_KEY: str(uids.series_uid),
            SEG_SOP_UID_KEY: str(uids.sop_uid),
            SEG_SEGMENTS_KEY: segments,
        }

    def _uids(self, source_series_uid: str) -> SegUids:
        if self.weights_sha256 is None:
            return SegUids(hd.UID(), hd.UID(), tuple(hd.UID() for _ in self.labels))
        return deterministic_seg_uids(
            source_series_uid, self.algorithm_name, self.algorithm_version, self.weights_sha256, len(self.labels)
        )

    def _segmentation(self, sources: list[pydicom.Dataset], frames: np.ndarray, uids: SegUids) -> hd.seg.Segmentation:
        segmentation = hd.seg.Segmentation(
            source_images=sources,
            pixel_array=frames,
            segmentation_type=self.segmentation_type,
            segment_descriptions=self._segment_descriptions(uids.tracking_uids),
            series_instance_uid=uids.series_uid,
            series_number=self.series_number,
            sop_instance_uid=uids.sop_uid,
            instance_number=1,
            manufacturer=self.manufacturer,
            manufacturer_model_name=self.algorithm_name,
            software_versions=self.algorithm_version,
            device_serial_number="none",
            content_label="SEGMENTATION",
            content_description=f"{self.algorithm_name} {self.algorithm_version}"[:64],
            series_description=f"{self.algorithm_name} segmentation"[:64],
        )
        if "FrameOfReferenceUID" not in segmentation:
            # no patient frame (a radiograph): General Image then requires PatientOrientation (Type 2C); the
            # frames lie on the source's pixel grid, so the source's orientation holds
            segmentation.PatientOrientation = sources[0].get("PatientOrientation", "")
        return segmentation

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

    def _segment_descriptions(self, tracking_uids: Sequence[str]) -> list[hd.seg.SegmentDescription]:
        algorithm = hd.AlgorithmIdentificationSequence(
            name=self.algorithm_name, family=codes.cid7162.ArtificialIntelligence, version=self.algorithm_version
        )
        descriptions = []
        for number, value in enumerate(sorted(self.labels), start=1):
            name = self.labels[value]
            coded = self.segment_codes[value]
            descriptions.append(
                hd.seg.SegmentDescription(
                    segment_number=number,
                    segment_label=name,
                    segmented_property_category=coded.category,
                    segmented_property_type=coded.type,
                    algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                    algorithm_identification=algorithm,
                    tracking_uid=tracking_uids[number - 1],
                    tracking_id=f"{name} {number}",
                    display_color=coded.display_color,
                )
            )
        return descriptions


@dataclass(frozen=True)
class _SegmentCodes:
    """The coded meaning of one segment and its recommended display colour (``None``: none recommended)."""

    category: hd.sr.CodedConcept
    type: hd.sr.CodedConcept
    display_color: hd.color.CIELabColor | None


def _parse_segment_codes(
    labels: Mapping[int, str], segment_codes: Mapping[str | int, Mapping]
) -> dict[int, _SegmentCodes]:
    """``segment_codes`` (see :class:`SaveDicomSegd`) per label value, checked to code every segment of ``labels``.

    Raises:
        ValueError: a segment has no entry, an entry lacks its category or type or a code lacks a field, a
            colour is not three values in 0-255, or an entry names a label value ``labels`` does not hold.
    """
    given = {int(value): entry for value, entry in segment_codes.items()}
    unknown = sorted(set(given) - set(labels))
    if unknown:
        raise ValueError(f"segment_codes name label values {unknown} that channel_def {labels} does not hold")
    parsed = {}
    for value, name in labels.items():
        entry = given.get(value, {})
        missing = [part for part in ("category", "type") if part not in entry]
        if missing:
            raise ValueError(
                f"segment {value} ({name!r}) has no DICOM {' and '.join(missing)} code: give segment_codes "
                f"(the bundle metadata's network_data_format.outputs.pred.dicom_segments) an entry {value!r}: "
                '{"category": {"scheme": ..., "value": ..., "meaning": ...}, "type": {...}}'
            )
        colour = entry.get("color_rgb")
        parsed[value] = _SegmentCodes(
            _coded_concept(entry["category"], f"segment {value} ({name!r}) category"),
            _coded_concept(entry["type"], f"segment {value} ({name!r}) type"),
            None if colour is None else _display_colour(colour, f"segment {value} ({name!r})"),
        )
    return parsed


def _coded_concept(code: Mapping[str, str], what: str) -> hd.sr.CodedConcept:
    missing = [field for field in _CODE_FIELDS if not code.get(field)]
    if missing:
        raise ValueError(f"{what} code {dict(code)} lacks {', '.join(missing)}")
    return hd.sr.CodedConcept(str(code["value"]), str(code["scheme"]), str(code["meaning"]))


def _display_colour(rgb: Sequence[int], what: str) -> hd.color.CIELabColor:
    if len(rgb) != 3 or not all(isinstance(c, int) and 0 <= c <= 255 for c in rgb):
        raise ValueError(f"{what} color_rgb {list(rgb)} is not three integers in 0-255")
    return hd.color.CIELabColor.from_rgb(*rgb)

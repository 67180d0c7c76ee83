"""``SaveMeasurementReportd``: each segment's volume and image intensity as a DICOM SR measurement report (TID 1500).

The report (highdicom ``Comprehensive3DSR`` holding a ``MeasurementReport``) has one measurement group per segment
of the case's DICOM SEG (TID 1411 "Volumetric ROI Measurements"): the group references the segment by the SEG's SOP
instance UID and segment number, and the segmented source series; it carries the segment's tracking identifier and
UID (the SEG's own, so the SR's findings and the SEG's segments are one and the same), its finding type and
category (the SEG's segmented property codes) and the algorithm (bundle name, version and, as an algorithm
parameter, the SHA-256 of the weights). Its measurements are those of the run summary
(:func:`custom_networks.clinical.cases.measure_segments`): the volume in ml (3D inputs) and the mean and standard
deviation of the image intensity inside the segment. A report made with demo weights says so in a text item.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

import highdicom as hd
import pydicom
import torch
from monai.config import KeysCollection, PathLike
from monai.data import FolderLayout, MetaTensor
from monai.transforms import MapTransform
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import UID, SegmentationStorage, generate_uid

from custom_networks.atomic_files import atomic_path
from custom_networks.clinical.cases import MEASUREMENTS_KEY, measure_segments
from custom_networks.clinical.errors import CaseError
from custom_networks.clinical.meta import (
    DICOM_KINDS,
    INPUT_KIND_KEY,
    OUTPUTS_KEY,
    SEG_SEGMENTS_KEY,
    SEG_SERIES_UID_KEY,
    SEG_SOP_UID_KEY,
    SOURCE_FILES_KEY,
)
from custom_networks.clinical.seg_writer import quiet_highdicom, result_uid

__all__ = [
    "DEMO_NOTE",
    "InstanceUids",
    "SaveMeasurementReportd",
    "deterministic_sr_uids",
    "intensity_concepts",
]

DEMO_NOTE = "demo weights, not for clinical use"

_ML = hd.sr.CodedConcept("ml", "UCUM", "milliliter")
_NO_UNITS = hd.sr.CodedConcept("1", "UCUM", "no units")
_HOUNSFIELD = hd.sr.CodedConcept("[hnsf'U]", "UCUM", "Hounsfield unit")
# TID 1500 row "Qualitative Evaluations": highdicom's MeasurementReport builds no such container (its source says
# so), so the report's demo-weights note is added to the content tree by hand
_QUALITATIVE_EVALUATIONS = hd.sr.CodedConcept("C0034375", "UMLS", "Qualitative Evaluations")
# projection radiography: the pixel values (after the modality LUT) stand for X-ray attenuation
_XRAY_MODALITIES = ("CR", "DX", "MG", "RG", "IO", "PX", "XA", "RF")
_PROCEDURES = {
    "MR": codes.cid100.MRIUnspecifiedBodyRegion,
    "CT": codes.cid100.CTUnspecifiedBodyRegion,
    "PT": codes.cid100.PETUnspecifiedBodyRegion,
    "NM": codes.cid100.NMUnspecifiedBodyRegion,
    **{modality: codes.cid100.XRUnspecifiedBodyRegion for modality in _XRAY_MODALITIES},
}

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class InstanceUids:
    """The UIDs of one single-instance series: its SeriesInstanceUID and SOPInstanceUID."""

    series_uid: UID
    sop_uid: UID


def deterministic_sr_uids(
    source_series_uid: str, algorithm_name: str, algorithm_version: str, weights_sha256: str
) -> InstanceUids:
    """The SR's UIDs, derived from the same inputs as the SEG's (:func:`~custom_networks.clinical.seg_writer.
    deterministic_seg_uids`) with other names in them: a re-run of the same weights on the same series writes the
    same SR UIDs, so storing it again replaces the report on a PACS instead of adding a second one.

    Args:
        source_series_uid: SeriesInstanceUID of the segmented series.
        algorithm_name: the bundle name.
        algorithm_version: the bundle version.
        weights_sha256: SHA-256 (hex) of the model file.
    """
    seed = (source_series_uid, algorithm_name, algorithm_version, weights_sha256)
    return InstanceUids(result_uid(*seed, "sr series"), result_uid(*seed, "sr instance"))


def intensity_concepts(
    modality: str, channels: int, photometric: str = ""
) -> list[tuple[hd.sr.CodedConcept, hd.sr.CodedConcept]] | None:
    """What the image intensity of each channel is, as ``(concept name, unit)`` of CID 7469 "Generic Intensity and
    Size Measurements", for a source of ``modality`` with ``photometric`` interpretation loaded as ``channels``
    channels; ``None`` where no code fits (the report then gives no intensities).

    MR: "MR signal intensity" (no units); CT: "Attenuation Coefficient" (Hounsfield units, the modality LUT is
    applied on loading); projection radiography: "X-Ray Attenuation" (no units); a colour image's three channels:
    "RGB R/G/B Component" (no units).
    """
    if channels == 3 and photometric.upper().startswith(("RGB", "YBR")):
        components = (codes.DCM.RGBRComponent, codes.DCM.RGBGComponent, codes.DCM.RGBBComponent)
        return [(hd.sr.CodedConcept.from_code(component), _NO_UNITS) for component in components]
    if channels != 1:
        return None
    if modality == "MR":
        return [(hd.sr.CodedConcept.from_code(codes.DCM.MRSignalIntensity), _NO_UNITS)]
    if modality == "CT":
        return [(hd.sr.CodedConcept.from_code(codes.DCM.AttenuationCoefficient), _HOUNSFIELD)]
    if modality in _XRAY_MODALITIES:
        return [(hd.sr.CodedConcept.from_code(codes.DCM.XRayAttenuation), _NO_UNITS)]
    return None


class SaveMeasurementReportd(MapTransform):
    """Save a DICOM SR measurement report (TID 1500) of the segments of the label maps under ``keys`` for inputs
    that came from DICOM; others pass unchanged.

    It reports on the SEG :class:`~custom_networks.clinical.seg_writer.SaveDicomSegd` wrote for the same label, so
    that writer must come first: it leaves the SEG's UIDs and segments in the label's meta-data
    (``SEG_SOP_UID_KEY``, ``SEG_SERIES_UID_KEY``, ``SEG_SEGMENTS_KEY``). Every segment of the SEG gets one
    measurement group (see the module description); the measurements are the label's ``clinical_measurements``
    when :class:`~custom_networks.clinical.cases.MeasureSegmentsd` has already measured it, else computed here by
    the same function, so the report and the run summary hold the same numbers. A 2D input (radiograph) has no
    volume; its groups hold the intensities only. The SR goes into the source study as a new series, written
    under a temporary name, then renamed, and its path is appended to the label's ``clinical_outputs`` meta-data
    entry.

    Args:
        keys: label maps ``(1, *spatial)`` in the source's voxel grid, after ``SaveDicomSegd`` wrote them.
        output_dir: root folder of the SR files, laid out as MONAI's ``SaveImage`` does.
        algorithm_name: the algorithm identification (the bundle name); also the model name of the device.
        algorithm_version: the algorithm (bundle) version.
        image_key: the image as loaded from DICOM (the source's meta-data and the intensities measured).
        weights_sha256: SHA-256 of the model file; when given, it is named in the algorithm identification and the
            SR's series and instance UIDs are derived from it, the source SeriesInstanceUID and the algorithm name
            and version (:func:`deterministic_sr_uids`); ``None``: new random UIDs.
        demo_weights: the weights are demo weights: the report holds the text "demo weights, not for clinical use".
        output_postfix: appended to the input's name.
        separate_folder: one folder per case, as ``SaveImage``.
        data_root_dir: keep the input's folders relative to this, as ``SaveImage``.
        manufacturer: written as Manufacturer of the SR.
        series_number: SeriesNumber of the SR.
        allow_missing_keys: do not raise for absent keys.

    Raises:
        CaseError: (when called) the label carries no SEG UIDs: ``SaveDicomSegd`` did not run before.
    """

    def __init__(
        self,
        keys: KeysCollection,
        output_dir: PathLike,
        algorithm_name: str,
        algorithm_version: str,
        image_key: str = "image",
        weights_sha256: str | None = None,
        demo_weights: bool = False,
        output_postfix: str = "sr",
        separate_folder: bool = True,
        data_root_dir: PathLike = "",
        manufacturer: str = "custom_networks",
        series_number: int = 9002,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.algorithm_name = algorithm_name
        self.algorithm_version = str(algorithm_version)
        self.image_key = image_key
        self.weights_sha256 = weights_sha256
        self.demo_weights = bool(demo_weights)
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
            path = self.write(label, image)
            if isinstance(label, MetaTensor):
                label.meta.setdefault(OUTPUTS_KEY, []).append(path)
        return d

    def write(self, label: torch.Tensor, image: MetaTensor) -> str:
        """Write the report of ``label``'s SEG segments measured in ``image`` (loaded from DICOM); return its path."""
        meta = image.meta
        label_meta = label.meta if isinstance(label, MetaTensor) else {}
        if not label_meta.get(SEG_SOP_UID_KEY):
            raise CaseError(
                meta["filename_or_obj"],
                "no DICOM SEG UIDs in the label's meta-data for the SR measurement report: SaveDicomSegd must run "
                "before SaveMeasurementReportd on the same label",
            )
        sources = [pydicom.dcmread(f, stop_before_pixels=True) for f in meta[SOURCE_FILES_KEY]]
        segments = label_meta[SEG_SEGMENTS_KEY]
        measured = self._measurements(label, image, segments)
        uids = self._uids(str(sources[0].SeriesInstanceUID))
        with quiet_highdicom():
            report = self._report(sources, label_meta, segments, measured, image.shape[0], uids)
        path = str(self.layout.filename(subject=meta["filename_or_obj"]))
        with atomic_path(path) as temporary:
            report.save_as(temporary)
        return path

    def _uids(self, source_series_uid: str) -> InstanceUids:
        if self.weights_sha256 is None:
            return InstanceUids(hd.UID(), hd.UID())
        return deterministic_sr_uids(
            source_series_uid, self.algorithm_name, self.algorithm_version, self.weights_sha256
        )

    @staticmethod
    def _measurements(label: torch.Tensor, image: torch.Tensor, segments: Sequence[Mapping]) -> dict[int, dict]:
        """The run summary's measurements of each SEG segment, by label value: MeasureSegmentsd's when it ran, else
        computed by the function it uses."""
        wanted = {int(segment["value"]): str(segment["label"]) for segment in segments}
        recorded = label.meta.get(MEASUREMENTS_KEY, []) if isinstance(label, MetaTensor) else []
        found = {int(m["value"]): m for m in recorded if int(m["value"]) in wanted}
        if set(found) == set(wanted):
            return found
        return {int(m["value"]): m for m in measure_segments(label, image, wanted)}

    def _report(
        self,
        sources: list[pydicom.Dataset],
        label_meta: Mapping,
        segments: Sequence[Mapping],
        measured: Mapping[int, Mapping],
        channels: int,
        uids: InstanceUids,
    ) -> hd.sr.Comprehensive3DSR:
        source = sources[0]
        modality = str(source.get("Modality", ""))
        concepts = intensity_concepts(modality, channels, str(source.get("PhotometricInterpretation", "")))
        if concepts is None:
            logger.warning(
                "SR measurement report: no DICOM code for the intensity of a %s image of %d channel(s); the report "
                "gives volumes only",
                modality or "(no modality)",
                channels,
            )
        algorithm = hd.sr.AlgorithmIdentification(
            name=self.algorithm_name,
            version=self.algorithm_version,
            parameters=None if self.weights_sha256 is None else [f"weights SHA-256 {self.weights_sha256}"],
        )
        seg_uid = str(label_meta[SEG_SOP_UID_KEY])
        groups = [
            hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(
                    uid=str(segment["tracking_uid"]), identifier=str(segment["tracking_id"])
                ),
                referenced_segment=hd.sr.ReferencedSegment(
                    sop_class_uid=SegmentationStorage,
                    sop_instance_uid=seg_uid,
                    segment_number=int(segment["number"]),
                    source_series=hd.sr.SourceSeriesForSegmentation(str(source.SeriesInstanceUID)),
                ),
                finding_type=hd.sr.CodedConcept(*segment["type"]),
                finding_category=hd.sr.CodedConcept(*segment["category"]),
                algorithm_id=algorithm,
                measurements=_segment_measurements(measured[int(segment["value"])], concepts),
            )
            for segment in segments
        ]
        report = hd.sr.MeasurementReport(
            observation_context=hd.sr.ObservationContext(observer_device_context=self._device()),
            procedure_reported=_PROCEDURES.get(modality, codes.cid100.ImagingProcedure),
            imaging_measurements=groups,
        )
        if self.demo_weights:
            note = hd.sr.ContainerContentItem(
                name=_QUALITATIVE_EVALUATIONS, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS
            )
            note.ContentSequence = hd.sr.ContentSequence(
                [
                    hd.sr.TextContentItem(
                        name=codes.DCM.Comment, value=DEMO_NOTE, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS
                    )
                ]
            )
            report[0].ContentSequence.append(note)
        return hd.sr.Comprehensive3DSR(
            evidence=[*sources, _seg_evidence(source, label_meta)],
            content=report,
            series_instance_uid=uids.series_uid,
            series_number=self.series_number,
            sop_instance_uid=uids.sop_uid,
            instance_number=1,
            manufacturer=self.manufacturer,
            is_complete=True,
            series_description=f"{self.algorithm_name} measurements"[:64],
            manufacturer_model_name=self.algorithm_name[:64],
            software_versions=self.algorithm_version[:64],
            device_serial_number="none",
        )

    def _device(self) -> hd.sr.ObserverContext:
        """The algorithm as the observing device; its UID is derived from the algorithm's name, version and weights."""
        uid = generate_uid(
            entropy_srcs=[self.algorithm_name, self.algorithm_version, self.weights_sha256 or "", "device"]
        )
        return hd.sr.ObserverContext(
            observer_type=codes.DCM.Device,
            observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
                uid=uid,
                name=self.algorithm_name[:64],
                manufacturer_name=self.manufacturer[:64],
                model_name=self.algorithm_name[:64],
            ),
        )


def _segment_measurements(
    measured: Mapping, concepts: list[tuple[hd.sr.CodedConcept, hd.sr.CodedConcept]] | None
) -> list[hd.sr.Measurement]:
    """The volume (when the image is 3D) and, for a segment that is not empty, the mean and standard deviation of
    each channel's intensity (when ``concepts`` names them) of one segment's run summary ``measured``."""
    measurements = []
    if measured["volume_ml"] is not None:
        measurements.append(
            hd.sr.Measurement(
                name=codes.SCT.Volume,
                value=float(measured["volume_ml"]),
                unit=_ML,
                method=codes.DCM.SumOfSegmentedVoxelMethodForVolume,
            )
        )
    if concepts is None:
        return measurements
    pairs = zip(measured["mean_intensity"], measured["std_intensity"], concepts, strict=True)
    for mean, std, (name, unit) in pairs:
        if mean is None:
            continue
        measurements.append(hd.sr.Measurement(name=name, value=float(mean), unit=unit, derivation=codes.SCT.Mean))
        measurements.append(
            hd.sr.Measurement(name=name, value=float(std), unit=unit, derivation=codes.SCT.StandardDeviation)
        )
    return measurements


def _seg_evidence(source: pydicom.Dataset, label_meta: Mapping) -> Dataset:
    """What the SR's evidence lists of the SEG (it is referenced, not read: the SEG writer left its UIDs)."""
    seg = Dataset()
    seg.SOPClassUID = SegmentationStorage
    seg.SOPInstanceUID = str(label_meta[SEG_SOP_UID_KEY])
    seg.SeriesInstanceUID = str(label_meta[SEG_SERIES_UID_KEY])
    seg.StudyInstanceUID = source.StudyInstanceUID
    return seg

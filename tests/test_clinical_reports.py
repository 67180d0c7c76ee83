"""The DICOM SR measurement report (TID 1500) and the Secondary Capture of the overlay, written after the SEG.

Small synthetic MR series with a known two-label mask go through the pipeline pieces a bundle runs
(``LoadClinicalImaged``, ``SaveDicomSegd``, ``SaveMeasurementReportd``, ``SaveSecondaryCaptured``,
``MeasureSegmentsd``, ``RecordCaseOutcomed``). The SR read back by highdicom must hold the run summary's volumes
(to 0.01 ml) and the volumes, means and standard deviations computed here from the mask alone; its references must
resolve to the SEG's SOP instance and segments and to the source series; a re-run must write the same UIDs; and
``dciodvfy`` (dicom3tools) must report no error for the SR and the Secondary Capture.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose
from PIL import Image
from pydicom.sr.codedict import codes
from pydicom.uid import Comprehensive3DSRStorage, SecondaryCaptureImageStorage, SegmentationStorage

from custom_networks.clinical.cases import CaseOutcomeRecorder, MeasureSegmentsd, RecordCaseOutcomed
from custom_networks.clinical.errors import CaseError
from custom_networks.clinical.load_case import LoadClinicalImaged
from custom_networks.clinical.meta import SEG_SEGMENTS_KEY, SEG_SERIES_UID_KEY, SEG_SOP_UID_KEY
from custom_networks.clinical.overlay import DEMO_MARK, DEMO_MARK_RGB, SaveOverlayPNGd
from custom_networks.clinical.secondary_capture import SaveSecondaryCaptured, deterministic_sc_uids
from custom_networks.clinical.seg_writer import SaveDicomSegd, deterministic_seg_uids
from custom_networks.clinical.sr_writer import DEMO_NOTE, SaveMeasurementReportd, deterministic_sr_uids

from clinical_fixtures import Study, write_nifti, write_radiograph, write_series

BUNDLE, VERSION = "test_bundle", "0.3.0"
WEIGHTS_SHA256 = hashlib.sha256(b"test weights").hexdigest()
CHANNEL_DEF = {"0": "background", "1": "tumour", "2": "oedema"}
LESION = {
    "category": {"scheme": "SCT", "value": "49755003", "meaning": "Morphologically abnormal structure"},
    "type": {"scheme": "SCT", "value": "108369006", "meaning": "Neoplasm"},
}
SEGMENT_CODES = {"1": {**LESION, "color_rgb": [255, 40, 40]}, "2": LESION}
PATIENT_ID, PATIENT_NAME = "RPT-0042", "Reportson^Patricia"


@dataclass(frozen=True)
class Series:
    """A written MR series, its intensities as loaded (``[column, row, slice]``, after the rescale) and a mask."""

    folder: Path
    series_uid: str
    study_uid: str
    intensities: np.ndarray
    mask: np.ndarray
    spacing: tuple[float, float, float]


# two unlike cases: sizes, spacings, rescale, label shapes and intensities all differ
CASES = {
    0: {"shape": (20, 16, 10), "spacing": (0.8, 1.2, 3.0), "rescale": None, "body_part": None},
    1: {"shape": (24, 18, 12), "spacing": (0.7, 0.9, 2.5), "rescale": (2.0, -100.0), "body_part": "BRAIN"},
}


def make_series(root: Path, seed: int) -> Series:
    """A random-intensity MR series with label 1 a box and label 2 scattered voxels outside it, drawn from ``seed``."""
    case = CASES[seed]
    rng = np.random.default_rng(seed)
    stored = rng.integers(50, 1500, size=case["shape"]).astype(np.int16)
    mask = np.zeros(case["shape"], np.uint8)
    columns, rows, slices = case["shape"]
    c0, r0, s0 = (int(rng.integers(1, n // 2)) for n in (columns, rows, slices))
    mask[c0 : c0 + columns // 3, r0 : r0 + rows // 3, s0 : s0 + slices // 3] = 1
    mask[(rng.random(case["shape"]) < 0.04) & (mask == 0)] = 2
    stored[mask == 1] += 400  # a brighter lesion
    attributes = {"BodyPartExamined": case["body_part"]} if case["body_part"] else None
    written = write_series(
        root / f"mr{seed}",
        stored,
        spacing=case["spacing"],
        study=Study.seeded(f"reports {seed}", patient_id=PATIENT_ID, patient_name=PATIENT_NAME),
        rescale=case["rescale"],
        uid_seed=f"reports {seed}",
        attributes=attributes,
    )
    slope, intercept = case["rescale"] or (1.0, 0.0)
    return Series(
        root / f"mr{seed}",
        written.series_instance_uid,
        written.study.study_instance_uid,
        stored.astype(np.float64) * slope + intercept,
        mask,
        case["spacing"],
    )


def load_with_mask(path: Path, mask: np.ndarray) -> dict:
    """The case as ``LoadClinicalImaged`` gives it, with ``mask`` ``[column, row, slice]`` as the prediction."""
    data = LoadClinicalImaged("image")({"image": str(path), "case": path.stem})
    data["pred"] = MetaTensor(torch.as_tensor(mask[None].astype(np.uint8)), affine=data["image"].affine.clone())
    return data


def writers(out: Path, demo: bool) -> list:
    """The writers in the order a bundle runs them: SEG, then the SR and the Secondary Capture that follow it."""
    common = {"algorithm_name": BUNDLE, "algorithm_version": VERSION, "weights_sha256": WEIGHTS_SHA256}
    return [
        SaveDicomSegd("pred", out, CHANNEL_DEF, segment_codes=SEGMENT_CODES, source_key="image", **common),
        SaveMeasurementReportd("pred", out, demo_weights=demo, **common),
        SaveSecondaryCaptured("pred", out, CHANNEL_DEF, demo_weights=demo, **common),
    ]


def run_case(series: Series, out: Path, demo: bool) -> tuple[dict, dict]:
    """Run the case through the writers, then measure and record it; return the data and the summary's row."""
    recorder = CaseOutcomeRecorder(out, bundle=BUNDLE, bundle_version=VERSION, demo_weights=demo)
    postprocessing = Compose(
        [*writers(out, demo), MeasureSegmentsd("pred", CHANNEL_DEF), RecordCaseOutcomed("pred", recorder)]
    )
    data = postprocessing(load_with_mask(series.folder, series.mask))
    _, summary_path = recorder.write_summary()
    (row,) = json.loads(summary_path.read_text())["cases"]
    return data, row


def texts(group: hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations, code_value: str) -> list[str]:
    """The values of the TEXT items of ``group`` whose concept name has ``code_value``."""
    return [
        item.TextValue
        for item in group[0].ContentSequence
        if item.ValueType == "TEXT" and item.ConceptNameCodeSequence[0].CodeValue == code_value
    ]


def measurement(group, name, derivation=None) -> hd.sr.Measurement:
    found = [m for m in group.get_measurements(name=name) if derivation is None or m.derivation == derivation]
    assert len(found) == 1, f"{len(found)} measurements {name} {derivation}"
    return found[0]


def demo_notes(sr: hd.sr.Comprehensive3DSR) -> list[str]:
    containers = [item for item in sr.ContentSequence if item.ConceptNameCodeSequence[0].CodeValue == "C0034375"]
    return [item.TextValue for container in containers for item in container.ContentSequence]


@pytest.mark.parametrize("seed", sorted(CASES))
def test_sr_holds_the_run_summary_measurements_and_references_the_seg_and_source(tmp_path, seed, dciodvfy_errors):
    series = make_series(tmp_path / "in", seed)
    out = tmp_path / "out"
    demo = seed == 1
    data, row = run_case(series, out, demo)
    np.testing.assert_allclose(data["image"][0].numpy(), series.intensities)  # the loader's grid and rescale

    stem = series.folder.name
    seg_path, sr_path, sc_path = (out / stem / f"{stem}_{kind}.dcm" for kind in ("seg", "sr", "sc"))
    assert [Path(p) for p in row["outputs"]] == [seg_path, sr_path, sc_path]
    seg = hd.seg.segread(seg_path)
    meta = data["pred"].meta
    assert (meta[SEG_SOP_UID_KEY], meta[SEG_SERIES_UID_KEY]) == (seg.SOPInstanceUID, seg.SeriesInstanceUID)
    assert [s["number"] for s in meta[SEG_SEGMENTS_KEY]] == [1, 2]

    sr = hd.sr.srread(sr_path)
    assert sr.SOPClassUID == Comprehensive3DSRStorage
    assert (sr.StudyInstanceUID, sr.PatientID) == (series.study_uid, PATIENT_ID)
    groups = sr.content.get_volumetric_roi_measurement_groups()
    assert len(groups) == 2
    voxel_ml = float(np.prod(series.spacing)) / 1000.0
    summary = {segment["value"]: segment for segment in row["segments"]}
    for value, group in enumerate(groups, start=1):
        name = CHANNEL_DEF[str(value)]
        inside = series.mask == value
        # references: the SEG's segment (by SOP instance and number) and the source series
        referenced = group.referenced_segment
        assert referenced.referenced_sop_class_uid == SegmentationStorage
        assert referenced.referenced_sop_instance_uid == seg.SOPInstanceUID
        assert referenced.referenced_segment_numbers == [value]
        assert referenced.source_series_for_segmentation.value == series.series_uid
        assert seg.get_segment_description(value).segment_label == name
        assert group.tracking_uid == seg.SegmentSequence[value - 1].TrackingUID
        assert texts(group, "112039") == [f"{name} {value}"]
        assert group.finding_type.value == "108369006"
        # the algorithm: bundle name, version and weights
        assert texts(group, "111001") == [BUNDLE] and texts(group, "111003") == [VERSION]
        assert texts(group, "111002") == [f"weights SHA-256 {WEIGHTS_SHA256}"]

        volume = measurement(group, codes.SCT.Volume)
        assert volume.unit.value == "ml"
        assert volume.value == pytest.approx(summary[value]["volume_ml"], abs=0.01)
        assert volume.value == pytest.approx(int(inside.sum()) * voxel_ml, abs=0.01)
        assert volume.value == pytest.approx(int(inside.sum()) * voxel_ml, rel=1e-5)  # rounded to 6 decimals
        mean = measurement(group, codes.DCM.MRSignalIntensity, codes.SCT.Mean)
        std = measurement(group, codes.DCM.MRSignalIntensity, codes.SCT.StandardDeviation)
        assert mean.value == pytest.approx(np.mean(series.intensities[inside]), abs=1e-3)
        assert std.value == pytest.approx(np.std(series.intensities[inside]), abs=1e-3)
        assert (mean.value, std.value) == (summary[value]["mean_intensity"][0], summary[value]["std_intensity"][0])

    evidence = sr.get_evidence()
    assert (series.study_uid, seg.SeriesInstanceUID, seg.SOPInstanceUID, SegmentationStorage) in evidence
    assert {uid for _, uid, _, _ in evidence} == {series.series_uid, seg.SeriesInstanceUID}
    assert demo_notes(sr) == ([DEMO_NOTE] if demo else [])
    assert dciodvfy_errors(sr_path) == []

    # the Secondary Capture: the overlay PNG's pixels, in the source study, flagged as derived and annotated
    sc = pydicom.dcmread(sc_path)
    assert sc.SOPClassUID == SecondaryCaptureImageStorage
    assert (sc.StudyInstanceUID, sc.PatientID) == (series.study_uid, PATIENT_ID)
    assert list(sc.ImageType)[:2] == ["DERIVED", "SECONDARY"] and sc.BurnedInAnnotation == "YES"
    assert sc.SeriesDescription == f"{BUNDLE} overlay" and sc.PhotometricInterpretation == "RGB"
    assert list(sc.PatientOrientation) == ["L", "P"]  # axial, shown radiologically
    assert sc.get("ImageComments") == (DEMO_MARK if demo else None)
    png = SaveOverlayPNGd("pred", tmp_path / "png", CHANNEL_DEF, demo_weights=demo)(
        load_with_mask(series.folder, series.mask)
    )
    picture = np.asarray(Image.open(png["pred"].meta["clinical_outputs"][0]).convert("RGB"))
    np.testing.assert_array_equal(sc.pixel_array, picture)
    assert (picture[2, :] == DEMO_MARK_RGB).all(axis=-1).any() == demo
    shown = {item.ReferencedSOPInstanceUID for item in sc.SourceImageSequence}
    assert shown <= {pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in series.folder.iterdir()}
    assert len(shown) == len(sc.SourceImageSequence) > 0
    assert dciodvfy_errors(sc_path) == []


@pytest.mark.parametrize("seed", sorted(CASES))
def test_a_rerun_writes_the_same_uids_in_place(tmp_path, seed):
    series = make_series(tmp_path / "in", seed)
    out = tmp_path / "out"

    def uids() -> dict[str, tuple[str, str]]:
        found = {}
        for path in sorted(out.rglob("*.dcm")):
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            found[path.name] = (ds.SeriesInstanceUID, ds.SOPInstanceUID)
        return found

    run_case(series, out, demo=False)
    first = uids()
    run_case(series, out, demo=False)
    assert uids() == first and len(first) == 3
    stem = series.folder.name
    seed_args = (series.series_uid, BUNDLE, VERSION, WEIGHTS_SHA256)
    sr_uids, sc_uids = deterministic_sr_uids(*seed_args), deterministic_sc_uids(*seed_args)
    seg_uids = deterministic_seg_uids(*seed_args, 2)
    assert first[f"{stem}_sr.dcm"] == (sr_uids.series_uid, sr_uids.sop_uid)
    assert first[f"{stem}_sc.dcm"] == (sc_uids.series_uid, sc_uids.sop_uid)
    assert first[f"{stem}_seg.dcm"] == (seg_uids.series_uid, seg_uids.sop_uid)
    assert len({uid for pair in first.values() for uid in pair}) == 6
    # other weights: other UIDs, so a result of other weights never replaces this one
    assert deterministic_sr_uids(series.series_uid, BUNDLE, VERSION, "0" * 64) != sr_uids


def test_sr_reuses_the_measurements_already_made(tmp_path, monkeypatch):
    series = make_series(tmp_path / "in", 0)
    data = MeasureSegmentsd("pred", CHANNEL_DEF)(load_with_mask(series.folder, series.mask))

    def must_not_measure_again(*args, **kwargs):
        raise AssertionError("the SR measured again instead of using MeasureSegmentsd's numbers")

    monkeypatch.setattr("custom_networks.clinical.sr_writer.measure_segments", must_not_measure_again)
    seg_writer, sr_writer, _ = writers(tmp_path / "out", demo=False)
    sr_writer(seg_writer(data))
    sr = hd.sr.srread(data["pred"].meta["clinical_outputs"][-1])
    measured = {m["value"]: m for m in data["pred"].meta["clinical_measurements"]}
    for value, group in enumerate(sr.content.get_volumetric_roi_measurement_groups(), start=1):
        assert measurement(group, codes.SCT.Volume).value == measured[value]["volume_ml"]


def test_sr_without_a_seg_written_first_fails_in_one_line_naming_the_case(tmp_path):
    series = make_series(tmp_path / "in", 0)
    _, sr_writer, _ = writers(tmp_path / "out", demo=False)
    with pytest.raises(CaseError, match="SaveDicomSegd must run before SaveMeasurementReportd") as caught:
        sr_writer(load_with_mask(series.folder, series.mask))
    message = str(caught.value)
    assert message.startswith(str(series.folder)) and "\n" not in message
    assert PATIENT_ID not in message and PATIENT_NAME not in message
    assert not (tmp_path / "out").exists()


def test_reports_skip_inputs_that_are_not_dicom(tmp_path):
    mask = np.zeros((12, 10, 6), np.uint8)
    mask[2:5, 3:6, 1:4] = 1
    path = write_nifti(tmp_path / "in" / "vol.nii.gz", np.full(mask.shape, 100.0, np.float32), np.eye(4))
    data = load_with_mask(path, mask)
    for writer in writers(tmp_path / "out", demo=True):
        data = writer(data)
    assert "clinical_outputs" not in data["pred"].meta
    assert not (tmp_path / "out").exists()


def test_radiograph_sr_has_intensities_but_no_volume_and_sc_keeps_its_orientation(tmp_path, dciodvfy_errors):
    rng = np.random.default_rng(5)
    pixels = rng.integers(0, 1024, size=(30, 40))
    path = write_radiograph(tmp_path / "in" / "chest.dcm", pixels, uid_seed="reports radiograph")
    mask = np.zeros((40, 30), np.uint8)  # [column, row]
    mask[5:20, 8:22] = 1
    mask[30:33, 2:6] = 2
    out = tmp_path / "out"
    data = Compose([*writers(out, demo=False), MeasureSegmentsd("pred", CHANNEL_DEF)])(load_with_mask(path, mask))
    seg_path, sr_path, sc_path = (Path(p) for p in data["pred"].meta["clinical_outputs"])
    sr = hd.sr.srread(sr_path)
    for value, group in enumerate(sr.content.get_volumetric_roi_measurement_groups(), start=1):
        assert group.get_measurements(name=codes.SCT.Volume) == []
        mean = measurement(group, codes.DCM.XRayAttenuation, codes.SCT.Mean)
        assert mean.value == pytest.approx(np.mean(pixels.T[mask == value]), abs=1e-3)
        assert group.referenced_segment.referenced_segment_numbers == [value]
    sc = pydicom.dcmread(sc_path)
    assert list(sc.PatientOrientation) == ["L", "F"]  # shown as stored: the radiograph's own
    assert dciodvfy_errors(sr_path) == [] and dciodvfy_errors(sc_path) == []


def test_folder_inference_through_the_python_api_writes_the_sr_of_its_run_summary(tmp_path, dciodvfy_errors):
    """The bundle's own folder run (``segment``, as ``attention-unets infer``) writes SEG, SR and, when asked, the
    Secondary Capture for a DICOM series; the SR's volume is the run summary's. The sample series is one the
    writers' tests above never used."""
    from custom_networks import segment
    from custom_networks.runtime import bundle_folder

    brain = "brain_tumor_mri_gsconv_eca_unet"
    series = bundle_folder(brain) / "sample_data" / "mr_series"
    result = segment(series, tmp_path / "out", bundle=brain, demo=True, device="cpu", secondary_capture=True)
    (case,) = result.cases
    assert case.ok and set(case.files) == {"mask", "seg", "sr", "secondary_capture"}
    sr = hd.sr.srread(case.files["sr"])
    (group,) = sr.content.get_volumetric_roi_measurement_groups()
    assert measurement(group, codes.SCT.Volume).value == pytest.approx(case.segments[0]["volume_ml"], abs=0.01)
    assert group.referenced_segment.referenced_sop_instance_uid == pydicom.dcmread(case.files["seg"]).SOPInstanceUID
    assert demo_notes(sr) == [DEMO_NOTE]
    assert dciodvfy_errors(case.files["sr"]) == [] and dciodvfy_errors(case.files["secondary_capture"]) == []

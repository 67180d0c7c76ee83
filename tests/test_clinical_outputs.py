"""What viewers and people see in the clinical outputs: coded, coloured DICOM SEG segments, overlay mosaics, and
the quantities of the run summary.

- Every bundle that takes DICOM writes, through its own ``inference.json``, a SEG whose segments carry the
  category, type and colour of the bundle metadata, and that ``dciodvfy`` (dicom3tools) passes without errors.
- The overlay mosaic shows every labelled slice (a small false-positive island too), captions tiles with the
  DICOM InstanceNumber and the position along the slice normal, names the labels in a legend and carries the
  demo-weights banner only when flagged.
- The run summary gives known volumes, mean intensities and SHA-256 sums, and times in order.
"""

from __future__ import annotations

import csv
import datetime
import hashlib
import json
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
import torch
from monai.bundle import ConfigParser
from monai.data import MetaTensor
from PIL import Image
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

from custom_networks.clinical import (
    CaseOutcomeRecorder,
    ClinicalCaseDataset,
    LoadClinicalImage,
    LoadClinicalImaged,
    RecordCaseOutcomed,
    SaveDicomSegd,
    SaveOverlayPNGd,
    cases_datalist,
    discover_cases,
    segment_labels,
)
from custom_networks.clinical.bundle_config import segment_codes, segment_colours
from custom_networks.clinical.cases import MeasureSegmentsd
from custom_networks.clinical.dicom_writer import Study, base_dataset
from custom_networks.clinical.overlay import DEMO_MARK, DEMO_MARK_RGB, overlay_slices

from clinical_fixtures import rotation, write_nifti, write_radiograph, write_series
from conftest import BUNDLES, BUNDLES_DIR, TINY_OVERRIDES, infer_in_process

SECONDARY_CAPTURE = UID("1.2.840.10008.5.1.4.1.1.7")
ABNORMAL = ("SCT", "49755003", "Morphologically abnormal structure")
# (category, type) of segment 1 each bundle's metadata must give
EXPECTED_CODES = {
    "brain_tumor_mri_gsconv_eca_unet": (ABNORMAL, ("SCT", "108369006", "Neoplasm")),
    "lgg_mri_cbam_unet": (ABNORMAL, ("SCT", "108369006", "Neoplasm")),
    "chest_xray_lung_ag_min_aspp_unet": (("SCT", "123037004", "Anatomical structure"), ("SCT", "39607008", "Lung")),
    "isic2018_skin_sc_unext": (ABNORMAL, ("SCT", "52988006", "Lesion")),
    "lgg_mri_attention_res_unet": (ABNORMAL, ("SCT", "108369006", "Neoplasm")),
}
DICOM_BUNDLES = [bundle for bundle in BUNDLES if bundle != "isic2018_skin_sc_unext"]
SPACING = (0.8, 1.2, 3.0)
TUMOUR = {"0": "background", "1": "tumour"}
TUMOUR_CODES = {
    "1": {
        "category": {"scheme": "SCT", "value": "49755003", "meaning": "Morphologically abnormal structure"},
        "type": {"scheme": "SCT", "value": "108369006", "meaning": "Neoplasm"},
        "color_rgb": [255, 40, 40],
    }
}


def metadata_of(bundle: str) -> dict:
    return json.loads((BUNDLES_DIR / bundle / "configs" / "metadata.json").read_text())


def write_colour_mr_slice(path: Path, rgb: np.ndarray, study: Study | None = None) -> Path:
    """A single-frame RGB Secondary Capture of modality MR (``rgb[row, column, 3]`` uint8), as a PACS holds the
    three-contrast composites the LGG bundles take; it has no patient position, so it loads as a 2D image."""
    ds = base_dataset(SECONDARY_CAPTURE, "MR", study or Study(), generate_uid(), ExplicitVRLittleEndian)
    ds.ConversionType = "WSD"
    ds.InstanceNumber = 1
    ds.PatientOrientation = ""
    ds.Rows, ds.Columns = rgb.shape[:2]
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "RGB"
    ds.PlanarConfiguration = 0
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = np.ascontiguousarray(rgb, dtype=np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def dicom_input(bundle: str, folder: Path) -> str:
    """Write the DICOM input ``bundle`` takes into ``folder``; return its case name."""
    rng = np.random.default_rng(0)
    if bundle == "brain_tumor_mri_gsconv_eca_unet":
        write_series(folder / "series", rng.integers(0, 1000, (32, 24, 4)).astype(np.int16), spacing=SPACING)
        return "series"
    if bundle == "chest_xray_lung_ag_min_aspp_unet":
        write_radiograph(folder / "chest.dcm", rng.integers(0, 4096, (60, 50)).astype(np.uint16), "MONOCHROME1")
        return "chest"
    write_colour_mr_slice(folder / "composite.dcm", rng.integers(0, 255, (48, 40, 3), dtype=np.uint8))
    return "composite"


def run_bundle_inference(bundle: str, data: Path, output: Path, root: Path) -> Path:
    """Run ``bundle``'s ``inference.json`` in-process on ``data`` with tiny weights whose output head calls every
    pixel foreground (so that the SEG holds frames); return the weights file."""
    configs = BUNDLES_DIR / bundle / "configs"
    parser = ConfigParser()
    parser.read_config(configs / "inference.json")
    parser.update(TINY_OVERRIDES[bundle])
    torch.manual_seed(0)
    state = parser.get_parsed_content("network_def").state_dict()
    state["head.weight"].zero_()
    state["head.bias"].copy_(torch.tensor([-4.0, 4.0]))
    weights = root / "models" / "model.pt"
    weights.parent.mkdir(parents=True)
    torch.save(state, weights)
    infer_in_process(bundle, root, data, output)
    return weights


def coded(concept: hd.sr.CodedConcept) -> tuple[str, str, str]:
    return concept.scheme_designator, concept.value, concept.meaning


def rgb_of(segment: pydicom.Dataset) -> tuple[int, ...]:
    return hd.color.CIELabColor.from_dicom_value(tuple(segment.RecommendedDisplayCIELabValue)).to_rgb()


# --- A: DICOM SEG segments coded and coloured from the bundle metadata --------------------------------------------


@pytest.mark.parametrize("bundle", BUNDLES)
def test_bundle_metadata_codes_and_colours_each_segment(bundle):
    metadata = metadata_of(bundle)
    segments = metadata["network_data_format"]["outputs"]["pred"]["dicom_segments"]
    assert set(segments) == set(segment_labels(metadata)) - {"0"}
    category, kind = EXPECTED_CODES[bundle]
    entry = segments["1"]
    assert (entry["category"]["scheme"], entry["category"]["value"], entry["category"]["meaning"]) == category
    assert (entry["type"]["scheme"], entry["type"]["value"], entry["type"]["meaning"]) == kind
    assert len(entry["color_rgb"]) == 3 and all(0 <= c <= 255 for c in entry["color_rgb"])
    assert segment_codes(metadata) == segments
    assert segment_colours(metadata) == {"1": entry["color_rgb"]}
    # what the bundle's inference.json builds from it
    SaveDicomSegd("pred", "/unused", segment_labels(metadata), bundle, metadata["version"], segment_codes(metadata))


@pytest.mark.parametrize("bundle", DICOM_BUNDLES)
def test_bundle_writes_a_coded_coloured_seg_that_dciodvfy_accepts(bundle, tmp_path, dciodvfy_errors):
    data, output = tmp_path / "data", tmp_path / "out"
    case = dicom_input(bundle, data)
    weights = run_bundle_inference(bundle, data, output, tmp_path / "bundle_root")

    seg_path = output / f"{case}_seg.dcm"
    seg = hd.seg.segread(seg_path)
    metadata = metadata_of(bundle)
    expected = metadata["network_data_format"]["outputs"]["pred"]["dicom_segments"]["1"]
    description = seg.get_segment_description(1)
    category, kind = EXPECTED_CODES[bundle]
    assert coded(description.segmented_property_category) == category
    assert coded(description.segmented_property_type) == kind
    segment = seg.SegmentSequence[0]
    assert np.abs(np.subtract(rgb_of(segment), expected["color_rgb"])).max() <= 1
    assert segment.SegmentLabel == segment_labels(metadata)["1"]
    algorithm = segment.SegmentationAlgorithmIdentificationSequence[0]
    assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == (bundle, metadata["version"])

    assert dciodvfy_errors(seg_path) == []

    summary = json.loads((output / "run_summary.json").read_text())
    assert summary["run"]["weights_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert (summary["run"]["bundle"], summary["run"]["bundle_version"]) == (bundle, metadata["version"])
    (row,) = [row for row in summary["cases"] if row["case"] == case]
    mask = LoadClinicalImage()(output / f"{case}_seg.nii.gz")
    assert [(s["label"], s["voxels"]) for s in row["segments"]] == [(segment.SegmentLabel, mask[0].numel())]
    assert int(seg.NumberOfFrames) == (mask.shape[-1] if mask.ndim == 4 else 1)
    assert row["input_sha256"] and str(output / f"{case}_overlay.png") in row["outputs"]


def test_seg_writer_refuses_a_segment_without_codes_naming_its_label():
    with pytest.raises(ValueError, match=r"segment 2 \('oedema'\) has no DICOM category and type code"):
        SaveDicomSegd("pred", "/unused", {**TUMOUR, "2": "oedema"}, "b", "1", TUMOUR_CODES)
    without_type = {"1": {"category": TUMOUR_CODES["1"]["category"]}}
    with pytest.raises(ValueError, match=r"segment 1 \('tumour'\) has no DICOM type code"):
        SaveDicomSegd("pred", "/unused", TUMOUR, "b", "1", without_type)
    with pytest.raises(ValueError, match=r"segment 1 \('tumour'\) type code .* lacks scheme, meaning"):
        SaveDicomSegd("pred", "/unused", TUMOUR, "b", "1", {"1": {**TUMOUR_CODES["1"], "type": {"value": "1"}}})
    with pytest.raises(ValueError, match=r"color_rgb \[300, 0, 0\] is not three integers"):
        SaveDicomSegd("pred", "/unused", TUMOUR, "b", "1", {"1": {**TUMOUR_CODES["1"], "color_rgb": [300, 0, 0]}})
    with pytest.raises(ValueError, match=r"name label values \[3\]"):
        SaveDicomSegd("pred", "/unused", TUMOUR, "b", "1", {**TUMOUR_CODES, "3": TUMOUR_CODES["1"]})


# --- B: overlay mosaics -------------------------------------------------------------------------------------------


def overlay_writer(tmp_path: Path, **kwargs) -> SaveOverlayPNGd:
    return SaveOverlayPNGd("pred", tmp_path / "out", TUMOUR, colours={"1": [255, 40, 40]}, **kwargs)


def tile_pixels(picture: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    top, left, bottom, right = box
    return picture[top:bottom, left:right]


def colour_pixels(pixels: np.ndarray, rgb) -> int:
    return int(np.all(pixels == rgb, axis=-1).sum())


def test_overlay_slices_are_every_labelled_slice_then_evenly_spaced_ones():
    labelled = np.zeros(20, bool)
    labelled[[4, 5, 14]] = True
    content = np.ones(20, bool)
    content[:2] = False  # blank slices are never the extra ones
    assert overlay_slices(labelled, content, min_slices=6) == [4, 5, 6, 11, 14, 17]
    assert overlay_slices(labelled, content, min_slices=2) == [4, 5, 14]
    assert overlay_slices(np.zeros(20, bool), np.zeros(20, bool), min_slices=6) == [10]
    assert overlay_slices(np.zeros(5, bool), np.ones(5, bool), min_slices=8) == [0, 1, 2, 3, 4]


def test_overlay_mosaic_shows_a_small_false_positive_island_away_from_the_largest_mask(tmp_path):
    rng = np.random.default_rng(1)
    pixels = torch.as_tensor(rng.uniform(0, 100, (1, 40, 32, 20)), dtype=torch.float32)
    image = MetaTensor(pixels, meta={"filename_or_obj": "/data/case.nii.gz", "clinical_input_kind": "nifti"})
    label = torch.zeros(1, 40, 32, 20, dtype=torch.uint8)
    label[0, 5:25, 5:20, 3:8] = 1  # the finding, on slices 3-7
    label[0, 35, 28, 16] = 1  # one false-positive voxel far from it
    writer = overlay_writer(tmp_path, min_slices=8)
    mosaic = writer.mosaic(image, MetaTensor(label))

    indices = [tile.index for tile in mosaic.tiles]
    assert {3, 4, 5, 6, 7, 16} <= set(indices) and len(indices) == 8
    island = next(tile for tile in mosaic.tiles if tile.index == 16)
    empty = next(tile for tile in mosaic.tiles if tile.index not in (3, 4, 5, 6, 7, 16))
    assert colour_pixels(tile_pixels(mosaic.picture, island.box), (255, 40, 40)) > 50  # contour and ring
    assert colour_pixels(tile_pixels(mosaic.picture, empty.box), (255, 40, 40)) == 0
    assert mosaic.header[0] == "case.nii.gz: 8 of 20 slices shown (6 with a label, 2 evenly spaced without)"

    (path,) = writer(
        {"image": image, "pred": MetaTensor(label, meta={"filename_or_obj": "/data/case.nii.gz"})}
    )["pred"].meta["clinical_outputs"]
    assert path == str(tmp_path / "out" / "case" / "case_overlay.png")
    np.testing.assert_array_equal(np.asarray(Image.open(path)), mosaic.picture)


def test_overlay_captions_use_instance_numbers_and_positions_along_the_slice_normal(tmp_path):
    volume = np.random.default_rng(2).integers(0, 1000, (20, 16, 6)).astype(np.int16)
    written = write_series(
        tmp_path / "mr", volume, spacing=(1.0, 1.2, 2.5), orientation=rotation((70, -15, 30)), origin=(3, -2, -7)
    )
    for path in written.files:  # InstanceNumbers 101-106, assigned in shuffled order
        ds = pydicom.dcmread(path)
        ds.InstanceNumber = int(ds.InstanceNumber) + 100
        ds.save_as(path)
    image = LoadClinicalImage()(tmp_path / "mr")
    label = (image > 900).to(torch.uint8)
    mosaic = overlay_writer(tmp_path, min_slices=6).mosaic(image, label)

    files = image.meta["dicom_source_files"]
    assert [tile.index for tile in mosaic.tiles] == list(range(6))
    positions = []
    for tile in mosaic.tiles:
        header = pydicom.dcmread(files[tile.index])
        row, column = np.reshape(np.asarray(header.ImageOrientationPatient, float), (2, 3))
        positions.append(float(np.cross(row, column) @ np.asarray(header.ImagePositionPatient, float)))
        assert tile.caption == f"#{header.InstanceNumber}  {positions[-1]:.1f} mm"
    assert {tile.caption.split()[0] for tile in mosaic.tiles} == {f"#{n}" for n in range(101, 107)}
    np.testing.assert_allclose(np.diff(positions), 2.5, atol=1e-3)
    assert mosaic.header[1] == 'tile caption "#n  x mm": DICOM InstanceNumber n, at x mm along the slice normal'

    # the same volume as NIfTI: 1-based slice numbers, the same positions
    twin = LoadClinicalImage()(write_nifti(tmp_path / "twin.nii.gz", volume.astype(np.float32), written.ras_affine))
    captions = [tile.caption for tile in overlay_writer(tmp_path, min_slices=6).mosaic(twin, label).tiles]
    assert captions == [f"#{k + 1}  {position:.1f} mm" for k, position in enumerate(positions)]


def test_overlay_legend_names_each_label_in_its_colour(tmp_path):
    image = MetaTensor(torch.rand(1, 30, 20, 4), meta={"filename_or_obj": "/data/two.nii.gz"})
    label = torch.zeros(1, 30, 20, 4, dtype=torch.uint8)
    label[0, 2:12, 2:12, 1] = 1
    label[0, 15:25, 5:15, 2] = 2
    writer = SaveOverlayPNGd(
        "pred", tmp_path, {**TUMOUR, "2": "oedema"}, colours={"1": [255, 40, 40], "2": [40, 140, 255]}
    )
    mosaic = writer.mosaic(image, MetaTensor(label))
    assert [(entry.name, entry.colour) for entry in mosaic.legend] == [
        ("tumour", (255, 40, 40)),
        ("oedema", (40, 140, 255)),
    ]
    for entry in mosaic.legend:
        swatch = tile_pixels(mosaic.picture, entry.box)
        assert swatch.size and np.all(swatch == entry.colour)
    by_index = {tile.index: tile for tile in mosaic.tiles}
    assert colour_pixels(tile_pixels(mosaic.picture, by_index[1].box), (255, 40, 40)) > 0
    assert colour_pixels(tile_pixels(mosaic.picture, by_index[2].box), (40, 140, 255)) > 0
    assert colour_pixels(tile_pixels(mosaic.picture, by_index[2].box), (255, 40, 40)) == 0


def test_demo_mark_appears_only_when_flagged(tmp_path):
    image = MetaTensor(torch.rand(1, 24, 20, 3), meta={"filename_or_obj": "/data/demo.nii.gz"})
    label = (image > 0.9).to(torch.uint8)
    plain = overlay_writer(tmp_path).mosaic(image, label)
    marked = overlay_writer(tmp_path, demo_weights=True).mosaic(image, label)

    assert plain.demo_marks == () and colour_pixels(plain.picture, DEMO_MARK_RGB) == 0
    assert len(marked.demo_marks) == 2
    height, width = marked.picture.shape[:2]
    for box in marked.demo_marks:
        banner = tile_pixels(marked.picture, box)
        assert banner.shape[1] == width and box[0] in (0, height - banner.shape[0])
        assert colour_pixels(banner, DEMO_MARK_RGB) > 0.7 * banner.shape[0] * banner.shape[1]
        assert colour_pixels(banner, (255, 255, 255)) > 100  # the text
    for tile_plain, tile_marked in zip(plain.tiles, marked.tiles, strict=True):
        np.testing.assert_array_equal(
            tile_pixels(plain.picture, tile_plain.box), tile_pixels(marked.picture, tile_marked.box)
        )
    assert len(DEMO_MARK) > 20


def test_2d_inputs_get_a_single_tile_overlay(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 255, (40, 56), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "photo.png")
    image = LoadClinicalImage()(tmp_path / "photo.png")
    label = torch.zeros_like(image, dtype=torch.uint8)
    label[0, 10:20, 5:15] = 1
    data = overlay_writer(tmp_path)({"image": image, "pred": MetaTensor(label, meta=dict(image.meta))})
    (path,) = data["pred"].meta["clinical_outputs"]
    mosaic = overlay_writer(tmp_path).mosaic(image, label)
    assert [(tile.index, tile.caption) for tile in mosaic.tiles] == [(None, "")]
    top, left, bottom, right = mosaic.tiles[0].box
    assert (bottom - top, right - left) == (40 * 7, 56 * 7)  # enlarged to at least 256 pixels, as stored
    assert mosaic.header == ("photo.png: 2D image",)
    np.testing.assert_array_equal(np.asarray(Image.open(path)), mosaic.picture)


def test_mosaic_of_a_long_volume_is_reduced_and_keeps_a_one_voxel_island(tmp_path):
    image = MetaTensor(torch.rand(1, 128, 96, 150), meta={"filename_or_obj": "/data/long.nii.gz"})
    label = torch.zeros(1, 128, 96, 150, dtype=torch.uint8)
    label[0, 30:90, 20:70, :] = 1
    label[0, 120, 5, 75] = 1  # an island of one voxel on slice 75
    label[0, 30:90, 20:70, 75] = 0
    mosaic = overlay_writer(tmp_path, max_size=1024).mosaic(image, MetaTensor(label))
    assert len(mosaic.tiles) == 150
    top, left, bottom, right = mosaic.tiles[0].box
    assert (bottom - top, right - left) == (96 // 2, 128 // 2)  # 13 x 12 tiles of 96 x 128 fit 1024 halved
    assert mosaic.picture.shape[0] < 1024 + 200 and mosaic.picture.shape[1] <= 1024 + 16
    island = next(tile for tile in mosaic.tiles if tile.index == 75)
    assert colour_pixels(tile_pixels(mosaic.picture, island.box), (255, 40, 40)) > 20


# --- C: quantities in the run summary ----------------------------------------------------------------------------


def parse_time(text: str) -> datetime.datetime:
    moment = datetime.datetime.fromisoformat(text)
    assert moment.utcoffset() == datetime.timedelta(0)
    return moment


def summarise(root: Path, out: Path, weights: Path | None, expected_channels: int) -> tuple[dict, list[dict]]:
    """Run the cases of ``root`` through the loader, a threshold 'network' (label 1 where the first channel
    >= 200), MeasureSegmentsd and RecordCaseOutcomed; return the JSON summary and the CSV rows."""
    cases = discover_cases(root)
    recorder = CaseOutcomeRecorder(out, bundle="test_bundle", bundle_version="0.3.0", weights=weights)
    loader = LoadClinicalImaged("image", expected_channels=expected_channels)
    measure = MeasureSegmentsd("pred", TUMOUR)
    record = RecordCaseOutcomed("pred", recorder)
    for item in ClinicalCaseDataset(cases_datalist(cases), loader, recorder):
        item["pred"] = (item["image"][:1] >= 200).to(torch.uint8)
        record(measure(item))
    csv_path, json_path = recorder.write_summary(cases)
    with open(csv_path, newline="") as stream:
        rows = list(csv.DictReader(stream))
    return json.loads(json_path.read_text()), rows


def test_run_summary_gives_volumes_intensities_hashes_and_times(tmp_path):
    root, out = tmp_path / "data", tmp_path / "out"
    volume = np.full((20, 16, 10), 50.0, np.float32)
    volume[2:7, 3:9, 1:5] = 250.0  # 5 x 6 x 4 = 120 voxels of 250
    volume[10, 10, 8] = 230.0  # one more of 230
    nifti = write_nifti(root / "known.nii.gz", volume, np.diag([*SPACING, 1.0]))
    series = write_series(root / "mr", volume.astype(np.int16), spacing=SPACING)
    picture = np.zeros((30, 40), np.uint8)
    picture[5:9, 10:20] = 255
    Image.fromarray(picture).save(root / "photo.png")
    weights = tmp_path / "model.pt"
    torch.save({"w": torch.arange(10)}, weights)
    before = datetime.datetime.now(datetime.timezone.utc)

    summary, rows = summarise(root, out, weights, expected_channels=1)

    run = summary["run"]
    assert run["weights"] == str(weights)
    assert run["weights_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert (run["bundle"], run["bundle_version"], run["demo_weights"]) == ("test_bundle", "0.3.0", False)
    assert run["package_version"] == __import__("custom_networks").__version__
    started, ended = parse_time(run["started"]), parse_time(run["ended"])
    assert before - datetime.timedelta(seconds=1) <= started <= ended
    cases = {row["case"]: row for row in summary["cases"]}
    assert set(cases) == {"known", "mr", "photo"}
    for case in cases.values():
        assert case["status"] == "ok"
        assert started <= parse_time(case["started"]) <= parse_time(case["ended"]) <= ended

    expected_ml = round(121 * 0.8 * 1.2 * 3.0 / 1000, 6)
    for name in ("known", "mr"):
        (segment,) = cases[name]["segments"]
        assert (segment["label"], segment["value"], segment["voxels"]) == ("tumour", 1, 121)
        assert segment["volume_ml"] == pytest.approx(expected_ml, abs=1e-6) and expected_ml == 0.34848
        assert segment["mean_intensity"] == [pytest.approx((120 * 250 + 230) / 121, abs=1e-4)]
    (flat,) = cases["photo"]["segments"]
    assert (flat["voxels"], flat["volume_ml"], flat["mean_intensity"]) == (40, None, [255.0])

    assert cases["known"]["input_sha256"] == hashlib.sha256(nifti.read_bytes()).hexdigest()
    series_bytes = b"".join(path.read_bytes() for path in sorted(series.files, key=str))
    assert cases["mr"]["input_sha256"] == hashlib.sha256(series_bytes).hexdigest()
    assert cases["photo"]["input_sha256"] == hashlib.sha256((root / "photo.png").read_bytes()).hexdigest()

    by_case = {row["case"]: row for row in rows}
    assert float(by_case["known"]["tumour_volume_ml"]) == expected_ml
    assert int(by_case["known"]["tumour_voxels"]) == 121
    assert by_case["photo"]["tumour_volume_ml"] == "" and by_case["photo"]["tumour_voxels"] == "40"
    assert by_case["mr"]["run_weights_sha256"] == run["weights_sha256"]
    assert by_case["mr"]["input_sha256"] == cases["mr"]["input_sha256"]
    everything = (out / "run_summary.json").read_text() + (out / "run_summary.csv").read_text()
    assert series.study.patient_name not in everything and series.study.patient_id not in everything


def test_run_summary_gives_the_mean_of_each_channel_and_empty_cells_for_an_empty_segment(tmp_path):
    root, out = tmp_path / "data", tmp_path / "out"
    contrasts = np.zeros((12, 10, 4, 3), np.float32)
    contrasts[..., 0] = 10.0
    contrasts[2:4, 2:5, 1, 0] = 210.0  # 6 voxels labelled by the first channel
    contrasts[2:4, 2:5, 1, 1] = 7.0
    contrasts[2:4, 2:5, 1, 2] = 9.5
    write_nifti(root / "contrasts.nii.gz", contrasts, np.diag([2.0, 2.0, 5.0, 1.0]))
    write_nifti(root / "blank.nii.gz", np.zeros((12, 10, 4, 3), np.float32), np.eye(4))

    summary, rows = summarise(root, out, None, expected_channels=3)
    assert (summary["run"]["weights"], summary["run"]["weights_sha256"]) == ("", "")

    cases = {case["case"]: case for case in summary["cases"]}
    (segment,) = cases["contrasts"]["segments"]
    assert segment["voxels"] == 6 and segment["volume_ml"] == 0.12
    assert segment["mean_intensity"] == [210.0, 7.0, 9.5]
    (empty,) = cases["blank"]["segments"]
    assert (empty["voxels"], empty["volume_ml"], empty["mean_intensity"]) == (0, 0.0, [None, None, None])
    by_case = {row["case"]: row for row in rows}
    assert [by_case["contrasts"][f"tumour_mean_intensity_c{k}"] for k in range(3)] == ["210.0", "7.0", "9.5"]
    assert by_case["blank"]["tumour_mean_intensity_c0"] == ""

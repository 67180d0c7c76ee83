from __future__ import annotations

import json
import pickle
import re
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from monai.data import DataLoader, MetaTensor
from monai.engines import SupervisedEvaluator
from monai.transforms import (
    AsDiscreted,
    Compose,
    Flip,
    LoadImage,
    NormalizeIntensity,
    Resize,
    SaveImaged,
    ScaleIntensity,
)
from PIL import Image
from pydicom.pixels import get_decoder
from pydicom.uid import HTJ2KLossless, JPEGExtended12Bit, JPEGLossless, JPEGLosslessSV1, RLELossless, generate_uid

from custom_networks.atomic_files import TEMP_PREFIX, atomic_path
from custom_networks.clinical.cases import (
    CaseOutcomeRecorder,
    ClinicalCaseDataset,
    MeasureSegmentsd,
    RecordCaseOutcomed,
    cases_datalist,
    discover_cases,
)
from custom_networks.clinical.errors import CaseError
from custom_networks.clinical.load_case import LoadClinicalImage, LoadClinicalImaged
from custom_networks.clinical.overlay import SaveOverlayPNGd, label_contours
from custom_networks.clinical.seg_writer import SaveDicomSegd
from custom_networks.clinical.slice_inferer import SliceWiseInferer

from clinical_fixtures import (
    Study,
    marker_volume,
    rotation,
    write_nifti,
    write_radiograph,
    write_rt_plan,
    write_series,
    write_structured_report,
    write_undecodable_slice,
)

SPACING = (0.8, 1.2, 3.0)
OBLIQUE = rotation((70, -15, 30))  # oblique coronal: LSA, neither axial nor axis-aligned
ORIGIN = (-10.0, 5.0, 30.0)
MARKER = 1000
CHANNEL_DEF = {"0": "background", "1": "tumour", "2": "oedema"}
TISSUE = {"scheme": "SCT", "value": "85756007", "meaning": "Tissue"}
ATOMIC_WRITER = "custom_networks.clinical.mask_writer.AtomicNibabelWriter"


class ThresholdNet(torch.nn.Module):
    """Stand-in 2D network: two-class logits whose argmax is ``x > level``."""

    def __init__(self, level: float) -> None:
        super().__init__()
        self.level = level

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.level - x[:, :1], x[:, :1] - self.level], dim=1)


def world_points(mask: np.ndarray, affine: np.ndarray) -> set[tuple[float, ...]]:
    """World coordinates (mm, rounded to 1 um) of the nonzero voxels of ``mask``."""
    indices = np.argwhere(mask > 0)
    world = (affine @ np.c_[indices, np.ones(len(indices))].T).T[:, :3]
    return {tuple(p) for p in np.round(world, 3)}


def save_nifti(output_dir, postfix="seg"):
    return SaveImaged(
        keys="pred",
        output_dir=output_dir,
        output_postfix=postfix,
        output_ext=".nii.gz",
        output_dtype=np.uint8,
        writer=ATOMIC_WRITER,
        savepath_in_metadict=True,
        print_log=False,
    )


def segment_by_threshold(image: MetaTensor, level: float = MARKER / 2) -> MetaTensor:
    """Slice-by-slice 'inference' with ThresholdNet and argmax, keeping the image's meta-data."""
    logits = SliceWiseInferer(spatial_dim=2)(image[None], ThresholdNet(level))[0]
    return AsDiscreted("pred", argmax=True)({"pred": logits})["pred"]


def oblique_series(folder, **kwargs):
    return write_series(folder, marker_volume(), spacing=SPACING, orientation=OBLIQUE, origin=ORIGIN, **kwargs)


def tissue_codes(channel_def: dict) -> dict:
    """``segment_codes`` coding every segment of ``channel_def`` as SNOMED CT "Tissue", without a colour."""
    return {value: {"category": TISSUE, "type": TISSUE} for value in channel_def if value != "0"}


def no_temporary_files(root) -> bool:
    return not any(p.name.startswith(TEMP_PREFIX) for p in root.rglob("*"))


# --- geometry -------------------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:NvImgCodecPydicomReader", "ignore:builtin type")  # MONAI / ITK import noise
def test_series_loads_like_monai_itk_reader_with_slices_in_normal_order(tmp_path):
    written = oblique_series(tmp_path / "mr", rescale=(2.0, -50.0))
    image = LoadClinicalImage()(tmp_path / "mr")
    reference = LoadImage(reader="ITKReader", image_only=True, ensure_channel_first=True)(str(tmp_path / "mr"))

    assert image.shape == reference.shape == (1, 20, 16, 10)
    np.testing.assert_allclose(image.affine.numpy(), reference.affine.numpy(), atol=1e-5)
    np.testing.assert_allclose(image.affine.numpy(), written.ras_affine, atol=1e-5)
    np.testing.assert_array_equal(image.numpy(), reference.numpy())
    np.testing.assert_array_equal(image[0].numpy(), marker_volume() * 2.0 - 50.0)
    assert image.meta["clinical_input_kind"] == "dicom_series"
    files = image.meta["dicom_source_files"]
    assert [str(f) for f in written.files] == files
    assert files != sorted(files)  # the file names are shuffled, the order comes from positions
    normal = OBLIQUE[:, 2]
    along = [float(np.dot(pydicom.dcmread(f).ImagePositionPatient, normal)) for f in files]
    assert np.all(np.diff(along) > 0)


def test_nifti_and_shuffled_dicom_paths_segment_the_same_world_points(tmp_path):
    written = oblique_series(tmp_path / "in" / "mr")
    nifti_in = write_nifti(
        tmp_path / "in" / "twin.nii.gz", marker_volume().astype(np.float32), written.ras_affine, canonical=True
    )
    twin = nib.load(nifti_in)
    assert twin.shape != (20, 16, 10)  # the twin is stored in another axis order: the comparison is not trivial

    outputs = {}
    for name, source in (("nifti", nifti_in), ("dicom", tmp_path / "in" / "mr")):
        image = LoadClinicalImaged("image")({"image": source})["image"]
        pred = segment_by_threshold(image)
        save_nifti(tmp_path / "out")({"pred": pred})
        outputs[name] = nib.load(pred.meta["saved_to"])

    np.testing.assert_allclose(outputs["nifti"].affine, twin.affine, atol=1e-5)
    assert outputs["nifti"].shape == twin.shape
    np.testing.assert_allclose(outputs["dicom"].affine, written.ras_affine, atol=1e-5)
    assert outputs["dicom"].shape == (20, 16, 10)

    expected = world_points(marker_volume() > MARKER / 2, written.ras_affine)
    assert len(expected) == 4 * 3 * 2 + 2 * 3 * 1 + 1
    assert world_points(np.asarray(outputs["nifti"].dataobj), outputs["nifti"].affine) == expected
    assert world_points(np.asarray(outputs["dicom"].dataobj), outputs["dicom"].affine) == expected
    assert no_temporary_files(tmp_path / "out")


def test_compressed_series_with_a_decoder_loads_like_uncompressed(tmp_path):
    plain = oblique_series(tmp_path / "plain")
    oblique_series(tmp_path / "rle", transfer_syntax=RLELossless)
    assert pydicom.dcmread(next((tmp_path / "rle").iterdir())).file_meta.TransferSyntaxUID == RLELossless
    a, b = LoadClinicalImage()(tmp_path / "plain"), LoadClinicalImage()(tmp_path / "rle")
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    np.testing.assert_allclose(b.affine.numpy(), plain.ras_affine, atol=1e-5)


# --- DICOM SEG ------------------------------------------------------------------------------------------------


def two_label_prediction(image: MetaTensor) -> MetaTensor:
    """Marker voxels labelled 1, those with column index >= 10 labelled 2 instead."""
    label = (image > MARKER / 2).to(torch.uint8)
    label[:, 10:] *= 2
    return label


def test_dicom_seg_round_trip_is_voxel_exact_and_references_the_source(tmp_path):
    written = oblique_series(tmp_path / "mr")
    data = LoadClinicalImaged("image")({"image": tmp_path / "mr"})
    data["pred"] = two_label_prediction(data["image"])
    SaveDicomSegd(
        "pred",
        tmp_path / "out",
        CHANNEL_DEF,
        algorithm_name="test_bundle",
        algorithm_version="0.2.0",
        segment_codes=tissue_codes(CHANNEL_DEF),
    )(data)

    (seg_path,) = data["pred"].meta["clinical_outputs"]
    assert seg_path == str(tmp_path / "out" / "mr" / "mr_seg.dcm")
    seg = hd.seg.segread(seg_path)
    sources = [pydicom.dcmread(f) for f in written.files]
    expected = np.transpose(data["pred"][0].numpy(), (2, 1, 0))  # (slice, row, column)

    assert seg.StudyInstanceUID == written.study.study_instance_uid
    assert seg.FrameOfReferenceUID == written.study.frame_of_reference_uid
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == written.series_instance_uid
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["tumour", "oedema"]
    for segment in seg.SegmentSequence:
        for coded in (segment.SegmentedPropertyCategoryCodeSequence[0], segment.SegmentedPropertyTypeCodeSequence[0]):
            assert (coded.CodingSchemeDesignator, coded.CodeValue, coded.CodeMeaning) == ("SCT", "85756007", "Tissue")
        assert "RecommendedDisplayCIELabValue" not in segment
    algorithm = seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
    assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == ("test_bundle", "0.2.0")
    # BINARY: one frame per segment per slice that holds it; empty frames omitted
    nonempty = sum(int((expected[k] == v).any()) for k in range(10) for v in (1, 2))
    assert seg.NumberOfFrames == nonempty < 20

    pixels = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=[s.SOPInstanceUID for s in sources],
        combine_segments=True,
        assert_missing_frames_are_empty=True,
    )
    np.testing.assert_array_equal(pixels, expected)
    by_uid = {s.SOPInstanceUID: k for k, s in enumerate(sources)}
    frames = seg.pixel_array.reshape(seg.NumberOfFrames, *expected.shape[1:])
    for frame, item in zip(frames, seg.PerFrameFunctionalGroupsSequence, strict=True):
        k = by_uid[item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID]
        segment = item.SegmentIdentificationSequence[0].ReferencedSegmentNumber
        np.testing.assert_array_equal(frame.astype(bool), expected[k] == segment)


def test_dicom_seg_refuses_a_label_outside_the_source_grid(tmp_path):
    oblique_series(tmp_path / "mr")
    image = LoadClinicalImage()(tmp_path / "mr")
    flipped = Flip(spatial_axis=0)(two_label_prediction(image))
    writer = SaveDicomSegd("pred", tmp_path / "out", CHANNEL_DEF, "test_bundle", "1", tissue_codes(CHANNEL_DEF))
    with pytest.raises(ValueError, match="Invertd"):
        writer({"pred": flipped, "image": image})
    unknown = two_label_prediction(image) * 3
    with pytest.raises(ValueError, match=r"label values \[3, 6\]"):
        writer({"pred": unknown})
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.dcm"))


def test_dicom_seg_skips_inputs_that_are_not_dicom(tmp_path):
    path = write_nifti(tmp_path / "a.nii.gz", marker_volume().astype(np.float32), np.eye(4))
    image = LoadClinicalImage()(path)
    codes = tissue_codes(CHANNEL_DEF)
    writer = SaveDicomSegd("pred", tmp_path / "out", CHANNEL_DEF, "b", "1", codes, source_key="image")
    data = writer({"image": image, "pred": two_label_prediction(image)})
    assert "clinical_outputs" not in data["pred"].meta
    assert not (tmp_path / "out").exists()


def test_failed_seg_write_leaves_no_file(tmp_path, monkeypatch):
    oblique_series(tmp_path / "mr")
    image = LoadClinicalImage()(tmp_path / "mr")

    def write_half_then_fail(self, filename, *args, **kwargs):
        with open(filename, "wb") as stream:
            stream.write(b"\0" * 1000)
        raise OSError("disk full")

    monkeypatch.setattr(hd.seg.Segmentation, "save_as", write_half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        SaveDicomSegd("pred", tmp_path / "out", CHANNEL_DEF, "b", "1", tissue_codes(CHANNEL_DEF))(
            {"pred": two_label_prediction(image)}
        )
    assert list((tmp_path / "out").rglob("*")) == [tmp_path / "out" / "mr"]


def test_atomic_path_renames_only_on_success(tmp_path):
    with atomic_path(tmp_path / "a" / "ok.txt") as temporary:
        temporary.write_text("done")
        assert not (tmp_path / "a" / "ok.txt").exists()
    assert (tmp_path / "a" / "ok.txt").read_text() == "done"
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "a" / "bad.txt") as temporary:
        temporary.write_text("part")
        raise RuntimeError
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["ok.txt"]


# --- radiographs (2D) -----------------------------------------------------------------------------------------


def radiograph_pixels(bits: int = 12) -> np.ndarray:
    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 2**bits // 4, size=(30, 40))
    pixels[5:12, 22:35] = 2**bits - 1  # bright, off-centre block
    return pixels


def test_monochrome1_radiograph_loads_inverted_like_its_monochrome2_twin(tmp_path):
    pixels = radiograph_pixels()
    mono2 = write_radiograph(tmp_path / "m2.dcm", pixels, "MONOCHROME2")
    mono1 = write_radiograph(tmp_path / "m1.dcm", 4095 - pixels, "MONOCHROME1")
    a, b = LoadClinicalImage()(mono2), LoadClinicalImage()(mono1)
    assert a.shape == b.shape == (1, 40, 30)
    np.testing.assert_array_equal(a[0].numpy(), pixels.T)
    np.testing.assert_array_equal(b.numpy(), a.numpy())
    assert b.meta["clinical_input_kind"] == "dicom_radiograph"
    assert b.meta["photometric_interpretation"] == "MONOCHROME1"
    assert b.meta["dicom_source_files"] == [str(mono1)]
    np.testing.assert_allclose(np.diag(b.affine.numpy()), [0.15, 0.2, 1, 1])  # ImagerPixelSpacing (row, column)

    dx = write_radiograph(tmp_path / "dx.dcm", pixels, modality="DX", pixel_spacing=(0.1, 0.12))
    loaded = LoadClinicalImage()(dx)
    assert loaded.meta["pixel_spacing_source"] == "PixelSpacing"
    np.testing.assert_allclose(np.diag(loaded.affine.numpy()), [0.12, 0.1, 1, 1])


def test_radiograph_loads_in_the_layout_of_its_png_export(tmp_path):
    pixels = radiograph_pixels(bits=8)
    dicom = write_radiograph(tmp_path / "cr.dcm", pixels, bits_stored=8)
    Image.fromarray(pixels.astype(np.uint8)).save(tmp_path / "cr.png")
    from_dicom, from_png = LoadClinicalImage()(dicom), LoadClinicalImage()(tmp_path / "cr.png")
    assert from_png.meta["clinical_input_kind"] == "image_2d"
    np.testing.assert_array_equal(from_dicom.numpy(), from_png.numpy())


def test_radiograph_round_trip_nifti_seg_and_overlay(tmp_path):
    pixels = radiograph_pixels()
    path = write_radiograph(tmp_path / "in" / "chest.dcm", 4095 - pixels, "MONOCHROME1")
    data = LoadClinicalImaged("image")({"image": path})
    data["pred"] = segment_by_threshold(data["image"], level=3000)
    expected = pixels.T >= 3000
    assert expected.sum() == 7 * 13
    np.testing.assert_array_equal(data["pred"][0].numpy(), expected)

    lung = {"0": "background", "1": "lung"}
    save_nifti(tmp_path / "out")(data)
    SaveDicomSegd("pred", tmp_path / "out", lung, "cxr_bundle", "1.0", tissue_codes(lung))(data)
    overlay = SaveOverlayPNGd("pred", tmp_path / "out", lung)
    overlay(data)

    nifti = nib.load(data["pred"].meta["saved_to"])
    np.testing.assert_array_equal(np.asarray(nifti.dataobj), expected)
    np.testing.assert_allclose(np.diag(nifti.affine), [0.15, 0.2, 1, 1])
    seg_path, overlay_path = data["pred"].meta["clinical_outputs"]
    seg = hd.seg.segread(seg_path)
    source = pydicom.dcmread(path)
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == source.SeriesInstanceUID
    pixels_back = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=[source.SOPInstanceUID], combine_segments=True, assert_missing_frames_are_empty=True
    )
    np.testing.assert_array_equal(pixels_back[0], expected.T)
    mosaic = overlay.mosaic(data["image"], data["pred"])
    np.testing.assert_array_equal(np.asarray(Image.open(overlay_path)), mosaic.picture)
    (tile,) = mosaic.tiles
    top, left, bottom, right = tile.box
    picture = mosaic.picture[top:bottom, left:right]
    assert picture.shape[:2] == (30 * 9, 40 * 9)  # enlarged to at least 256 pixels
    red = np.all(picture == (255, 40, 40), axis=-1)
    rows, columns = np.nonzero(red)
    assert (rows.min(), rows.max() + 1, columns.min(), columns.max() + 1) == (5 * 9, 12 * 9, 22 * 9, 35 * 9)
    assert not red[8 * 9, 28 * 9]  # inside the block: contour only


# --- choosing among several series ----------------------------------------------------------------------------


@pytest.fixture
def study_folder(tmp_path):
    study = Study()
    volume = marker_volume((8, 8, 6))
    write_series(tmp_path / "study" / "a", volume[:, :, :4], description="T1 AX", study=study)
    write_series(tmp_path / "study" / "b", volume, description="T2 FLAIR", study=study)
    write_series(tmp_path / "study" / "c", volume[:, :, :5], modality="CT", description="CT HEAD", study=study)
    write_structured_report(tmp_path / "study" / "sr.dcm", study)
    return tmp_path / "study"


@pytest.mark.parametrize(
    "rules, slices, description",
    [
        ({}, 6, "T2 FLAIR"),
        ({"modalities": ["CT"]}, 5, "CT HEAD"),
        ({"series_description": "t1"}, 4, "T1 AX"),
        ({"modalities": ["MR"], "series_description": "ax|flair"}, 6, "T2 FLAIR"),
    ],
)
def test_series_chosen_by_rules(study_folder, rules, slices, description):
    image = LoadClinicalImage(**rules)(study_folder)
    assert image.shape[-1] == slices
    assert pydicom.dcmread(image.meta["dicom_source_files"][0]).SeriesDescription == description


@pytest.mark.parametrize(
    "rules, problem",
    [
        ({"prefer_most_slices": False}, "3 series match"),
        ({"modalities": ["PT"]}, "no series matches"),
    ],
)
def test_unresolved_series_choice_lists_every_series(study_folder, rules, problem):
    with pytest.raises(CaseError) as raised:
        LoadClinicalImage(**rules)(study_folder)
    message = str(raised.value)
    assert message.startswith(f"{study_folder}: 3 image series found")
    assert problem in message
    for text in ('"T1 AX" (4 files', '"T2 FLAIR" (6 files', '"CT HEAD" (5 files', "Basic Text SR Storage"):
        assert text in message
    assert "\n" not in message


# --- bad inputs -----------------------------------------------------------------------------------------------


def _edit_slice(path, edit):
    dataset = pydicom.dcmread(path)
    edit(dataset)
    dataset.save_as(path, enforce_file_format=True)


def _series_with(tmp_path, edit=None, index=3):
    """A small series (slice order = file order) and its slice ``index`` edited; returns (folder, edited file)."""
    written = write_series(tmp_path / "case", marker_volume((8, 6, 6)), spacing=(1.0, 1.0, 2.0), shuffle_seed=None)
    if edit is not None:
        _edit_slice(written.files[index], edit)
    return tmp_path / "case", written.files[index]


def _delete(keyword):
    return lambda ds: delattr(ds, keyword)


def _truncate(path, drop=100):
    """Cut the last ``drop`` bytes (inside the pixel data) off a file."""
    data = path.read_bytes()
    path.write_bytes(data[:-drop])
    return path


def _undecodable_transfer_syntax():
    for uid in (JPEGLosslessSV1, JPEGLossless, JPEGExtended12Bit, HTJ2KLossless):
        if not get_decoder(uid).is_available:
            return uid
    pytest.skip("every candidate compressed transfer syntax has a decoder installed here")


def bad_truncated_dicom_file(tmp_path):
    path = _truncate(write_radiograph(tmp_path / "cr.dcm", radiograph_pixels()))
    return path, path, "truncated"


def bad_truncated_slice(tmp_path):
    folder, path = _series_with(tmp_path)
    _truncate(path, drop=20)
    return folder, path, "truncated"


def bad_corrupt_dicom(tmp_path):
    path = tmp_path / "junk.dcm"
    path.write_bytes(b"\0" * 128 + b"DICM" + np.random.default_rng(0).bytes(600))
    return path, path, "corrupt|truncated"


def bad_truncated_nifti(tmp_path):
    path = _truncate(write_nifti(tmp_path / "t.nii.gz", np.random.rand(16, 16, 16).astype(np.float32), np.eye(4)))
    return path, path, "truncated or corrupt NIfTI"


def bad_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    return tmp_path / "empty", tmp_path / "empty", "empty folder"


def bad_folder_without_dicom(tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "README.txt").write_text("no images here")
    return tmp_path / "notes", tmp_path / "notes", "no DICOM files"


def bad_structured_report(tmp_path):
    path = write_structured_report(tmp_path / "sr.dcm")
    return path, path, "not an image: Basic Text SR Storage"


def bad_rt_plan_folder(tmp_path):
    write_rt_plan(tmp_path / "plan" / "rtplan.dcm")
    return tmp_path / "plan", tmp_path / "plan", "no image series, only non-image DICOM objects: .*RT Plan Storage"


def bad_missing_pixel_data(tmp_path):
    folder, path = _series_with(tmp_path, _delete("PixelData"))
    return folder, path, r"missing pixel data: no Pixel Data \(7FE0,0010\)"


def bad_missing_position(tmp_path):
    folder, path = _series_with(tmp_path, _delete("ImagePositionPatient"))
    return folder, path, r"missing ImagePositionPatient \(0020,0032\)"


def bad_missing_orientation(tmp_path):
    folder, path = _series_with(tmp_path, _delete("ImageOrientationPatient"))
    return folder, path, r"missing ImageOrientationPatient \(0020,0037\)"


def bad_missing_pixel_spacing(tmp_path):
    folder, path = _series_with(tmp_path, _delete("PixelSpacing"))
    return folder, path, r"missing PixelSpacing \(0028,0030\)"


def bad_slice_gap(tmp_path):
    folder, path = _series_with(tmp_path)
    path.unlink()
    return folder, folder, r"slice gap .* 4\.000 mm between IM0002\.dcm and IM0004\.dcm, 2\.000 mm elsewhere"


def bad_duplicate_slice(tmp_path):
    folder, path = _series_with(tmp_path)
    duplicate = pydicom.dcmread(path)
    duplicate.SOPInstanceUID = duplicate.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    duplicate.save_as(folder / "copy.dcm", enforce_file_format=True)
    return folder, None, r"duplicate slice: same position 6\.000 mm along the slice normal as"


def bad_mixed_orientation(tmp_path):
    folder, _ = _series_with(tmp_path, lambda ds: setattr(ds, "ImageOrientationPatient", [1, 0, 0, 0, 0, -1]))
    return folder, None, r"mixed orientation: ImageOrientationPatient \[1, 0, 0, 0, 0, -1\] differs from"


def bad_4d_nifti(tmp_path):
    path = write_nifti(tmp_path / "dwi.nii.gz", np.zeros((8, 8, 4, 2), np.float32), np.eye(4))
    return path, path, r"4D NIfTI \(shape \(8, 8, 4, 2\)\)"


def bad_nan_voxels(tmp_path):
    volume = np.ones((8, 8, 4), np.float32)
    volume[1, 2, 3] = volume[4, 4, 0] = np.nan
    path = write_nifti(tmp_path / "nan.nii.gz", volume, np.eye(4))
    return path, path, "2 NaN or infinite voxel values"


def bad_wrong_channels(tmp_path):
    path = tmp_path / "photo.png"
    Image.fromarray(np.zeros((12, 10, 3), np.uint8)).save(path)
    return path, path, "wrong number of channels: 3, the bundle expects 1"


def bad_no_decoder(tmp_path):
    uid = _undecodable_transfer_syntax()
    path = write_undecodable_slice(tmp_path / "compressed.dcm", uid)
    return path, path, rf"compressed transfer syntax {re.escape(uid.name)} \({uid}\) has no decoder installed"


def bad_unknown_file(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    return path, path, "unrecognised input"


BAD_INPUTS = {name[4:]: value for name, value in globals().items() if name.startswith("bad_")}


@pytest.mark.parametrize("name", sorted(BAD_INPUTS))
def test_bad_input_gives_one_line_error_naming_file_and_reason(tmp_path, name):
    given, named, reason = BAD_INPUTS[name](tmp_path)
    with pytest.raises(CaseError) as raised:
        LoadClinicalImage(expected_channels=1)(given)
    message = str(raised.value)
    assert "\n" not in message
    if named is None:  # which of two conflicting slices is named depends on the sort
        assert message.startswith(f"{given}/") and message.split(": ")[0].endswith(".dcm")
    else:
        assert message.startswith(f"{named}: ")
    assert re.search(reason, message), message


def test_no_decoder_check_matches_what_pydicom_can_decode():
    uid = _undecodable_transfer_syntax()
    assert not get_decoder(uid).is_available
    assert get_decoder(RLELossless).is_available


def test_case_error_survives_pickling_between_processes():
    error = pickle.loads(pickle.dumps(CaseError("/data/x.dcm", "bad\nthing")))
    assert isinstance(error, CaseError)
    assert str(error) == "/data/x.dcm: bad thing"


# --- overlays -------------------------------------------------------------------------------------------------


def test_label_contours_are_region_borders():
    label = np.zeros((8, 8), np.int64)
    label[2:6, 2:6] = 1
    contours = label_contours(label)
    assert (contours == 1).sum() == 12
    assert contours[3:5, 3:5].sum() == 0


def test_overlay_mosaic_shows_every_labelled_slice(tmp_path):
    image = MetaTensor(torch.rand(1, 12, 10, 9), meta={"filename_or_obj": "/data/case7.nii.gz"})
    label = torch.zeros(1, 12, 10, 9)
    for k, side in ((2, 4), (5, 7), (7, 2), (8, 5)):
        label[0, 1 : 1 + side, 1 : 1 + side, k] = 1
    writer = SaveOverlayPNGd("pred", tmp_path, CHANNEL_DEF, min_slices=3, tile_size=64)
    data = writer({"image": image, "pred": MetaTensor(label)})
    (path,) = data["pred"].meta["clinical_outputs"]
    assert path.split("/")[-1] == "case7_overlay.png"
    mosaic = writer.mosaic(image, label)
    np.testing.assert_array_equal(np.asarray(Image.open(path)), mosaic.picture)
    assert [tile.index for tile in mosaic.tiles] == [2, 5, 7, 8]  # the smallest area (slice 7) too
    top, left, bottom, right = mosaic.tiles[1].box
    picture = mosaic.picture[top:bottom, left:right]
    assert picture.shape == (10 * 7, 12 * 7, 3)
    assert np.all(picture[7, 7] == (255, 40, 40))  # corner of the 7x7 square, enlarged 7 times
    assert no_temporary_files(tmp_path)


def test_overlay_of_dicom_series_and_its_canonical_nifti_twin_is_the_same_picture(tmp_path):
    volume = marker_volume()
    written = write_series(tmp_path / "axial", volume, spacing=(1.0, 1.0, 2.0))
    twin = write_nifti(tmp_path / "twin.nii.gz", volume.astype(np.float32), written.ras_affine, canonical=True)
    pictures = []
    for source in (tmp_path / "axial", twin):
        data = LoadClinicalImaged("image")({"image": source})
        data["pred"] = (data["image"] > MARKER / 2).to(torch.uint8)
        mosaic = SaveOverlayPNGd("pred", tmp_path / "out", CHANNEL_DEF).mosaic(data["image"], data["pred"])
        # tile by tile: the captions differ (InstanceNumber, 1-based index)
        tiles = {}
        for tile in mosaic.tiles:
            top, left, bottom, right = tile.box
            tiles[tile.index] = mosaic.picture[top:bottom, left:right]
        pictures.append(tiles)
    assert not np.array_equal(np.asarray(nib.load(twin).dataobj)[..., 6], volume[..., 6])
    assert list(pictures[0]) == list(pictures[1]) == [1, 6, 7, 8]
    for index, tile in pictures[0].items():
        np.testing.assert_array_equal(tile, pictures[1][index])
    # DICOM display: row index down, column index right; the marker is at columns 2-5, rows 10-12 of slice 6
    red = np.all(pictures[0][6] == (255, 40, 40), axis=-1)
    rows, columns = np.nonzero(red)
    scale = 256 // 16
    assert (rows.min() // scale, columns.min() // scale, columns.max() // scale) == (10, 2, 5)


# --- slice-by-slice inference ---------------------------------------------------------------------------------


@pytest.mark.parametrize("spatial_dim", [0, 1, 2])
def test_slice_wise_inferer_normalizes_each_slice_on_its_own(spatial_dim):
    torch.manual_seed(0)
    volume = torch.rand(2, 1, 5, 6, 7) * torch.arange(1, 8).view(1, 1, 1, 1, 7) + torch.arange(5).view(1, 1, 5, 1, 1)
    calls = []

    def identity(x: torch.Tensor) -> torch.Tensor:
        calls.append(x.shape[0])
        return x

    out = SliceWiseInferer(spatial_dim, NormalizeIntensity(), sw_batch_size=4)(volume, identity)
    assert out.shape == volume.shape
    depth = volume.shape[2 + spatial_dim]
    assert calls == [4] * (2 * depth // 4) + ([2 * depth % 4] if 2 * depth % 4 else [])
    for b in range(2):
        for k in range(depth):
            piece = volume[b].select(1 + spatial_dim, k)
            expected = (piece - piece.mean()) / piece.std(unbiased=False)
            torch.testing.assert_close(out[b].select(1 + spatial_dim, k), expected, atol=1e-5, rtol=1e-5)


def test_slice_wise_inferer_resizes_back_and_keeps_meta():
    affine = torch.diag(torch.tensor([2.0, 3.0, 4.0, 1.0], dtype=torch.float64))
    image = MetaTensor(torch.ones(1, 1, 10, 14, 3) * torch.tensor([1.0, 2.0, 3.0]), affine=affine)
    seen = []

    def network(x: torch.Tensor) -> torch.Tensor:
        seen.append(tuple(x.shape))
        return torch.cat([x, -x], dim=1)

    resize = Resize((16, 16))
    out = SliceWiseInferer(2, lambda s: resize(s * 2))(image, network)
    assert seen == [(3, 1, 16, 16)]
    assert out.shape == (1, 2, 10, 14, 3)
    torch.testing.assert_close(out[0, 0, 4, 5], torch.tensor([2.0, 4.0, 6.0]))
    assert isinstance(out, MetaTensor)
    torch.testing.assert_close(out.affine, image.affine)


def test_slice_wise_inferer_runs_2d_images_as_single_slices():
    images = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).view(2, 3, 4, 5)
    out = SliceWiseInferer(slice_transform=lambda s: s * 2)(images, lambda x: x[:, :1] + 1)
    torch.testing.assert_close(out, images[:, :1] * 2 + 1)


# --- cases of a dataset_dir and a mixed run -------------------------------------------------------------------


def test_discover_cases_of_mixed_kinds(tmp_path):
    root = tmp_path / "data"
    write_nifti(root / "a.nii.gz", np.zeros((4, 4, 4), np.float32), np.eye(4))
    write_series(root / "a", marker_volume((8, 8, 3)))
    write_radiograph(root / "cr.dcm", radiograph_pixels())
    (root / "empty").mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / "b.png")
    (root / "pngs").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "pngs" / "c.jpg")
    (root / "datalist.json").write_text("{}")
    (root / "README.txt").write_text("notes")
    write_nifti(root / "pngs" / "d.nii", np.zeros((4, 4), np.float32), np.eye(4))

    cases = discover_cases(root)
    found = [(case.name, case.kind, case.path.relative_to(root).as_posix()) for case in cases]
    assert found == [
        ("a", "dicom_folder", "a"),
        ("a_nifti_file", "nifti_file", "a.nii.gz"),
        ("b", "image_file", "b.png"),
        ("cr", "dicom_file", "cr.dcm"),
        ("empty", "dicom_folder", "empty"),
        ("c", "image_file", "pngs/c.jpg"),
        ("d", "nifti_file", "pngs/d.nii"),
    ]
    assert [case.name for case in cases if case.error] == ["a_nifti_file"]
    assert "would overwrite those of a (same name 'a')" in cases[1].error


def test_a_series_folder_given_as_the_input_is_one_case_and_a_radiograph_folder_is_many(tmp_path):
    oblique_series(tmp_path / "series")
    (case,) = discover_cases(tmp_path / "series")
    assert (case.name, case.kind, case.path) == ("series", "dicom_folder", tmp_path / "series")
    image = LoadClinicalImage(expected_channels=1)(case.path)
    assert image.shape[1:] == marker_volume().shape
    for name in ("a.dcm", "b.dcm"):
        write_radiograph(tmp_path / "radiographs" / name, radiograph_pixels())
    assert [case.name for case in discover_cases(tmp_path / "radiographs")] == ["a", "b"]


def test_mixed_run_finishes_good_cases_and_summarises_every_case(tmp_path):
    root, out = tmp_path / "data", tmp_path / "out"
    written = oblique_series(root / "mr_case")
    write_nifti(root / "ct.nii.gz", marker_volume().astype(np.float32), written.ras_affine)
    write_radiograph(root / "chest.dcm", 4095 - radiograph_pixels(), "MONOCHROME1")
    Image.fromarray((marker_volume()[:, :, 7].T / 4).astype(np.uint8)).save(root / "slice.png")
    _truncate(write_radiograph(root / "broken.dcm", radiograph_pixels()))
    write_structured_report(root / "report" / "sr.dcm")
    (root / "empty").mkdir()
    bad_nan_voxels(root)
    Image.fromarray(np.zeros((12, 10, 3), np.uint8)).save(root / "colour.png")
    Image.fromarray(np.zeros((12, 10), np.uint8)).save(root / "ct.png")  # outputs would overwrite those of ct.nii.gz

    cases = discover_cases(root)
    recorder = CaseOutcomeRecorder(out)
    preprocessing = LoadClinicalImaged("image", expected_channels=1)
    marker = {"0": "background", "1": "marker"}
    postprocessing = Compose(
        [
            AsDiscreted("pred", argmax=True),
            save_nifti(out),
            SaveDicomSegd("pred", out, marker, "test_bundle", "0.1.0", tissue_codes(marker), source_key="image"),
            SaveOverlayPNGd("pred", out, marker, image_key="image"),
            MeasureSegmentsd("pred", marker),
            RecordCaseOutcomed("pred", recorder),
        ]
    )
    dataset = ClinicalCaseDataset(cases_datalist(cases), preprocessing, recorder)
    evaluator = SupervisedEvaluator(
        device=torch.device("cpu"),
        val_data_loader=DataLoader(dataset, batch_size=1, num_workers=2),
        network=ThresholdNet(0.5),
        inferer=SliceWiseInferer(spatial_dim=2, slice_transform=ScaleIntensity()),
        postprocessing=postprocessing,
    )
    evaluator.run()
    csv_path, json_path = recorder.write_summary(cases)

    summary = json.loads(json_path.read_text())
    rows = {row["case"]: row for row in summary["cases"]}
    assert list(rows) == [case.name for case in cases]
    assert summary["counts"] == {"ok": 4, "failed": 6}
    assert len(csv_path.read_text().strip().splitlines()) == 1 + 10
    for case in ("ct", "slice"):
        outputs = rows[case]["outputs"]
        assert rows[case]["status"] == "ok" and rows[case]["kind"] in ("nifti_file", "image_file")
        assert outputs[0].endswith(f"{case}_seg.nii.gz") and outputs[1].endswith(".png")
        assert not any(p.endswith(".dcm") for p in outputs)
    for case in ("mr_case", "chest"):
        outputs = rows[case]["outputs"]
        assert rows[case]["status"] == "ok" and rows[case]["kind"] in ("dicom_folder", "dicom_file")
        assert outputs[0].endswith(f"{case}_seg.nii.gz") and outputs[1].endswith(f"{case}_seg.dcm")
        assert any(p.endswith(".png") for p in outputs)
    for path in (p for row in rows.values() for p in row["outputs"]):
        assert Path(path).is_file() and Path(path).is_relative_to(out)
    for row in rows.values():  # the start time passed DataLoader workers and collation
        assert row["started"] and row["started"] <= row["ended"]
        assert [segment["label"] for segment in row["segments"]] == (["marker"] if row["status"] == "ok" else [])
    mr_mask = nib.load(rows["mr_case"]["outputs"][0])
    assert world_points(np.asarray(mr_mask.dataobj), mr_mask.affine) == world_points(
        marker_volume() > MARKER / 2, written.ras_affine
    )

    expected_failures = {
        "broken": "truncated",
        "report": "no image series",
        "empty": "empty folder",
        "nan": "2 NaN or infinite voxel values",
        "colour": "wrong number of channels: 3, the bundle expects 1",
        "ct_image_file": "its outputs would overwrite those of ct.nii.gz",
    }
    for case, reason in expected_failures.items():
        row = rows[case]
        assert row["status"] == "failed" and row["outputs"] == []
        assert row["message"].startswith(f"{row['input']}: ") and reason in row["message"]
        assert not any(out.rglob(f"{case}_*"))
    assert no_temporary_files(out)

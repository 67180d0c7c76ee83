"""The clinical inputs and outputs wired into the bundles.

- The main job (``scripts/run_demo.sh``) on the shipped sample study with the shipped demo weights: NIfTI masks
  with the inputs' geometry, a DICOM SEG that reads back, overlays, the run summary, and a mask on the lesion.
- A mixed ``dataset_dir`` of good and bad cases through the brain bundle's CLI: good cases finish, bad ones are
  listed with their one-line reasons.
- Every bundle's ``inference.json`` in-process (``monai.bundle.run``, tiny random weights) on the input kinds it
  takes: masks in each input's grid, a SEG for DICOM input, failures for the kinds it must refuse.
- The pieces they use: the sample study generator, the mask writer, the slice-wise inferer with an inner window
  inferer, the loader's TIFF / multi-channel NIfTI / lone-radiograph handling, and the config helpers.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
import tifffile
import torch
from monai.bundle import ConfigParser
from monai.inferers import SlidingWindowInferer
from PIL import Image

from custom_networks.atomic_files import TEMP_PREFIX
from custom_networks.clinical import (
    CaseError,
    LoadClinicalImage,
    SaveClinicalMaskd,
    SliceWiseInferer,
    bundle_metadata,
    is_on,
    segment_labels,
)
from custom_networks.clinical.bundle_config import segment_codes, segment_colours
from custom_networks.data.sample_study import (
    SAMPLE_SHAPE,
    lesion_dice,
    make_sample_study,
    write_lesion_free_slices,
    write_sample_study,
)
from custom_networks.deploy.int8_models import int8_model_for_this_cpu

from clinical_fixtures import marker_volume, write_radiograph, write_series, write_structured_report
from conftest import BUNDLES, BUNDLES_DIR, REPO, TINY_OVERRIDES, cli_args, infer_in_process, run_cli

BRAIN = "brain_tumor_mri_gsconv_eca_unet"
SAMPLE = BUNDLES_DIR / BRAIN / "sample_data"
# the paths and the shape of the masks each kind of input gets
NIFTI_MASK, PNG_MASK, SEG = "_seg.nii.gz", "_seg.png", "_seg.dcm"
ONNX_CONFIGS = ("inference.json", "inference_onnx.json")


def run_env() -> dict[str, str]:
    env = dict(os.environ, PYTHON=sys.executable, PYTHONWARNINGS="ignore")
    env.update(OMP_NUM_THREADS="2", MKL_NUM_THREADS="2")
    return env


def summary_rows(output_dir: Path) -> dict[str, dict]:
    return {row["case"]: row for row in json.loads((output_dir / "run_summary.json").read_text())["cases"]}


def no_temporary_files(folder: Path) -> bool:
    return not [p for p in folder.rglob("*") if p.name.startswith(TEMP_PREFIX) or p.name == ".case_outcomes"]


def seg_pixels(seg_path: Path, source_files: list[Path]) -> tuple[hd.seg.Segmentation, np.ndarray]:
    """The SEG's binary frames per source instance, ``(slices, rows, columns)``, sources in ``source_files`` order."""
    seg = hd.seg.segread(seg_path)
    uids = [pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in source_files]
    pixels = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=uids, segment_numbers=[1], assert_missing_frames_are_empty=True
    )
    return seg, np.asarray(pixels[..., 0])


def slice_ordered_files(series_folder: Path) -> list[Path]:
    return [Path(p) for p in LoadClinicalImage()(series_folder).meta["dicom_source_files"]]


# --- the main job -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def main_job(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """``bash scripts/run_demo.sh <output>`` run from a folder outside the repository (installs nothing here)."""
    work = tmp_path_factory.mktemp("main_job")
    output = work / "demo_output"
    done = subprocess.run(
        ["bash", str(REPO / "scripts" / "run_demo.sh"), str(output)],
        cwd=work,
        capture_output=True,
        text=True,
        env=run_env(),
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return output, done


def test_main_job_writes_every_output_and_says_where(main_job):
    output, done = main_job
    assert "installing" not in done.stdout
    rows = summary_rows(output)
    assert {name: row["status"] for name, row in rows.items()} == {"mr_series": "ok", "mr_volume": "ok"}
    assert (output / "run_summary.csv").is_file()
    for name, row in rows.items():
        outputs = [Path(p) for p in row["outputs"]]
        assert outputs[0] == output / f"{name}{NIFTI_MASK}"
        overlays = [p for p in outputs if "_overlay" in p.name]
        assert overlays == [output / f"{name}_overlay.png"]
        assert (output / f"{name}{SEG}" in outputs) == (name == "mr_series")
        for path in outputs:
            assert path.is_file() and str(path) in done.stdout
    assert f"run summary: {output / 'run_summary.json'}" in done.stdout
    assert no_temporary_files(output)
    run = json.loads((output / "run_summary.json").read_text())["run"]
    weights = BUNDLES_DIR / BRAIN / "models" / "demo_model.pt"
    assert run["demo_weights"] is True and Path(run["weights"]).resolve() == weights
    assert run["weights_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()


def test_main_job_masks_keep_the_input_geometry_and_find_the_lesion(main_job):
    output, _ = main_job
    volume = nib.load(SAMPLE / "mr_volume.nii.gz")
    series = LoadClinicalImage()(SAMPLE / "mr_series")
    masks = {name: nib.load(output / f"{name}{NIFTI_MASK}") for name in ("mr_series", "mr_volume")}
    assert masks["mr_volume"].shape == volume.shape == SAMPLE_SHAPE
    np.testing.assert_allclose(masks["mr_volume"].affine, volume.affine, atol=1e-5)
    assert masks["mr_series"].shape == tuple(series.shape[1:])
    np.testing.assert_allclose(masks["mr_series"].affine, series.affine.numpy(), atol=1e-4)
    arrays = {name: np.asarray(mask.dataobj) for name, mask in masks.items()}
    np.testing.assert_array_equal(arrays["mr_series"], arrays["mr_volume"])
    dice = lesion_dice(arrays["mr_series"])
    print(f"main job: Dice of the sample study mask against the known lesion {dice:.3f}")
    assert dice >= 0.7


def test_main_job_seg_references_the_series_and_equals_the_mask(main_job):
    output, _ = main_job
    files = slice_ordered_files(SAMPLE / "mr_series")
    seg, frames = seg_pixels(output / f"mr_series{SEG}", files)
    mask = np.asarray(nib.load(output / f"mr_series{NIFTI_MASK}").dataobj)
    np.testing.assert_array_equal(frames, np.transpose(mask, (2, 1, 0)))
    source = pydicom.dcmread(files[0], stop_before_pixels=True)
    assert seg.StudyInstanceUID == source.StudyInstanceUID
    assert seg.FrameOfReferenceUID == source.FrameOfReferenceUID
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == source.SeriesInstanceUID
    assert int(seg.NumberOfFrames) == int((mask.sum(axis=(0, 1)) > 0).sum())
    metadata = json.loads((BUNDLES_DIR / BRAIN / "configs" / "metadata.json").read_text())
    segment = seg.SegmentSequence[0]
    assert segment.SegmentLabel == metadata["network_data_format"]["outputs"]["pred"]["channel_def"]["1"]
    algorithm = segment.SegmentationAlgorithmIdentificationSequence[0]
    assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == (BRAIN, metadata["version"])


def test_main_job_overlays_show_the_contour_on_the_lesion(main_job):
    output, _ = main_job
    study = make_sample_study()
    lesion_slices = set(np.flatnonzero(study.lesion.sum(axis=(0, 1))).tolist())
    configs = BUNDLES_DIR / BRAIN / "configs"
    parser = ConfigParser()
    parser.read_config([str(configs / "inference.json"), str(configs / "demo.json")])
    parser.update({"bundle_root": str(BUNDLES_DIR / BRAIN)})
    # the mosaic drawn again here, as the main job's bundle config draws it, shows what its tiles hold
    image = LoadClinicalImage()(SAMPLE / "mr_series")
    mask = torch.as_tensor(np.asarray(nib.load(output / f"mr_series{NIFTI_MASK}").dataobj))[None]
    mosaic = parser.get_parsed_content("overlay_writer").mosaic(image, mask)
    with Image.open(output / "mr_series_overlay.png") as picture:
        np.testing.assert_array_equal(np.asarray(picture.convert("RGB")), mosaic.picture)
    assert lesion_slices <= {tile.index for tile in mosaic.tiles} and mosaic.demo_marks
    for tile in mosaic.tiles:
        if tile.index in lesion_slices:
            top, left, bottom, right = tile.box
            pixels = mosaic.picture[top:bottom, left:right]
            assert min(pixels.shape[:2]) >= 256
            red = (pixels[..., 0] > 200) & (pixels[..., 1] < 80) & (pixels[..., 2] < 80)
            assert 50 < red.sum() < 0.1 * red.size


# --- a mixed dataset_dir through the CLI ------------------------------------------------------------------------


@pytest.mark.subprocess
def test_mixed_dataset_dir_finishes_good_cases_and_lists_bad_ones(tmp_path):
    data, output = tmp_path / "data", tmp_path / "out"
    shutil.copytree(SAMPLE / "mr_series", data / "shuffled_series")
    for path in sorted((data / "shuffled_series").iterdir()):  # file names no longer follow the slice order
        path.rename(path.with_name(hashlib.md5(path.name.encode()).hexdigest() + ".dcm"))
    shutil.copy(SAMPLE / "mr_volume.nii.gz", data / "volume.nii.gz")
    shutil.copytree(SAMPLE / "mr_series", data / "two_series" / "t1")
    write_series(data / "two_series" / "localizer", marker_volume((128, 128, 3)), description="LOCALIZER")
    write_lesion_free_slices(data / "slices", first_index=1, n=1)
    shutil.move(data / "slices" / "images" / "1.png", data / "slice.png")
    shutil.rmtree(data / "slices")
    write_radiograph(data / "chest.dcm", np.full((64, 48), 900, np.uint16))
    truncated = data / "broken.dcm"
    shutil.copy(SAMPLE / "mr_series" / "IM0000.dcm", truncated)
    truncated.write_bytes(truncated.read_bytes()[:5000])
    (data / "empty").mkdir()
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 4, 2), np.float32), np.eye(4)), data / "dwi.nii.gz")
    Image.fromarray(np.zeros((32, 24, 3), np.uint8)).save(data / "colour.png")
    write_structured_report(data / "report" / "sr.dcm")

    overrides = {
        "bundle_root": str(BUNDLES_DIR / BRAIN),
        "dataset_dir": str(data),
        "output_dir": str(output),
        "summary_dir": str(output),
    }
    run_cli(cli_args(BRAIN, ["inference.json", "demo.json"], overrides), cwd=tmp_path).check()
    rows = summary_rows(output)
    ok = {name for name, row in rows.items() if row["status"] == "ok"}
    assert ok == {"shuffled_series", "volume", "two_series", "slice"}
    expected_failures = {
        "chest": "modality CR is not one of ['MR']",
        "broken": "truncated",
        "empty": "empty folder",
        "dwi": "4D NIfTI",
        "colour": "wrong number of channels: 3, the bundle expects 1",
        "report": "no image series",
    }
    assert set(rows) - ok == set(expected_failures)
    for name, reason in expected_failures.items():
        assert rows[name]["message"].startswith(f"{rows[name]['input']}: ") and reason in rows[name]["message"]
        assert not list(output.glob(f"{name}_*"))
    with Image.open(output / f"slice{PNG_MASK}") as mask:
        assert mask.size == (128, 128)
    series_mask = np.asarray(nib.load(output / f"shuffled_series{NIFTI_MASK}").dataobj)
    np.testing.assert_array_equal(series_mask, np.asarray(nib.load(output / f"two_series{NIFTI_MASK}").dataobj))
    np.testing.assert_array_equal(series_mask, np.asarray(nib.load(output / f"volume{NIFTI_MASK}").dataobj))
    assert no_temporary_files(output)


# --- every bundle, in-process -----------------------------------------------------------------------------------

CHANNELS = {
    "brain_tumor_mri_gsconv_eca_unet": 1,
    "lgg_mri_cbam_unet": 3,
    "chest_xray_lung_ag_min_aspp_unet": 1,
    "isic2018_skin_sc_unext": 3,
    "lgg_mri_attention_res_unet": 3,
}


def bundle_inputs(bundle: str, folder: Path) -> tuple[dict[str, str], dict[str, str]]:
    """Write one input of each kind ``bundle`` must take and of one it must refuse.

    Returns ``{case: mask suffix}`` for the good cases and ``{case: reason}`` for the refused ones.
    """
    rng = np.random.default_rng(0)
    channels = CHANNELS[bundle]
    good, bad = {}, {}
    if channels == 1:
        Image.fromarray(rng.integers(0, 255, (40, 56), dtype=np.uint8)).save(folder / "image.png")
        volume = rng.uniform(0, 100, (36, 28, 3)).astype(np.float32)
        good.update({"image": PNG_MASK, "volume": NIFTI_MASK})
    else:
        Image.fromarray(rng.integers(0, 255, (40, 56, 3), dtype=np.uint8)).save(folder / "photo.jpg")
        tifffile.imwrite(folder / "slice.tif", rng.integers(0, 255, (48, 40, 3), dtype=np.uint8), photometric="rgb")
        volume = rng.uniform(0, 100, (36, 28, 3, 3)).astype(np.float32)
        good.update({"photo": PNG_MASK, "slice": PNG_MASK, "volume": NIFTI_MASK})
    nib.save(nib.Nifti1Image(volume, np.diag([0.8, 1.2, 3.0, 1.0])), folder / "volume.nii.gz")
    series = rng.integers(0, 1000, (32, 24, 4)).astype(np.int16)
    write_series(folder / "series", series, spacing=(0.8, 1.2, 3.0))
    if bundle == "chest_xray_lung_ag_min_aspp_unet":
        write_radiograph(folder / "chest.dcm", rng.integers(0, 4096, (60, 50)).astype(np.uint16), "MONOCHROME1")
        good["chest"] = NIFTI_MASK
        bad["series"] = "rules (modality in ['CR', 'DX']): no series matches. Found: series 1 MR"
    elif channels == 1:
        good["series"] = NIFTI_MASK
    else:
        bad["series"] = f"wrong number of channels: 1, the bundle expects {channels}"
    return good, bad


@pytest.mark.parametrize("bundle", BUNDLES)
def test_every_bundle_segments_the_input_kinds_it_takes(bundle, tmp_path):
    data, output, root = tmp_path / "data", tmp_path / "out", tmp_path / "bundle_root"
    data.mkdir()
    good, bad = bundle_inputs(bundle, data)
    configs = BUNDLES_DIR / bundle / "configs"
    parser = ConfigParser()
    parser.read_config(configs / "inference.json")
    parser.update(TINY_OVERRIDES[bundle])
    torch.manual_seed(0)
    (root / "models").mkdir(parents=True)
    torch.save(parser.get_parsed_content("network_def").state_dict(), root / "models" / "model.pt")

    infer_in_process(bundle, root, data, output)

    rows = summary_rows(output)
    assert {name: row["status"] for name, row in rows.items()} == {
        **{name: "ok" for name in good},
        **{name: "failed" for name in bad},
    }
    for name, reason in bad.items():
        assert reason in rows[name]["message"], rows[name]["message"]
    for name, suffix in good.items():
        outputs = rows[name]["outputs"]
        assert outputs[0] == str(output / f"{name}{suffix}")
        assert any("_overlay" in p for p in outputs)
        source = next(p for p in data.iterdir() if p.name.split(".")[0] == name)
        image = LoadClinicalImage(expected_channels=CHANNELS[bundle])(source)
        if suffix == PNG_MASK:
            with Image.open(output / f"{name}{suffix}") as mask, Image.open(source) as picture:
                assert mask.size == picture.size and set(np.unique(np.asarray(mask))) <= {0, 255}
            continue
        mask = nib.load(output / f"{name}{suffix}")
        assert mask.shape == tuple(image.shape[1:])
        np.testing.assert_allclose(mask.affine, image.affine.numpy(), atol=1e-4)
        is_dicom = source.is_dir() or source.suffix == ".dcm"
        assert (str(output / f"{name}{SEG}") in outputs) == is_dicom
        if is_dicom:
            _, frames = seg_pixels(output / f"{name}{SEG}", [Path(p) for p in image.meta["dicom_source_files"]])
            labels = np.asarray(mask.dataobj)
            expected = np.transpose(labels, (2, 1, 0)) if labels.ndim == 3 else labels.T[None]
            np.testing.assert_array_equal(frames, expected)
    assert no_temporary_files(output)


def test_inference_configs_keep_their_ids_and_clinical_switches():
    for bundle in BUNDLES:
        parser = ConfigParser()
        parser.read_config(BUNDLES_DIR / bundle / "configs" / "inference.json")
        for key in (
            "slice_axis",
            "series_modalities",
            "series_description",
            "series_prefer_most_slices",
            "save_overlays",
            "overlay_min_slices",
            "demo_weights",
            "bundle_name",
            # the named ids the bundle runtime and MONAI Label build on (custom_networks.runtime)
            "model_file",
            "weights_sha256",
            "checkpoint_loader",
            "stats_handler",
            "label_transforms",
            "seg_writer",
            "sr_writer",
            "file_writers",
            "save_secondary_capture",
        ):
            assert key in parser, f"{bundle}: {key}"
        assert parser["bundle_name"] == bundle
        assert not is_on(parser["save_overlays"]) and not is_on(parser["demo_weights"])
        onnx = ConfigParser()  # the run summary hashes the weights the network runs
        onnx.read_config([str(BUNDLES_DIR / bundle / "configs" / name) for name in ONNX_CONFIGS])
        onnx.update({"bundle_root": "/bundle"})
        # the int8 file this CPU computes exactly (int8 weights with VNNI, uint8 weights on other x86 CPUs)
        assert onnx.get_parsed_content("recorder#weights") == int8_model_for_this_cpu("/bundle/models")
        assert parser["recorder"]["weights"] == "@model_file" and parser["model_file"] == "@ckpt_path"


def test_demo_config_loads_the_shipped_weights():
    configs = BUNDLES_DIR / BRAIN / "configs"
    parser = ConfigParser()
    parser.read_config([str(configs / "inference.json"), str(configs / "demo.json")])
    parser.update({"bundle_root": str(BUNDLES_DIR / BRAIN)})
    weights = Path(parser.get_parsed_content("ckpt_path"))
    assert weights.name == "demo_model.pt" and weights.stat().st_size < 5e6
    network = parser.get_parsed_content("network_def")
    network.load_state_dict(torch.load(weights, weights_only=True))
    assert is_on(parser["demo_weights"])


# --- the pieces -------------------------------------------------------------------------------------------------


def test_shipped_sample_study_is_what_the_generator_writes(tmp_path):
    written = write_sample_study(tmp_path)
    shipped = sorted(p.relative_to(SAMPLE) for p in SAMPLE.rglob("*") if p.is_file())
    assert shipped == sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    for relative in shipped:
        assert (SAMPLE / relative).read_bytes() == (tmp_path / relative).read_bytes(), relative
    assert sum((SAMPLE / p).stat().st_size for p in shipped) < 5e6

    study = make_sample_study()
    series, volume = LoadClinicalImage()(written["dicom"]), LoadClinicalImage()(written["nifti"])
    np.testing.assert_array_equal(series[0].numpy(), study.image)
    np.testing.assert_array_equal(volume[0].numpy(), study.image)
    np.testing.assert_allclose(series.affine.numpy(), study.ras_affine, atol=1e-4)
    np.testing.assert_allclose(volume.affine.numpy(), study.ras_affine, atol=1e-4)
    assert np.allclose(np.abs(np.diag(study.lps_affine)[:3]), (0.9, 0.9, 5.0))
    lesion_slices = np.flatnonzero(study.lesion.sum(axis=(0, 1)))
    assert 6 <= len(lesion_slices) <= 14 and 0 < lesion_slices[0] and lesion_slices[-1] < SAMPLE_SHAPE[2] - 1
    assert study.image[study.lesion].mean() > 1.5 * study.image[~study.lesion & (study.image > 300)].mean()
    assert lesion_dice(study.lesion) == 1.0 and lesion_dice(np.zeros(SAMPLE_SHAPE)) == 0.0


def test_lesion_free_slices_are_healthy_heads_in_the_kaggle_layout(tmp_path):
    pairs = write_lesion_free_slices(tmp_path, first_index=7, n=5, seed=3)
    assert [p["image"].name for p in pairs] == [f"{k}.png" for k in range(7, 12)]
    for pair in pairs:
        image, mask = np.asarray(Image.open(pair["image"])), np.asarray(Image.open(pair["label"]))
        assert image.shape == mask.shape == (128, 128) and image.dtype == np.uint8
        assert not mask.any() and image.max() > 150
    assert not make_sample_study(seed=5, with_lesion=False).lesion.any()


def test_mask_writer_picks_png_for_image_files_and_nifti_otherwise(tmp_path):
    Image.fromarray(np.zeros((4, 6), np.uint8)).save(tmp_path / "photo.jpg")
    write_radiograph(tmp_path / "cr.dcm", np.zeros((4, 6), np.uint16), pixel_spacing=(0.2, 0.15))
    writer = SaveClinicalMaskd("pred", tmp_path / "out")
    written = []
    for name in ("photo.jpg", "cr.dcm"):
        image = LoadClinicalImage()(tmp_path / name)
        label = image.clone()
        label[:] = 0
        label[0, 1:3, 2] = 1
        written.append(writer({"pred": label})["pred"].meta["clinical_outputs"])
    assert written == [[str(tmp_path / "out" / "photo_seg.png")], [str(tmp_path / "out" / "cr_seg.nii.gz")]]
    png = np.asarray(Image.open(tmp_path / "out" / "photo_seg.png"))
    assert png.shape == (4, 6) and png[2, 1] == 255 and png.sum() == 2 * 255
    nifti = nib.load(tmp_path / "out" / "cr_seg.nii.gz")
    assert nifti.shape == (6, 4) and np.asarray(nifti.dataobj)[1:3, 2].all() and np.asarray(nifti.dataobj).sum() == 2
    np.testing.assert_allclose(nifti.affine, np.diag([0.15, 0.2, 1.0, 1.0]))
    assert no_temporary_files(tmp_path)
    with pytest.raises(TypeError, match="MetaTensor"):
        writer({"pred": torch.zeros(1, 6, 4)})


def test_slice_wise_inferer_runs_large_slices_through_an_inner_window_inferer():
    volume = torch.arange(2 * 40 * 24 * 3, dtype=torch.float32).reshape(1, 2, 40, 24, 3)
    shapes = []

    def network(x: torch.Tensor) -> torch.Tensor:
        shapes.append(tuple(x.shape))
        return x[:, :1] * 2

    window = SlidingWindowInferer(roi_size=(16, 16), sw_batch_size=64, overlap=0.25, mode="constant")
    out = SliceWiseInferer(spatial_dim=2, sw_batch_size=3, inferer=window)(volume, network)
    torch.testing.assert_close(out, volume[:, :1] * 2)
    assert {shape[2:] for shape in shapes} == {(16, 16)}


def test_loader_takes_tiff_multichannel_nifti_and_a_lone_radiograph_in_a_folder(tmp_path):
    tifffile.imwrite(tmp_path / "rgb.tif", np.zeros((12, 10, 3), np.uint8), photometric="rgb")
    assert LoadClinicalImage(expected_channels=3)(tmp_path / "rgb.tif").shape == (3, 10, 12)

    contrasts = tmp_path / "contrasts.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 6, 4, 3), np.float32), np.diag([0.8, 1.2, 3.0, 1.0])), contrasts)
    assert LoadClinicalImage(expected_channels=3)(contrasts).shape == (3, 8, 6, 4)
    with pytest.raises(CaseError, match=r"4D NIfTI \(shape \(8, 6, 4, 3\)\): give one 2D or 3D image per file$"):
        LoadClinicalImage(expected_channels=1)(contrasts)
    with pytest.raises(CaseError, match=r"\(or 2 channels in the 4th dimension\)"):
        LoadClinicalImage(expected_channels=2)(contrasts)

    pixels = np.arange(20 * 16, dtype=np.uint16).reshape(20, 16)
    alone = write_radiograph(tmp_path / "cr_folder" / "IM1", pixels, "MONOCHROME1", bits_stored=12)
    image = LoadClinicalImage(modalities=("CR",))(tmp_path / "cr_folder")
    assert image.meta["clinical_input_kind"] == "dicom_radiograph"
    assert image.meta["dicom_source_files"] == [str(alone)]
    assert image.meta["filename_or_obj"] == str(tmp_path / "cr_folder")
    np.testing.assert_array_equal(image[0].numpy(), 4095.0 - pixels.T)
    with pytest.raises(CaseError, match=rf"^{alone}: modality CR is not one of \['MR'\]$"):
        LoadClinicalImage(modalities=("MR",))(alone)


def test_config_helpers(tmp_path):
    assert [is_on(v) for v in (True, "true", "True", "1", "yes", False, "false", "0", "", None)] == [True] * 5 + [
        False
    ] * 5
    with pytest.raises(ValueError, match="switch: 'maybe' is not a switch value"):
        is_on("maybe")
    (tmp_path / "configs").mkdir()
    meta = {"version": "1.2.3", "network_data_format": {"outputs": {"pred": {"channel_def": {"0": "bg", "1": "x"}}}}}
    (tmp_path / "configs" / "metadata.json").write_text(json.dumps(meta))
    assert bundle_metadata({}, tmp_path) == meta
    assert bundle_metadata({"version": "9"}, "/nowhere") == {"version": "9"}
    assert segment_labels(meta) == {"0": "bg", "1": "x"}
    with pytest.raises(KeyError, match="outputs.pred of the bundle metadata has no dicom_segments"):
        segment_codes(meta)
    lesion = {
        "category": {"scheme": "SCT", "value": "49755003", "meaning": "Morphologically abnormal structure"},
        "type": {"scheme": "SCT", "value": "52988006", "meaning": "Lesion"},
    }
    meta["network_data_format"]["outputs"]["pred"]["dicom_segments"] = {"1": {**lesion, "color_rgb": [1, 2, 3]}}
    assert segment_codes(meta) == {"1": {**lesion, "color_rgb": [1, 2, 3]}}
    assert segment_colours(meta) == {"1": [1, 2, 3]}
    with pytest.raises(FileNotFoundError, match="bundle metadata not found"):
        bundle_metadata({}, tmp_path / "nowhere")

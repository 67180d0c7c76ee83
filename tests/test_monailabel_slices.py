"""Labels saved on 3D volumes as 2D training samples (``monailabel_app.slices``), without a server: the samples a
bundle's ``train.json`` reads from the slice files are the slices its inference gives the network."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.bundle import ConfigParser
from monai.transforms import Compose

from monailabel_app.slices import slice_training_pairs

from conftest import BUNDLES_DIR

BRAIN = "brain_tumor_mri_gsconv_eca_unet"
CHEST = "chest_xray_lung_ag_min_aspp_unet"
AFFINE = np.diag([0.8, 1.2, 3.0, 1.0])


def bundle_parts(bundle: str) -> tuple:
    """The bundle's inference preprocessing of a path, its slice axis, its per-slice preprocessing, and the
    deterministic training transforms of ``train.json``."""
    inference = ConfigParser()
    inference.read_config(BUNDLES_DIR / bundle / "configs" / "inference.json")
    train = ConfigParser()
    train.read_config(BUNDLES_DIR / bundle / "configs" / "train.json")
    preprocessing = inference.get_parsed_content("preprocessing")
    return ((lambda path: preprocessing({"image": path})["image"]), inference.get_parsed_content("slice_axis"),
            inference.get_parsed_content("slice_preprocessing"),
            Compose(train.get_parsed_content("train#deterministic_transforms")))


def slice_index(path: str) -> int:
    """``.../mr_slice0003.nii.gz`` -> 3."""
    return int(Path(path).name.split("_slice")[1][:4])


def write_case(folder, name: str, shape=(40, 36, 10), labelled=(3, 4, 5), label_shape=None, label_affine=AFFINE):
    rng = np.random.default_rng(0)
    image = folder / f"{name}.nii.gz"
    nib.save(nib.Nifti1Image(rng.uniform(0, 300, shape).astype(np.float32), AFFINE), image)
    mask = np.zeros(label_shape or shape, np.uint8)
    for index in labelled:
        mask[10:20, 8:16, index] = 1
    label = folder / f"{name}_label.nii.gz"
    nib.save(nib.Nifti1Image(mask, label_affine), label)
    return {"image": str(image), "label": str(label)}


def test_a_3d_label_gives_its_labelled_slices_and_a_share_of_empty_ones(tmp_path):
    load, axis, _, _ = bundle_parts(BRAIN)
    case = write_case(tmp_path, "mr")
    sliced = slice_training_pairs([case], load, axis, tmp_path / "slices")
    assert sliced.left_out == []
    indices = [slice_index(p["image"]) for p in sliced.pairs]
    # the three labelled slices and ceil(0.5 * 3) = 2 of the seven empty ones
    assert set(indices) >= {3, 4, 5} and len(indices) == 5
    volume = nib.load(case["image"]).get_fdata()
    mask = np.asarray(nib.load(case["label"]).dataobj)
    for index, pair in zip(indices, sliced.pairs, strict=True):
        np.testing.assert_allclose(nib.load(pair["image"]).get_fdata(), volume[..., index], rtol=1e-6)
        np.testing.assert_array_equal(np.asarray(nib.load(pair["label"]).dataobj), mask[..., index])
    # the same pairs again for the same label (the empty slices are drawn reproducibly)
    again = slice_training_pairs([case], load, axis, tmp_path / "again")
    assert [Path(p["image"]).name for p in again.pairs] == [Path(p["image"]).name for p in sliced.pairs]


def test_training_reads_a_slice_as_inference_prepares_it(tmp_path):
    """``train.json``'s deterministic transforms on a slice file == inference's ``slice_preprocessing`` of the
    same slice of the loaded volume (HistogramNormalize for the brain bundle; plus in-plane resizing for the chest
    X-ray bundle)."""
    for bundle in (BRAIN, CHEST):
        load, axis, slice_preprocessing, train_transforms = bundle_parts(bundle)
        case = write_case(tmp_path, bundle)
        pair = slice_training_pairs([case], load, axis, tmp_path / bundle).pairs[0]
        index = slice_index(pair["image"])
        trained_on = train_transforms(dict(pair))["image"]
        inferred_on = slice_preprocessing(load(case["image"])[..., index])
        assert trained_on.shape == inferred_on.shape
        torch.testing.assert_close(torch.as_tensor(trained_on), torch.as_tensor(inferred_on), atol=1e-5, rtol=1e-5)


def test_a_label_of_another_shape_or_grid_is_left_out_with_its_reason(tmp_path):
    load, axis, _, _ = bundle_parts(BRAIN)
    good = write_case(tmp_path, "good")
    other_shape = write_case(tmp_path, "shape", label_shape=(20, 36, 10))
    other_grid = write_case(tmp_path, "grid", label_affine=np.diag([1.6, 1.2, 3.0, 1.0]))
    sliced = slice_training_pairs([other_shape, good, other_grid], load, axis, tmp_path / "slices")
    assert sliced.left_out == [
        f"{other_shape['label']}: label shape (20, 36, 10) differs from its image's (40, 36, 10)",
        f"{other_grid['label']}: label geometry (affine) differs from its image's; it was drawn on another grid or "
        "series",
    ]
    assert {Path(p["image"]).name.split("_slice")[0] for p in sliced.pairs} == {"good"}


def test_2d_pairs_pass_and_a_2d_label_of_another_size_is_left_out(tmp_path):
    from PIL import Image

    load, axis, _, _ = bundle_parts(BRAIN)
    Image.fromarray(np.zeros((30, 20), np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.zeros((30, 20), np.uint8)).save(tmp_path / "a_label.png")
    Image.fromarray(np.zeros((10, 20), np.uint8)).save(tmp_path / "b_label.png")
    pairs = [{"image": str(tmp_path / "a.png"), "label": str(tmp_path / "a_label.png")},
             {"image": str(tmp_path / "a.png"), "label": str(tmp_path / "b_label.png")}]
    sliced = slice_training_pairs(pairs, load, axis, tmp_path / "slices")
    assert sliced.pairs == pairs[:1]
    assert sliced.left_out == [f"{tmp_path / 'b_label.png'}: label size (20, 10) differs from its image's (20, 30)"]

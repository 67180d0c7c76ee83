from __future__ import annotations

import json
import re
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import tifffile
from monai.data import load_decathlon_datalist
from PIL import Image

from custom_networks.data.datalist import (
    build_datalist,
    detect_layout,
    find_pairs,
    kfold,
    split_pairs,
    write_datalist,
)
from custom_networks.data.demo import (
    write_brain_tumor_png,
    write_demo_dataset,
    write_isic2018,
    write_lgg_tif,
    write_montgomery_cxr,
    write_shenzhen_cxr,
)

REPO = Path(__file__).resolve().parents[1]
LGG_CASE = re.compile(r"TCGA_[A-Z]{2}_\d{4}_\d{8}")


@pytest.fixture(scope="module")
def datasets(tmp_path_factory) -> dict[str, Path]:
    """One small demo dataset per layout, written once for the module."""
    base = tmp_path_factory.mktemp("demo")
    write_brain_tumor_png(base / "brain_tumor", n_cases=20, size=96)
    write_lgg_tif(base / "lgg", n_patients=5, slices_per_patient=6)
    write_montgomery_cxr(base / "montgomery", n=10, size=128)
    write_shenzhen_cxr(base / "shenzhen", n=10, size=128)
    write_isic2018(base / "isic2018", n=12)
    return {name: base / name for name in ("brain_tumor", "lgg", "montgomery", "shenzhen", "isic2018")}


def names(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


def read_mask(path: Path) -> np.ndarray:
    return tifffile.imread(path) if path.suffix == ".tif" else np.asarray(Image.open(path))


def assert_binary_mask(mask: np.ndarray, shape: tuple[int, int], allow_empty: bool = False) -> None:
    assert mask.shape == shape and mask.dtype == np.uint8
    assert set(np.unique(mask)) <= {0, 255}
    if not allow_empty:
        assert 0.05 <= (mask > 0).mean() <= 0.25


def test_brain_tumor_layout(datasets):
    root = datasets["brain_tumor"]
    assert names(root) == {"images", "masks"}
    expected = {f"{i}.png" for i in range(1, 21)}
    assert names(root / "images") == expected and names(root / "masks") == expected
    for name in ("1.png", "20.png"):
        image = Image.open(root / "images" / name)
        assert image.mode == "L" and image.size == (96, 96)
        assert_binary_mask(read_mask(root / "masks" / name), (96, 96))


def test_brain_tumor_default_size(tmp_path):
    pairs = write_brain_tumor_png(tmp_path, n_cases=1)
    assert Image.open(pairs[0]["image"]).size == (512, 512)
    assert_binary_mask(read_mask(pairs[0]["label"]), (512, 512))


def test_lgg_layout(datasets):
    base = datasets["lgg"] / "kaggle_3m"
    assert names(datasets["lgg"]) == {"kaggle_3m"}
    cases = sorted(names(base))
    assert len(cases) == 5 and all(LGG_CASE.fullmatch(case) for case in cases)
    for case in cases:
        expected = {f"{case}_{k}.tif" for k in range(1, 7)} | {f"{case}_{k}_mask.tif" for k in range(1, 7)}
        assert names(base / case) == expected
        fractions = []
        for k in range(1, 7):
            image = tifffile.imread(base / case / f"{case}_{k}.tif")
            mask = read_mask(base / case / f"{case}_{k}_mask.tif")
            assert image.shape == (256, 256, 3) and image.dtype == np.uint8
            assert_binary_mask(mask, (256, 256), allow_empty=True)
            fractions.append((mask > 0).mean())
            if mask.any():
                lesion = image[mask > 0].mean(axis=0)
                brain = image[(mask == 0) & (image[..., 0] > 60)].mean(axis=0)
                # FLAIR (channel 1) shows the lesion bright, pre-contrast (channel 0) darker than the brain
                assert lesion[1] > brain[1] + 25 and lesion[0] < brain[0]
        assert min(fractions) == 0 and max(fractions) >= 0.05


def test_montgomery_layout(datasets):
    root = datasets["montgomery"]
    ids = sorted(p.stem for p in (root / "CXR_png").iterdir())
    assert len(ids) == 10 and all(re.fullmatch(r"MCUCXR_\d{4}_[01]", i) for i in ids)
    assert names(root / "ManualMask") == {"leftMask", "rightMask"}
    for side in ("leftMask", "rightMask"):
        assert names(root / "ManualMask" / side) == {f"{i}.png" for i in ids}
    image = Image.open(root / "CXR_png" / f"{ids[0]}.png")
    assert image.mode == "L" and image.size == (128, 128)
    left = read_mask(root / "ManualMask" / "leftMask" / f"{ids[0]}.png")
    right = read_mask(root / "ManualMask" / "rightMask" / f"{ids[0]}.png")
    assert_binary_mask(np.maximum(left, right), (128, 128))
    # the patient's left lung is on the image's right
    assert np.nonzero(left)[1].mean() > 64 > np.nonzero(right)[1].mean()


def test_shenzhen_layout(datasets):
    root = datasets["shenzhen"]
    ids = sorted(p.stem for p in (root / "CXR_png").iterdir())
    assert len(ids) == 10 and all(re.fullmatch(r"CHNCXR_\d{4}_[01]", i) for i in ids)
    assert names(root / "masks") == {f"{i}_mask.png" for i in ids}
    assert Image.open(root / "CXR_png" / f"{ids[-1]}.png").mode == "L"
    assert_binary_mask(read_mask(root / "masks" / f"{ids[-1]}_mask.png"), (128, 128))


def test_isic2018_layout(datasets):
    root = datasets["isic2018"]
    images = sorted((root / "ISIC2018_Task1-2_Training_Input").iterdir())
    assert names(root) == {"ISIC2018_Task1-2_Training_Input", "ISIC2018_Task1_Training_GroundTruth"}
    assert len(images) == 12 and all(re.fullmatch(r"ISIC_\d{7}\.jpg", p.name) for p in images)
    sizes = set()
    for path in images:
        mask_path = root / "ISIC2018_Task1_Training_GroundTruth" / f"{path.stem}_segmentation.png"
        image = Image.open(path)
        assert image.mode == "RGB"
        assert_binary_mask(read_mask(mask_path), image.size[::-1])
        sizes.add(image.size)
    assert len(sizes) > 1


def test_demo_is_deterministic(tmp_path):
    first = write_demo_dataset("shenzhen", tmp_path / "a", n=2, seed=3)
    second = write_demo_dataset("shenzhen", tmp_path / "b", n=2, seed=3)
    other = write_demo_dataset("shenzhen", tmp_path / "c", n=2, seed=4)
    for a, b, c in zip(first, second, other, strict=True):
        assert a["image"].read_bytes() == b["image"].read_bytes() and a["label"].read_bytes() == b["label"].read_bytes()
        assert a["image"].read_bytes() != c["image"].read_bytes()


def test_write_demo_dataset_counts_and_unknown_task(tmp_path):
    write_demo_dataset("lgg", tmp_path / "lgg", n=2)
    assert len(names(tmp_path / "lgg" / "kaggle_3m")) == 2
    with pytest.raises(ValueError, match="unknown demo task"):
        write_demo_dataset("knee", tmp_path / "knee")


def stem_of(path: str) -> str:
    return Path(path).name.split(".")[0]


def assert_own_mask(item: dict) -> None:
    """The label belongs to the image: same stem, or the image stem plus a known mask suffix."""
    labels = item["label"] if isinstance(item["label"], list) else [item["label"]]
    for label in labels:
        assert re.sub(r"_(mask|segmentation)$", "", stem_of(label)) == stem_of(item["image"])


@pytest.mark.parametrize(
    "task, layout",
    [
        ("brain_tumor", "images_masks"),
        ("lgg", "lgg"),
        ("montgomery", "montgomery"),
        ("shenzhen", "shenzhen"),
        ("isic2018", "isic2018"),
    ],
)
def test_datalist_pairs_and_splits(datasets, task, layout):
    root = datasets[task]
    assert detect_layout(root) == layout
    datalist = build_datalist(root, val_fraction=0.2, test_fraction=0.2, seed=0)
    assert datalist["layout"] == layout and datalist["unpaired"] == {"images": [], "labels": []}
    splits = [datalist[key] for key in ("training", "validation", "testing")]
    assert all(splits)
    images = [item["image"] for split in splits for item in split]
    all_images = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()} - {
        label for split in splits for item in split for label in np.atleast_1d(item["label"])
    }
    assert len(images) == len(set(images)) and set(images) == all_images
    for split in splits:
        for item in split:
            assert_own_mask(item)
            assert all((root / label).is_file() for label in np.atleast_1d(item["label"]))
    if task == "montgomery":
        left, right = splits[0][0]["label"]
        assert left.startswith("ManualMask/leftMask/") and right.startswith("ManualMask/rightMask/")


def cases(items: list[dict]) -> set[str]:
    return {item["image"].split("/")[1] for item in items}


def test_lgg_split_by_patient(datasets):
    datalist = build_datalist(datasets["lgg"], val_fraction=0.2, test_fraction=0.2, seed=1)
    training, validation, testing = (cases(datalist[key]) for key in ("training", "validation", "testing"))
    assert len(training) == 3 and len(validation) == 1 and len(testing) == 1
    assert not (training & validation or training & testing or validation & testing)
    assert len(datalist["validation"]) == 6
    folded = build_datalist(datasets["lgg"], num_folds=5, seed=1)
    for fold in range(5):
        members = [item for item in folded["training"] if item["fold"] == fold]
        others = [item for item in folded["training"] if item["fold"] != fold]
        assert len(cases(members)) == 1 and not cases(members) & cases(others)


def test_split_depends_on_seed_only(datasets):
    root = datasets["brain_tumor"]
    first, again, other = (build_datalist(root, seed=seed) for seed in (0, 0, 1))
    assert first == again
    assert first["validation"] != other["validation"]


def test_kfold_partitions(datasets):
    root = datasets["isic2018"]
    datalist = build_datalist(root, num_folds=4, seed=0)
    assert "validation" not in datalist and datalist["num_folds"] == 4 and datalist["testing"] == []
    folds = [[item["image"] for item in datalist["training"] if item["fold"] == k] for k in range(4)]
    assert sorted(len(fold) for fold in folds) == [3, 3, 3, 3]
    assert sorted(sum(folds, [])) == sorted(item["image"] for item in find_pairs(root)[0])


def test_split_helpers_keep_groups_together():
    pairs = [{"image": f"p{i // 3}/s{i}.png", "label": f"p{i // 3}/s{i}_mask.png"} for i in range(30)]
    groups = [item["image"].split("/")[0] for item in pairs]
    training, validation, testing = split_pairs(pairs, 0.3, 0.1, seed=2, groups=groups)
    assert (len(training), len(validation), len(testing)) == (18, 9, 3)
    assert not {g["image"][:2] for g in training} & {g["image"][:2] for g in validation + testing}
    folds = kfold(pairs, 3, seed=0, groups=groups)
    assert sorted(item["image"] for fold in folds for item in fold) == sorted(item["image"] for item in pairs)
    assert sorted(len(fold) for fold in folds) == [9, 9, 12]
    with pytest.raises(ValueError, match="too few"):
        split_pairs(pairs[:3], 0.2, 0.0, groups=groups[:3])
    with pytest.raises(ValueError, match="num_folds"):
        kfold(pairs, 11, groups=groups)


def test_unpaired_images_and_masks_are_reported(datasets, tmp_path):
    root = tmp_path / "brain"
    shutil.copytree(datasets["brain_tumor"], root)
    (root / "masks" / "3.png").unlink()
    shutil.copy(root / "masks" / "4.png", root / "masks" / "99.png")
    with pytest.warns(UserWarning, match="1 images without a mask and 1 masks without an image"):
        datalist = build_datalist(root, val_fraction=0.2)
    assert datalist["unpaired"] == {"images": ["images/3.png"], "labels": ["masks/99.png"]}
    items = datalist["training"] + datalist["validation"]
    assert len(items) == 19 and all(item["image"] != "images/3.png" for item in items)
    for item in items:
        assert_own_mask(item)
    written = json.loads(write_datalist(datalist, tmp_path / "out" / "datalist.json").read_text())
    assert written["unpaired"] == datalist["unpaired"]


def test_montgomery_missing_right_mask_is_reported(datasets, tmp_path):
    root = tmp_path / "montgomery"
    shutil.copytree(datasets["montgomery"], root)
    victim = sorted((root / "ManualMask" / "rightMask").iterdir())[4]
    victim.unlink()
    with pytest.warns(UserWarning):
        pairs, unpaired = find_pairs(root)
    assert len(pairs) == 9
    assert unpaired == {"images": [f"CXR_png/{victim.name}"], "labels": [f"ManualMask/leftMask/{victim.name}"]}


def test_nifti_images_and_masks_pair_by_stem(tmp_path):
    volume = nib.Nifti1Image(np.zeros((4, 4, 3), np.float32), np.eye(4))
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    for name in ("case2.nii", "case10.nii.gz", "case1.nii.gz"):
        nib.save(volume, tmp_path / "images" / name)
    for name in ("case1_seg.nii.gz", "case10_mask.nii.gz", "case2.nii"):
        nib.save(volume, tmp_path / "masks" / name)
    pairs, unpaired = find_pairs(tmp_path)
    assert pairs == [
        {"image": "images/case1.nii.gz", "label": "masks/case1_seg.nii.gz"},
        {"image": "images/case2.nii", "label": "masks/case2.nii"},
        {"image": "images/case10.nii.gz", "label": "masks/case10_mask.nii.gz"},
    ]
    assert unpaired == {"images": [], "labels": []}


def test_clear_errors_name_the_folder(datasets, tmp_path):
    missing = tmp_path / "missing"
    with pytest.raises(FileNotFoundError, match=f"{missing}.*does not exist"):
        build_datalist(missing)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match=f"{empty} is empty"):
        build_datalist(empty)
    (empty / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match=f"no known dataset layout in {empty}"):
        detect_layout(empty)
    with pytest.raises(FileNotFoundError, match="ManualMask"):
        find_pairs(datasets["shenzhen"], layout="montgomery")
    no_masks = tmp_path / "no_masks"
    shutil.copytree(datasets["brain_tumor"] / "images", no_masks / "images")
    (no_masks / "masks").mkdir()
    with pytest.warns(UserWarning), pytest.raises(ValueError, match=f"no image/mask pairs in {no_masks}"):
        build_datalist(no_masks)


def test_write_datalist_round_trip(datasets, tmp_path):
    root = datasets["lgg"]
    path = write_datalist(build_datalist(root, seed=0), tmp_path / "lists" / "lgg.json")
    assert sorted(p.name for p in path.parent.iterdir()) == ["lgg.json"]
    training = load_decathlon_datalist(path, data_list_key="training", base_dir=root)
    assert len(training) == 24 and all(Path(item["image"]).is_file() for item in training)


def start_script(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, *args], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def script_main(name: str):
    return runpy.run_path(str(REPO / "scripts" / name), run_name="script")["main"]


@pytest.mark.parametrize("name", ["make_demo_data.py", "make_datalist.py"])
def test_cli_help(name, capsys):
    with pytest.raises(SystemExit) as exit_info:
        script_main(name)(["--help"])
    assert exit_info.value.code == 0 and "usage" in capsys.readouterr().out


def test_cli_error_names_the_folder(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        script_main("make_datalist.py")([str(tmp_path / "nowhere")])
    assert exit_info.value.code == 2 and f"{tmp_path / 'nowhere'} does not exist" in capsys.readouterr().err


@pytest.mark.subprocess
def test_cli_scripts_in_subprocess(datasets, tmp_path):
    # both scripts at once: each process spends most of its time importing torch and monai
    output = tmp_path / "lgg_datalist.json"
    demo = start_script(
        "scripts/make_demo_data.py", "--task", "isic2018", "--output", str(tmp_path / "isic"), "--n", "5"
    )
    datalist = start_script(
        "scripts/make_datalist.py", str(datasets["lgg"]), "--output", str(output), "--folds", "5", "--seed", "0"
    )
    demo_out, demo_err = demo.communicate(timeout=300)
    datalist_out, datalist_err = datalist.communicate(timeout=300)
    assert demo.returncode == 0, demo_err
    assert "wrote 5 isic2018" in demo_out and len(list((tmp_path / "isic").rglob("ISIC_*"))) == 10
    assert datalist.returncode == 0, datalist_err
    assert str(output) in datalist_out
    written = json.loads(output.read_text())
    assert written == build_datalist(datasets["lgg"], num_folds=5, seed=0)
    assert sorted({item["fold"] for item in written["training"]}) == [0, 1, 2, 3, 4]

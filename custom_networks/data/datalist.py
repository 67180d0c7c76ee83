"""MONAI / Medical Segmentation Decathlon style JSON datalists built from the public dataset layouts.

A datalist holds paths relative to the dataset folder::

    {
        "layout": "lgg", "seed": 0,
        "training": [{"image": "kaggle_3m/<case>/<case>_1.tif", "label": "kaggle_3m/<case>/<case>_1_mask.tif"}],
        "validation": [...], "testing": [...],
        "unpaired": {"images": [...], "labels": [...]}
    }

With ``num_folds`` every training item carries ``"fold": k`` instead and there is no ``"validation"`` key.
The file is read with ``monai.data.load_decathlon_datalist(path, data_list_key="training", base_dir=root)``.

Layouts (``detect_layout`` picks one from the folder content):

- ``images_masks``: ``images/<stem>.<ext>`` + ``masks/<stem>[_mask|_segmentation|_seg|_label].<ext>``; also the
  Kaggle "brain-tumor-segmentation" layout (alias ``brain_tumor``).
- ``lgg``: ``kaggle_3m/<case>/<case>_<k>.tif`` + ``<case>_<k>_mask.tif``; split by patient (case folder).
- ``montgomery``: ``CXR_png/<id>.png`` + ``ManualMask/leftMask/<id>.png`` + ``ManualMask/rightMask/<id>.png``.
  The label is a LIST ``[left_mask, right_mask]``; the lung field is their union (the bundles take the maximum).
- ``shenzhen``: ``CXR_png/<id>.png`` + ``masks/<id>_mask.png`` (also Kaggle "chest-xray-masks-and-labels").
- ``isic2018``: ``ISIC2018_Task1-2_Training_Input/ISIC_<n>.jpg`` +
  ``ISIC2018_Task1_Training_GroundTruth/ISIC_<n>_segmentation.png``.

Images and masks are paired by rule: same stem, or the mask stem is the image stem plus a known suffix; never by
position. Images without a mask and masks without an image are returned, written under ``"unpaired"`` and
warned about.
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Sequence
from pathlib import Path

from monai.data import partition_dataset

from custom_networks.atomic_files import atomic_path

__all__ = [
    "LAYOUTS",
    "IMAGE_EXTENSIONS",
    "MASK_SUFFIXES",
    "detect_layout",
    "find_pairs",
    "patient_groups",
    "split_pairs",
    "kfold",
    "build_datalist",
    "write_datalist",
]

LAYOUTS = ("images_masks", "lgg", "montgomery", "shenzhen", "isic2018")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".nii", ".nii.gz")
MASK_SUFFIXES = ("_mask", "_segmentation", "_seg", "_label")

_LAYOUT_ALIASES = {"brain_tumor": "images_masks"}
_ISIC_IMAGES = "ISIC2018_Task1-2_Training_Input"
_ISIC_MASKS = "ISIC2018_Task1_Training_GroundTruth"
_LGG_FOLDER = "kaggle_3m"


def _natural_key(text: str) -> list:
    """Sort key that orders "2" before "10"."""
    return [int(part) if index % 2 else part.lower() for index, part in enumerate(re.split(r"(\d+)", text))]


def _stem(path: Path) -> str:
    name = path.name
    for extension in IMAGE_EXTENSIONS:
        if name.lower().endswith(extension):
            return name[: -len(extension)]
    return path.stem


def _is_image_file(path: Path) -> bool:
    return path.is_file() and not path.name.startswith(".") and path.name.lower().endswith(IMAGE_EXTENSIONS)


def _image_files(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if _is_image_file(p)), key=lambda p: _natural_key(p.name))


def _strip_mask_suffix(stem: str) -> str:
    for suffix in MASK_SUFFIXES:
        if stem.endswith(suffix):
            return stem[: -len(suffix)]
    return stem


def _check_folder(root: Path) -> None:
    if not root.exists():
        raise FileNotFoundError(f"dataset folder {root} does not exist")
    if not root.is_dir():
        raise NotADirectoryError(f"dataset path {root} is not a folder")
    if not any(root.iterdir()):
        raise ValueError(f"dataset folder {root} is empty")


def _require(folder: Path, layout: str) -> Path:
    if not folder.is_dir():
        raise FileNotFoundError(f"layout {layout!r} needs the folder {folder}, which does not exist")
    return folder


def _has_lgg_cases(folder: Path) -> bool:
    return any(d.is_dir() and any(d.glob("*_mask.tif*")) for d in folder.iterdir())


def _lgg_base(root: Path) -> Path:
    """The ``kaggle_3m`` folder: inside ``root`` or ``root`` itself when it holds the case folders."""
    if (root / _LGG_FOLDER).is_dir():
        return root / _LGG_FOLDER
    if _has_lgg_cases(root):
        return root
    raise FileNotFoundError(f"layout 'lgg' needs {root / _LGG_FOLDER} or case folders with *_mask.tif in {root}")


def detect_layout(root: str | Path) -> str:
    """Name of the dataset layout found in ``root``, one of ``LAYOUTS``.

    Raises:
        FileNotFoundError: ``root`` does not exist.
        ValueError: ``root`` is empty or matches no known layout.
    """
    root = Path(root)
    _check_folder(root)
    if (root / _ISIC_IMAGES).is_dir() and (root / _ISIC_MASKS).is_dir():
        return "isic2018"
    if (root / "CXR_png").is_dir() and (root / "ManualMask" / "leftMask").is_dir():
        return "montgomery"
    if (root / "CXR_png").is_dir() and (root / "masks").is_dir():
        return "shenzhen"
    if (root / _LGG_FOLDER).is_dir() or _has_lgg_cases(root):
        return "lgg"
    if (root / "images").is_dir() and (root / "masks").is_dir():
        return "images_masks"
    raise ValueError(
        f"no known dataset layout in {root}: expected images/+masks/, kaggle_3m/<case>/, CXR_png/+ManualMask/, "
        f"CXR_png/+masks/ or {_ISIC_IMAGES}/+{_ISIC_MASKS}/"
    )


def _pair_by_stem(images: list[Path], masks: list[Path], same_folder: bool) -> tuple[list, list[Path], list[Path]]:
    """Pair images with masks by stem (mask stem = image stem, or image stem + a known suffix).

    ``same_folder`` keys files by folder too (LGG keeps the image and its mask side by side). An image matched by
    several masks is ambiguous: it and those masks are all reported unpaired.
    """

    def folder_of(path: Path) -> Path | None:
        return path.parent if same_folder else None

    by_key: dict[tuple, list[Path]] = {}
    for image in images:
        by_key.setdefault((folder_of(image), _stem(image)), []).append(image)
    matched: dict[tuple, list[Path]] = {}
    unpaired_masks = []
    for mask in masks:
        stem = _stem(mask)
        key = (folder_of(mask), stem)
        if key not in by_key:
            key = (folder_of(mask), _strip_mask_suffix(stem))
        if key in by_key:
            matched.setdefault(key, []).append(mask)
        else:
            unpaired_masks.append(mask)
    pairs, unpaired_images = [], []
    for key, key_images in by_key.items():
        key_masks = matched.get(key, [])
        if len(key_images) == 1 and len(key_masks) == 1:
            pairs.append((key_images[0], key_masks[0]))
        else:
            unpaired_images.extend(key_images)
            unpaired_masks.extend(key_masks)
    return pairs, unpaired_images, unpaired_masks


def _layout_files(root: Path, layout: str) -> tuple[list, list[Path], list[Path]]:
    """(image, mask) pairs, unpaired images and unpaired masks of one layout; Montgomery masks are (left, right)."""
    if layout == "images_masks":
        images, masks = _image_files(_require(root / "images", layout)), _image_files(_require(root / "masks", layout))
        return _pair_by_stem(images, masks, same_folder=False)
    if layout == "shenzhen":
        images, masks = _image_files(_require(root / "CXR_png", layout)), _image_files(_require(root / "masks", layout))
        return _pair_by_stem(images, masks, same_folder=False)
    if layout == "isic2018":
        images = _image_files(_require(root / _ISIC_IMAGES, layout))
        return _pair_by_stem(images, _image_files(_require(root / _ISIC_MASKS, layout)), same_folder=False)
    if layout == "lgg":
        files = [f for case in sorted(_lgg_base(root).iterdir()) if case.is_dir() for f in _image_files(case)]
        masks = [f for f in files if _stem(f).endswith("_mask")]
        images = [f for f in files if not _stem(f).endswith("_mask")]
        return _pair_by_stem(images, masks, same_folder=True)
    if layout == "montgomery":
        images = _image_files(_require(root / "CXR_png", layout))
        left = _image_files(_require(root / "ManualMask" / "leftMask", layout))
        right = _image_files(_require(root / "ManualMask" / "rightMask", layout))
        left_pairs, unpaired_images, unpaired_masks = _pair_by_stem(images, left, same_folder=False)
        with_left = [image for image, _ in left_pairs]
        right_pairs, no_right, no_left_right = _pair_by_stem(with_left, right, same_folder=False)
        right_of = dict(right_pairs)
        pairs = [(image, (left_mask, right_of[image])) for image, left_mask in left_pairs if image in right_of]
        dropped_left = [left_mask for image, left_mask in left_pairs if image not in right_of]
        return pairs, unpaired_images + no_right, unpaired_masks + dropped_left + no_left_right
    raise ValueError(f"unknown layout {layout!r}; expected one of {', '.join(LAYOUTS)}")


def find_pairs(root: str | Path, layout: str | None = None) -> tuple[list[dict], dict[str, list[str]]]:
    """Image/mask pairs of the dataset in ``root``.

    Args:
        root: dataset folder.
        layout: one of ``LAYOUTS`` (or "brain_tumor"); None detects it with ``detect_layout``.

    Returns:
        ``(pairs, unpaired)``: pairs as ``[{"image": rel, "label": rel}, ...]`` (Montgomery: ``"label": [left,
        right]``), paths relative to ``root`` with "/" separators, in natural order of the image path;
        ``unpaired = {"images": [...], "labels": [...]}`` lists the files left without a partner.
    """
    root = Path(root)
    _check_folder(root)
    layout = _LAYOUT_ALIASES.get(layout, layout) if layout is not None else detect_layout(root)
    pairs, unpaired_images, unpaired_masks = _layout_files(root, layout)

    def relative(path: Path) -> str:
        return path.relative_to(root).as_posix()

    items = [
        {
            "image": relative(image),
            "label": [relative(m) for m in mask] if isinstance(mask, tuple) else relative(mask),
        }
        for image, mask in pairs
    ]
    items.sort(key=lambda item: _natural_key(item["image"]))
    unpaired = {
        "images": sorted((relative(p) for p in unpaired_images), key=_natural_key),
        "labels": sorted((relative(p) for p in unpaired_masks), key=_natural_key),
    }
    if unpaired["images"] or unpaired["labels"]:
        examples = ", ".join((unpaired["images"] + unpaired["labels"])[:3])
        warnings.warn(
            f"{root}: {len(unpaired['images'])} images without a mask and {len(unpaired['labels'])} masks without an "
            f"image (e.g. {examples}); they are left out and listed under 'unpaired'",
            stacklevel=2,
        )
    return items, unpaired


def patient_groups(pairs: Sequence[dict], layout: str) -> list[str]:
    """Patient id of every pair: the case folder for "lgg", the image itself for layouts that name no patients."""
    if _LAYOUT_ALIASES.get(layout, layout) == "lgg":
        return [item["image"].split("/")[-2] for item in pairs]
    return [item["image"] for item in pairs]


def _shuffled_groups(pairs: Sequence[dict], groups: Sequence[str] | None, seed: int) -> tuple[list[str], list[str]]:
    """(group of each pair, unique groups in a seeded random order)."""
    groups = [item["image"] for item in pairs] if groups is None else list(groups)
    if len(groups) != len(pairs):
        raise ValueError(f"got {len(groups)} groups for {len(pairs)} pairs")
    unique = sorted(set(groups), key=_natural_key)
    # a single partition is the whole list in MONAI's seeded shuffle order
    return groups, partition_dataset(unique, num_partitions=1, shuffle=True, seed=seed)[0]


def _count(fraction: float, total: int) -> int:
    """Rounded share of ``total``, at least 1 when the fraction is positive."""
    return 0 if fraction <= 0 else max(1, int(fraction * total + 0.5))


def split_pairs(
    pairs: Sequence[dict],
    val_fraction: float = 0.2,
    test_fraction: float = 0.0,
    seed: int = 0,
    groups: Sequence[str] | None = None,
) -> tuple[list[dict], list[dict], list[dict]]:
    """Random (training, validation, testing) split that keeps every group (patient) in one split.

    Fractions count groups, not pairs; a positive fraction takes at least one group.

    Args:
        pairs: datalist items.
        val_fraction: share of groups for validation.
        test_fraction: share of groups for testing.
        seed: random seed; the same seed gives the same split.
        groups: group id of each pair; None puts every pair in its own group.
    """
    if val_fraction < 0 or test_fraction < 0 or val_fraction + test_fraction >= 1:
        raise ValueError(f"need 0 <= val_fraction, test_fraction and a sum < 1, got {val_fraction}, {test_fraction}")
    groups, order = _shuffled_groups(pairs, groups, seed)
    n_val, n_test = _count(val_fraction, len(order)), _count(test_fraction, len(order))
    if n_val + n_test >= len(order):
        raise ValueError(
            f"{len(order)} groups are too few for val_fraction={val_fraction}, test_fraction={test_fraction}"
        )
    # integer ratios make partition_dataset's rounding exact
    train_groups, val_groups, test_groups = partition_dataset(
        order, ratios=[len(order) - n_val - n_test, n_val, n_test], shuffle=False
    )
    split_of = {g: 0 for g in train_groups} | {g: 1 for g in val_groups} | {g: 2 for g in test_groups}
    splits: tuple[list[dict], list[dict], list[dict]] = ([], [], [])
    for item, group in zip(pairs, groups, strict=True):
        splits[split_of[group]].append(dict(item))
    return splits


def kfold(
    pairs: Sequence[dict], num_folds: int = 5, seed: int = 0, groups: Sequence[str] | None = None
) -> list[list[dict]]:
    """Random partition of ``pairs`` into ``num_folds`` folds that keeps every group (patient) in one fold.

    Folds hold equal numbers of groups (within one); each returned item carries its ``"fold"`` index.
    """
    groups, order = _shuffled_groups(pairs, groups, seed)
    if num_folds < 2 or num_folds > len(order):
        raise ValueError(f"num_folds must be between 2 and the number of groups ({len(order)}), got {num_folds}")
    fold_of = {
        group: fold
        for fold, members in enumerate(partition_dataset(order, num_partitions=num_folds))
        for group in members
    }
    folds: list[list[dict]] = [[] for _ in range(num_folds)]
    for item, group in zip(pairs, groups, strict=True):
        folds[fold_of[group]].append(dict(item, fold=fold_of[group]))
    return folds


def build_datalist(
    root: str | Path,
    layout: str | None = None,
    val_fraction: float = 0.2,
    test_fraction: float = 0.0,
    num_folds: int | None = None,
    seed: int = 0,
) -> dict:
    """Datalist of the dataset in ``root``, split by patient where the layout names patients (LGG).

    Args:
        root: dataset folder; paths in the datalist are relative to it.
        layout: one of ``LAYOUTS`` (or "brain_tumor"); None detects it.
        val_fraction: share of patients for "validation" (ignored with ``num_folds``).
        test_fraction: share of patients held out as "testing" (before any k-fold split).
        num_folds: if given, "training" holds all non-test items, each with ``"fold": k``.
        seed: random seed of the split.

    Returns:
        ``{"layout", "seed", "training", "validation" (not with num_folds), "testing", "unpaired"}``.
    """
    root = Path(root)
    layout = _LAYOUT_ALIASES.get(layout, layout) if layout is not None else detect_layout(root)
    pairs, unpaired = find_pairs(root, layout)
    if not pairs:
        raise ValueError(
            f"no image/mask pairs in {root} (layout {layout!r}; {len(unpaired['images'])} images and "
            f"{len(unpaired['labels'])} masks without a partner)"
        )
    groups = patient_groups(pairs, layout)
    datalist: dict = {"layout": layout, "seed": seed}
    if num_folds is None:
        training, validation, testing = split_pairs(pairs, val_fraction, test_fraction, seed, groups)
        datalist.update(training=training, validation=validation, testing=testing)
    else:
        rest, _, testing = split_pairs(pairs, 0.0, test_fraction, seed, groups)
        group_of = {item["image"]: group for item, group in zip(pairs, groups, strict=True)}
        folds = kfold(rest, num_folds, seed, [group_of[item["image"]] for item in rest])
        training = sorted((item for fold in folds for item in fold), key=lambda item: _natural_key(item["image"]))
        datalist.update(num_folds=num_folds, training=training, testing=testing)
    datalist["unpaired"] = unpaired
    return datalist


def write_datalist(datalist: dict, path: str | Path) -> Path:
    """Write ``datalist`` as JSON to ``path`` (temporary file in the same folder, then rename)."""
    path = Path(path)
    with atomic_path(path) as temporary:
        temporary.write_text(json.dumps(datalist, indent=2) + "\n")
    return path

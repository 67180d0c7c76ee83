"""Input checks for the bundles: fail before training or inference starts, with one line naming the file.

The bundle configs call these functions from expressions (``"$load_datalist(...)"``). Every check raises
:class:`BundleInputError` (``"bundle input error: <file or folder>: <reason>"``), an exception a host process
such as a MONAI Label server can catch; on the command line it is printed as that one line (see
:mod:`custom_networks.errors`).

Channel counts come from file headers only (PIL mode, NIfTI header, DICOM ``SamplesPerPixel``), so checking
a few thousand slices takes seconds.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import pydicom
from PIL import Image, UnidentifiedImageError

from custom_networks.data.datalist import build_datalist
from custom_networks.errors import InputError

__all__ = [
    "INPUT_ERROR",
    "BundleInputError",
    "input_error",
    "image_channels",
    "check_dataset_dir",
    "check_inference_input",
    "check_model_file",
    "load_datalist",
]

INPUT_ERROR = "bundle input error"
# inference also takes single DICOM files; datalists pair the other formats

# channels of the PIL modes MONAI's PILReader loads unconverted; a palette image ("P") loads as indices
_PIL_MODE_CHANNELS = {
    "1": 1,
    "L": 1,
    "P": 1,
    "I": 1,
    "F": 1,
    "I;16": 1,
    "I;16B": 1,
    "I;16L": 1,
    "LA": 2,
    "RGB": 3,
    "YCbCr": 3,
    "LAB": 3,
    "HSV": 3,
    "RGBA": 4,
    "CMYK": 4,
}


class BundleInputError(InputError):
    """A bundle input that cannot be used: ``"bundle input error: <file or folder>: <reason>"``."""


def input_error(path: str | Path, reason: str) -> BundleInputError:
    """The error raised for a bad bundle input (see the module docstring)."""
    return BundleInputError(f"{INPUT_ERROR}: {path}: {reason}")


def _has_suffix(path: Path, suffixes: Sequence[str]) -> bool:
    return path.name.lower().endswith(tuple(suffixes))


def image_channels(path: str | Path) -> int:
    """
    Number of channels of an image file, read from its header.

    PNG, JPEG, TIFF and BMP: from the PIL mode. NIfTI: the 4th dimension (5th for 5D), else 1. DICOM: the
    ``SamplesPerPixel`` element.

    Raises:
        BundleInputError: the file is missing or not a readable image.
    """
    path = Path(path)
    if not path.is_file():
        raise input_error(path, "file not found")
    try:
        if _has_suffix(path, (".nii", ".nii.gz")):
            shape = nib.load(path).header.get_data_shape()
            return int(shape[3]) if len(shape) == 4 else int(shape[4]) if len(shape) == 5 else 1
        if _has_suffix(path, (".dcm",)):
            return int(pydicom.dcmread(path, stop_before_pixels=True).get("SamplesPerPixel", 1))
        with Image.open(path) as image:
            if image.mode not in _PIL_MODE_CHANNELS:
                raise input_error(path, f"unsupported image mode {image.mode!r}")
            return _PIL_MODE_CHANNELS[image.mode]
    except (OSError, UnidentifiedImageError, ValueError, pydicom.errors.InvalidDicomError) as error:
        raise input_error(path, f"not a readable image ({error})") from None


def _check_channels(path: str | Path, in_channels: int) -> None:
    channels = image_channels(path)
    if channels != in_channels:
        raise input_error(path, f"image has {channels} channel(s), the network expects {in_channels}")


def check_dataset_dir(dataset_dir: str | Path) -> Path:
    """
    Return ``dataset_dir`` as a ``Path`` if it is an existing, non-empty folder.

    Raises:
        BundleInputError: the folder is missing, is a file, or is empty.
    """
    folder = Path(dataset_dir)
    if not folder.exists():
        raise input_error(folder, "dataset_dir does not exist (set it with --dataset_dir)")
    if not folder.is_dir():
        raise input_error(folder, "dataset_dir is not a folder")
    if not any(folder.iterdir()):
        raise input_error(folder, "dataset_dir is empty")
    return folder


def check_inference_input(dataset_dir: str | Path) -> Path:
    """
    Return ``dataset_dir`` as a ``Path`` if it is one case file (NIfTI, DICOM, PNG/JPG/TIFF/BMP) or a non-empty
    folder of cases.

    Raises:
        BundleInputError: it is missing or an empty folder.
    """
    path = Path(dataset_dir)
    if path.is_file():
        return path
    return check_dataset_dir(path)


def check_model_file(path: str | Path) -> str:
    """
    Return ``path`` if the model file (a torch checkpoint or an ONNX model) exists.

    Raises:
        BundleInputError: it does not, naming the ways to get one.
    """
    if not Path(path).is_file():
        raise input_error(
            path,
            "model file not found; train the bundle (configs/train.json writes models/model.pt), run the shipped "
            "demo weights where the bundle has them (add configs/demo.json), or point --ckpt_path (ONNX: "
            "--onnx_model) at a model file",
        )
    return str(path)


def _read_datalist(datalist_file: Path) -> dict:
    try:
        content = json.loads(datalist_file.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise input_error(datalist_file, f"not a readable JSON datalist ({error})") from None
    if not isinstance(content, dict):
        raise input_error(datalist_file, "a datalist is a JSON object with 'training', 'validation', ... lists")
    return content


def _build_datalist(folder: Path, val_fraction: float, test_fraction: float) -> dict:
    try:
        return build_datalist(folder, val_fraction=val_fraction, test_fraction=test_fraction)
    except (OSError, ValueError) as error:
        raise input_error(
            folder, f"no datalist file and no datalist could be built from the folder ({error})"
        ) from None


def _absolute(folder: Path, path: str | list[str]) -> str | list[str]:
    """``path`` (or each path of a list, e.g. Montgomery's two masks) joined to ``folder`` unless absolute."""
    if isinstance(path, list):
        return [str(folder / p) for p in path]
    return str(folder / path)


def _select(content: dict, split: str, fold: int, source: Path) -> list[dict]:
    """Items of ``split``; with a k-fold datalist (no "validation" list, a "fold" per training item), "validation"
    is fold ``fold`` and "training" the other folds."""
    training = content.get("training") or []
    k_fold = "validation" not in content and any("fold" in item for item in training)
    if k_fold and split in ("training", "validation"):
        items = [item for item in training if (item.get("fold") == fold) == (split == "validation")]
    else:
        items = content.get(split)
    if not items:
        raise input_error(source, f"datalist has no {split!r} items")
    return [dict(item) for item in items]


def load_datalist(
    dataset_dir: str | Path,
    datalist_file: str | Path,
    split: str,
    in_channels: int,
    fold: int = 0,
    val_fraction: float = 0.2,
    test_fraction: float = 0.1,
) -> list[dict]:
    """
    Load one split of a MONAI/Decathlon JSON datalist and check every file it names.

    Paths in the datalist are relative to ``dataset_dir`` (absolute paths are kept). When ``datalist_file`` does
    not exist, the datalist is built from the folder layout by ``custom_networks.data.datalist.build_datalist``
    (the same split as ``scripts/make_datalist.py --val-fraction 0.2 --test-fraction 0.1 --seed 0``). Checks, in
    order: ``dataset_dir`` exists and is not empty; the datalist has a non-empty ``split``; every image and label
    file exists; every image has ``in_channels`` channels (headers only).

    Args:
        dataset_dir: dataset folder.
        datalist_file: JSON datalist (``scripts/make_datalist.py`` writes one from each public layout).
        split: list to load: "training", "validation" or "testing".
        in_channels: channel count every image must have.
        fold: validation fold of a k-fold datalist (items with a "fold" key and no "validation" list).
        val_fraction: share of patients for validation when the datalist is built from the folder.
        test_fraction: share of patients held out for testing when the datalist is built from the folder.

    Returns:
        the items with absolute paths, ready for a MONAI ``Dataset``.

    Raises:
        BundleInputError: with a one-line message naming the offending folder or file.
    """
    folder = check_dataset_dir(dataset_dir)
    datalist_path = Path(datalist_file)
    if datalist_path.is_file():
        content, source = _read_datalist(datalist_path), datalist_path
    else:
        content, source = _build_datalist(folder, val_fraction, test_fraction), folder
    items = _select(content, split, fold, source)
    for item in items:
        if "image" not in item:
            raise input_error(source, f"a {split!r} item has no 'image' key: {item}")
        item.update({key: _absolute(folder, item[key]) for key in ("image", "label") if key in item})
        labels = item.get("label", [])
        for label in [labels] if isinstance(labels, str) else labels:
            if not Path(label).is_file():
                raise input_error(label, f"label listed in the {split!r} datalist not found")
        _check_channels(item["image"], in_channels)
    return items

"""Labels saved on 3D volumes as 2D training samples for this project's 2D bundles.

A radiologist corrects a whole MR series in 3D; the bundles train on 2D images. MONAI Label hands a bundle's
``train.json`` the datastore's ``{"image", "label"}`` pairs as they are, and a 3D pair fails in its 2D transforms.
:func:`slice_training_pairs` turns each 3D pair into 2D pairs written as files: every slice (along the bundle's
``slice_axis``) that holds some label, plus a sampled share of the slices without any (so the network also sees
negatives). The image is loaded by the bundle's own inference ``preprocessing`` and cut along the same axis as its
``SliceWiseInferer`` cuts it; each slice is written unnormalised (2D NIfTI), so the bundle's ``train.json``
normalises it exactly as its inference normalises a slice (``slice_preprocessing``). 2D pairs pass unchanged.

A pair that cannot be used (unreadable, a label whose shape or geometry differs from its image's) is left out with
a one-line reason and the others go on.

Example::

    pairs, left_out = slice_training_pairs(datalist, load, slice_axis=2, out_dir=Path("cache"))
"""

from __future__ import annotations

import math
import random
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image

from custom_networks.clinical.errors import one_line
from custom_networks.clinical.load_case import NIFTI_SUFFIXES
from custom_networks.errors import InputError

__all__ = ["EMPTY_SLICE_SHARE", "SlicedDatalist", "slice_training_pairs", "slice_volume_pair"]

# unlabelled slices taken per labelled slice of a volume (at least one when the volume has any)
EMPTY_SLICE_SHARE = 0.5


@dataclass
class SlicedDatalist:
    """The 2D training pairs and the pairs left out, ``"<label file>: <reason>"`` each."""

    pairs: list[dict[str, str]] = field(default_factory=list)
    left_out: list[str] = field(default_factory=list)


def _stem(path: Path) -> str:
    """``mr.nii.gz`` -> ``mr``."""
    return path.name[: -len(".gz")].removesuffix(".nii") if path.name.endswith(".gz") else path.stem


def _is_volume(path: Path) -> bool:
    if not path.name.lower().endswith(NIFTI_SUFFIXES):
        return False
    return len([s for s in nib.load(path).shape if s > 1]) >= 3


def _read_label(path: Path) -> nib.Nifti1Image:
    try:
        label = nib.load(path)
        label.get_fdata(dtype=np.float32)
    except Exception as error:
        raise InputError(f"{path}: unreadable label ({type(error).__name__}: {one_line(error)})") from error
    return label


def _check_geometry(label_path: Path, label: nib.Nifti1Image, shape: tuple[int, ...], affine: np.ndarray) -> None:
    """The label must have the image's voxel grid: same shape, same affine (within 0.1 % of its scale)."""
    label_shape = tuple(label.shape[:3]) if label.ndim > 3 and all(s == 1 for s in label.shape[3:]) else label.shape
    if tuple(label_shape) != tuple(shape):
        raise InputError(f"{label_path}: label shape {tuple(label_shape)} differs from its image's {tuple(shape)}")
    tolerance = 1e-3 * max(float(np.abs(affine[:3, :3]).max()), 1.0)
    if not np.allclose(label.affine, affine, atol=tolerance):
        raise InputError(f"{label_path}: label geometry (affine) differs from its image's; it was drawn on another "
                         "grid or series")


def _chosen_slices(has_label: np.ndarray, share: float, seed: str) -> list[int]:
    """Every labelled slice and ``share`` as many unlabelled ones (at least one), drawn reproducibly."""
    labelled = [int(i) for i in np.flatnonzero(has_label)]
    empty = [int(i) for i in np.flatnonzero(~has_label)]
    wanted = min(len(empty), max(1, math.ceil(share * len(labelled))))
    drawn = random.Random(zlib.crc32(seed.encode())).sample(empty, wanted)
    return sorted(labelled + drawn)


def slice_volume_pair(image_path: Path, label_path: Path, load: Callable[[str], object], slice_axis: int,
                      out_dir: Path, share: float = EMPTY_SLICE_SHARE) -> list[dict[str, str]]:
    """The 2D pairs of one 3D image and its label, written to ``out_dir``.

    Args:
        image_path, label_path: the datastore's image and its final label (NIfTI).
        load: the bundle's inference preprocessing of one image path: a channel-first ``(C, X, Y, Z)`` image
            with an ``affine`` (a ``MetaTensor``).
        slice_axis: spatial axis the bundle's ``SliceWiseInferer`` cuts along.
        out_dir: where the slice files go.
        share: unlabelled slices per labelled slice.

    Raises:
        InputError: the pair cannot be used; the message names the file and the reason.
    """
    label = _read_label(label_path)
    try:
        image = load(str(image_path))
    except Exception as error:
        raise InputError(f"{image_path}: unreadable image ({one_line(error)})") from error
    if image.shape[0] != 1:
        raise InputError(f"{label_path}: 3D labels train single-channel bundles only; its image has "
                         f"{image.shape[0]} channels")
    pixels = np.asarray(image[0], dtype=np.float32)
    _check_geometry(label_path, label, pixels.shape, np.asarray(image.affine, dtype=np.float64))
    mask = np.asarray(label.dataobj).reshape(pixels.shape)
    other_axes = tuple(a for a in range(3) if a != slice_axis)
    chosen = _chosen_slices((mask > 0).any(axis=other_axes), share, str(label_path))
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = _stem(image_path)
    pairs = []
    for index in chosen:
        slice_image = np.take(pixels, index, axis=slice_axis)
        slice_label = np.take(mask, index, axis=slice_axis).astype(np.uint8)
        image_file = out_dir / f"{stem}_slice{index:04d}.nii.gz"
        label_file = out_dir / f"{stem}_slice{index:04d}_label.nii.gz"
        nib.save(nib.Nifti1Image(slice_image, np.eye(4)), image_file)
        nib.save(nib.Nifti1Image(slice_label, np.eye(4)), label_file)
        pairs.append({"image": str(image_file), "label": str(label_file)})
    return pairs


def _check_2d_pair(image_path: Path, label_path: Path) -> None:
    try:
        with Image.open(image_path) as image, Image.open(label_path) as label:
            image_size, label_size = image.size, label.size
    except Exception as error:
        raise InputError(f"{label_path}: unreadable image or label ({one_line(error)})") from error
    if image_size != label_size:
        raise InputError(f"{label_path}: label size {label_size} differs from its image's {image_size}")


def slice_training_pairs(datalist: Iterable[Mapping[str, str]], load: Callable[[str], object], slice_axis: int,
                         out_dir: Path, share: float = EMPTY_SLICE_SHARE) -> SlicedDatalist:
    """The datastore's ``{"image", "label"}`` pairs as 2D training pairs: 3D NIfTI pairs cut into slices (see
    :func:`slice_volume_pair`), 2D pairs checked and kept; unusable pairs left out with their reason."""
    result = SlicedDatalist()
    for item in datalist:
        image_path, label_path = Path(item["image"]), Path(item["label"])
        try:
            if image_path.name.lower().endswith(NIFTI_SUFFIXES) and _is_volume(image_path):
                result.pairs += slice_volume_pair(image_path, label_path, load, slice_axis, out_dir, share)
            elif label_path.name.lower().endswith(NIFTI_SUFFIXES) and _is_volume(label_path):
                raise InputError(f"{label_path}: 3D label on the 2D image {image_path.name}")
            else:
                if not image_path.name.lower().endswith(NIFTI_SUFFIXES):
                    _check_2d_pair(image_path, label_path)
                result.pairs.append({"image": str(image_path), "label": str(label_path)})
        except InputError as error:
            result.left_out.append(str(error))
        except Exception as error:  # a bad file must not stop the run: leave it out with its reason
            result.left_out.append(f"{label_path}: {type(error).__name__}: {one_line(error)}")
    return result

"""``SaveOverlayPNGd``: PNG pictures of a few representative slices with label contours over the image."""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection, PathLike
from monai.data import FolderLayout, MetaTensor
from monai.transforms import MapTransform
from PIL import Image

from custom_networks.atomic_files import atomic_path
from custom_networks.clinical.dicom_series import LPS_TO_RAS
from custom_networks.clinical.meta import INPUT_KIND_KEY, OUTPUTS_KEY, PATIENT_FRAME_KINDS

__all__ = ["SaveOverlayPNGd", "display_layout", "label_contours"]

_COLOURS = ((255, 40, 40), (40, 220, 40), (40, 140, 255), (255, 220, 0), (255, 0, 255), (0, 230, 230))
_PERCENTILES = (0.5, 99.5)


def display_layout(directions_lps: np.ndarray | None) -> tuple[bool, bool, bool]:
    """How to turn an ``[a, b]`` slice into a picture: ``(transpose, flip_rows, flip_columns)``.

    Without patient directions the slice is shown as stored (``[column, row]`` arrays are transposed). With the
    LPS directions of axes a and b (rows of ``directions_lps``), the radiological convention is used: patient
    left on the picture's right (posterior in a sagittal plane), and rows running toward posterior (axial) or
    the feet (coronal, sagittal).
    """
    if directions_lps is None:
        return True, False, False
    dominant = [int(np.argmax(np.abs(v))) for v in directions_lps]
    horizontal = 0 if dominant[0] <= dominant[1] else 1
    vertical = 1 - horizontal
    flip_columns = directions_lps[horizontal][dominant[horizontal]] < 0
    towards = directions_lps[vertical][dominant[vertical]]
    flip_rows = towards > 0 if dominant[vertical] == 2 else towards < 0
    return horizontal == 0, bool(flip_rows), bool(flip_columns)


def label_contours(label: np.ndarray) -> np.ndarray:
    """Pixels of each nonzero region that touch a pixel of another value (4-neighbourhood); 0 elsewhere."""
    padded = np.pad(label, 1, mode="edge")
    centre = padded[1:-1, 1:-1]
    differs = np.zeros(label.shape, dtype=bool)
    for shifted in (padded[:-2, 1:-1], padded[2:, 1:-1], padded[1:-1, :-2], padded[1:-1, 2:]):
        differs |= shifted != centre
    return np.where(differs & (label != 0), label, 0)


class SaveOverlayPNGd(MapTransform):
    """Save the contour of each label over the grey image for a few slices, for a person to check the result.

    A 2D case gives one picture; a 3D case gives the ``num_slices`` slices with the largest labelled area (the
    middle slice when nothing is labelled), cut along ``slice_axis``. Images from a patient frame (NIfTI, DICOM
    series) are shown in the radiological convention, others as stored. Pictures are enlarged by an integer
    factor to at least ``min_size`` pixels. Files are written under a temporary name, then renamed, and their
    paths appended to the label's ``clinical_outputs`` meta-data entry.

    Args:
        keys: label maps ``(1, *spatial)``.
        output_dir: root folder of the pictures, laid out as MONAI's ``SaveImage`` does.
        image_key: the image in the same voxel grid as the labels; its first channel is shown (RGB if 3 channels).
        num_slices: how many slices of a 3D case to save.
        slice_axis: spatial axis (0, 1, 2) along which 3D cases are cut; ``None`` takes the last.
        output_postfix: appended to the input's name, before the slice index.
        separate_folder: one folder per case, as ``SaveImage``.
        data_root_dir: keep the input's folders relative to this, as ``SaveImage``.
        min_size: smallest side of the picture in pixels after enlargement.
        colours: RGB colour of label value 1, 2, ... (cycled).
        allow_missing_keys: do not raise for absent keys.
    """

    def __init__(
        self,
        keys: KeysCollection,
        output_dir: PathLike,
        image_key: str = "image",
        num_slices: int = 3,
        slice_axis: int | None = None,
        output_postfix: str = "overlay",
        separate_folder: bool = True,
        data_root_dir: PathLike = "",
        min_size: int = 256,
        colours: Sequence[Sequence[int]] = _COLOURS,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.image_key = image_key
        self.num_slices = num_slices
        self.slice_axis = slice_axis
        self.min_size = min_size
        self.colours = np.asarray(colours, dtype=np.uint8)
        self.layout = FolderLayout(
            output_dir, postfix=output_postfix, extension=".png", parent=separate_folder, data_root_dir=data_root_dir
        )

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        image = d[self.image_key]
        for key in self.key_iterator(d):
            label = d[key]
            paths = self.write(image, label)
            if isinstance(label, MetaTensor):
                label.meta.setdefault(OUTPUTS_KEY, []).extend(paths)
        return d

    def write(self, image: torch.Tensor, label: torch.Tensor) -> list[str]:
        """Write the pictures of ``label`` over ``image``; return their paths."""
        pixels = _numpy(image)
        labels = _numpy(label)[0].astype(np.int64)
        if pixels.shape[1:] != labels.shape:
            raise ValueError(f"image {pixels.shape} and label {labels.shape} are not in the same voxel grid")
        grey = _to_uint8(pixels[:3] if pixels.shape[0] == 3 else pixels[:1])
        meta = image.meta if isinstance(image, MetaTensor) else {}
        subject = meta.get("filename_or_obj", "image")
        if labels.ndim == 2:
            picture = self._picture(grey, labels, self._layout(meta, image, (0, 1)))
            return [self._save(picture, self.layout.filename(subject=subject))]
        axis = 2 if self.slice_axis is None else self.slice_axis
        in_plane = tuple(a for a in range(3) if a != axis)
        layout = self._layout(meta, image, in_plane)
        paths = []
        for k in self._representative_slices(labels, axis):
            picture = self._picture(np.take(grey, k, axis=axis + 1), np.take(labels, k, axis=axis), layout)
            paths.append(self._save(picture, self.layout.filename(subject=subject, idx=f"{k:03d}")))
        return paths

    def _representative_slices(self, labels: np.ndarray, axis: int) -> list[int]:
        other = tuple(a for a in range(3) if a != axis)
        areas = (labels != 0).sum(axis=other)
        labelled = np.flatnonzero(areas)
        if labelled.size == 0:
            return [labels.shape[axis] // 2]
        largest = labelled[np.argsort(-areas[labelled], kind="stable")[: self.num_slices]]
        return sorted(int(k) for k in largest)

    @staticmethod
    def _layout(meta: Mapping, image: torch.Tensor, in_plane: tuple[int, int]) -> tuple[bool, bool, bool]:
        if meta.get(INPUT_KIND_KEY) not in PATIENT_FRAME_KINDS or not isinstance(image, MetaTensor):
            return display_layout(None)
        lps = LPS_TO_RAS @ image.affine.cpu().numpy()
        return display_layout(lps[:3, list(in_plane)].T)

    def _picture(self, grey: np.ndarray, labels: np.ndarray, layout: tuple[bool, bool, bool]) -> np.ndarray:
        transpose, flip_rows, flip_columns = layout
        rgb = np.moveaxis(grey, 0, -1)
        if transpose:
            rgb, labels = rgb.transpose(1, 0, 2), labels.T
        if flip_rows:
            rgb, labels = rgb[::-1], labels[::-1]
        if flip_columns:
            rgb, labels = rgb[:, ::-1], labels[:, ::-1]
        factor = max(1, math.ceil(self.min_size / min(labels.shape)))
        rgb = np.repeat(np.repeat(rgb, factor, axis=0), factor, axis=1)
        labels = np.repeat(np.repeat(labels, factor, axis=0), factor, axis=1)
        picture = np.array(np.broadcast_to(rgb, (*labels.shape, 3)))
        contours = label_contours(labels)
        for value in np.unique(contours[contours != 0]):
            picture[contours == value] = self.colours[(value - 1) % len(self.colours)]
        return picture

    @staticmethod
    def _save(picture: np.ndarray, path: PathLike) -> str:
        with atomic_path(path) as temporary:
            # fastest zlib level: level 6 (the default) spent 3 s on one 2048 x 2048 picture, level 1 0.7 s
            Image.fromarray(picture).save(temporary, format="PNG", compress_level=1)
        return str(path)


def _numpy(tensor: torch.Tensor | np.ndarray) -> np.ndarray:
    return tensor.detach().cpu().numpy() if isinstance(tensor, torch.Tensor) else np.asarray(tensor)


def _to_uint8(pixels: np.ndarray) -> np.ndarray:
    """Scale to 0-255 between robust percentiles of the whole image, so all slices share one grey scale."""
    low, high = np.percentile(pixels, _PERCENTILES)
    scaled = (pixels.astype(np.float32) - low) / max(float(high - low), 1e-6)
    return (np.clip(scaled, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)

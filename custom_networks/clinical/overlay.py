"""``SaveOverlayPNGd``: one PNG mosaic per case of the label contours over the image, for a person to check.

A 3D case shows every slice that holds any label, so that a false-positive island far from the main finding shows
as well; when fewer than ``min_slices`` slices hold a label, evenly spaced slices with image content (not of one
constant value) are added up to ``min_slices``, so that what the labels miss can be seen too. A 2D case is one
tile. Each tile is captioned with its slice number (the DICOM InstanceNumber for a DICOM series) and its position
along the slice normal; a header names the case and the slices shown, a legend names each label in its colour,
and a banner marks pictures made with demo weights.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import torch
from monai.config import KeysCollection, PathLike
from monai.data import FolderLayout, MetaTensor
from monai.transforms import MapTransform
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

from custom_networks.atomic_files import atomic_path
from custom_networks.clinical.dicom_series import LPS_TO_RAS
from custom_networks.clinical.meta import (
    INPUT_KIND_KEY,
    KIND_DICOM_SERIES,
    OUTPUTS_KEY,
    PATIENT_FRAME_KINDS,
    SOURCE_FILES_KEY,
)

__all__ = [
    "DEMO_MARK",
    "DEMO_MARK_RGB",
    "LegendEntry",
    "OverlayMosaic",
    "OverlayTile",
    "SaveOverlayPNGd",
    "display_layout",
    "label_contours",
    "overlay_slices",
]

DEMO_MARK = "DEMO WEIGHTS - NOT FOR CLINICAL USE"
DEMO_MARK_RGB = (170, 0, 0)
_COLOURS = ((255, 40, 40), (40, 220, 40), (40, 140, 255), (255, 220, 0), (255, 0, 255), (0, 230, 230))
_PERCENTILES = (0.5, 99.5)
_BACKGROUND_RGB = (16, 16, 16)
_TEXT_RGB = (235, 235, 235)
_MARGIN, _GAP = 8, 4
_TEXT_SIZE, _BANNER_TEXT_SIZE = 15, 22
_LINE_HEIGHT, _CAPTION_HEIGHT, _BANNER_HEIGHT = 21, 20, 34
# label islands smaller than this (pixels a side, as drawn) get a ring around them, so that they catch the eye
_SMALL_ISLAND, _RING_RADIUS = 16, 14
_RING_NOTE = "(circles: label islands too small to see)"


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


@dataclass(frozen=True)
class OverlayTile:
    """One slice of a mosaic: its index along the slice axis (``None`` for a 2D image), the caption drawn under it
    and where its picture lies, ``(top, left, bottom, right)`` pixels of the mosaic."""

    index: int | None
    caption: str
    box: tuple[int, int, int, int]


@dataclass(frozen=True)
class LegendEntry:
    """One label of the legend: its name, colour, and the box of its colour swatch in the mosaic."""

    name: str
    colour: tuple[int, int, int]
    box: tuple[int, int, int, int]


@dataclass(frozen=True)
class OverlayMosaic:
    """A rendered mosaic ``(height, width, 3)`` uint8 and what was drawn on it.

    ``header`` holds the text lines above the tiles; ``demo_marks`` the boxes of the demo-weights banners (none
    when the flag is off).
    """

    picture: np.ndarray
    header: tuple[str, ...]
    legend: tuple[LegendEntry, ...]
    tiles: tuple[OverlayTile, ...]
    demo_marks: tuple[tuple[int, int, int, int], ...]


def overlay_slices(labelled: np.ndarray, has_content: np.ndarray, min_slices: int) -> list[int]:
    """The slices a 3D mosaic shows: all in ``labelled``, plus evenly spaced ones of ``has_content`` up to
    ``min_slices``; the middle slice when neither holds any.

    Args:
        labelled: ``(slices,)`` bool, the slice holds a label.
        has_content: ``(slices,)`` bool, the slice's image is not one constant value.
        min_slices: the fewest slices to show when enough have content.
    """
    chosen = set(np.flatnonzero(labelled).tolist())
    others = np.flatnonzero(has_content & ~labelled)
    wanted = min(min_slices - len(chosen), len(others))
    if wanted > 0:
        # the middle one of each of ``wanted`` equal runs of the candidates
        chosen.update(others[((np.arange(wanted) + 0.5) * len(others) / wanted).astype(int)].tolist())
    return sorted(chosen) or [len(labelled) // 2]


class SaveOverlayPNGd(MapTransform):
    """Save one mosaic PNG per case: the contour of each label over the image, for a person to check the result.

    The slices of a 3D case are cut along ``slice_axis`` and chosen by :func:`overlay_slices`. Images from a
    patient frame (NIfTI, DICOM series) are shown in the radiological convention, others as stored. Tiles are
    enlarged by an integer factor to at least ``tile_size`` pixels a side or, when the tiles would make the mosaic
    wider or higher than ``max_size`` pixels, reduced by an integer factor (labels by block maximum, so that no
    island vanishes). Each tile's caption gives its slice number (DICOM InstanceNumber for a DICOM series cut
    along its slices, else 1-based index) and its position in mm along the slice axis direction (the slice normal
    of a DICOM series). The file, ``<case>_<output_postfix>.png``, is written under a temporary name, then renamed,
    and its path appended to the label's ``clinical_outputs`` meta-data entry.

    Args:
        keys: label maps ``(1, *spatial)``.
        output_dir: root folder of the pictures, laid out as MONAI's ``SaveImage`` does.
        channel_def: label value to name, as in a bundle's metadata; value 0 is background and not in the legend.
        image_key: the image in the same voxel grid as the labels; its first channel is shown (RGB if 3 channels).
        colours: RGB (0-255) of label values (``{"1": [255, 40, 40]}``, the bundle metadata's ``color_rgb``);
            values not listed take a colour of a fixed palette.
        slice_axis: spatial axis (0, 1, 2) along which 3D cases are cut; ``None`` takes the last.
        min_slices: the fewest slices a 3D mosaic shows (see :func:`overlay_slices`).
        tile_size: smallest side of a tile in pixels after enlargement.
        max_size: largest width or height of the tiles together, in pixels.
        demo_weights: draw the "DEMO WEIGHTS - NOT FOR CLINICAL USE" banner above and below the tiles.
        output_postfix: appended to the input's name.
        separate_folder: one folder per case, as ``SaveImage``.
        data_root_dir: keep the input's folders relative to this, as ``SaveImage``.
        allow_missing_keys: do not raise for absent keys.
    """

    def __init__(
        self,
        keys: KeysCollection,
        output_dir: PathLike,
        channel_def: Mapping[str | int, str],
        image_key: str = "image",
        colours: Mapping[str | int, Sequence[int]] | None = None,
        slice_axis: int | None = None,
        min_slices: int = 8,
        tile_size: int = 256,
        max_size: int = 3072,
        demo_weights: bool = False,
        output_postfix: str = "overlay",
        separate_folder: bool = True,
        data_root_dir: PathLike = "",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.labels = {int(value): str(name) for value, name in channel_def.items() if int(value) != 0}
        given = {int(value): tuple(int(c) for c in rgb) for value, rgb in (colours or {}).items()}
        self.colours = {
            value: given.get(value, _COLOURS[(value - 1) % len(_COLOURS)]) for value in sorted(self.labels)
        }
        self.image_key = image_key
        self.slice_axis = slice_axis
        self.min_slices = min_slices
        self.tile_size = tile_size
        self.max_size = max_size
        self.demo_weights = demo_weights
        self.layout = FolderLayout(
            output_dir, postfix=output_postfix, extension=".png", parent=separate_folder, data_root_dir=data_root_dir
        )

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        image = d[self.image_key]
        for key in self.key_iterator(d):
            label = d[key]
            path = self.write(image, label)
            if isinstance(label, MetaTensor):
                label.meta.setdefault(OUTPUTS_KEY, []).append(path)
        return d

    def write(self, image: torch.Tensor, label: torch.Tensor) -> str:
        """Write the mosaic of ``label`` over ``image``; return its path."""
        meta = image.meta if isinstance(image, MetaTensor) else {}
        path = self.layout.filename(subject=meta.get("filename_or_obj", "image"))
        picture = self.mosaic(image, label).picture
        with atomic_path(path) as temporary:
            # fastest zlib level: level 6 (the default) spent 3 s on one 2048 x 2048 picture, level 1 0.7 s
            Image.fromarray(picture).save(temporary, format="PNG", compress_level=1)
        return str(path)

    def mosaic(self, image: torch.Tensor, label: torch.Tensor) -> OverlayMosaic:
        """Render the mosaic of ``label`` ``(1, *spatial)`` over ``image`` ``(channels, *spatial)``."""
        pixels = _numpy(image)
        labels = _numpy(label)[0].astype(np.int64)
        if pixels.shape[1:] != labels.shape:
            raise ValueError(f"image {pixels.shape} and label {labels.shape} are not in the same voxel grid")
        shown = pixels[:3] if pixels.shape[0] == 3 else pixels[:1]
        grey_range = np.percentile(shown, _PERCENTILES)
        meta = image.meta if isinstance(image, MetaTensor) else {}
        name = Path(str(meta.get("filename_or_obj", "image"))).name
        if labels.ndim == 2:
            tiles = [(None, _to_uint8(shown, grey_range), labels, "")]
            layout = self._layout(meta, image, (0, 1))
            header = (f"{name}: 2D image",)
        else:
            axis = 2 if self.slice_axis is None else self.slice_axis
            layout = self._layout(meta, image, tuple(a for a in range(3) if a != axis))
            tiles, header = self._slices(name, shown, grey_range, labels, meta, image, axis)
        pictures = [(index, _oriented(rgb, section, layout), caption) for index, rgb, section, caption in tiles]
        return self._render(pictures, header)

    def _slices(
        self,
        name: str,
        shown: np.ndarray,
        grey_range: np.ndarray,
        labels: np.ndarray,
        meta: Mapping,
        image: torch.Tensor,
        axis: int,
    ) -> tuple[list, tuple[str, ...]]:
        """The chosen slices of a 3D case as ``(index, rgb, labels, caption)`` and the header lines.

        Args:
            shown: the channels shown, ``(1 or 3, *spatial)``; ``grey_range`` their display range (low, high).
        """
        in_plane = tuple(a for a in range(3) if a != axis)
        labelled = (labels != 0).any(axis=in_plane)
        per_slice = np.moveaxis(shown, axis + 1, 0).reshape(labels.shape[axis], -1)
        indices = overlay_slices(labelled, np.ptp(per_slice, axis=1) > 0, self.min_slices)
        numbers, numbering = _slice_numbers(meta, axis, indices)
        positions = _positions_mm(image, axis, indices)
        tiles = [
            (
                k,
                _to_uint8(np.take(shown, k, axis=axis + 1), grey_range),
                np.take(labels, k, axis=axis),
                f"#{number}  {position:.1f} mm",
            )
            for k, number, position in zip(indices, numbers, positions, strict=True)
        ]
        with_label = int(labelled.sum())
        added = f", {len(indices) - with_label} evenly spaced without" if len(indices) > with_label else ""
        header = (
            f"{name}: {len(indices)} of {labels.shape[axis]} slices shown ({with_label} with a label{added})",
            f'tile caption "#n  x mm": {numbering}, at x mm along the slice normal',
        )
        return tiles, header

    @staticmethod
    def _layout(meta: Mapping, image: torch.Tensor, in_plane: tuple[int, int]) -> tuple[bool, bool, bool]:
        if meta.get(INPUT_KIND_KEY) not in PATIENT_FRAME_KINDS or not isinstance(image, MetaTensor):
            return display_layout(None)
        lps = LPS_TO_RAS @ image.affine.cpu().numpy()
        return display_layout(lps[:3, list(in_plane)].T)

    def _render(
        self, pictures: list[tuple[int | None, tuple[np.ndarray, np.ndarray], str]], header: tuple[str, ...]
    ) -> OverlayMosaic:
        """Lay out, scale and draw the tiles ``(index, (rgb, labels), caption)`` under the header and legend."""
        height, width = pictures[0][1][1].shape
        columns = math.ceil(math.sqrt(len(pictures)))
        rows = math.ceil(len(pictures) / columns)
        up, down = _tile_scale((height, width), (rows, columns), self.tile_size, self.max_size)
        tile_h, tile_w = math.ceil(height / down) * up, math.ceil(width / down) * up
        caption_h = _CAPTION_HEIGHT if any(caption for *_, caption in pictures) else 0
        banner_h = _BANNER_HEIGHT + _GAP if self.demo_weights else 0
        grid_top = banner_h + _MARGIN + _LINE_HEIGHT * (len(header) + 1) + _GAP
        canvas_w = max(columns * (tile_w + _GAP) - _GAP, self._text_width(header)) + 2 * _MARGIN
        canvas_h = grid_top + rows * (tile_h + caption_h + _GAP) - _GAP + _MARGIN + banner_h
        canvas = np.empty((canvas_h, canvas_w, 3), np.uint8)
        canvas[:] = _BACKGROUND_RGB
        tiles, shown_labels = [], []
        for n, (index, (rgb, section), caption) in enumerate(pictures):
            top = grid_top + (n // columns) * (tile_h + caption_h + _GAP)
            left = _MARGIN + (n % columns) * (tile_w + _GAP)
            tile_picture, tile_labels = self._tile(rgb, section, up, down)
            canvas[top : top + tile_h, left : left + tile_w] = tile_picture
            tiles.append(OverlayTile(index, caption, (top, left, top + tile_h, left + tile_w)))
            shown_labels.append(tile_labels)
        picture = Image.fromarray(canvas)
        draw = ImageDraw.Draw(picture)
        font = ImageFont.load_default(_TEXT_SIZE)
        for tile, tile_labels in zip(tiles, shown_labels, strict=True):
            draw.text((tile.box[1], tile.box[2] + 2), tile.caption, fill=_TEXT_RGB, font=font)
            self._ring_small_islands(draw, tile_labels, tile.box)
        for line_number, line in enumerate(header):
            draw.text((_MARGIN, banner_h + _MARGIN + line_number * _LINE_HEIGHT), line, fill=_TEXT_RGB, font=font)
        legend = self._draw_legend(draw, banner_h + _MARGIN + len(header) * _LINE_HEIGHT)
        marks = self._draw_demo_marks(draw, canvas_h, canvas_w) if self.demo_weights else ()
        return OverlayMosaic(np.asarray(picture), header, legend, tuple(tiles), marks)

    def _text_width(self, header: tuple[str, ...]) -> int:
        """The width the header, legend and demo banner take, in pixels."""
        font = ImageFont.load_default(_TEXT_SIZE)
        names = sum(_LINE_HEIGHT + font.getlength(name) + 3 * _MARGIN for name in self.labels.values())
        legend = names + font.getlength(_RING_NOTE)
        banner = ImageFont.load_default(_BANNER_TEXT_SIZE).getlength(DEMO_MARK) if self.demo_weights else 0
        return math.ceil(max([font.getlength(line) for line in header] + [legend, banner]))

    def _draw_legend(self, draw: ImageDraw.ImageDraw, top: int) -> tuple[LegendEntry, ...]:
        """A colour swatch and the name of every label, in one line from ``top``."""
        font = ImageFont.load_default(_TEXT_SIZE)
        side = _LINE_HEIGHT - 6
        entries, left = [], _MARGIN
        for value, name in sorted(self.labels.items()):
            box = (top + 3, left, top + 3 + side, left + side)
            draw.rectangle((box[1], box[0], box[3] - 1, box[2] - 1), fill=self.colours[value])
            draw.text((left + side + _GAP, top), name, fill=_TEXT_RGB, font=font)
            entries.append(LegendEntry(name, self.colours[value], box))
            left += side + _GAP + math.ceil(font.getlength(name)) + 3 * _MARGIN
        draw.text((left, top), _RING_NOTE, fill=_TEXT_RGB, font=font)
        return tuple(entries)

    @staticmethod
    def _draw_demo_marks(draw: ImageDraw.ImageDraw, height: int, width: int) -> tuple[tuple[int, int, int, int], ...]:
        """The demo-weights banner across the top and the bottom of a ``height`` x ``width`` mosaic."""
        font = ImageFont.load_default(_BANNER_TEXT_SIZE)
        marks = ((0, 0, _BANNER_HEIGHT, width), (height - _BANNER_HEIGHT, 0, height, width))
        for top, left, bottom, right in marks:
            draw.rectangle((left, top, right - 1, bottom - 1), fill=DEMO_MARK_RGB)
            draw.text(((left + right) / 2, (top + bottom) / 2), DEMO_MARK, fill="white", font=font, anchor="mm")
        return marks

    def _ring_small_islands(self, draw: ImageDraw.ImageDraw, labels: np.ndarray, box: tuple[int, ...]) -> None:
        """Circle, in its label's colour, each island of ``labels`` (a tile as drawn at ``box``) too small to see."""
        for value in np.unique(labels[labels != 0]):
            islands, _ = ndimage.label(labels == value, structure=np.ones((3, 3)))
            for rows, columns in ndimage.find_objects(islands):
                if max(rows.stop - rows.start, columns.stop - columns.start) >= _SMALL_ISLAND:
                    continue
                # kept inside the tile, off the neighbours
                y = np.clip(box[0] + (rows.start + rows.stop) / 2, box[0] + _RING_RADIUS, box[2] - _RING_RADIUS)
                x = np.clip(box[1] + (columns.start + columns.stop) / 2, box[1] + _RING_RADIUS, box[3] - _RING_RADIUS)
                ring = (x - _RING_RADIUS, y - _RING_RADIUS, x + _RING_RADIUS, y + _RING_RADIUS)
                draw.ellipse(ring, outline=self._colour(int(value)), width=2)

    def _colour(self, value: int) -> tuple[int, int, int]:
        return self.colours.get(value, _COLOURS[(value - 1) % len(_COLOURS)])

    def _tile(self, rgb: np.ndarray, labels: np.ndarray, up: int, down: int) -> tuple[np.ndarray, np.ndarray]:
        """The tile picture (contours drawn) and its labels: ``rgb`` ``(height, width, channels)`` and ``labels``
        ``(height, width)`` scaled by ``up`` / ``down``."""
        if down > 1:
            rgb, labels = _block_reduce(rgb, down, np.mean), _block_reduce(labels[..., None], down, np.max)[..., 0]
        rgb = np.repeat(np.repeat(rgb, up, axis=0), up, axis=1)
        labels = np.repeat(np.repeat(labels, up, axis=0), up, axis=1)
        picture = np.array(np.broadcast_to(rgb, (*labels.shape, 3)), dtype=np.uint8)
        contours = label_contours(labels)
        for value in np.unique(contours[contours != 0]):
            picture[contours == value] = self._colour(int(value))
        return picture, labels


def _oriented(rgb: np.ndarray, labels: np.ndarray, layout: tuple[bool, bool, bool]) -> tuple[np.ndarray, np.ndarray]:
    """``rgb`` ``(channels, a, b)`` and ``labels`` ``(a, b)`` as a picture ``(height, width, channels)``."""
    transpose, flip_rows, flip_columns = layout
    rgb = np.moveaxis(rgb, 0, -1)
    if transpose:
        rgb, labels = rgb.transpose(1, 0, 2), labels.T
    if flip_rows:
        rgb, labels = rgb[::-1], labels[::-1]
    if flip_columns:
        rgb, labels = rgb[:, ::-1], labels[:, ::-1]
    return rgb, labels


def _tile_scale(shape: tuple[int, int], grid: tuple[int, int], tile_size: int, max_size: int) -> tuple[int, int]:
    """``(enlarge, reduce)`` integer factors of tiles of ``shape`` in a ``(rows, columns)`` grid."""
    fit = min(max_size / (grid[0] * shape[0]), max_size / (grid[1] * shape[1]))
    if fit < 1:
        return 1, math.ceil(1 / fit)
    return max(1, min(math.ceil(tile_size / min(shape)), math.floor(fit))), 1


def _block_reduce(array: np.ndarray, factor: int, reduce: Callable[..., np.ndarray]) -> np.ndarray:
    """``array`` ``(height, width, channels)`` reduced ``factor`` times a side by ``reduce`` over blocks (edge
    blocks padded with their edge values)."""
    height, width = (math.ceil(n / factor) * factor for n in array.shape[:2])
    padded = np.pad(array, ((0, height - array.shape[0]), (0, width - array.shape[1]), (0, 0)), mode="edge")
    blocks = padded.reshape(height // factor, factor, width // factor, factor, -1)
    return reduce(blocks, axis=(1, 3)).astype(array.dtype)


def _slice_numbers(meta: Mapping, axis: int, indices: Sequence[int]) -> tuple[list[int], str]:
    """The numbers captioning slices ``indices`` and what they are: a DICOM series cut along its slices gives
    each file's InstanceNumber (1-based index where a file has none), anything else the 1-based index."""
    if meta.get(INPUT_KIND_KEY) != KIND_DICOM_SERIES or axis != 2:
        return [k + 1 for k in indices], "slice n (1 = first)"
    files = meta[SOURCE_FILES_KEY]
    numbers = []
    for k in indices:
        number = pydicom.dcmread(files[k], stop_before_pixels=True, specific_tags=["InstanceNumber"]).get(
            "InstanceNumber"
        )
        numbers.append(k + 1 if number in (None, "") else int(number))
    return numbers, "DICOM InstanceNumber n"


def _positions_mm(image: torch.Tensor, axis: int, indices: Sequence[int]) -> list[float]:
    """Position (mm) of each slice's origin along the unit direction of increasing ``axis`` index (identity
    affine without meta-data); the slice normal of a DICOM series, whose slices are sorted along it."""
    affine = image.affine.cpu().numpy() if isinstance(image, MetaTensor) else np.eye(4)
    direction = affine[:3, axis] / np.linalg.norm(affine[:3, axis])
    return [float(direction @ (affine[:3, 3] + k * affine[:3, axis])) for k in indices]


def _numpy(tensor: torch.Tensor | np.ndarray) -> np.ndarray:
    return tensor.detach().cpu().numpy() if isinstance(tensor, torch.Tensor) else np.asarray(tensor)


def _to_uint8(pixels: np.ndarray, grey_range: np.ndarray) -> np.ndarray:
    """Scale to 0-255 between ``grey_range`` (low, high): robust percentiles of the whole image, so all slices
    share one grey scale."""
    low, high = grey_range
    scaled = (pixels.astype(np.float32) - low) / max(float(high - low), 1e-6)
    return (np.clip(scaled, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)

"""The sample study shipped with the brain tumour bundle: a small synthetic brain MR volume with a 3D lesion.

Its axial slices are drawn like the 2D demo brain tumour slices of :mod:`custom_networks.data.demo` (head with
skull ring, textured brain, ventricles, bias field, noise, a bright tumour), but the head and the tumour are one
3D object: the head narrows towards the ends of the stack and the tumour is a lumpy ellipsoid spanning several
slices. The study is written as a DICOM MR series (one file per slice) and as a NIfTI file with the same voxels
and geometry, so the two inputs of the main job must give the same mask. Everything is deterministic in ``seed``,
UIDs included.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from monai.config import PathLike
from PIL import Image

from custom_networks.clinical.dicom_series import LPS_TO_RAS
from custom_networks.clinical.dicom_writer import Study, series_lps_affine, write_series

# the 2D demo's drawing helpers, so that sample slices and demo training slices come from one generator family
from custom_networks.data.demo import (
    blob_radius,
    blur,
    gaussian_noise,
    head_geometry,
    head_slice,
    random_wobble,
    smooth_noise,
    tumour_in_brain,
    ventricle_radius,
)

__all__ = [
    "SAMPLE_DICOM_FOLDER",
    "SAMPLE_NIFTI_FILE",
    "SAMPLE_SHAPE",
    "SAMPLE_SPACING",
    "SampleStudy",
    "lesion_dice",
    "make_sample_study",
    "write_lesion_free_slices",
    "write_sample_study",
]

SAMPLE_SHAPE = (128, 128, 24)
SAMPLE_SPACING = (0.9, 0.9, 5.0)
SAMPLE_DICOM_FOLDER = "mr_series"
SAMPLE_NIFTI_FILE = "mr_volume.nii.gz"

# stored MR value of drawing intensity 1.0
_STORED_SCALE = 1000.0
# tumour area in its largest slice, as a fraction of the slice (the 2D demo draws 7-18 %)
_TUMOUR_AREA = 0.12
# the tumour spans this fraction of the slices, centred a little above the middle of the stack
_TUMOUR_EXTENT, _TUMOUR_CENTRE = 0.45, 0.56
_MR_ATTRIBUTES = {
    "ScanningSequence": "SE",
    "SequenceVariant": "NONE",
    "ScanOptions": "",
    "MRAcquisitionType": "2D",
    "RepetitionTime": "550",
    "EchoTime": "12",
    "EchoTrainLength": "1",
    "MagneticFieldStrength": "1.5",
    "PatientPosition": "HFS",
    "BodyPartExamined": "BRAIN",
    "WindowCenter": "500",
    "WindowWidth": "1000",
}


@dataclass(frozen=True)
class SampleStudy:
    """The sample volume: stored values and lesion mask, both ``[column, row, slice]``, and the geometry."""

    image: np.ndarray
    lesion: np.ndarray
    lps_affine: np.ndarray

    @property
    def ras_affine(self) -> np.ndarray:
        return LPS_TO_RAS @ self.lps_affine


def _slice_image(
    rng: np.random.Generator,
    r_head: np.ndarray,
    r_tumour: np.ndarray,
    ventricles: Sequence[np.ndarray],
    bias: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """One axial slice ``(rows, columns)`` in [0, 1] drawn with the 2D demo's intensities, and its lesion mask."""
    shape = r_head.shape
    size = max(shape)
    brain = r_head < 0.83
    mask = (r_tumour < 1.0) & brain
    image, fine, _coarse = head_slice(rng, r_head)
    for ventricle in ventricles:
        image = np.where((ventricle < 1.0) & brain & ~mask, 0.18, image)
    image = np.where(mask, 0.76 + 0.06 * fine, image)
    image = blur(image, size / 400) * bias + gaussian_noise(rng, shape, 0.035)
    return image, mask


def make_sample_study(
    shape: Sequence[int] = SAMPLE_SHAPE,
    spacing: Sequence[float] = SAMPLE_SPACING,
    seed: int = 0,
    with_lesion: bool = True,
) -> SampleStudy:
    """Draw the sample volume.

    Args:
        shape: columns, rows, slices.
        spacing: column, row and slice spacing in mm (axial slices, rows running from anterior to posterior).
        seed: random seed; the same seed draws the same volume.
        with_lesion: draw the tumour; without it the volume is a healthy head (and ``lesion`` is all False).
    """
    columns, rows, n_slices = (int(s) for s in shape)
    plane = (rows, columns)
    size = max(plane)
    rng = np.random.default_rng(seed)
    head = head_geometry(rng, plane)
    centre, radii, angle, wobble = tumour_in_brain(rng, head, _TUMOUR_AREA * rows * columns)
    ventricle_wobbles = [random_wobble(rng, 0.1) for _ in range(2)]
    bias = 1.0 + 0.12 * smooth_noise(rng, plane, size / 2)
    tumour_centre = _TUMOUR_CENTRE * n_slices
    tumour_half_extent = _TUMOUR_EXTENT * n_slices / 2

    image = np.zeros((columns, rows, n_slices), np.float32)
    lesion = np.zeros((columns, rows, n_slices), bool)
    far = np.full(plane, 1e3, np.float32)
    for z in range(n_slices):
        # the head is widest in the middle of the stack; the ventricles only show in its central part
        position = (z + 0.5) / n_slices * 2.0 - 1.0
        head_radii = tuple(r * math.sqrt(1.0 - 0.5 * position**2) for r in head["radii"])
        r_head = blob_radius(plane, head["centre"], head_radii, head["angle"], head["wobble"])
        ventricles = []
        if abs(position) < 0.5:
            for side, ventricle_wobble in zip((-1.0, 1.0), ventricle_wobbles, strict=True):
                ventricles.append(ventricle_radius(plane, head, side, ventricle_wobble))
        t = (z + 0.5 - tumour_centre) / tumour_half_extent
        if with_lesion and abs(t) < 1.0:
            scale = (1.0 - t**2) ** 0.35
            r_tumour = blob_radius(plane, centre, (radii[0] * scale, radii[1] * scale), angle, wobble)
        else:
            r_tumour = far
        slice_image, slice_mask = _slice_image(rng, r_head, r_tumour, ventricles, bias)
        image[:, :, z], lesion[:, :, z] = slice_image.T, slice_mask.T

    stored = np.round(np.clip(image, 0.0, None) * _STORED_SCALE).astype(np.int16)
    in_plane = [-(n - 1) / 2 * s for n, s in zip((columns, rows), spacing[:2], strict=True)]
    origin = in_plane + [-(n_slices - 1) / 2 * spacing[2]]
    return SampleStudy(stored, lesion, series_lps_affine(np.eye(3), spacing, origin))


def write_sample_study(folder: PathLike, seed: int = 0) -> dict[str, Path]:
    """Write the sample study into ``folder``: a DICOM MR series folder and a NIfTI file of the same volume.

    ``folder/mr_series/`` (one file per axial slice, in slice order, reproducible UIDs) is emptied first.

    Returns:
        ``{"dicom": folder/mr_series, "nifti": folder/mr_volume.nii.gz}``.
    """
    folder = Path(folder)
    study = make_sample_study(seed=seed)
    dicom_folder, nifti_path = folder / SAMPLE_DICOM_FOLDER, folder / SAMPLE_NIFTI_FILE
    if dicom_folder.exists():
        shutil.rmtree(dicom_folder)
    uid_seed = f"custom_networks sample study {seed}"
    write_series(
        dicom_folder,
        study.image,
        spacing=SAMPLE_SPACING,
        origin=study.lps_affine[:3, 3],
        study=Study.seeded(uid_seed, patient_id="SAMPLE-0001", patient_name="Sample^Synthetic"),
        description="AX T1 post-contrast (synthetic)",
        shuffle_seed=None,
        uid_seed=uid_seed,
        attributes=_MR_ATTRIBUTES,
    )
    nifti = nib.Nifti1Image(study.image, study.ras_affine)
    nifti.header.set_qform(study.ras_affine, code=1)
    nifti.header.set_sform(study.ras_affine, code=1)
    nifti.header.set_xyzt_units("mm")
    nib.save(nifti, nifti_path)
    return {"dicom": dicom_folder, "nifti": nifti_path}


def lesion_dice(mask: np.ndarray, seed: int = 0) -> float:
    """Dice of a predicted ``[column, row, slice]`` mask (nonzero = lesion) against the sample study's lesion."""
    truth = make_sample_study(seed=seed).lesion
    if mask.shape != truth.shape:
        raise ValueError(f"mask shape {mask.shape} is not the sample study's {truth.shape}")
    predicted = np.asarray(mask) != 0
    return float(2.0 * np.logical_and(predicted, truth).sum() / max(predicted.sum() + truth.sum(), 1))


def write_lesion_free_slices(root: PathLike, first_index: int, n: int, seed: int = 0) -> list[dict]:
    """Add ``n`` tumour-free axial slices of healthy sample-like heads to a Kaggle brain tumour layout folder.

    The Kaggle set (and the 2D demo set imitating it) has a tumour in every slice, so a network trained on it
    alone marks a "tumour" in every slice of a volume. These slices (``images/<k>.png`` 8-bit and an empty
    ``masks/<k>.png`` for k from ``first_index``) are drawn from healthy volumes of the sample study's generator
    with seeds unlike the shipped study's, four slices per volume at random heights.

    Returns:
        the written pairs, ``[{"image": Path, "label": Path}, ...]``.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    pairs = []
    while len(pairs) < n:
        volume = make_sample_study(seed=int(rng.integers(1_000, 1_000_000)), with_lesion=False)
        for z in rng.choice(volume.image.shape[2], size=min(4, n - len(pairs)), replace=False):
            index = first_index + len(pairs)
            pixels = np.clip(volume.image[:, :, z].T / _STORED_SCALE, 0.0, 1.0)
            image_path, mask_path = root / "images" / f"{index}.png", root / "masks" / f"{index}.png"
            image_path.parent.mkdir(parents=True, exist_ok=True)
            mask_path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray((pixels * 255.0 + 0.5).astype(np.uint8)).save(image_path)
            Image.fromarray(np.zeros(pixels.shape, np.uint8)).save(mask_path)
            pairs.append({"image": image_path, "label": mask_path})
    return pairs

"""Brain-lesion slices on real anatomy: the MNI152 2009 template nilearn ships, with simulated lesions.

What it is: axial slices of one real brain (the ICBM 2009c nonlinear symmetric T1 template and its grey- and
white-matter probability maps, 1 mm, installed with nilearn) deformed per simulated patient (rotation, scale,
shift, bias field, contrast), with one lesion per patient: a lobulated ellipsoid in white matter whose in-plane
radius spans about 4 to 22 px at 256 px (small lesions on purpose), a darker core on the T1-like channel, a bright
core and a brighter, unlabelled oedema-like halo on the FLAIR-like channel, and rim or patchy enhancement on the
post-contrast-like channel. The mask is the lesion core; the halo is a distractor a network must not label.
Slices are written in the layout of the public TCGA lower-grade glioma set (Kaggle "lgg-mri-segmentation":
``kaggle_3m/<case>/<case>_<k>.tif`` as 256 x 256 RGB = pre-contrast, FLAIR, post-contrast, and
``<case>_<k>_mask.tif``), so the LGG bundle's datalist, training and evaluation commands run on it unchanged.

What it is not: patient data. Every patient is the same brain, the FLAIR and post-contrast channels are
computed from tissue maps, and the lesions are shapes with textures, not tumours. It tests whether a network
learns small, low-contrast structures on real anatomy with a realistic background; it says nothing about
clinical accuracy.

Examples::

    >>> from custom_networks.data.lesion_slices import lesion_patient, write_lesion_lgg_tif
    >>> slices = lesion_patient(np.random.default_rng(0), n_slices=5)   # [(image HxWx3 in [0, 1], mask HxW), ...]
    >>> pairs = write_lesion_lgg_tif("/tmp/lesions", n_patients=4, slices_per_patient=5, seed=0)
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np
from scipy import ndimage

from custom_networks.data.demo import gaussian_noise, smooth_noise, write_lgg_cases

__all__ = ["LESION_RADIUS_PX", "mni152_maps", "lesion_patient", "write_lesion_lgg_tif"]

# in-plane lesion radius at the lesion's largest cross-section, pixels at 256 px (log-uniform between the two)
LESION_RADIUS_PX = (7.0, 22.0)
# axial template planes (1 mm) whose brain cross-section is large enough for a lesion, and slice spacing
_AXIAL_RANGE = (55, 135)
_SLICE_SPACING_MM = 2.5


@functools.lru_cache(maxsize=1)
def mni152_maps() -> dict[str, np.ndarray]:
    """The MNI152 2009 T1 template and tissue maps shipped with nilearn, 1 mm, as float32 arrays (x, y, z).

    Keys ``t1``, ``gm``, ``wm`` (probabilities) and ``csf`` (the brain mask's remainder). Needs ``nilearn``
    (``pip install nilearn``); nothing is downloaded.
    """
    try:
        from nilearn import datasets
    except ImportError as error:  # a clear reason instead of a bare ImportError deep in a study
        raise ImportError("the lesion set needs nilearn (pip install nilearn): it ships the MNI152 template") from error
    maps = {
        "t1": datasets.load_mni152_template(resolution=1),
        "gm": datasets.load_mni152_gm_template(resolution=1),
        "wm": datasets.load_mni152_wm_template(resolution=1),
    }
    arrays = {name: np.asarray(image.get_fdata(), dtype=np.float32) for name, image in maps.items()}
    brain = (arrays["t1"] > 0.05).astype(np.float32)
    arrays["csf"] = np.clip(brain - arrays["gm"] - arrays["wm"], 0.0, 1.0)
    return arrays


def _axial_plane(volume: np.ndarray, z: float, size: int) -> np.ndarray:
    """Axial plane at (fractional) height ``z`` as a ``size`` x ``size`` image, anterior up, padded square."""
    lower = int(math.floor(z))
    weight = z - lower
    plane = (1.0 - weight) * volume[:, :, lower] + weight * volume[:, :, lower + 1]
    plane = np.rot90(plane)  # rows run anterior -> posterior, columns the x axis
    side = max(plane.shape)
    padded = np.zeros((side, side), np.float32)
    top, left = (side - plane.shape[0]) // 2, (side - plane.shape[1]) // 2
    padded[top : top + plane.shape[0], left : left + plane.shape[1]] = plane
    return ndimage.zoom(padded, size / side, order=1)


def _patient_warp(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A random in-plane similarity transform (rotation +-10 deg, scale 0.9-1.08, shift +-4 %) as matrix, offset."""
    angle = math.radians(rng.uniform(-10.0, 10.0))
    scale = rng.uniform(0.9, 1.08, size=2)
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    matrix = rotation @ np.diag(1.0 / scale)
    centre = np.array([size / 2.0, size / 2.0])
    offset = centre - matrix @ centre + rng.uniform(-0.04, 0.04, size=2) * size
    return matrix, offset


def _lobulated_radius(rng: np.random.Generator, shape: tuple[int, int], centre, radius: float) -> np.ndarray:
    """Normalised radius field of a lobulated, slightly elongated blob (``< 1`` inside)."""
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float32)
    dy, dx = yy - centre[0], xx - centre[1]
    aspect = rng.uniform(0.7, 1.0)
    tilt = rng.uniform(0.0, math.pi)
    u = dx * math.cos(tilt) + dy * math.sin(tilt)
    v = (-dx * math.sin(tilt) + dy * math.cos(tilt)) / aspect
    theta = np.arctan2(v, u)
    lobes = sum(rng.uniform(0.0, 0.12) * np.cos(k * theta + rng.uniform(0.0, 2 * math.pi)) for k in (2, 3, 5))
    return np.hypot(u, v) / (radius * (1.0 + lobes))


def lesion_patient(
    rng: np.random.Generator, n_slices: int = 12, size: int = 256, lesion_share: float = 0.6
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Consecutive axial slices of one simulated patient: ``[(image (size, size, 3) in [0, 1], mask bool), ...]``.

    The lesion is an ellipsoid along z crossing about ``lesion_share`` of the slices (its cross-sections shrink
    towards its ends, so every patient also has small ones); the remaining slices have empty masks.

    Args:
        rng: the random generator (the same state gives the same patient).
        n_slices: slices, ``_SLICE_SPACING_MM`` apart.
        size: image height and width in pixels.
        lesion_share: share of the slices the lesion spans, in (0, 1].
    """
    maps = mni152_maps()
    matrix, offset = _patient_warp(rng, size)
    span_mm = n_slices * _SLICE_SPACING_MM
    z_first = rng.uniform(_AXIAL_RANGE[0], _AXIAL_RANGE[1] - span_mm)
    radius = math.exp(rng.uniform(math.log(LESION_RADIUS_PX[0]), math.log(LESION_RADIUS_PX[1]))) * size / 256.0
    half_length = max(1.0, lesion_share * n_slices / 2.0)
    z_centre = rng.uniform(half_length - 0.5, n_slices - half_length - 0.5)
    contrast = rng.uniform(0.45, 1.0)  # some lesions are subtle
    gammas = rng.uniform(0.8, 1.25, size=3)
    enhancing_rim = rng.uniform() < 0.5
    centre = None
    slices = []
    for k in range(n_slices):
        z = z_first + k * _SLICE_SPACING_MM
        planes = {
            name: ndimage.affine_transform(_axial_plane(volume, z, size), matrix, offset, order=1)
            for name, volume in maps.items()
        }
        if centre is None:  # the lesion's centre: deep white matter of the first slice, kept for all slices
            deep = ndimage.binary_erosion(planes["wm"] > 0.6, iterations=max(2, int(radius * 0.5)))
            candidates = np.argwhere(deep) if deep.any() else np.argwhere(planes["wm"] > 0.3)
            centre = candidates[rng.integers(len(candidates))].astype(np.float32)
            blob_seed = int(rng.integers(2**31))
        along = (k - z_centre) / half_length
        scale = math.sqrt(max(0.0, 1.0 - along**2))
        if scale > 0.2:
            r = _lobulated_radius(np.random.default_rng(blob_seed), (size, size), centre, radius * scale)
        else:
            r = np.full((size, size), 1e3, np.float32)
        brain = planes["t1"] > 0.05
        core = (r < 1.0) & brain
        halo = np.clip((1.7 - r) / 0.7, 0.0, 1.0) * brain * ~core  # oedema-like, fading outwards
        texture = smooth_noise(rng, (size, size), size / 40)

        t1 = planes["t1"] * (1.0 - 0.35 * contrast * core - 0.12 * contrast * halo)
        flair = 0.55 * planes["wm"] + 0.75 * planes["gm"] + 0.12 * planes["csf"]
        flair = flair + contrast * (0.35 * core + 0.25 * halo) + 0.04 * texture * core
        post = t1.copy()
        if enhancing_rim:
            post = post + 0.45 * contrast * (core & (r > 0.7))
        else:
            post = post + 0.35 * contrast * (core & (texture > 0.3))
        image = np.stack([t1, flair, post], axis=-1)
        image = np.clip(image, 0.0, None) ** gammas
        bias = 1.0 + 0.12 * smooth_noise(rng, (size, size), size / 2)
        image = image * bias[..., None] + gaussian_noise(rng, image.shape, rng.uniform(0.015, 0.035))
        image[~brain] = 0.0
        slices.append((np.clip(image, 0.0, 1.0).astype(np.float32), core))
    return slices


def write_lesion_lgg_tif(
    root: str | Path, n_patients: int = 10, slices_per_patient: int = 10, size: int = 256, seed: int = 0
) -> list[dict]:
    """Write the lesion set in the Kaggle "lgg-mri-segmentation" layout under ``root/kaggle_3m/``.

    Returns ``[{"image": Path, "label": Path}, ...]``; the same ``seed`` writes the same files.

    Args:
        root: dataset folder (created if needed).
        n_patients: simulated patients (folders).
        slices_per_patient: consecutive slices per patient.
        size: slice height and width in pixels (the public set has 256).
        seed: random seed.
    """
    rng = np.random.default_rng(seed)
    return write_lgg_cases(root, rng, n_patients, lambda rng: lesion_patient(rng, slices_per_patient, size))

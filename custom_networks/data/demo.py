"""Small synthetic datasets written in the exact folder layouts of the public datasets the bundles accept.

The commands users run on the real downloads (datalist building, training, evaluation) run unchanged on these
folders. Every generator is deterministic given ``seed`` and returns the written pairs as
``[{"image": Path, "label": Path | [Path, Path]}, ...]``.

Layouts (see ``shared/specs/datasets.md``):

- ``brain_tumor``: Kaggle "brain-tumor-segmentation": ``images/N.png``, ``masks/N.png``.
- ``lgg``: Kaggle "lgg-mri-segmentation": ``kaggle_3m/<case>/<case>_<k>.tif`` and ``<case>_<k>_mask.tif``.
- ``montgomery``: ``CXR_png/<id>.png``, ``ManualMask/leftMask/<id>.png``, ``ManualMask/rightMask/<id>.png``.
- ``shenzhen``: ``CXR_png/<id>.png``, ``masks/<id>_mask.png``.
- ``isic2018``: ``ISIC2018_Task1-2_Training_Input/ISIC_<n>.jpg``,
  ``ISIC2018_Task1_Training_GroundTruth/ISIC_<n>_segmentation.png``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image, ImageDraw

__all__ = [
    "DEMO_TASKS",
    "write_brain_tumor_png",
    "write_lgg_tif",
    "write_lgg_cases",
    "write_montgomery_cxr",
    "write_shenzhen_cxr",
    "write_isic2018",
    "write_demo_dataset",
    "blob_radius",
    "blur",
    "gaussian_noise",
    "head_geometry",
    "head_slice",
    "random_wobble",
    "smooth_noise",
    "tumour_in_brain",
    "ventricle_radius",
]

DEMO_TASKS = ("brain_tumor", "lgg", "montgomery", "shenzhen", "isic2018")

# fraction of the image area a lesion mask covers: large enough to learn, small enough to stay a lesion
_LESION_AREA = (0.05, 0.25)
# ISIC 2018 images come in many sizes; (height, width) pairs in the same 3:4 and 1:1 shapes
_ISIC_SIZES = ((300, 400), (320, 320), (288, 384), (336, 448), (360, 480), (384, 384))
_LGG_SITES = ("CS", "DU", "EZ", "FG", "HT")
# normalised radius reported for pixels outside a blob's bounding box
_FAR = 1e3


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cell: float) -> np.ndarray:
    """Zero-mean, unit-std random field with structures about ``cell`` pixels wide."""
    h, w = shape
    coarse = rng.standard_normal((max(2, round(h / cell) + 2), max(2, round(w / cell) + 2))).astype(np.float32)
    field = np.asarray(Image.fromarray(coarse).resize((w, h), Image.Resampling.BICUBIC))
    return (field - field.mean()) / (field.std() + 1e-6)


def gaussian_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    return rng.standard_normal(shape, dtype=np.float32) * np.float32(sigma)


def blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of a float (H, W) or (H, W, C) array (Pillow cannot blur float images)."""
    radius = max(1, int(math.ceil(2.5 * sigma)))
    offsets = np.arange(-radius, radius + 1)
    weights = np.exp(-0.5 * (offsets / sigma) ** 2).astype(np.float32)
    weights /= weights.sum()
    h, w = image.shape[:2]
    extra = [(0, 0)] * (image.ndim - 2)
    padded = np.pad(image.astype(np.float32), [(radius, radius), (0, 0), *extra], mode="edge")
    rows = sum(wk * padded[k : k + h] for k, wk in enumerate(weights))
    padded = np.pad(rows, [(0, 0), (radius, radius), *extra], mode="edge")
    return sum(wk * padded[:, k : k + w] for k, wk in enumerate(weights))


def _grid(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float32)
    return yy, xx


def blob_radius(
    shape: tuple[int, int],
    centre: tuple[float, float],
    radii: tuple[float, float],
    angle: float,
    wobble: np.ndarray,
) -> np.ndarray:
    """Normalised radius of an irregular rotated ellipse: < 1 inside, 1 on the border, ``_FAR`` far outside.

    ``wobble`` holds (amplitude, phase) rows for harmonics 2, 3, ... of the border radius. Only the bounding box
    of the largest possible border is computed.
    """
    reach = max(radii) * (1.0 + float(wobble[:, 0].sum())) + 2.0
    top, bottom = max(0, int(centre[0] - reach)), min(shape[0], int(centre[0] + reach) + 1)
    left, right = max(0, int(centre[1] - reach)), min(shape[1], int(centre[1] + reach) + 1)
    out = np.full(shape, _FAR, np.float32)
    if top >= bottom or left >= right:
        return out
    dy = np.arange(top, bottom, dtype=np.float32)[:, None] - np.float32(centre[0])
    dx = np.arange(left, right, dtype=np.float32)[None, :] - np.float32(centre[1])
    c, s = np.float32(math.cos(angle)), np.float32(math.sin(angle))
    u = (dx * c + dy * s) / np.float32(radii[1])
    v = (-dx * s + dy * c) / np.float32(radii[0])
    rho = np.hypot(u, v)
    # powers of the unit complex number e^(i theta) give cos(k theta + phase) without trigonometric calls
    unit = (u + 1j * v).astype(np.complex64) / np.maximum(rho, np.float32(1e-6))
    power = unit
    border = np.ones_like(rho)
    for amplitude, phase in wobble:
        power = power * unit
        border += np.float32(amplitude) * (power * np.complex64(complex(math.cos(phase), math.sin(phase)))).real
    out[top:bottom, left:right] = rho / border
    return out


def random_wobble(rng: np.random.Generator, strength: float, harmonics: int = 4) -> np.ndarray:
    amplitudes = rng.uniform(0.0, strength, harmonics) / np.arange(1, harmonics + 1)
    phases = rng.uniform(0.0, 2 * math.pi, harmonics)
    return np.stack([amplitudes, phases], axis=1)


def _radii_for_area(rng: np.random.Generator, area: float) -> tuple[float, float]:
    aspect = rng.uniform(0.6, 1.0)
    ry = math.sqrt(area / (math.pi * aspect))
    return ry, aspect * ry


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _mask_uint8(mask: np.ndarray) -> np.ndarray:
    return np.where(mask, 255, 0).astype(np.uint8)


def _save_png(array: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, compress_level=1)


def head_geometry(rng: np.random.Generator, shape: tuple[int, int]) -> dict:
    """Random elliptical head geometry shared by the brain MRI generators."""
    h, w = shape
    ry = h * rng.uniform(0.39, 0.45)
    return {
        "centre": (h / 2 + rng.uniform(-0.03, 0.03) * h, w / 2 + rng.uniform(-0.03, 0.03) * w),
        "radii": (ry, ry * rng.uniform(0.76, 0.88)),
        "angle": rng.uniform(-0.15, 0.15),
        "wobble": random_wobble(rng, 0.03),
    }


def head_slice(rng: np.random.Generator, r_head: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One axial slice of the head drawn in [0, 1] (scalp, skull ring, textured brain inside ``r_head`` < 0.83),
    and the fine and coarse noise fields its texture used (the lesions reuse them)."""
    size = max(r_head.shape)
    fine, coarse = smooth_noise(rng, r_head.shape, size / 48), smooth_noise(rng, r_head.shape, size / 10)
    image = np.zeros(r_head.shape, np.float32)
    image[r_head < 1.0] = 0.72
    image[r_head < 0.93] = 0.08
    image[r_head < 0.87] = 0.22
    image = np.where(r_head < 0.83, 0.42 + 0.045 * coarse + 0.035 * fine, image)
    return image, fine, coarse


def ventricle_radius(shape: tuple[int, int], head: dict, side: float, wobble: np.ndarray) -> np.ndarray:
    """Normalised radius of the lateral ventricle on ``side`` (-1 or 1) of a head of :func:`head_geometry`."""
    size = max(shape)
    centre = (head["centre"][0] - 0.05 * size, head["centre"][1] + side * 0.035 * size)
    return blob_radius(shape, centre, (0.09 * size, 0.025 * size), head["angle"] + side * 0.25, wobble)


def tumour_in_brain(
    rng: np.random.Generator, head: dict, area: float
) -> tuple[tuple[float, float], tuple[float, float], float, np.ndarray]:
    """Random tumour geometry (centre, radii, angle, wobble) whose centre lies well inside the brain."""
    radius, direction = 0.45 * math.sqrt(rng.uniform()), rng.uniform(0.0, 2 * math.pi)
    hy, hx = head["centre"]
    centre = (
        hy + radius * head["radii"][0] * math.sin(direction),
        hx + radius * head["radii"][1] * math.cos(direction),
    )
    return centre, _radii_for_area(rng, area), rng.uniform(0.0, math.pi), random_wobble(rng, 0.35)


def _brain_slice(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """One T1-contrast-like brain slice in [0, 1] and its tumour mask."""
    shape = (size, size)
    head = head_geometry(rng, shape)
    r_head = blob_radius(shape, head["centre"], head["radii"], head["angle"], head["wobble"])
    brain = r_head < 0.83
    for _ in range(20):
        n_tumours = 1 if rng.uniform() < 0.75 else 2
        total_area = rng.uniform(0.07, 0.18) * size * size
        first_share = 1.0 if n_tumours == 1 else rng.uniform(0.35, 0.65)
        shares = [first_share, 1.0 - first_share][:n_tumours]
        tumours = [tumour_in_brain(rng, head, total_area * part) for part in shares]
        radii = [blob_radius(shape, *tumour) for tumour in tumours]
        mask = np.logical_or.reduce([r < 1.0 for r in radii]) & brain
        if _LESION_AREA[0] <= mask.mean() <= _LESION_AREA[1]:
            break

    image, fine, coarse = head_slice(rng, r_head)
    for side in (-1.0, 1.0):
        ventricle = ventricle_radius(shape, head, side, random_wobble(rng, 0.1))
        image = np.where((ventricle < 1.0) & ~mask, 0.18, image)
    for r in radii:
        inside = (r < 1.0) & brain
        # solid enhancing, ring-enhancing with a dark core, or hypointense with a faint rim
        kind = rng.uniform()
        if kind < 0.5:
            tumour = 0.76 + 0.06 * fine
        elif kind < 0.8:
            tumour = np.where(r > 0.7, 0.8 + 0.04 * fine, 0.3 + 0.04 * coarse)
        else:
            tumour = np.where(r > 0.88, 0.62, 0.2 + 0.04 * fine)
        image = np.where(inside, tumour, image)

    image = blur(image, size / 400)
    bias = 1.0 + 0.12 * smooth_noise(rng, shape, size / 2)
    image = image * bias + gaussian_noise(rng, shape, 0.035)
    return image, mask


def write_brain_tumor_png(root: str | Path, n_cases: int = 40, size: int = 512, seed: int = 0) -> list[dict]:
    """Write a Kaggle "brain-tumor-segmentation" style dataset: ``images/N.png`` and ``masks/N.png`` (N from 1).

    Images are 8-bit grayscale brain-MRI-like slices (head with skull ring, textured brain, ventricles, bias
    field, noise) with one or two bright, ring-enhancing or dark tumours; masks are 8-bit 0/255.

    Args:
        root: dataset folder to write into (created if needed).
        n_cases: number of image/mask pairs.
        size: image height and width in pixels.
        seed: random seed; the same seed writes the same files.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    pairs = []
    for index in range(1, n_cases + 1):
        image, mask = _brain_slice(rng, size)
        image_path, mask_path = root / "images" / f"{index}.png", root / "masks" / f"{index}.png"
        _save_png(_to_uint8(image), image_path)
        _save_png(_mask_uint8(mask), mask_path)
        pairs.append({"image": image_path, "label": mask_path})
    return pairs


def _lgg_case_names(rng: np.random.Generator, n_patients: int) -> list[str]:
    numbers = rng.choice(np.arange(4900, 8200), size=n_patients, replace=False)
    names = []
    for number in numbers:
        site = _LGG_SITES[int(rng.integers(len(_LGG_SITES)))]
        date = f"{int(rng.integers(1985, 2002))}{int(rng.integers(1, 13)):02d}{int(rng.integers(1, 29)):02d}"
        names.append(f"TCGA_{site}_{int(number)}_{date}")
    return names


def _lgg_volume(rng: np.random.Generator, n_slices: int, size: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Slices of one synthetic patient: (RGB image in [0, 1] as pre-contrast, FLAIR, post-contrast; mask)."""
    shape = (size, size)
    head = head_geometry(rng, shape)
    n_tumour = min(max(1, round(rng.uniform(0.35, 0.6) * n_slices)), max(1, n_slices - 1))
    first = int(rng.integers(max(1, (n_slices - n_tumour) // 4), max(2, n_slices - n_tumour + 1)))
    first = min(first, n_slices - n_tumour)
    tumour_slices = range(first, first + n_tumour)
    centre, radii, angle, wobble = tumour_in_brain(rng, head, rng.uniform(0.09, 0.18) * size * size)
    enhancing = rng.uniform() < 0.5
    flair_lesion = rng.uniform(0.58, 0.78)
    slices = []
    for z in range(n_slices):
        # the head is smallest at the ends of the stack and largest in the middle
        position = (z + 0.5) / n_slices * 2.0 - 1.0
        slice_head = dict(head, radii=tuple(r * math.sqrt(1.0 - 0.5 * position**2) for r in head["radii"]))
        r_head = blob_radius(shape, slice_head["centre"], slice_head["radii"], head["angle"], head["wobble"])
        brain = r_head < 0.85
        if z in tumour_slices:
            t = (z + 0.5 - first) / n_tumour * 2.0 - 1.0
            scale = math.sqrt(0.6 + 0.4 * (1.0 - t**2))
            r_tumour = blob_radius(shape, centre, (radii[0] * scale, radii[1] * scale), angle, wobble)
        else:
            r_tumour = np.full(shape, _FAR, np.float32)
        mask = (r_tumour < 1.0) & brain
        fine, coarse = smooth_noise(rng, shape, size / 40), smooth_noise(rng, shape, size / 8)
        channels = []
        #             scalp, skull, brain, tumour, tumour core
        for levels in (
            (0.8, 0.1, 0.45, 0.32, 0.3),
            (0.7, 0.08, 0.4, flair_lesion, flair_lesion - 0.06),
            (0.8, 0.1, 0.46, 0.35, 0.33),
        ):
            channel = np.zeros(shape, np.float32)
            channel[r_head < 1.0] = levels[0]
            channel[r_head < 0.92] = levels[1]
            channel = np.where(brain, levels[2] + 0.04 * coarse + 0.03 * fine, channel)
            channel = np.where(mask, np.where(r_tumour < 0.6, levels[4], levels[3]) + 0.05 * fine, channel)
            channels.append(channel)
        # FLAIR: the cortical ribbon is brighter than white matter, a distractor for a plain threshold
        channels[1] = np.where(brain & ~mask & (r_head > 0.76), channels[1] + 0.14, channels[1])
        if enhancing:
            # post-contrast: patchy enhancement inside part of the lesion only
            channels[2] = np.where(mask & (coarse > 0.3), 0.72 + 0.04 * fine, channels[2])
        image = np.stack(channels, axis=-1)
        image = blur(image, size / 300)
        bias = 1.0 + 0.15 * smooth_noise(rng, shape, size / 2)
        image = image * bias[..., None] + gaussian_noise(rng, image.shape, 0.03)
        image[r_head >= 1.0] = 0.0
        slices.append((image, mask))
    return slices


def write_lgg_tif(
    root: str | Path, n_patients: int = 6, slices_per_patient: int = 20, size: int = 256, seed: int = 0
) -> list[dict]:
    """Write a Kaggle "lgg-mri-segmentation" style dataset under ``kaggle_3m/``.

    Each patient is a folder ``kaggle_3m/<case>/`` (case names like ``TCGA_CS_4941_19960909``) holding
    ``<case>_<k>.tif`` (k from 1; ``size`` x ``size`` x 3 uint8 RGB = pre-contrast, FLAIR, post-contrast; the
    lesion is dark in pre-contrast, bright in FLAIR and patchy in post-contrast) and ``<case>_<k>_mask.tif``
    (``size`` x ``size`` uint8, 0/255). The lesion spans a run of consecutive slices of each patient; the other
    slices have empty masks, as in the real data.

    Args:
        root: dataset folder to write into (created if needed).
        n_patients: number of patient folders.
        slices_per_patient: slices per patient.
        size: slice height and width in pixels.
        seed: random seed; the same seed writes the same files.
    """
    rng = np.random.default_rng(seed)
    return write_lgg_cases(root, rng, n_patients, lambda rng: _lgg_volume(rng, slices_per_patient, size))


def write_lgg_cases(
    root: str | Path,
    rng: np.random.Generator,
    n_patients: int,
    make_patient: Callable[[np.random.Generator], list[tuple[np.ndarray, np.ndarray]]],
) -> list[dict]:
    """Write ``n_patients`` patients in the ``kaggle_3m/<case>/<case>_<k>(_mask).tif`` layout.

    ``make_patient(rng)`` returns one patient's slices ``[(RGB image in [0, 1], mask), ...]``; case names are
    drawn from ``rng`` first. Returns ``[{"image": Path, "label": Path}, ...]``.
    """
    root = Path(root)
    pairs = []
    for case in _lgg_case_names(rng, n_patients):
        folder = root / "kaggle_3m" / case
        folder.mkdir(parents=True, exist_ok=True)
        for k, (image, mask) in enumerate(make_patient(rng), start=1):
            image_path, mask_path = folder / f"{case}_{k}.tif", folder / f"{case}_{k}_mask.tif"
            tifffile.imwrite(image_path, _to_uint8(image), photometric="rgb")
            tifffile.imwrite(mask_path, _mask_uint8(mask), photometric="minisblack")
            pairs.append({"image": image_path, "label": mask_path})
    return pairs


def _chest_xray(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One chest-X-ray-like image in [0, 1] with the patient's right and left lung masks.

    The patient's right lung is on the image's left (radiological convention).
    """
    shape = (size, size)
    yy, xx = _grid(shape)
    y, x = yy / size, xx / size
    jitter = [float(value) for value in rng.uniform(-0.02, 0.02, 4)]
    body = np.abs(x - 0.5) < rng.uniform(0.41, 0.46) - 0.5 * np.clip(0.12 - y, 0.0, None)

    lungs = []
    for side, cx, rx, ry in ((-1.0, 0.31, 0.14, 0.29), (1.0, 0.69, 0.13, 0.27)):
        cx, cy = cx + jitter[0] * side, 0.47 + jitter[1]
        rx, ry = rx * rng.uniform(0.88, 1.1), ry * rng.uniform(0.88, 1.1)
        v = (y - cy) / ry
        u = side * (x - cx) / rx / (1.0 + 0.3 * np.clip(v, -1.0, 1.0))
        border = 1.0 + 0.04 * np.cos(3.0 * np.arctan2(v, u) + rng.uniform(0.0, 2 * math.pi))
        diaphragm = 0.82 - 0.22 * (1.0 - np.clip(u, -1.0, 1.0) ** 2)
        lungs.append((np.hypot(u, v) < border) & (v < diaphragm))
    heart_radius = ((y - 0.68 - jitter[2]) / 0.14) ** 2 + ((x - 0.56 - jitter[3]) / rng.uniform(0.13, 0.17)) ** 2
    heart = heart_radius < 1.0
    right_lung, left_lung = lungs[0] & ~heart, lungs[1] & ~heart

    fine, coarse = smooth_noise(rng, shape, size / 60), smooth_noise(rng, shape, size / 12)
    image = np.where(body, 0.62 + 0.03 * coarse, 0.06)
    lung_fields = right_lung | left_lung
    hilum = np.exp(-(((np.abs(x - 0.5) - 0.12) / 0.08) ** 2))
    image = np.where(lung_fields, 0.22 + 0.12 * hilum + 0.04 * coarse + 0.03 * fine, image)
    image = np.where(heart, 0.66, image)
    image = np.where(np.abs(x - 0.5 - 0.01 * jitter[0]) < 0.035, image + 0.12, image)

    thorax = body & (y > 0.12) & (y < 0.8) & (np.abs(x - 0.5) > 0.04)
    rib_phase = rng.uniform(0.0, 1.0)
    spacing = 0.065
    rib_y = y + 2.0 * (np.abs(x - 0.5) - 0.3) ** 2
    ribs = np.abs(((rib_y / spacing + rib_phase) % 1.0) - 0.5) < 0.14
    image = np.where(thorax & ribs, image + 0.1, image)
    clavicle = np.abs(y - (0.15 + 0.15 * np.abs(x - 0.5))) < 0.013
    image = np.where(body & clavicle & (np.abs(x - 0.5) < 0.3), image + 0.14, image)

    image = blur(image, size / 250)
    bias = 1.0 + 0.08 * smooth_noise(rng, shape, size / 2) - 0.1 * ((y - 0.5) ** 2 + (x - 0.5) ** 2)
    image = image * bias + gaussian_noise(rng, shape, 0.025)
    return image, right_lung, left_lung


def _cxr_ids(rng: np.random.Generator, prefix: str, n: int) -> list[str]:
    # the final digit is the dataset's normal (0) / abnormal (1) flag
    return [f"{prefix}_{index:04d}_{int(rng.integers(2))}" for index in range(1, n + 1)]


def write_montgomery_cxr(root: str | Path, n: int = 20, size: int = 512, seed: int = 0) -> list[dict]:
    """Write a Montgomery County chest X-ray style dataset.

    Files: ``CXR_png/<id>.png`` (8-bit grayscale), ``ManualMask/leftMask/<id>.png`` (patient's left lung, on
    the image's right) and ``ManualMask/rightMask/<id>.png`` (patient's right lung), masks 0/255; ids like
    ``MCUCXR_0001_0``. The returned label of each pair is ``[left_mask, right_mask]``.

    Args:
        root: dataset folder to write into (created if needed).
        n: number of images.
        size: image height and width in pixels.
        seed: random seed; the same seed writes the same files.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    pairs = []
    for case in _cxr_ids(rng, "MCUCXR", n):
        image, right_lung, left_lung = _chest_xray(rng, size)
        image_path = root / "CXR_png" / f"{case}.png"
        left_path = root / "ManualMask" / "leftMask" / f"{case}.png"
        right_path = root / "ManualMask" / "rightMask" / f"{case}.png"
        _save_png(_to_uint8(image), image_path)
        _save_png(_mask_uint8(left_lung), left_path)
        _save_png(_mask_uint8(right_lung), right_path)
        pairs.append({"image": image_path, "label": [left_path, right_path]})
    return pairs


def write_shenzhen_cxr(root: str | Path, n: int = 20, size: int = 512, seed: int = 0) -> list[dict]:
    """Write a Shenzhen chest X-ray style dataset (as in Kaggle "chest-xray-masks-and-labels").

    Files: ``CXR_png/<id>.png`` (8-bit grayscale) and ``masks/<id>_mask.png`` (both lungs, 0/255); ids like
    ``CHNCXR_0001_0``.

    Args:
        root: dataset folder to write into (created if needed).
        n: number of images.
        size: image height and width in pixels.
        seed: random seed; the same seed writes the same files.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    pairs = []
    for case in _cxr_ids(rng, "CHNCXR", n):
        image, right_lung, left_lung = _chest_xray(rng, size)
        image_path, mask_path = root / "CXR_png" / f"{case}.png", root / "masks" / f"{case}_mask.png"
        _save_png(_to_uint8(image), image_path)
        _save_png(_mask_uint8(right_lung | left_lung), mask_path)
        pairs.append({"image": image_path, "label": mask_path})
    return pairs


def _skin_lesion(rng: np.random.Generator, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """One dermoscopy-like RGB image in [0, 1] with its lesion mask."""
    h, w = shape
    yy, xx = _grid(shape)
    for _ in range(20):
        centre = (h * rng.uniform(0.38, 0.62), w * rng.uniform(0.38, 0.62))
        radii = _radii_for_area(rng, rng.uniform(0.07, 0.2) * h * w)
        r_lesion = blob_radius(shape, centre, radii, rng.uniform(0.0, math.pi), random_wobble(rng, 0.3, 6))
        mask = r_lesion < 1.0
        if _LESION_AREA[0] <= mask.mean() <= _LESION_AREA[1]:
            break

    cell = min(h, w)
    fine, coarse = smooth_noise(rng, shape, cell / 40), smooth_noise(rng, shape, cell / 8)
    skin = (np.array([0.88, 0.66, 0.58]) * rng.uniform(0.6, 1.05) + rng.uniform(-0.04, 0.04, 3)).astype(np.float32)
    # lesion contrast varies from faint to dark, so no one threshold fits all images
    lesion = (skin * np.array([0.8, 0.72, 0.66]) * rng.uniform(0.5, 0.85)).astype(np.float32)
    image = skin + (0.03 * coarse + 0.015 * fine)[..., None]
    # darker and lighter blotches inside the lesion and a soft border a few pixels wide
    blotch = np.clip(0.5 + 0.5 * smooth_noise(rng, shape, cell / 10), 0.0, 1.0)[..., None]
    lesion_colour = lesion * (0.7 + 0.5 * blotch) + 0.04 * fine[..., None]
    weight = np.clip((1.0 - r_lesion) * 12.0 + 0.5, 0.0, 1.0)[..., None]
    image = image * (1.0 - weight) + lesion_colour * weight

    vignette = np.hypot((yy - h / 2) / (h / 2), (xx - w / 2) / (w / 2))
    if rng.uniform() < 0.5:
        image = (
            image * np.clip(1.0 - 2.5 * np.clip(vignette - rng.uniform(0.85, 1.05), 0.0, None), 0.05, 1.0)[..., None]
        )
    image = image * (1.0 + 0.1 * smooth_noise(rng, shape, cell / 2))[..., None]
    image = image + gaussian_noise(rng, image.shape, 0.02)

    hair = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(hair)
    for _ in range(int(rng.integers(0, 10))):
        start = (rng.uniform(0, w), rng.uniform(0, h))
        heading, points = rng.uniform(0.0, 2 * math.pi), [start]
        for _ in range(8):
            heading += rng.normal(0.0, 0.2)
            step = cell / 12
            points.append((points[-1][0] + step * math.cos(heading), points[-1][1] + step * math.sin(heading)))
        draw.line(points, fill=255, width=int(rng.integers(1, 3)))
    hair_weight = np.asarray(hair, np.float32)[..., None] / 255.0 * 0.8
    image = image * (1.0 - hair_weight) + 0.15 * hair_weight
    return image, mask


def write_isic2018(
    root: str | Path, n: int = 30, seed: int = 0, sizes: Sequence[tuple[int, int]] = _ISIC_SIZES
) -> list[dict]:
    """Write an ISIC 2018 Task 1 style training set of RGB images of varying size.

    Files: ``ISIC2018_Task1-2_Training_Input/ISIC_<7 digits>.jpg`` (RGB JPEG: skin with a darker irregular
    lesion, hairs, sometimes a dark dermoscope vignette) and
    ``ISIC2018_Task1_Training_GroundTruth/ISIC_<7 digits>_segmentation.png`` (same size, 0/255). Image ids
    increase with gaps, as in the real set.

    Args:
        root: dataset folder to write into (created if needed).
        n: number of images.
        seed: random seed; the same seed writes the same files.
        sizes: (height, width) choices; each image takes one at random.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    image_dir = root / "ISIC2018_Task1-2_Training_Input"
    mask_dir = root / "ISIC2018_Task1_Training_GroundTruth"
    image_dir.mkdir(parents=True, exist_ok=True)
    pairs = []
    number = 0
    for _ in range(n):
        shape = tuple(sizes[int(rng.integers(len(sizes)))])
        image, mask = _skin_lesion(rng, shape)
        image_path = image_dir / f"ISIC_{number:07d}.jpg"
        mask_path = mask_dir / f"ISIC_{number:07d}_segmentation.png"
        Image.fromarray(_to_uint8(image)).save(image_path, quality=92)
        _save_png(_mask_uint8(mask), mask_path)
        pairs.append({"image": image_path, "label": mask_path})
        number += int(rng.integers(1, 4))
    return pairs


def write_demo_dataset(task: str, root: str | Path, n: int | None = None, seed: int = 0) -> list[dict]:
    """Write a synthetic dataset for ``task`` in the layout of its public dataset.

    Args:
        task: one of ``DEMO_TASKS``: "brain_tumor", "lgg", "montgomery", "shenzhen", "isic2018".
        root: dataset folder to write into (created if needed).
        n: number of images (of patients for "lgg", each with 20 slices); None takes the writer's default.
        seed: random seed; the same seed writes the same files.

    Returns:
        the written pairs, ``[{"image": Path, "label": Path | [left, right]}, ...]``.
    """
    writers = {
        "brain_tumor": (write_brain_tumor_png, "n_cases"),
        "lgg": (write_lgg_tif, "n_patients"),
        "montgomery": (write_montgomery_cxr, "n"),
        "shenzhen": (write_shenzhen_cxr, "n"),
        "isic2018": (write_isic2018, "n"),
    }
    if task not in writers:
        raise ValueError(f"unknown demo task {task!r}; expected one of {', '.join(DEMO_TASKS)}")
    writer, count_name = writers[task]
    counts = {} if n is None else {count_name: n}
    return writer(root, seed=seed, **counts)

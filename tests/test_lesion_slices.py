"""The MNI152 lesion set: real anatomy, lesions of the stated sizes inside white matter, the LGG layout."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from scipy import ndimage

pytest.importorskip("nilearn", reason="the lesion set needs nilearn (test extra)")

from custom_networks.data.datalist import build_datalist  # noqa: E402
from custom_networks.data.lesion_slices import (  # noqa: E402
    LESION_RADIUS_PX,
    lesion_patient,
    mni152_maps,
    write_lesion_lgg_tif,
)


def test_template_is_real_anatomy():
    maps = mni152_maps()
    assert maps["t1"].shape == (197, 233, 189)
    brain = maps["t1"] > 0.05
    # an adult intracranial volume is 1.2-2.0 litres (1 mm voxels); white matter is a sizeable share of it
    assert 1.2e6 < brain.sum() < 2.0e6
    assert 0.25 < (maps["wm"] > 0.5).sum() / brain.sum() < 0.5


@pytest.mark.parametrize("seed", [3, 11])
def test_lesions_span_small_to_large_and_sit_in_the_brain(seed):
    rng = np.random.default_rng(seed)
    largest, empty_slices, total_slices = [], 0, 0
    for _ in range(6):
        slices = lesion_patient(rng, n_slices=8)
        areas = [mask.sum() for _, mask in slices]
        empty_slices += sum(area == 0 for area in areas)
        total_slices += len(slices)
        image, mask = slices[int(np.argmax(areas))]
        assert image.shape == (256, 256, 3) and image.dtype == np.float32
        assert 0.0 <= image.min() and image.max() <= 1.0
        assert (image[mask].sum(axis=-1) > 0).all(), "lesion pixels lie inside the brain"
        assert ndimage.label(mask)[1] == 1, "one lesion per slice"
        largest.append(np.sqrt(mask.sum() / np.pi))
        # FLAIR-like channel: the core is brighter than the brain around the lesion's halo
        ring = ndimage.binary_dilation(mask, iterations=12) & ~ndimage.binary_dilation(mask, iterations=6)
        assert image[..., 1][mask].mean() > image[..., 1][ring & (image.sum(-1) > 0)].mean()
    low, high = LESION_RADIUS_PX
    assert all(0.6 * low <= radius <= 1.2 * high for radius in largest)
    assert max(largest) - min(largest) > 0.25 * (high - low), "sizes vary between patients"
    assert 0.2 <= empty_slices / total_slices <= 0.7, "slices without lesion are part of the set"


def test_written_set_is_the_lgg_layout_and_deterministic(tmp_path):
    first = write_lesion_lgg_tif(tmp_path / "a", n_patients=3, slices_per_patient=4, seed=2)
    again = write_lesion_lgg_tif(tmp_path / "b", n_patients=3, slices_per_patient=4, seed=2)
    other = write_lesion_lgg_tif(tmp_path / "c", n_patients=3, slices_per_patient=4, seed=3)
    assert len(first) == 12
    for a, b in zip(first, again, strict=True):
        assert np.array_equal(tifffile.imread(a["image"]), tifffile.imread(b["image"]))
    assert not np.array_equal(tifffile.imread(first[0]["image"]), tifffile.imread(other[0]["image"]))
    image = tifffile.imread(first[0]["image"])
    assert image.shape == (256, 256, 3) and image.dtype == np.uint8
    assert set(np.unique(tifffile.imread(first[0]["label"]))) <= {0, 255}
    datalist = build_datalist(tmp_path / "a", layout="lgg", val_fraction=0.34, seed=0)
    patients = {
        split: {item["image"].split("/")[1] for item in datalist[split]} for split in ("training", "validation")
    }
    assert patients["training"] and patients["validation"]
    assert not patients["training"] & patients["validation"], "split by patient"

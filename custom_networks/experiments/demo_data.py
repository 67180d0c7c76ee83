"""The demo datasets of the documented CPU study (``docs/ablations.md``): each study's layout at a small size,
with a datalist whose test split is large enough for a paired comparison."""

from __future__ import annotations

from pathlib import Path

from custom_networks.data import demo
from custom_networks.data.datalist import build_datalist, write_datalist

__all__ = ["write_study_data"]


def write_study_data(task: str, root: str | Path, n: int = 80, size: int = 64, seed: int = 0) -> dict:
    """Write ``n`` demo items of ``task`` at about ``size`` px into ``root`` plus ``datalist.json`` (15 %
    validation, 30 % test; LGG: ``n // 4`` patients of 4 slices, split by patient); returns the datalist.

    Args:
        task: "brain_tumor", "lgg", "montgomery" or "isic2018" (the layouts of the five bundles).
        root: dataset folder to write into.
        n: number of images.
        size: image size (ISIC images are ``size x size`` and ``3/4 size x size``, as ISIC mixes shapes).
        seed: seed of the images and of the split.
    """
    root = Path(root)
    if task == "brain_tumor":
        demo.write_brain_tumor_png(root, n_cases=n, size=size, seed=seed)
    elif task == "lgg":
        demo.write_lgg_tif(root, n_patients=n // 4, slices_per_patient=4, size=size, seed=seed)
    elif task == "montgomery":
        demo.write_montgomery_cxr(root, n=n, size=size, seed=seed)
    elif task == "isic2018":
        demo.write_isic2018(root, n=n, seed=seed, sizes=((size * 3 // 4, size), (size, size)))
    else:
        raise ValueError(f"no study demo data for task {task!r}; expected brain_tumor, lgg, montgomery or isic2018")
    datalist = build_datalist(root, val_fraction=0.15, test_fraction=0.3, seed=seed)
    write_datalist(datalist, root / "datalist.json")
    return datalist

"""Regenerate the sample study shipped with the brain tumour bundle (deterministic: same seed, same bytes).

Writes ``mr_series/`` (a DICOM MR series, one file per axial slice) and ``mr_volume.nii.gz`` (the same volume as
NIfTI) into ``bundles/brain_tumor_mri_gsconv_eca_unet/sample_data/`` unless ``--output`` says otherwise.

Example: python scripts/make_sample_study.py
"""

from __future__ import annotations

import argparse
from pathlib import Path

from custom_networks.data.sample_study import make_sample_study, write_sample_study
from custom_networks.runtime.locate import bundle_folder

DEFAULT_OUTPUT = bundle_folder("brain_tumor_mri_gsconv_eca_unet") / "sample_data"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help=f"folder to write into ({DEFAULT_OUTPUT})")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0, the shipped study)")
    args = parser.parse_args(argv)
    written = write_sample_study(args.output, seed=args.seed)
    study = make_sample_study(seed=args.seed)
    size = sum(p.stat().st_size for p in args.output.rglob("*") if p.is_file())
    print(f"DICOM series: {written['dicom']} ({len(list(written['dicom'].iterdir()))} files)")
    print(f"NIfTI volume: {written['nifti']}")
    print(f"shape {study.image.shape}, lesion {int(study.lesion.sum())} voxels, {size / 1e6:.2f} MB in all")


if __name__ == "__main__":
    main()

"""Write the MNI152 lesion set (real anatomy, simulated small lesions) in the TCGA/LGG Kaggle layout.

Example: python scripts/make_lesion_set.py --output /tmp/lesions --patients 10 --slices 10 --seed 0
then, e.g.: attention-unets ablation --study 001 --dataset-dir /tmp/lesions --output /tmp/ablation --spatial-size 128
What the set is and is not: custom_networks/data/lesion_slices.py and docs/ablations.md.
"""

from __future__ import annotations

import argparse

from custom_networks.data.lesion_slices import write_lesion_lgg_tif


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", required=True, help="dataset folder to write into (created if needed)")
    parser.add_argument("--patients", type=int, default=10, help="simulated patients (default 10)")
    parser.add_argument("--slices", type=int, default=10, help="consecutive slices per patient (default 10)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    args = parser.parse_args(argv)
    pairs = write_lesion_lgg_tif(args.output, n_patients=args.patients, slices_per_patient=args.slices, seed=args.seed)
    print(f"wrote {len(pairs)} slices of {args.patients} patients to {args.output}")


if __name__ == "__main__":
    main()

"""Run a paper's seeded ablation study: ``attention-unets ablation`` (see its --help and docs/ablations.md).

Example: python scripts/run_ablation.py --study 001 --demo-data --dataset-dir /tmp/ablation_data/lgg \
    --output /tmp/ablation --epochs 10 --widths 8 16 32 64 --spatial-size 64 --batch-size 8 --learning-rate 1e-3
"""

from __future__ import annotations

import sys

from custom_networks.cli import main

if __name__ == "__main__":
    sys.exit(main(["ablation", *sys.argv[1:]]))

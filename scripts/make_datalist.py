"""Build a MONAI/MSD-style JSON datalist from a dataset folder in one of the public layouts.

Example: python scripts/make_datalist.py /tmp/lgg --output /tmp/lgg/datalist.json --val-fraction 0.2 --seed 0
"""

from __future__ import annotations

import argparse
from pathlib import Path

from custom_networks.data.datalist import LAYOUTS, build_datalist, write_datalist


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", help="dataset folder; datalist paths are relative to it")
    parser.add_argument("--output", default=None, help="datalist JSON to write (default: <root>/datalist.json)")
    parser.add_argument("--layout", default=None, choices=(*LAYOUTS, "brain_tumor"), help="default: detected")
    parser.add_argument("--val-fraction", type=float, default=0.2, help="share of patients for validation")
    parser.add_argument("--test-fraction", type=float, default=0.0, help="share of patients held out for testing")
    parser.add_argument("--folds", type=int, default=None, help="k-fold split: a 'fold' key per training item")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the split (default 0)")
    args = parser.parse_args(argv)
    try:
        datalist = build_datalist(
            args.root,
            layout=args.layout,
            val_fraction=args.val_fraction,
            test_fraction=args.test_fraction,
            num_folds=args.folds,
            seed=args.seed,
        )
    except (OSError, ValueError) as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    path = write_datalist(datalist, args.output or Path(args.root) / "datalist.json")
    counts = ", ".join(
        f"{len(datalist[key])} {key}" for key in ("training", "validation", "testing") if key in datalist
    )
    folds = f" in {args.folds} folds" if args.folds else ""
    unpaired = len(datalist["unpaired"]["images"]) + len(datalist["unpaired"]["labels"])
    print(f"wrote {path}: layout {datalist['layout']}, {counts}{folds}, {unpaired} unpaired files")


if __name__ == "__main__":
    main()

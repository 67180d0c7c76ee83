"""Write a small synthetic dataset in the folder layout of a public dataset.

Example: python scripts/make_demo_data.py --task lgg --output /tmp/lgg --n 12
"""

from __future__ import annotations

import argparse

from custom_networks.data.demo import DEMO_TASKS, write_demo_dataset


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", required=True, choices=DEMO_TASKS, help="public dataset layout to imitate")
    parser.add_argument("--output", required=True, help="dataset folder to write into (created if needed)")
    parser.add_argument("--n", type=int, default=None, help="number of images (patients for lgg); default per task")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    args = parser.parse_args(argv)
    pairs = write_demo_dataset(args.task, args.output, n=args.n, seed=args.seed)
    print(f"wrote {len(pairs)} {args.task} image/mask pairs to {args.output}")


if __name__ == "__main__":
    main()

"""Table and curves of a learning study from the records of scripts/diagnose_learning.py.

    python scripts/diagnose_learning.py --variants plain cbam_paper cbam_residual gsconv_eca --seeds 0 1 2 \
        --data-seed 41 --steps 400 --snapshots --output /tmp/study
    python scripts/summarize_learning.py /tmp/study --baseline plain --output docs/images/learning_study.png

Prints the Markdown table (paired with the baseline's seeds) and the machine of the runs; writes the validation
Dice curves (mean over seeds, min-max band) to --output.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from custom_networks.experiments.learning_study import markdown_table, study_rows
from custom_networks.experiments.plots import learning_curves


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("records", type=Path, help="folder of <variant>_seed<seed>.json records")
    parser.add_argument("--baseline", default="plain", help="variant the others are paired with")
    parser.add_argument("--output", type=Path, help="PNG of the validation Dice curves")
    parser.add_argument("--title", default="Validation Dice on the MNI152 lesion set (mean of seeds, min-max band)")
    args = parser.parse_args(argv)
    paths = sorted(args.records.glob("*_seed*.json"))
    if not paths:
        print(f"error: {args.records}: no <variant>_seed<seed>.json records", file=sys.stderr)
        return 2
    records = [json.loads(path.read_text()) for path in paths]
    try:
        rows = study_rows(records, baseline=args.baseline)
    except ValueError as error:
        print(f"error: --baseline: {error}", file=sys.stderr)
        return 2
    print(markdown_table(rows))
    first = records[0]
    machine = first["machine"]
    flags = set(machine["cpu_flags"].split())
    cpu = f"{machine['cpu_model']}, {machine['logical_cpus']} logical CPUs, " + ", ".join(
        f"{flag} {'yes' if flag in flags else 'no'}" for flag in ("avx2", "avx512f", "avx512_vnni")
    )
    print(f"\nmachine: {cpu}, {machine['device']}; data seed {first['data_seed']}, {first['steps']} steps, "
          f"widths {first['features']}, {first['size']} px, {first['threads']} thread(s) per run")
    if args.output is not None:
        learning_curves(records, args.output, args.title)
        print(f"curves: {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

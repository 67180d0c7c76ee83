"""
Run a paper's seeded ablation study: its network, each switch off one at a time (every combination for
SC-UNeXt), all switches off (the plain baseline from the same code) and MONAI's BasicUNet, UNet and
AttentionUnet at the same widths, each trained and tested through the bundle's own configs/train.json and
evaluate.json on the same splits and budget, for every seed. Writes per study under --output: runs/ (one folder
per run with result.json: metrics, per-case values, learning curve, config, versions, machine), runs.csv,
verdicts.json, boxplots_*.png, curves_*.png and report.md (tables and one verdict per claim); --output/report.md
joins the studies' reports. Finished runs are kept and skipped when the command runs again.

examples:
  attention-unets ablation --study 000 --demo-data --dataset-dir /tmp/ablation_data/brain_tumor \
      --output /tmp/ablation --epochs 10 --widths 8 16 32 64 --spatial-size 64 --batch-size 8 --learning-rate 1e-3
  attention-unets ablation --study 000 --dataset-dir /data/brain-tumor-segmentation --output /tmp/ablation \
      --epochs 50 --seeds 0 1 2 --learning-rate 1e-3
  attention-unets ablation --study isic2018_skin_sc_unext --dataset-dir /data/ISIC2018 --output /tmp/ablation \
      --folds 5 --widths 8 16 32 64 128 --spatial-size 256 --device cuda
  attention-unets ablation --study 001 --dataset-dir /data/lgg --output /tmp/ablation --variants cbam plain \
      --sweep-learning-rates 3e-4 1e-3 3e-3
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from custom_networks.cli import parse_assignments
from custom_networks.errors import InputError
from custom_networks.runtime.locate import bundles_dir

__all__ = ["REPOSITORY", "add_arguments", "run", "settings_line"]

# the folder holding the bundles and their sources (the repository in a checkout): no study output goes there
REPOSITORY = bundles_dir().parent


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--study", required=True, help="paper number (000 ... 004) or bundle name")
    parser.add_argument("--dataset-dir", required=True, type=Path, help="dataset folder the bundle reads")
    parser.add_argument("--output", required=True, type=Path, help="study output folder (outside the repository)")
    parser.add_argument("--demo-data", action="store_true",
                        help="first write the study's demo dataset (64 px, 80 images) into --dataset-dir, unless "
                             "it already holds a datalist.json")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds (default: 0 1 2)")
    parser.add_argument("--folds", type=int, help="replicates are the folds 0..K-1 of a k-fold datalist instead")
    parser.add_argument("--epochs", type=int, default=10, help="training epochs of every run (default 10)")
    parser.add_argument("--max-minutes", type=float, help="wall-time budget per run, checked after each epoch")
    parser.add_argument("--learning-rate", type=float, help="the shared learning rate (default: the bundle's)")
    parser.add_argument("--sweep-learning-rates", type=float, nargs="+", default=[],
                        help="also train each variant at these rates and report it at its best (validation Dice)")
    parser.add_argument("--sweep-variants", nargs="+", help="variants the sweep covers (default: all run)")
    parser.add_argument("--widths", type=int, nargs="+", help="network widths (default: the bundle's)")
    parser.add_argument("--spatial-size", type=int, help="square patch / resize size (default: the bundle's)")
    parser.add_argument("--batch-size", type=int, help="training batch size (default: the bundle's)")
    parser.add_argument("--variants", nargs="+", help="run only these variants (default: all)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--set", action="append", default=[], metavar="ID=VALUE",
                        help="override a bundle config id (JSON value) in every run; repeatable")


def _check(args: argparse.Namespace) -> None:
    output = args.output.resolve()
    if output == REPOSITORY or REPOSITORY in output.parents:
        raise InputError(f"--output {args.output}: inside the repository; give a folder outside it")
    if not args.dataset_dir.is_dir() and not args.demo_data:
        raise InputError(f"--dataset-dir {args.dataset_dir}: no such folder")
    for name, value in (("--epochs", args.epochs), ("--folds", args.folds), ("--batch-size", args.batch_size)):
        if value is not None and value < 1:
            raise InputError(f"{name} {value}: must be at least 1")
    if args.folds == 1:
        raise InputError("--folds 1: k-fold replicates need at least 2 folds")
    rates = ([args.learning_rate] if args.learning_rate is not None else []) + args.sweep_learning_rates
    if any(rate <= 0 for rate in rates):
        raise InputError(f"learning rates must be positive, got {rates}")


def settings_line(settings, shared_rate: float) -> str:
    """The study's settings in one Markdown line."""
    replicates = f"folds 0-{settings.folds - 1}" if settings.folds else f"seeds {list(settings.seeds)}"
    parts = [replicates, f"{settings.epochs} epochs", f"shared lr {shared_rate:g}",
             f"widths {list(settings.widths) if settings.widths else 'of the bundle'}",
             f"size {settings.spatial_size or 'of the bundle'}", f"batch {settings.batch_size or 'of the bundle'}",
             f"device {settings.device}"]
    if settings.sweep_learning_rates:
        covered = f" for {', '.join(settings.sweep_variants)}" if settings.sweep_variants else ""
        parts.append(f"lr sweep {list(settings.sweep_learning_rates)}{covered} (best by validation Dice)")
    if settings.max_minutes:
        parts.append(f"at most {settings.max_minutes:g} min per run")
    return "Settings: " + ", ".join(parts) + "."


def _join_reports(output: Path) -> Path:
    from custom_networks.atomic_files import atomic_path

    sections = [path.read_text() for path in sorted(output.glob("*/report.md"))]
    path = output / "report.md"
    with atomic_path(path) as temporary:
        temporary.write_text("## Ablation studies\n\n" + "\n".join(sections))
    return path


def run(args: argparse.Namespace) -> int:
    _check(args)
    from custom_networks.experiments.studies import find_study

    try:
        study = find_study(args.study)
        for name in (args.variants or []) + (args.sweep_variants or []):
            study.variant(name)
    except ValueError as error:
        raise InputError(f"--study/--variants: {error}") from None

    if args.demo_data and not (args.dataset_dir / "datalist.json").is_file():
        from custom_networks.experiments.demo_data import write_study_data

        datalist = write_study_data(study.demo_task, args.dataset_dir)
        print(f"wrote the {study.demo_task} demo dataset ({len(datalist['testing'])} test cases) to {args.dataset_dir}")
    import os

    os.environ.setdefault("TQDM_DISABLE", "1")  # no per-iteration progress bars from ignite in study logs
    import logging

    import torch

    from custom_networks.experiments.report import claim_verdicts, write_study_outputs
    from custom_networks.experiments.runner import StudySettings, bundle_config, plan_runs, run_study

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    settings = StudySettings(
        dataset_dir=args.dataset_dir.resolve(), output_dir=args.output.resolve(), seeds=tuple(args.seeds),
        folds=args.folds, epochs=args.epochs, learning_rate=args.learning_rate,
        sweep_learning_rates=tuple(args.sweep_learning_rates),
        sweep_variants=tuple(args.sweep_variants) if args.sweep_variants else None,
        widths=tuple(args.widths) if args.widths else None,
        spatial_size=args.spatial_size, batch_size=args.batch_size, device=device, max_minutes=args.max_minutes,
        variants=tuple(args.variants) if args.variants else None, overrides=parse_assignments(args.set),
    )
    results, counts = run_study(study, settings)
    if not results:
        print(f"study {study.key}: every run failed ({counts['failed']}); see the log above", file=sys.stderr)
        return 1
    _, shared_rate, _ = plan_runs(study, settings, bundle_config(settings, study))
    paths = write_study_outputs(study, results, settings.output_dir / study.key, settings_line(settings, shared_rate))
    report = _join_reports(settings.output_dir)
    print(f"study {study.key} ({study.bundle}): trained {counts['trained']} run(s), "
          f"skipped {counts['skipped']} finished run(s), {counts['failed']} failed")
    for mode in ("shared", "own"):
        chosen = [r for r in results if r["lr_mode"] == mode]
        for claim, comparison in claim_verdicts(study, chosen) if chosen else ():
            verdict = "not run" if comparison is None else (
                f"{comparison.verdict} ({comparison.metric} improvement {comparison.mean_difference:+.3f}, "
                f"95 % CI [{comparison.ci_low:+.3f}, {comparison.ci_high:+.3f}])")
            print(f"[{mode} lr] {claim.text}: {verdict}")
    print(f"runs: {paths['runs']}\nreport: {paths['report']} (all studies: {report})")
    return 1 if counts["failed"] else 0

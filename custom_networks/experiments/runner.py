"""Train and test every variant of a study through its bundle's own recipe, one run folder per run, resumable.

Each run is the bundle's ``configs/train.json`` (then ``train.json`` + ``evaluate.json``) run in this process by
MONAI's ``ConfigWorkflow``, as ``python -m monai.bundle run`` runs it, with overrides for the variant's
``network_def``, the seed, the learning rate, epochs, widths, size, ``dataset_dir`` and the run's own
``bundle_root``. The learning curve (validation Dice against steps) is read from the bundle's
``TrainingCurvesSaver`` handler, the per-case test metrics from the ``*_raw.csv`` files its ``MetricsReportSaver``
(MONAI's ``MetricsSaver``) writes. A finished run has ``result.json`` (written atomically, last), so a rerun
skips it; a folder without one is a run that stopped and is trained again from the start.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import re
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from custom_networks.atomic_files import atomic_path
from custom_networks.errors import InputError
from custom_networks.experiments.provenance import machine, versions
from custom_networks.experiments.studies import Study, Variant, stock_network_def
from custom_networks.runtime import build_workflow, bundle_folder, check_overrides

__all__ = [
    "Run",
    "StudySettings",
    "bundle_config",
    "plan_runs",
    "read_cases",
    "run_one",
    "run_overrides",
    "run_study",
]

logger = logging.getLogger(__name__)

RESULT_FILE = "result.json"
# per-case metric -> the evaluate config's detail file (MetricsSaver's "<metric>_raw.csv")
CASE_FILES = {"dice": "test_mean_dice_raw.csv", "iou": "test_mean_iou_raw.csv", "hd95": "test_hd95_raw.csv"}
SUMMARY_KEYS = {"dice": "test_mean_dice", "iou": "test_mean_iou", "hd95": "test_hd95", "accuracy": "test_accuracy"}
_SEED_CALL = re.compile(r"set_determinism\(\s*seed\s*=\s*\d+\s*\)")


@dataclass(frozen=True)
class StudySettings:
    """How a study is run; the same for every variant.

    Args:
        dataset_dir: the dataset folder the bundle reads (its ``datalist.json`` fixes the splits).
        output_dir: study output folder (run folders, CSV, plots, report); never inside the repository.
        seeds: seeds, one replicate each (``monai.utils.set_determinism``).
        folds: with k, the replicates are the folds 0 .. k-1 of a k-fold datalist (seed ``seeds[0]``).
        epochs: training epochs of every run.
        learning_rate: the shared learning rate; None keeps the bundle's.
        sweep_learning_rates: if given, each of ``sweep_variants`` is also trained at each of these (first
            replicate), and all replicates at the one with the best validation Dice ("own best").
        sweep_variants: the variants the sweep covers; None: every variant run.
        widths: network widths (``features`` / ``channels``); None keeps the bundle's.
        spatial_size: square training patch / resize size; None keeps the bundle's.
        batch_size: training batch size; None keeps the bundle's.
        device: "cpu", "cuda" or "cuda:N".
        max_minutes: wall-time budget per training run, checked after each epoch; None: epochs only.
        variants: names of the variants to run; None runs them all.
        overrides: further bundle config overrides for every run (checked against the bundle's train.json).
        bundles_dir: folder holding the bundles (``None``: the shipped ones).
    """

    dataset_dir: Path
    output_dir: Path
    seeds: tuple[int, ...] = (0, 1, 2)
    folds: int | None = None
    epochs: int = 10
    learning_rate: float | None = None
    sweep_learning_rates: tuple[float, ...] = ()
    sweep_variants: tuple[str, ...] | None = None
    widths: tuple[int, ...] | None = None
    spatial_size: int | None = None
    batch_size: int | None = None
    device: str = "cpu"
    max_minutes: float | None = None
    variants: tuple[str, ...] | None = None
    overrides: dict = field(default_factory=dict)
    bundles_dir: Path | None = None


@dataclass(frozen=True)
class Run:
    """One training run: a variant at a learning rate, one replicate (seed, and fold or None)."""

    variant: Variant
    learning_rate: float
    seed: int
    fold: int | None

    @property
    def replicate(self) -> str:
        return f"fold{self.fold}" if self.fold is not None else f"seed{self.seed}"

    def folder(self, study_dir: Path) -> Path:
        return study_dir / "runs" / self.variant.name / f"lr{self.learning_rate:g}" / self.replicate


def bundle_config(settings: StudySettings, study: Study) -> dict:
    """The study bundle's ``configs/train.json`` as a dict (unresolved)."""
    from monai.bundle import ConfigParser

    path = _configs(settings, study) / "train.json"
    if not path.is_file():
        raise InputError(f"{path}: no such bundle config (bundle {study.bundle})")
    check_overrides(settings.overrides, [path])
    parser = ConfigParser()
    parser.read_config(path)
    return parser.get()


def _configs(settings: StudySettings, study: Study) -> Path:
    folder = settings.bundles_dir / study.bundle if settings.bundles_dir else bundle_folder(study.bundle)
    return folder / "configs"


def _replicates(settings: StudySettings) -> list[tuple[int, int | None]]:
    if settings.folds:
        return [(settings.seeds[0], fold) for fold in range(settings.folds)]
    return [(seed, None) for seed in settings.seeds]


def run_overrides(study: Study, run: Run, settings: StudySettings, bundle: dict, run_dir: Path) -> dict:
    """The bundle config overrides of ``run``: its network, seed, learning rate, budget, data and folders."""
    if run.variant.stock:
        network = stock_network_def(run.variant.stock, settings.widths or bundle["network_def"]["features"])
    else:
        network = {**bundle["network_def"], **run.variant.network}
        if settings.widths:
            network["features"] = list(settings.widths)
    initialize = [_SEED_CALL.sub(f"set_determinism(seed={run.seed})", item) for item in bundle["initialize"]]
    if not any("set_determinism" in item for item in initialize):
        initialize.append(f"$monai.utils.set_determinism(seed={run.seed})")
    overrides = {
        "bundle_root": str(run_dir),
        "dataset_dir": str(settings.dataset_dir),
        "device": f"$torch.device('{settings.device}')",
        "num_workers": 0,
        "network_def": network,
        "learning_rate": run.learning_rate,
        "train#trainer#max_epochs": settings.epochs,
        "initialize": initialize,
        **run.variant.config,
    }
    if run.fold is not None:
        overrides["fold"] = run.fold
    if settings.spatial_size:
        overrides["spatial_size"] = [settings.spatial_size, settings.spatial_size]
    if settings.batch_size:
        overrides["batch_size"] = settings.batch_size
    overrides.update(settings.overrides)
    return overrides


def read_cases(test_dir: Path, dataset_dir: Path, hd95_fill: float) -> dict[str, dict[str, float]]:
    """``{metric: {case: value}}`` from the evaluate run's per-case CSVs, cases relative to ``dataset_dir``.

    A case whose Dice is nan has an empty label (MONAI leaves it out of the means) and is left out here too;
    an HD95 of nan with a finite Dice means an empty prediction and gets ``hd95_fill`` (the patch diagonal),
    so that a network that finds nothing is not rewarded by having its failures dropped.
    """
    cases: dict[str, dict[str, float]] = {}
    for metric, name in CASE_FILES.items():
        values = {}
        with open(test_dir / name, newline="") as file:
            for row in csv.DictReader(file):
                path = Path(row["filename"])
                case = str(path.relative_to(dataset_dir)) if path.is_relative_to(dataset_dir) else path.name
                values[case] = float(row["mean"])
        cases[metric] = values
    for case, dice in list(cases["dice"].items()):
        if math.isnan(dice):
            for metric in cases:
                cases[metric].pop(case, None)
        elif math.isnan(cases["hd95"].get(case, 0.0)):
            cases["hd95"][case] = hd95_fill
    return cases


def _read_summary(test_dir: Path) -> dict[str, float]:
    values = {}
    with open(test_dir / "metrics.csv", newline="") as file:
        for name, value in csv.reader(file):
            values[name] = float(value)
    return {metric: values[key] for metric, key in SUMMARY_KEYS.items() if key in values}


def _training_curve(workflow) -> tuple[list[list[float]], int]:
    """Validation Dice against trainer iterations from the bundle's ``TrainingCurvesSaver``, and the steps run."""
    from custom_networks.handlers import TrainingCurvesSaver

    handlers = workflow.parser.get_parsed_content("train#handlers")
    saver = next((h for h in handlers if isinstance(h, TrainingCurvesSaver)), None)
    if saver is None:
        raise ValueError("the bundle's train#handlers has no TrainingCurvesSaver; cannot record the learning curve")
    curve = [[int(step), float(value)] for step, value in saver.metrics.get("val_mean_dice", [])]
    return curve, int(workflow.parser.get_parsed_content("train#trainer").state.iteration)


def _stop_after(minutes: float) -> Callable:
    start = time.monotonic()

    def check(engine) -> None:
        if time.monotonic() - start > minutes * 60:
            engine.terminate()

    return check


def run_one(study: Study, run: Run, settings: StudySettings, bundle: dict, study_dir: Path) -> dict:
    """Train and test one run in its folder and write its ``result.json``; returns the result."""
    import torch
    from ignite.engine import Events

    run_dir = run.folder(study_dir)
    if run_dir.exists():
        shutil.rmtree(run_dir)  # a run that stopped before its result.json: start it again
    run_dir.mkdir(parents=True)
    configs = _configs(settings, study)
    overrides = run_overrides(study, run, settings, bundle, run_dir)

    start = time.perf_counter()
    train = build_workflow([configs / "train.json"], "train", overrides)
    if settings.max_minutes:
        trainer = train.parser.get_parsed_content("train#trainer")
        trainer.add_event_handler(Events.EPOCH_COMPLETED, _stop_after(settings.max_minutes))
    train.run()
    curve, steps = _training_curve(train)
    network = train.parser.get_parsed_content("network")
    parameters = sum(p.numel() for p in network.parameters())
    train.finalize()
    train_seconds = time.perf_counter() - start

    start = time.perf_counter()
    test_dir = run_dir / "test"
    evaluate = build_workflow([configs / "train.json", configs / "evaluate.json"], "eval",
                              {**overrides, "output_dir": str(test_dir)})
    evaluate.run()
    evaluate.finalize()
    eval_seconds = time.perf_counter() - start

    size = overrides.get("spatial_size", bundle["spatial_size"])
    result = {
        "study": study.key,
        "bundle": study.bundle,
        "variant": run.variant.name,
        "learning_rate": run.learning_rate,
        "seed": run.seed,
        "fold": run.fold,
        "replicate": run.replicate,
        "epochs": settings.epochs,
        "max_minutes": settings.max_minutes,
        "steps": steps,
        "metrics": _read_summary(test_dir),
        "cases": read_cases(test_dir, settings.dataset_dir, hd95_fill=math.hypot(*size)),
        "curve": curve,
        "best_val_dice": max((value for _, value in curve), default=float("nan")),
        "parameters": parameters,
        "train_seconds": round(train_seconds, 2),
        "eval_seconds": round(eval_seconds, 2),
        "config": overrides,
        "versions": versions(),
        "machine": machine(settings.device),
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    with atomic_path(run_dir / RESULT_FILE) as temporary:
        temporary.write_text(json.dumps(result, indent=1))
    return result


def plan_runs(study: Study, settings: StudySettings, bundle: dict) -> tuple[list[Variant], float, list]:
    """The variants to run, the shared learning rate and the replicates."""
    variants = list(study.all_variants())
    if settings.variants:
        variants = [study.variant(name) for name in settings.variants]
    shared = settings.learning_rate if settings.learning_rate is not None else float(bundle["learning_rate"])
    return variants, shared, _replicates(settings)


def _load_or_run(study: Study, run: Run, settings: StudySettings, bundle: dict, study_dir: Path,
                 counts: dict[str, int], seen: set[Path]) -> dict | None:
    """A finished run's result, or the result of training it now; None if it fails (the others go on; its
    folder keeps ``error.txt`` and no ``result.json``, so a rerun tries it again)."""
    result_file = run.folder(study_dir) / RESULT_FILE
    first_time = result_file not in seen
    seen.add(result_file)
    if not first_time and (result_file.parent / "error.txt").is_file():
        return None  # failed earlier in this call: not tried twice
    if result_file.is_file():
        result = json.loads(result_file.read_text())
        planned = json.loads(json.dumps(run_overrides(study, run, settings, bundle, run.folder(study_dir))))
        if result["config"] != planned:
            changed = sorted(k for k in planned.keys() | result["config"].keys()
                             if planned.get(k) != result["config"].get(k))
            raise InputError(f"{result_file}: finished with other settings ({', '.join(changed)}); give another "
                             "output_dir, or delete the run folder to train it again")
        counts["skipped"] += first_time
        return result
    logger.info("study %s: training %s at lr %g, %s", study.key, run.variant.name, run.learning_rate, run.replicate)
    try:
        result = run_one(study, run, settings, bundle, study_dir)
    except Exception as error:  # one failed run (a bad override, out of memory) must not end the study
        counts["failed"] += 1
        cause = error
        while cause.__cause__ is not None:  # MONAI wraps a network's own error in "Failed to instantiate ..."
            cause = cause.__cause__
        message = f"{type(cause).__name__}: {cause}".splitlines()[0]
        logger.error("study %s: %s %s at lr %g failed: %s", study.key, run.variant.name, run.replicate,
                     run.learning_rate, message)
        run.folder(study_dir).mkdir(parents=True, exist_ok=True)
        (run.folder(study_dir) / "error.txt").write_text(message + "\n")
        return None
    counts["trained"] += 1
    logger.info("study %s: %s %s test Dice %.3f (%.0f s)", study.key, run.variant.name, run.replicate,
                result["metrics"].get("dice", float("nan")), result["train_seconds"] + result["eval_seconds"])
    return result


def run_study(study: Study, settings: StudySettings) -> tuple[list[dict], dict[str, int]]:
    """Every run of ``study`` (finished ones are read back, not trained again).

    Returns:
        the results, each tagged ``"lr_mode"``: "shared" (the shared learning rate), "sweep" (a sweep run at
        another rate) or "own" (all replicates at the variant's best swept rate; a run at the shared rate that
        is also its own best is listed twice, once per mode); and ``{"trained": n, "skipped": m, "failed": k}``
        (a failed run is logged, left out of the results and tried again by the next call).
    """
    bundle = bundle_config(settings, study)
    if not settings.dataset_dir.is_dir():
        raise InputError(f"{settings.dataset_dir}: dataset folder not found")
    study_dir = settings.output_dir / study.key
    variants, shared, replicates = plan_runs(study, settings, bundle)
    counts = {"trained": 0, "skipped": 0, "failed": 0}
    seen: set[Path] = set()  # run folders already looked at (a shared-rate run may be a variant's own best too)
    results = []

    def runs_at(variant: Variant, rate: float, which: Sequence) -> list[dict]:
        found = [_load_or_run(study, Run(variant, rate, seed, fold), settings, bundle, study_dir, counts, seen)
                 for seed, fold in which]
        return [result for result in found if result is not None]

    for variant in variants:
        results += [{**r, "lr_mode": "shared"} for r in runs_at(variant, shared, replicates)]
    swept = [v for v in variants if settings.sweep_variants is None or v.name in settings.sweep_variants]
    for variant in swept if settings.sweep_learning_rates else ():
        first = {rate: found[0] for rate in settings.sweep_learning_rates
                 if (found := runs_at(variant, rate, replicates[:1]))}
        if not first:
            continue
        best = max(first, key=lambda rate: (first[rate]["best_val_dice"], -abs(math.log(rate / shared))))
        results += [{**r, "lr_mode": "sweep"} for rate, r in first.items() if rate != best and rate != shared]
        results += [{**r, "lr_mode": "own"} for r in runs_at(variant, best, replicates)]
    return results, counts

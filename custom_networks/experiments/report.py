"""A study's outputs from its run results: a CSV of every run, per-variant mean and spread, the paired
verdict on each claim, box plots and learning curves, and a Markdown report with the tables."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from custom_networks.atomic_files import atomic_path
from custom_networks.experiments.plots import box_plots, learning_curves
from custom_networks.experiments.statistics import Comparison, compare_paired
from custom_networks.experiments.studies import Claim, Study

__all__ = [
    "RUN_COLUMNS",
    "claim_lines",
    "claim_verdicts",
    "markdown_report",
    "steps_to_reach",
    "variant_summary",
    "write_study_outputs",
]

RUN_COLUMNS = ("study", "bundle", "variant", "lr_mode", "learning_rate", "replicate", "seed", "fold", "epochs",
               "steps", "dice", "iou", "hd95", "accuracy", "best_val_dice", "parameters", "train_seconds",
               "eval_seconds", "curve")
METRICS = ("dice", "iou", "hd95", "accuracy")
# validation Dice whose first crossing tells a slow start from a worse end point
START_LEVEL = 0.5


def _run_row(result: dict) -> dict:
    row = {key: result.get(key) for key in RUN_COLUMNS}
    row.update({metric: result["metrics"].get(metric) for metric in METRICS})
    row["curve"] = json.dumps(result["curve"])
    return row


def _mode(results: list[dict], mode: str) -> list[dict]:
    return [result for result in results if result["lr_mode"] == mode]


def steps_to_reach(results: list[dict], level: float = START_LEVEL) -> float:
    """First step at which the replicates' mean validation Dice reaches ``level`` (nan if it never does)."""
    curves = [result["curve"] for result in results if result["curve"]]
    if not curves:
        return float("nan")
    length = min(len(curve) for curve in curves)
    mean = np.mean([[value for _, value in curve[:length]] for curve in curves], axis=0)
    reached = np.flatnonzero(mean >= level)
    return float(curves[0][reached[0]][0]) if reached.size else float("nan")


def _run_value(result: dict, metric: str) -> float:
    """A run's test value of ``metric``: the mean of its per-case values as the paired test counts them (so an
    empty prediction's HD95 is the patch diagonal), or the evaluate summary for metrics without cases."""
    cases = [value for value in result["cases"].get(metric, {}).values() if np.isfinite(value)]
    return float(np.mean(cases)) if cases else float(result["metrics"].get(metric, np.nan))


def variant_summary(results: list[dict]) -> list[dict]:
    """Per variant (in run order): learning rate, runs, parameters, mean and std of each metric, start, time."""
    summary = []
    for variant in dict.fromkeys(result["variant"] for result in results):
        runs = [result for result in results if result["variant"] == variant]
        row = {"variant": variant, "learning_rate": runs[0]["learning_rate"], "runs": len(runs),
               "parameters": runs[0]["parameters"], "steps_to_val_dice_0.5": steps_to_reach(runs),
               "train_seconds": float(np.mean([r["train_seconds"] for r in runs]))}
        for metric in METRICS:
            values = [_run_value(r, metric) for r in runs]
            values = [value for value in values if np.isfinite(value)]
            row[f"{metric}_mean"] = float(np.mean(values)) if values else float("nan")
            row[f"{metric}_std"] = float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")
        summary.append(row)
    return summary


def _cases(results: list[dict], variant: str, metric: str) -> dict[str, dict[str, float]]:
    return {r["replicate"]: r["cases"].get(metric, {}) for r in results if r["variant"] == variant}


def claim_verdicts(study: Study, results: list[dict]) -> list[tuple[Claim, Comparison | None]]:
    """Each claim of ``study`` with its paired comparison (None where the variant or baseline was not run)."""
    ran = {result["variant"] for result in results}
    verdicts = []
    for claim in study.claims:
        if claim.variant not in ran or claim.baseline not in ran:
            verdicts.append((claim, None))
            continue
        comparison = compare_paired(_cases(results, claim.variant, claim.metric),
                                    _cases(results, claim.baseline, claim.metric), claim.metric)
        verdicts.append((claim, comparison))
    return verdicts


def _number(value: float, digits: int = 3) -> str:
    return "–" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def _p_value(value: float) -> str:
    return "–" if not np.isfinite(value) else "< 0.001" if value < 0.001 else f"{value:.3f}"


def _spread(row: dict, metric: str, digits: int = 3) -> str:
    mean, std = row[f"{metric}_mean"], row[f"{metric}_std"]
    if not np.isfinite(mean):
        return "–"
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if np.isfinite(std) else f"{mean:.{digits}f}"


def _summary_table(summary: list[dict], accuracy: bool) -> list[str]:
    head = ["variant", "lr", "runs", "parameters", "Dice", "IoU", "HD95 (px)*"] + (["pixel acc."] if accuracy else [])
    head += ["steps to val Dice 0.5", "train s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in summary:
        cells = [row["variant"], f"{row['learning_rate']:g}", str(row["runs"]), f"{row['parameters']:,}",
                 _spread(row, "dice"), _spread(row, "iou"), _spread(row, "hd95", 1)]
        cells += [_spread(row, "accuracy")] if accuracy else []
        start = row["steps_to_val_dice_0.5"]
        cells += [f"{start:.0f}" if np.isfinite(start) else "never", f"{row['train_seconds']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _verdict_table(verdicts: list[tuple[Claim, Comparison | None]]) -> list[str]:
    lines = ["| claim | paper's figures | metric | improvement [95 % CI] | Wilcoxon p | cases x reps | verdict |",
             "|---|---|---|---|---|---|---|"]
    for claim, comparison in verdicts:
        pair = f"{claim.variant} vs {claim.baseline}"
        if comparison is None:
            lines.append(f"| {claim.text} ({pair}) | {claim.paper} | {claim.metric} | – | – | – | not run |")
            continue
        digits = 1 if claim.metric == "hd95" else 3
        interval = (f"{_number(comparison.mean_difference, digits)} [{_number(comparison.ci_low, digits)}, "
                    f"{_number(comparison.ci_high, digits)}]")
        lines.append(f"| {claim.text} ({pair}) | {claim.paper} | {claim.metric} | {interval} | "
                     f"{_p_value(comparison.p_value)} | {comparison.n_cases} x {comparison.n_replicates} | "
                     f"**{comparison.verdict}** ({comparison.reason}) |")
    return lines


def claim_lines(study: Study, results: list[dict], mode: str) -> list[str]:
    """Each claim in one Markdown line: the paper's figures, the verdict and the measured improvement."""
    lines = []
    for claim, comparison in claim_verdicts(study, _mode(results, mode)):
        if comparison is None:
            lines.append(f"- {study.key}: {claim.text} (paper: {claim.paper}): not run at the {mode} rate")
            continue
        digits = 1 if claim.metric == "hd95" else 3
        lines.append(f"- {study.key}: {claim.text} (paper: {claim.paper}): **{comparison.verdict}** at the {mode} "
                     f"rate, {claim.metric} improvement {comparison.mean_difference:+.{digits}f} "
                     f"[{comparison.ci_low:+.{digits}f}, {comparison.ci_high:+.{digits}f}]")
    return lines


def markdown_report(study: Study, results: list[dict], settings_line: str) -> str:
    """The study's Markdown section: per-variant table and claim verdicts, at the shared and own-best rates."""
    accuracy = any("accuracy" in r["metrics"] for r in results)
    lines = [f"### Paper {study.key}: {study.title} (`{study.bundle}`)", "", settings_line, ""]
    for mode, heading in (("shared", "shared learning rate"), ("own", "each variant at its own best rate")):
        chosen = _mode(results, mode)
        if not chosen:
            continue
        lines += [f"**{heading.capitalize()}**", ""]
        lines += _summary_table(variant_summary(chosen), accuracy) + [""]
        lines += _verdict_table(claim_verdicts(study, chosen)) + [""]
    for mode in ("shared", "own"):
        lines += claim_lines(study, results, mode) if _mode(results, mode) else []
    lines += ["", "Metrics: mean ± standard deviation over the replicates of each run's mean over the test cases "
              "(cases with an empty label left out). *HD95: an empty prediction counts as the patch diagonal. "
              "Improvement: variant minus baseline per test case (HD95: baseline minus variant), averaged over "
              "the replicates; 95 % CI by a seeded bootstrap over cases.", ""]
    return "\n".join(lines)


def _write_csv(rows: list[dict], path: Path, columns) -> None:
    with atomic_path(path) as temporary, open(temporary, "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows(rows)


def write_study_outputs(study: Study, results: list[dict], study_dir: Path, settings_line: str) -> dict[str, Path]:
    """Write ``runs.csv``, ``verdicts.json``, ``report.md``, ``boxplots_<mode>.png`` and ``curves_<mode>.png``."""
    paths = {"runs": study_dir / "runs.csv", "verdicts": study_dir / "verdicts.json", "report": study_dir / "report.md"}
    _write_csv([_run_row(r) for r in results], paths["runs"], RUN_COLUMNS)
    verdicts = {}
    for mode in dict.fromkeys(r["lr_mode"] for r in results):
        if mode == "sweep":
            continue
        chosen = _mode(results, mode)
        title = f"{study.key}: {study.title} ({mode} learning rate)"
        paths[f"boxplots_{mode}"] = box_plots(chosen, study_dir / f"boxplots_{mode}.png", title)
        paths[f"curves_{mode}"] = learning_curves(chosen, study_dir / f"curves_{mode}.png", title)
        verdicts[mode] = [{"claim": claim.text, "variant": claim.variant, "baseline": claim.baseline,
                           "paper": claim.paper, **(comparison.as_dict() if comparison else {"verdict": "not run"})}
                          for claim, comparison in claim_verdicts(study, chosen)]
    with atomic_path(paths["verdicts"]) as temporary:
        temporary.write_text(json.dumps(verdicts, indent=1))
    with atomic_path(paths["report"]) as temporary:
        temporary.write_text(markdown_report(study, results, settings_line))
    return paths

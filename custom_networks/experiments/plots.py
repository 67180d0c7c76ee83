"""Box plots of the per-case test metrics and learning curves (validation Dice against steps) of a study."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from custom_networks.atomic_files import atomic_path

__all__ = ["box_plots", "learning_curves", "per_case_means"]


def per_case_means(results: list[dict], metric: str) -> dict[str, list[float]]:
    """``{variant: [value per case]}``, each case's value averaged over the variant's replicates."""
    by_variant: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for result in results:
        for case, value in result["cases"].get(metric, {}).items():
            if np.isfinite(value):
                by_variant[result["variant"]][case].append(value)
    return {variant: [float(np.mean(v)) for _, v in sorted(cases.items())] for variant, cases in by_variant.items()}


def _save(figure: Figure, path: Path) -> Path:
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=80, format="png")
    return path


def box_plots(results: list[dict], path: Path, title: str, metrics=("dice", "iou", "hd95")) -> Path:
    """One panel per metric: a box per variant over its test cases (each averaged over replicates).

    Args:
        results: run results of one learning-rate mode (see ``runner.run_study``).
        path: PNG to write.
        title: figure title.
        metrics: per-case metrics to plot.
    """
    variants = list(dict.fromkeys(result["variant"] for result in results))
    figure = Figure(figsize=(max(6.0, 0.75 * len(variants) * len(metrics)), 3.6), layout="constrained")
    axes = figure.subplots(1, len(metrics), squeeze=False)[0]
    for axis, metric in zip(axes, metrics, strict=True):
        values = per_case_means(results, metric)
        data = [values.get(variant, [np.nan]) for variant in variants]
        axis.boxplot(data, showmeans=True)
        axis.set_xticks(range(1, len(variants) + 1), variants)  # not tick_labels=: matplotlib 3.8 lacks it
        axis.set_ylabel(f"test {metric}" + (" (px)" if metric == "hd95" else ""))
        axis.tick_params(axis="x", labelrotation=60, labelsize=7)
        axis.grid(alpha=0.3, axis="y")
    figure.suptitle(title)
    return _save(figure, path)


def learning_curves(results: list[dict], path: Path, title: str) -> Path:
    """Validation Dice against training steps: the mean over replicates per variant, min-max band shaded."""
    curves: dict[str, list[list[list[float]]]] = defaultdict(list)
    for result in results:
        if result["curve"]:
            curves[result["variant"]].append(result["curve"])
    figure = Figure(figsize=(7.0, 4.0), layout="constrained")
    axis = figure.subplots()
    for variant, runs in curves.items():
        length = min(len(curve) for curve in runs)
        steps = np.array([row[0] for row in runs[0][:length]])  # rows are (step, Dice, ...)
        values = np.array([[row[1] for row in curve[:length]] for curve in runs])
        (line,) = axis.plot(steps, values.mean(axis=0), marker="o", markersize=2, label=variant)
        axis.fill_between(steps, values.min(axis=0), values.max(axis=0), color=line.get_color(), alpha=0.15)
    axis.set_xlabel("training step")
    axis.set_ylabel("validation Dice")
    axis.set_ylim(-0.02, 1.0)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7, ncol=2)
    figure.suptitle(title)
    return _save(figure, path)

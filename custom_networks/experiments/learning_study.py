"""The table of a learning study: probe runs (``scripts/diagnose_learning.py`` records) of several variants and seeds.

Each record is one variant trained with one seed (see :mod:`custom_networks.experiments.learning_probe`); this module
pairs every variant's seeds with the baseline's same seeds, which started from the same initial weights and saw the
same batches, and says per variant: best validation Dice per seed and its mean, the paired ratio to the baseline,
and whether the budget was past the plateau (for every seed, the last quarter of the steps raised the best Dice by
at most 0.05).

Examples::

    >>> records = [json.loads(path.read_text()) for path in Path("/tmp/study").glob("*.json")]
    >>> print(markdown_table(study_rows(records, baseline="plain")))
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

__all__ = ["StudyRow", "markdown_table", "study_rows"]

PLATEAU_TOLERANCE = 0.05


@dataclass
class StudyRow:
    """One variant over its seeds.

    Attributes:
        variant: the variant's name; switches and learning_rate: what it set.
        best_by_seed: ``{seed: (best validation Dice, step of the best)}``.
        ratio_to_baseline: mean over the seeds both have of (variant's best / baseline's best).
        past_plateau: for every seed, the last quarter of the steps raised the best Dice by at most
            ``PLATEAU_TOLERANCE`` (a curve still climbing at the end was stopped too early).
        seconds: mean training time per run.
        end_probabilities: mean over seeds of the last evaluation's foreground probability on lesion pixels and
            elsewhere (a network between the two and below 0.5 on the lesion is learning slowly).
    """

    variant: str
    switches: dict
    learning_rate: float
    best_by_seed: dict[int, tuple[float, int]]
    ratio_to_baseline: float
    past_plateau: bool
    seconds: float
    end_probabilities: tuple[float, float]

    @property
    def mean_best(self) -> float:
        return float(np.mean([best for best, _ in self.best_by_seed.values()]))

    @property
    def sd_best(self) -> float:
        values = [best for best, _ in self.best_by_seed.values()]
        return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def _best(curve: list) -> tuple[float, int]:
    step, dice = max(((row[0], row[1]) for row in curve), key=lambda pair: (pair[1], -pair[0]))
    return float(dice), int(step)


def _past_plateau(curve: list) -> bool:
    last_step = curve[-1][0]
    early = [row[1] for row in curve if row[0] < 0.75 * last_step]
    late = [row[1] for row in curve if row[0] >= 0.75 * last_step]
    return max(late) <= max(early) + PLATEAU_TOLERANCE


def study_rows(records: list[dict], baseline: str) -> list[StudyRow]:
    """One row per variant, in the order the variants first appear; ``baseline`` names the variant to pair with."""
    by_variant: dict[str, dict[int, dict]] = defaultdict(dict)
    for record in records:
        by_variant[record["variant"]][int(record["seed"])] = record
    if baseline not in by_variant:
        raise ValueError(f"baseline: no records of variant {baseline!r} (have {sorted(by_variant)})")
    reference = {seed: _best(record["curve"])[0] for seed, record in by_variant[baseline].items()}
    rows = []
    for variant, seeds in by_variant.items():
        first = next(iter(seeds.values()))
        best_by_seed = {seed: _best(record["curve"]) for seed, record in sorted(seeds.items())}
        paired = [best_by_seed[seed][0] / reference[seed] for seed in best_by_seed if reference.get(seed, 0) > 0]
        rows.append(StudyRow(
            variant=variant, switches=first["switches"], learning_rate=first["learning_rate"],
            best_by_seed=best_by_seed, ratio_to_baseline=float(np.mean(paired)) if paired else float("nan"),
            past_plateau=all(_past_plateau(record["curve"]) for record in seeds.values()),
            seconds=float(np.mean([record["seconds"] for record in seeds.values()])),
            end_probabilities=(
                float(np.mean([record["curve"][-1][3] for record in seeds.values()])),
                float(np.mean([record["curve"][-1][4] for record in seeds.values()])),
            ),
        ))
    return rows


def markdown_table(rows: list[StudyRow]) -> str:
    """The rows as a Markdown table (best Dice per seed with its step, mean +- sd, paired ratio, plateau)."""
    seeds = sorted({seed for row in rows for seed in row.best_by_seed})
    header = ["variant", "switches", "lr", *(f"seed {seed}: best (step)" for seed in seeds), "mean +- sd",
              "ratio to baseline", "past plateau", "end: p(lesion) / p(elsewhere)", "s / run"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * 2 + "---:|" * (len(header) - 2)]
    for row in rows:
        cells = [
            row.variant, f"`{row.switches}`", f"{row.learning_rate:g}",
            *(f"{row.best_by_seed[seed][0]:.2f} ({row.best_by_seed[seed][1]})" if seed in row.best_by_seed else ""
              for seed in seeds),
            f"{row.mean_best:.2f} +- {row.sd_best:.2f}", f"{row.ratio_to_baseline:.2f}",
            "yes" if row.past_plateau else "no",
            f"{row.end_probabilities[0]:.2f} / {row.end_probabilities[1]:.2f}", f"{row.seconds:.0f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)

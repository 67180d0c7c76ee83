"""Paired comparison of a variant with its baseline over test cases, and the verdict on a claim.

The differences are paired by (replicate, case): the variant and the baseline trained with the same seed (or
fold) and evaluated on the same test case. Each case's differences are averaged over the replicates, then a
seeded bootstrap over cases gives the 95 % interval of the mean difference, and scipy's Wilcoxon signed-rank
test its p-value. A library bootstrap (``scipy.stats.bootstrap``) would do the resampling too; the plain NumPy
percentile bootstrap is kept because it is four lines and gives the same interval for every SciPy version.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import wilcoxon

__all__ = [
    "EQUIVALENCE_MARGIN",
    "HIGHER_IS_BETTER",
    "Comparison",
    "compare_paired",
    "paired_differences",
    "verdict",
]

# metric -> whether a higher value is better
HIGHER_IS_BETTER = {"dice": True, "iou": True, "accuracy": True, "hd95": False}
# metric -> half-width of the band of differences that count as no practical difference (Dice and IoU: one
# point, HD95: one pixel); a claim whose whole interval lies inside it is "not supported (equivalent)"
EQUIVALENCE_MARGIN = {"dice": 0.01, "iou": 0.01, "accuracy": 0.01, "hd95": 1.0}

SUPPORTED = "supported"
NOT_SUPPORTED = "not supported"
INCONCLUSIVE = "inconclusive"


@dataclass(frozen=True)
class Comparison:
    """Variant minus baseline, signed so that a positive difference is an improvement.

    Attributes:
        metric: the per-case metric compared.
        n_cases: cases with a value for both networks in at least one replicate.
        n_replicates: replicates (seeds or folds) present for both.
        mean_difference: mean over cases of the replicate-averaged improvement.
        ci_low, ci_high: bootstrap 95 % interval of ``mean_difference``.
        p_value: two-sided Wilcoxon signed-rank p-value (nan when every difference is 0 or under 2 cases).
        verdict: "supported", "not supported" or "inconclusive".
        reason: the verdict's reason in words.
    """

    metric: str
    n_cases: int
    n_replicates: int
    mean_difference: float
    ci_low: float
    ci_high: float
    p_value: float
    verdict: str
    reason: str

    def as_dict(self) -> dict:
        return asdict(self)


def paired_differences(
    variant: Mapping[str, Mapping[str, float]], baseline: Mapping[str, Mapping[str, float]], metric: str
) -> tuple[np.ndarray, int]:
    """Per-case improvements of ``variant`` over ``baseline``, averaged over the replicates both have.

    Args:
        variant, baseline: ``{replicate: {case: value}}``; non-finite values (a metric no case could measure)
            are left out of the pairs.
        metric: the metric's name, for its direction (``HIGHER_IS_BETTER``).

    Returns:
        the differences, shape (n_cases,), in a fixed case order, and the number of replicates paired.
    """
    sign = 1.0 if HIGHER_IS_BETTER[metric] else -1.0
    replicates = sorted(set(variant) & set(baseline))
    per_case: dict[str, list[float]] = {}
    for replicate in replicates:
        for case, value in variant[replicate].items():
            other = baseline[replicate].get(case)
            if other is not None and np.isfinite(value) and np.isfinite(other):
                per_case.setdefault(case, []).append(sign * (float(value) - float(other)))
    differences = np.array([np.mean(per_case[case]) for case in sorted(per_case)], dtype=float)
    return differences, len(replicates)


def verdict(ci_low: float, ci_high: float, margin: float) -> tuple[str, str]:
    """The verdict on an improvement claim from the 95 % interval of the improvement.

    Equivalence is checked first: an interval inside ``(-margin, margin)`` rules out a gain worth the name even
    if it lies above 0. Then: above 0 supported, below 0 not supported (worse), otherwise inconclusive.
    """
    if -margin < ci_low and ci_high < margin:
        return NOT_SUPPORTED, f"equivalent: the 95 % interval lies within +-{margin:g}"
    if ci_low > 0:
        return SUPPORTED, "better: the 95 % interval lies above 0"
    if ci_high < 0:
        return NOT_SUPPORTED, "worse: the 95 % interval lies below 0"
    return INCONCLUSIVE, "the 95 % interval contains 0 and leaves the equivalence band"


def compare_paired(
    variant: Mapping[str, Mapping[str, float]],
    baseline: Mapping[str, Mapping[str, float]],
    metric: str,
    n_bootstrap: int = 10000,
    seed: int = 0,
    margin: float | None = None,
) -> Comparison:
    """Compare ``variant`` with ``baseline`` on ``metric`` over paired test cases (see the module docstring).

    Args:
        variant, baseline: ``{replicate: {case: value}}``.
        metric: "dice", "iou", "accuracy" or "hd95".
        n_bootstrap: bootstrap resamples of the cases.
        seed: seed of the resampling, so that the interval is reproducible.
        margin: equivalence margin; ``EQUIVALENCE_MARGIN[metric]`` when None.
    """
    margin = EQUIVALENCE_MARGIN[metric] if margin is None else margin
    differences, n_replicates = paired_differences(variant, baseline, metric)
    if differences.size < 2:
        return Comparison(metric, int(differences.size), n_replicates, float(np.mean(differences))
                          if differences.size else float("nan"), float("nan"), float("nan"), float("nan"),
                          INCONCLUSIVE, "fewer than 2 paired cases")
    rng = np.random.default_rng(seed)
    resampled = rng.integers(0, differences.size, size=(n_bootstrap, differences.size))
    means = differences[resampled].mean(axis=1)
    ci_low, ci_high = (float(v) for v in np.percentile(means, [2.5, 97.5]))
    p_value = float(wilcoxon(differences).pvalue) if np.any(differences != 0) else float("nan")
    decision, reason = verdict(ci_low, ci_high, margin)
    return Comparison(metric, int(differences.size), n_replicates, float(differences.mean()), ci_low, ci_high,
                      p_value, decision, reason)

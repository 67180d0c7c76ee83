"""Which series of each study the bundle segments: its own series rules applied to what the PACS query returned.

``SeriesRules`` (the bundle's ``series_modalities``, ``series_description`` and ``series_prefer_most_slices``)
choose one image series per case folder; a batch job applies the same rules per study to the query's answer
(modality, description and number of instances of each series), so that the series a job segments are the ones
the bundle would pick from the study's folder. Non-image modalities (RT plans, SEG, SR, ...) are never picked.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from custom_networks.clinical.dicom_series import SeriesRules
from custom_networks.pacs.client import SeriesRef

__all__ = ["NON_IMAGE_MODALITIES", "Selection", "select_per_study"]

# modalities of DICOM objects that hold no image to segment
NON_IMAGE_MODALITIES = frozenset({"RTPLAN", "RTSTRUCT", "RTDOSE", "RTRECORD", "SEG", "SR", "PR", "KO", "DOC", "REG"})


@dataclass(frozen=True)
class Selection:
    """The outcome of selection: ``chosen`` series to segment; ``skipped`` (another image series of the study
    was chosen) and ``failed`` (no series, or a tie, in the study) with a one-line reason each. Non-image series
    beside a chosen one are in neither list."""

    chosen: tuple[SeriesRef, ...]
    skipped: tuple[tuple[SeriesRef, str], ...]
    failed: tuple[tuple[SeriesRef, str], ...]


def _describe(series: SeriesRef) -> str:
    return (f'series {series.series_number if series.series_number is not None else "?"} {series.modality} '
            f'"{series.series_description}" ({series.n_instances if series.n_instances is not None else "?"} '
            f"instances, UID {series.series_uid})")


def _accepts(rules: SeriesRules, series: SeriesRef) -> bool:
    if series.modality.upper() in NON_IMAGE_MODALITIES:
        return False
    modality_ok = not rules.modalities or series.modality.upper() in {m.upper() for m in rules.modalities}
    pattern = rules.description_pattern
    return modality_ok and (not pattern or re.search(pattern, series.series_description, re.IGNORECASE) is not None)


def select_per_study(found: Sequence[SeriesRef], rules: SeriesRules) -> Selection:
    """Apply ``rules`` to the series of each study in ``found``, as ``select_series`` does to a folder."""
    studies: dict[str, list[SeriesRef]] = {}
    for series in found:
        studies.setdefault(series.study_uid, []).append(series)
    chosen, skipped, failed = [], [], []
    for study_uid, members in studies.items():
        matching = [series for series in members if _accepts(rules, series)]
        winners = matching
        problem = ""
        if len(matching) > 1 and rules.prefer_most_slices and any(s.n_instances is None for s in matching):
            problem = f"{len(matching)} series match and the PACS gave no number of instances to choose by"
        elif len(matching) > 1 and rules.prefer_most_slices:
            most = max(series.n_instances or 0 for series in matching)
            winners = [series for series in matching if (series.n_instances or 0) == most]
            if len(winners) > 1:
                problem = f"{len(winners)} series tie for most slices ({most})"
        elif len(matching) > 1:
            problem = f"{len(matching)} series match and the bundle's prefer_most_slices is off"
        elif not matching:
            problem = "no series matches"
        if problem:
            reason = (f"study {study_uid}: bundle rules ({rules.describe()}): {problem}; found: "
                      + "; ".join(_describe(series) for series in members))
            failed += [(series, reason) for series in (winners if winners else members)]
            skipped += [(series, f"not chosen by the bundle rules ({rules.describe()})")
                        for series in members if winners and series not in winners]
            continue
        chosen.append(winners[0])
        # non-image objects beside the chosen series (this job's own SEGs among them) are no news
        skipped += [(series, f"study {study_uid}: the bundle rules ({rules.describe()}) chose series "
                     f"{winners[0].series_uid}") for series in members
                    if series is not winners[0] and series.modality.upper() not in NON_IMAGE_MODALITIES]
    return Selection(tuple(chosen), tuple(skipped), tuple(failed))

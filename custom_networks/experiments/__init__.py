"""Seeded ablation studies of the five papers' claims: each paper network with its switches off one at a time,
its plain baseline and MONAI's stock networks, trained through the bundle's own recipe, with a paired test and a
verdict per claim (``attention-unets ablation``, ``scripts/run_ablation.py``, ``docs/ablations.md``)."""

from __future__ import annotations

from custom_networks.experiments.report import claim_verdicts, markdown_report, write_study_outputs
from custom_networks.experiments.runner import StudySettings, run_study
from custom_networks.experiments.statistics import Comparison, compare_paired, verdict
from custom_networks.experiments.studies import BASELINE, STUDIES, Claim, Study, Variant, find_study

__all__ = [
    "BASELINE",
    "STUDIES",
    "Claim",
    "Comparison",
    "Study",
    "StudySettings",
    "Variant",
    "claim_verdicts",
    "compare_paired",
    "find_study",
    "markdown_report",
    "run_study",
    "verdict",
    "write_study_outputs",
]

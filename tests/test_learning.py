"""Every paper network learns a small lesion on real anatomy where its plain baseline does (issue 22).

Each bundle's network at the bundle's defaults (only the widths made narrow) trains beside the all-switches-off
baseline of the same code, with the same seed, batches and budget, on the MNI152 lesion set generated with a
seed the diagnosis in docs/ablations.md did not use; the paper network must reach 0.8x the baseline's best
validation Dice. Slow (about ten short trainings): excluded from the default run, run it with

    python -m pytest -m learning tests/test_learning.py
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("nilearn", reason="the lesion set needs nilearn (test extra)")

from custom_networks.experiments.learning_probe import bundle_network, lesion_set, train_probe  # noqa: E402
from custom_networks.experiments.studies import BASELINE, STUDIES  # noqa: E402

pytestmark = pytest.mark.learning

# data seed 5 served the diagnosis; this one is new to every network
DATA_SEED = 23
FEATURES = (8, 16, 32, 64, 128)
STEPS = 300
# UNeXt-S (SC-UNeXt's baseline) is light per step and slow per step count: at 300 steps its plain form reached
# Dice 0.08 on this set, so it gets more steps (the same for both sides)
STEPS_FOR = {"isic2018_skin_sc_unext": 1500}


# measured collapses (docs/ablations.md, issue 22): the paper network stays at Dice ~0 where its baseline learns;
# strict, so that a remedy makes the run fail until the mark is removed
COLLAPSING = {
    "brain_tumor_mri_gsconv_eca_unet": "GSConv-ECA: Dice 0.00 against plain 0.84 on lesion seed 23 (issue 22)",
    "lgg_mri_cbam_unet": "CBAM: Dice <= 0.04 against plain 0.50-0.67 on lesion seed 5, 500 steps (issue 22)",
    "chest_xray_lung_ag_min_aspp_unet": "AG + Min-ASPP + GSConv: Dice 0.02 against plain 0.84 on lesion seed 23",
}


def _marked(study):
    reason = COLLAPSING.get(study.bundle)
    marks = [pytest.mark.xfail(reason=reason, strict=True)] if reason else []
    return pytest.param(study, id=study.bundle, marks=marks)


@pytest.fixture(scope="module")
def lesions():
    return lesion_set(DATA_SEED)


def _best_dice(bundle: str, switches: dict, data) -> float:
    torch.manual_seed(0)
    network = bundle_network(bundle, switches, features=FEATURES)
    return train_probe(network, data, steps=STEPS_FOR.get(bundle, STEPS), seed=0).best_dice


@pytest.mark.parametrize("study", [_marked(study) for study in STUDIES.values()])
def test_paper_network_learns_where_its_baseline_learns(study, lesions):
    baseline = _best_dice(study.bundle, study.variant(BASELINE).network, lesions)
    assert baseline > 0.3, f"the plain baseline of {study.bundle} did not learn ({baseline:.2f}): budget too small"
    paper = _best_dice(study.bundle, {}, lesions)
    assert paper >= 0.8 * baseline, f"{study.bundle}: Dice {paper:.2f} at the bundle's defaults, plain {baseline:.2f}"

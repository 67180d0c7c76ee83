"""Every paper network learns a small lesion on real anatomy where its plain baseline does (issue 22).

Each bundle's network at the bundle's defaults (only the widths made narrow) trains beside the all-switches-off
baseline of the same code, with the same seed, batches and budget and the baseline's initial weights in every
layer the two share, on the MNI152 lesion set generated with a seed the diagnosis in docs/ablations.md did not
use; the paper network must reach 0.8x the baseline's best validation Dice. Slow (about ten short trainings):
excluded from the default run, run it with

    python -m pytest -m learning tests/test_learning.py
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("nilearn", reason="the lesion set needs nilearn (test extra)")

from custom_networks.experiments.learning_probe import (  # noqa: E402
    bundle_network,
    lesion_set,
    share_initial_weights,
    train_probe,
)
from custom_networks.experiments.studies import BASELINE, STUDIES  # noqa: E402

pytestmark = pytest.mark.learning

# data seed 5 served the diagnosis; this one is new to every network
DATA_SEED = 23
FEATURES = (8, 16, 32, 64, 128)
STEPS = 300
# UNeXt-S (SC-UNeXt's baseline) is light per step and slow per step count: at 300 steps its plain form reached
# Dice 0.08 on this set, so it gets more steps (the same for both sides)
STEPS_FOR = {"isic2018_skin_sc_unext": 1500}


# measured failures (docs/ablations.md, issue 22), each against its plain baseline from the same initial weights:
# the last GSConv block switches its dense units off on the lesion, so the head gives the lesion only its bias
# (foreground probability ~0.4, constant); strict, so that a remedy makes the run fail until the mark is removed
NOT_LEARNING = {
    "brain_tumor_mri_gsconv_eca_unet": "GSConv-ECA: Dice 0.03 against plain 0.84 on lesion seed 23 (issue 22)",
    "chest_xray_lung_ag_min_aspp_unet": "AG + Min-ASPP + GSConv: Dice 0.00 where the same net with standard convs "
    "reaches 0.80 on lesion seed 23 (issue 22)",
}


def _marked(study):
    reason = NOT_LEARNING.get(study.bundle)
    marks = [pytest.mark.xfail(reason=reason, strict=True)] if reason else []
    return pytest.param(study, id=study.bundle, marks=marks)


@pytest.fixture(scope="module")
def lesions():
    return lesion_set(DATA_SEED)


def _network(bundle: str, switches: dict) -> torch.nn.Module:
    torch.manual_seed(0)
    return bundle_network(bundle, switches, features=FEATURES)


@pytest.mark.parametrize("study", [_marked(study) for study in STUDIES.values()])
def test_paper_network_learns_where_its_baseline_learns(study, lesions):
    steps = STEPS_FOR.get(study.bundle, STEPS)
    baseline_network = _network(study.bundle, study.variant(BASELINE).network)
    paper_network = _network(study.bundle, {})
    share_initial_weights(paper_network, baseline_network)  # before the baseline trains
    baseline = train_probe(baseline_network, lesions, steps=steps, seed=0).best_dice
    assert baseline > 0.3, f"the plain baseline of {study.bundle} did not learn ({baseline:.2f}): budget too small"
    paper = train_probe(paper_network, lesions, steps=steps, seed=0).best_dice
    assert paper >= 0.8 * baseline, f"{study.bundle}: Dice {paper:.2f} at the bundle's defaults, plain {baseline:.2f}"

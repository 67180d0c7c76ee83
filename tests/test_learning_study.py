"""The learning probe's bookkeeping (issue 22): shared initial weights, validation scores, the study table."""

from __future__ import annotations

import pytest
import torch

from custom_networks import CBAMUNet, GSConvECAUNet
from custom_networks.experiments.learning_probe import share_initial_weights, validation_scores
from custom_networks.experiments.learning_study import markdown_table, study_rows


@pytest.mark.parametrize(
    "paper",
    [
        lambda: CBAMUNet(2, 3, 2, features=(8, 16, 32), residual_gates=True),
        lambda: GSConvECAUNet(2, 3, 2, features=(8, 16, 32)),
    ],
    ids=["cbam", "gsconv_eca"],
)
def test_sharing_gives_the_paper_network_the_baselines_start_in_every_shared_layer(paper):
    torch.manual_seed(0)
    baseline = CBAMUNet(2, 3, 2, features=(8, 16, 32), use_cbam=False)
    torch.manual_seed(0)
    network = paper()
    before = {name: value.clone() for name, value in network.state_dict().items()}
    shared = share_initial_weights(network, baseline)
    own, donor = network.state_dict(), baseline.state_dict()
    expected = [name for name in donor if name in own and own[name].shape == donor[name].shape]
    assert shared == len(expected) > 0
    assert all(torch.equal(own[name], donor[name]) for name in expected)
    # the paper network's own modules (the attention, GSConv's units) keep their own initial values
    assert all(torch.equal(own[name], before[name]) for name in own if name not in expected)
    assert any(name not in expected for name in own)


class _Oracle(torch.nn.Module):
    """Logits giving foreground probability ``lesion`` wherever the given mask is 1 and ``elsewhere`` elsewhere."""

    def __init__(self, masks: torch.Tensor, lesion: float, elsewhere: float) -> None:
        super().__init__()
        self.masks = masks
        self.lesion, self.elsewhere = (torch.logit(torch.tensor(p)).item() for p in (lesion, elsewhere))
        self.calls = 0

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        mask = self.masks[self.calls : self.calls + len(images)]
        self.calls += len(images)
        foreground = torch.where(mask > 0, self.lesion, self.elsewhere)
        return torch.cat([torch.zeros_like(foreground), foreground], dim=1)


def _masks(seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    masks = torch.zeros(20, 1, 32, 32)
    for i in range(0, 20, 2):  # every other slice has a lesion, of random size and place
        r, c = torch.randint(2, 24, (2,), generator=generator).tolist()
        size = int(torch.randint(2, 8, (1,), generator=generator))
        masks[i, 0, r : r + size, c : c + size] = 1
    return masks


@pytest.mark.parametrize("seed", [0, 1])
def test_validation_scores_of_a_perfect_and_of_an_empty_prediction(seed):
    masks = _masks(seed)
    images = torch.zeros(20, 3, 32, 32)
    perfect = validation_scores(_Oracle(masks, 0.9, 0.1), images, masks)
    assert perfect.dice == pytest.approx(1.0) and perfect.share == pytest.approx(1.0)
    assert perfect.lesion_probability == pytest.approx(0.9, abs=1e-5)
    assert perfect.background_probability == pytest.approx(0.1, abs=1e-5)
    assert perfect.rim_probability == pytest.approx(0.1, abs=1e-5)
    # probability 0.4 on the lesion: ranked right, below the argmax threshold -> "learning slowly", Dice 0
    slow = validation_scores(_Oracle(masks, 0.4, 0.05), images, masks)
    assert slow.dice == 0.0 and slow.share == 0.0
    assert slow.lesion_probability == pytest.approx(0.4, abs=1e-5)
    assert slow.background_probability == pytest.approx(0.05, abs=1e-5)
    # the lesion found with its surroundings: the rim scores as high as the lesion
    blurred = _Oracle(masks, 0.4, 0.05)
    blurred.masks = torch.nn.functional.max_pool2d(masks, 7, stride=1, padding=3)
    halo = validation_scores(blurred, images, masks)
    assert halo.rim_probability == pytest.approx(0.4, abs=0.05) and halo.lesion_probability == pytest.approx(0.4)
    everywhere = validation_scores(_Oracle(masks, 0.9, 0.9), images, masks)  # "foreground everywhere"
    assert everywhere.share == pytest.approx(1 / masks.mean().item())
    assert 0 < everywhere.dice < 0.2


def _record(variant: str, seed: int, dices: list[float]) -> dict:
    curve = [(25 * i, dice, 1.0, 0.5, 0.1) for i, dice in enumerate(dices)]
    return {"variant": variant, "seed": seed, "switches": {}, "learning_rate": 1e-3, "curve": curve, "seconds": 10.0}


def test_study_rows_pair_each_seed_with_the_baselines_and_say_whether_the_budget_passed_the_plateau():
    records = [
        _record("plain", 0, [0.0, 0.5, 0.8, 0.8, 0.79]),
        _record("plain", 1, [0.0, 0.2, 0.6, 0.6, 0.6]),
        _record("slow", 0, [0.0, 0.0, 0.1, 0.3, 0.4]),  # still rising at the end
        _record("slow", 1, [0.0, 0.0, 0.0, 0.2, 0.3]),
        _record("peaked", 0, [0.0, 0.9, 0.5, 0.4, 0.4]),  # best early, far below it at the end
        _record("peaked", 1, [0.0, 0.6, 0.6, 0.6, 0.6]),
    ]
    rows = {row.variant: row for row in study_rows(records, baseline="plain")}
    assert rows["plain"].ratio_to_baseline == pytest.approx(1.0) and rows["plain"].past_plateau
    assert rows["plain"].best_by_seed == {0: (0.8, 50), 1: (0.6, 50)}  # the first step that reached the best
    assert rows["slow"].ratio_to_baseline == pytest.approx((0.4 / 0.8 + 0.3 / 0.6) / 2)
    assert not rows["slow"].past_plateau  # still climbing in the last quarter
    assert rows["peaked"].past_plateau  # best early: a longer run would not help, early stopping keeps the best
    assert rows["peaked"].mean_best == pytest.approx(0.75) and rows["peaked"].sd_best == pytest.approx(0.2121, abs=1e-4)
    table = markdown_table(list(rows.values()))
    assert "| peaked |" in table and "0.90 (25)" in table and "0.75 +- 0.21" in table
    with pytest.raises(ValueError, match="baseline: no records of variant 'unet'"):
        study_rows(records, baseline="unet")

"""Slow bundle runs: training on demo data learns (Dice >= 0.8), and multi-GPU configs run under torchrun on CPU.

The two Dice bundles are the ones whose demo data learns fastest on CPU (measured: lung field and skin lesion reach
a validation Dice above 0.9 in about 8 epochs of 24 images at 96 x 96 with tiny widths and lr 3e-3). After
training, the held-out split is evaluated and segmented through the CLI, and the saved masks are compared with the
ground truth files, which also checks that inference writes masks in the input's orientation.
"""

from __future__ import annotations

import csv
import re

import numpy as np
import pytest
from PIL import Image

from conftest import TINY_OVERRIDES, cli_args, make_demo_task, run_cli

pytestmark = pytest.mark.training

DICE_RUNS = {
    "chest_xray_lung_ag_min_aspp_unet": ("montgomery", {"network_def#features": [8, 16, 32, 64]}),
    "isic2018_skin_sc_unext": ("isic2018", {}),
}
EPOCHS = 12


def dice(prediction: np.ndarray, truth: np.ndarray) -> float:
    return 2.0 * np.logical_and(prediction, truth).sum() / (prediction.sum() + truth.sum())


def truth_mask(root, label) -> np.ndarray:
    labels = label if isinstance(label, list) else [label]
    return np.logical_or.reduce([np.asarray(Image.open(root / path)) > 0 for path in labels])


@pytest.mark.parametrize("bundle", sorted(DICE_RUNS))
def test_training_on_demo_data_reaches_dice_08(bundle, tmp_path):
    task_name, network = DICE_RUNS[bundle]
    task = make_demo_task(tmp_path, task_name, n=40, size=128)
    root = tmp_path / "bundle_root"
    common = {
        "bundle_root": str(root),
        "dataset_dir": str(task.root),
        "spatial_size": [96, 96],
        "num_workers": 0,
        **network,
    }
    train = run_cli(
        cli_args(
            bundle,
            ["train.json"],
            {**common, "learning_rate": 0.003, "batch_size": 4, "train#trainer#max_epochs": EPOCHS},
        ),
        cwd=tmp_path,
    ).check()
    best = max(float(value) for value in re.findall(r"val_mean_dice: ([0-9.]+)", train.stdout))
    print(f"{bundle}: best validation Dice {best:.3f} after {EPOCHS} epochs, training run {train.seconds:.0f} s")
    assert best >= 0.8

    run_cli(cli_args(bundle, ["train.json", "evaluate.json"], common), cwd=tmp_path).check()
    metrics = dict(row for row in csv.reader((root / "eval" / "metrics.csv").open()) if row)
    assert float(metrics["test_mean_dice"]) >= 0.8

    masks = tmp_path / "masks"
    run_cli(
        cli_args(bundle, ["inference.json"], {**common, "dataset_dir": str(task.infer_dir), "output_dir": str(masks)}),
        cwd=tmp_path,
    ).check()
    scores = []
    for item in task.datalist["testing"]:
        predicted = np.asarray(Image.open(masks / f"{task.root.joinpath(item['image']).stem}_seg.png")) > 0
        scores.append(dice(predicted, truth_mask(task.root, item["label"])))
    print(f"{bundle}: Dice of the saved test masks {np.mean(scores):.3f}")
    assert np.mean(scores) >= 0.8


def test_multi_gpu_configs_run_under_torchrun_on_cpu(demo_data, tmp_path):
    """Two CPU processes with the gloo backend: each rank trains on half the data and steps its learning-rate
    schedule (the all-ranks handler group); rank 0 alone writes checkpoints (the rank-0 group)."""
    bundle, task = "isic2018_skin_sc_unext", demo_data["isic2018"]
    root = tmp_path / "bundle_root"
    overrides = {
        "bundle_root": str(root),
        "dataset_dir": str(task.root),
        "num_workers": 0,
        "batch_size": 2,
        **TINY_OVERRIDES[bundle],
    }
    torchrun = ["-m", "torch.distributed.run", "--standalone", "--nnodes", "1", "--nproc_per_node", "2"]
    train = run_cli(
        torchrun
        + cli_args(bundle, ["train.json", "multi_gpu_train.json"], {**overrides, "train#trainer#max_epochs": 2}),
        cwd=tmp_path,
    ).check()
    n_train = len(task.datalist["training"])
    per_rank_iterations = -(-n_train // 2 // 2)
    assert f"Epoch: 2/2, Iter: {per_rank_iterations}/{per_rank_iterations}" in train.stdout
    assert train.stdout.count("Current learning rate") == 2 * 2  # 2 ranks x 2 epochs
    assert (root / "models" / "model.pt").is_file() and (root / "models" / "model_final.pt").is_file()

    run_cli(
        torchrun + cli_args(bundle, ["train.json", "evaluate.json", "multi_gpu_evaluate.json"], overrides), cwd=tmp_path
    ).check()
    rows = list(csv.reader((root / "eval" / "test_mean_dice_raw.csv").open()))
    assert len(rows) == 1 + len(task.datalist["testing"])

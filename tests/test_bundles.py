"""The five bundles through the MONAI bundle CLI, plus export, metadata, MONAI Label expectations and input errors.

Every bundle is trained once per test run and segments its demo folder (conftest's ``trained_bundles``: one
training through the real CLI with MONAI Label's overrides, the others in-process); this module evaluates each
(one through the real CLI) and checks one outcome of those runs per test. ``verify_net_in_out``, ``ckpt_export``
and ``verify_metadata`` are called in-process through the same functions ``python -m monai.bundle`` dispatches to.
"""

from __future__ import annotations

import csv
import json
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser, ckpt_export, verify_metadata, verify_net_in_out
from monai.losses import DiceCELoss
from PIL import Image

from custom_networks.data.bundle_inputs import INPUT_ERROR

from conftest import (
    BUNDLE_TASK,
    BUNDLES,
    BUNDLES_DIR,
    MONAI_LABEL_BUNDLE,
    TINY_OVERRIDES,
    CliResult,
    cli_args,
    run_cli,
    run_in_process,
    run_parallel,
)

# the Model Zoo's own metadata schema (meta_schema_20240725.json), copied unchanged: validation downloads nothing
SCHEMA = BUNDLES_DIR / "metadata_schema.json"
# the bundle evaluated through the real CLI (the others in-process); it also reports pixel accuracy
CLI_EVALUATE_BUNDLE = "chest_xray_lung_ag_min_aspp_unet"
INFERENCE_IDS = (
    "bundle_root",
    "device",
    "network_def",
    "network",
    "preprocessing",
    "inferer",
    "postprocessing",
    "dataset",
    "evaluator",
    "output_dir",
    "initialize",
    "run",
    "finalize",
)
TRAIN_IDS = (
    "dataset_dir",
    "train#trainer",
    "train#trainer#max_epochs",
    "train#dataset#data",
    "train#handlers",
    "validate#evaluator",
    "validate#handlers",
    "validate#dataset#data",
    "val_interval",
)


def configs_of(bundle: str) -> Path:
    return BUNDLES_DIR / bundle / "configs"


def in_channels_of(bundle: str) -> int:
    return ConfigParser.load_config_file(configs_of(bundle) / "inference.json")["in_channels"]


def build_network(bundle: str) -> torch.nn.Module:
    parser = ConfigParser()
    parser.read_config(configs_of(bundle) / "inference.json")
    parser.update(TINY_OVERRIDES[bundle])
    return parser.get_parsed_content("network_def")


@pytest.fixture(scope="module")
def evaluations(trained_bundles, tmp_path_factory) -> CliResult:
    """Every trained bundle evaluated on its testing split: ``CLI_EVALUATE_BUNDLE`` through the real CLI run from
    a folder outside the bundles, the others in-process. Returns the CLI run."""
    cwd = tmp_path_factory.mktemp("evaluate")
    overrides = trained_bundles.bundles[CLI_EVALUATE_BUNDLE].overrides
    with ThreadPoolExecutor(max_workers=1) as background:
        cli = background.submit(run_cli, cli_args(CLI_EVALUATE_BUNDLE, ["train.json", "evaluate.json"], overrides), cwd)
        for bundle, trained in trained_bundles.bundles.items():
            if bundle != CLI_EVALUATE_BUNDLE:
                run_in_process(bundle, ["train.json", "evaluate.json"], trained.overrides)
        return cli.result().check()


@pytest.mark.parametrize("bundle", BUNDLES)
def test_train_writes_loadable_checkpoints_and_curves(trained_bundles, bundle):
    root = trained_bundles.bundles[bundle].root
    models = root / "models"
    network = build_network(bundle)
    for name in ("model.pt", "model_final.pt"):
        state = torch.load(models / name, weights_only=True)
        network.load_state_dict(state)
    curves = root / "eval" / "training_curves.png"
    with Image.open(curves) as image:
        assert image.format == "PNG" and image.size[0] > 300
    assert list((root / "eval").glob("events.out.tfevents.*"))


def test_monai_label_style_overrides_train_and_save_model_pt(trained_bundles):
    """MONAI Label overrides the data lists, epochs, device, bundle_root and handlers and expects models/model.pt."""
    result = trained_bundles.cli_train
    assert "Epoch[1] Metrics" in result.stdout
    assert (trained_bundles.bundles[MONAI_LABEL_BUNDLE].root / "models" / "model.pt").is_file()


@pytest.mark.parametrize("bundle", BUNDLES)
def test_evaluate_writes_per_case_csv_and_summary(trained_bundles, evaluations, bundle):
    out = trained_bundles.bundles[bundle].root / "eval"
    metrics = dict(row for row in csv.reader((out / "metrics.csv").open()) if row)
    expected = {"test_mean_dice", "test_mean_iou", "test_hd95"}
    if bundle == "chest_xray_lung_ag_min_aspp_unet":
        expected.add("test_accuracy")
    assert set(metrics) == expected
    testing = trained_bundles.bundles[bundle].task.datalist["testing"]
    for name in ("test_mean_dice", "test_mean_iou", "test_hd95"):
        rows = list(csv.reader((out / f"{name}_raw.csv").open()))
        assert len(rows) == 1 + len(testing)
        assert {Path(row[0]).name for row in rows[1:]} == {Path(item["image"]).name for item in testing}
        summary = (out / f"{name}_summary.csv").read_text()
        assert summary.startswith("class,mean,median")
    assert 0.0 <= float(metrics["test_mean_dice"]) <= 1.0


@pytest.mark.parametrize("bundle", BUNDLES)
def test_inference_writes_masks_with_the_input_geometry(trained_bundles, bundle):
    trained = trained_bundles.bundles[bundle]
    inputs = sorted(trained.task.infer_dir.iterdir())
    assert len(list(trained.masks.glob("*_seg.*"))) == len(inputs)
    assert (trained.masks / "run_summary.csv").is_file()  # the summary goes with the masks, not into the bundle
    for source in inputs:
        if source.name.endswith(".nii.gz"):
            mask, image = nib.load(trained.masks / source.name.replace(".nii.gz", "_seg.nii.gz")), nib.load(source)
            assert mask.shape == image.shape[:3]
            np.testing.assert_allclose(mask.affine, image.affine, atol=1e-5)
            assert set(np.unique(np.asarray(mask.dataobj))) <= {0, 1}
        else:
            with Image.open(trained.masks / f"{source.stem}_seg.png") as mask, Image.open(source) as image:
                assert mask.size == image.size
                assert set(np.unique(np.asarray(mask))) <= {0, 255}


def test_mlflow_tracking_records_the_run(trained_bundles):
    """`--tracking mlflow` with a local SQLite tracking URI records the training run and its loss."""
    with sqlite3.connect(trained_bundles.mlflow_db) as db:
        run_names = [row[0] for row in db.execute("SELECT name FROM runs")]
        metric_keys = {row[0] for row in db.execute("SELECT DISTINCT key FROM metrics")}
    assert "demo" in run_names
    assert {"train_loss", "val_mean_dice"} <= metric_keys


@pytest.mark.parametrize("bundle", BUNDLES)
def test_verify_net_in_out(bundle):
    verify_net_in_out(
        net_id="network_def",
        meta_file=str(configs_of(bundle) / "metadata.json"),
        config_file=str(configs_of(bundle) / "inference.json"),
        **TINY_OVERRIDES[bundle],
    )


@pytest.mark.parametrize("bundle", BUNDLES)
def test_ckpt_export_torchscript_matches_eager(trained_bundles, bundle, tmp_path):
    checkpoint = trained_bundles.bundles[bundle].root / "models" / "model.pt"
    exported = tmp_path / "model.ts"
    ckpt_export(
        net_id="network_def",
        filepath=str(exported),
        ckpt_file=str(checkpoint),
        meta_file=str(configs_of(bundle) / "metadata.json"),
        config_file=str(configs_of(bundle) / "inference.json"),
        **TINY_OVERRIDES[bundle],
    )
    scripted = torch.jit.load(str(exported))
    eager = build_network(bundle)
    eager.load_state_dict(torch.load(checkpoint, weights_only=True))
    eager.eval()
    torch.manual_seed(0)
    x = torch.rand(1, in_channels_of(bundle), 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), eager(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("bundle", BUNDLES)
def test_metadata_validates_offline_against_the_repository_schema(bundle):
    verify_metadata(meta_file=str(configs_of(bundle) / "metadata.json"), filepath=str(SCHEMA))


def test_schema_rejects_broken_metadata(tmp_path):
    """The zoo schema types every field and lists the required ones (it checks no lengths or version formats)."""
    meta = json.loads((configs_of(BUNDLES[0]) / "metadata.json").read_text())
    meta["network_data_format"]["inputs"]["image"]["spatial_shape"] = "512"
    broken = tmp_path / "metadata.json"
    broken.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="'512' is not of type 'array'"):
        verify_metadata(meta_file=str(broken), filepath=str(SCHEMA))
    del meta["required_packages_version"]
    broken.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="'required_packages_version' is a required property"):
        verify_metadata(meta_file=str(broken), filepath=str(SCHEMA))


@pytest.mark.parametrize("bundle", BUNDLES)
def test_monai_label_expectations(bundle, demo_data):
    """Keys, 2D spatial shape, labels from channel_def, inference and train ids, and a plain-string image_path."""
    meta = json.loads((configs_of(bundle) / "metadata.json").read_text())
    image, pred = meta["network_data_format"]["inputs"]["image"], meta["network_data_format"]["outputs"]["pred"]
    assert len(image["spatial_shape"]) == 2
    labels = {name for name in pred["channel_def"].values() if name != "background"}
    assert len(labels) == 1 and pred["num_channels"] == 2
    assert "version" in meta and meta["version"] in meta["changelog"]

    inference = ConfigParser()
    inference.read_config(configs_of(bundle) / "inference.json")
    for key in INFERENCE_IDS:
        assert key in inference, key
    train = ConfigParser()
    train.read_config(configs_of(bundle) / "train.json")
    for key in TRAIN_IDS:
        assert key in train, key

    inference.update(TINY_OVERRIDES[bundle])
    preprocessing = inference.get_parsed_content("preprocessing")
    source = next(
        path for path in sorted(demo_data[BUNDLE_TASK[bundle]].infer_dir.iterdir()) if not path.name.endswith(".nii.gz")
    )
    item = preprocessing({"image": str(source), "image_path": str(source)})
    assert item["image"].shape[0] == image["num_channels"]
    assert item["image_path"] == str(source)


def test_attention_is_chosen_by_one_override():
    parser = ConfigParser()
    parser.read_config(configs_of("lgg_mri_attention_res_unet") / "train.json")
    assert parser["network_def"]["attention"] == "ag"
    kinds = {}
    for attention in ("ag", "se", "cbam", None):
        parser.update({"network_def#attention": attention, "network_def#features": [8, 16, 32]})
        network = parser.get_parsed_content("network_def", lazy=False)
        kinds[attention] = {type(module).__name__ for module in network.modules()}
    assert "AttentionGate" in kinds["ag"] and "AttentionGate" not in kinds["se"]
    assert kinds["se"] != kinds["cbam"] != kinds[None]


@pytest.mark.parametrize("edge_weight", [0.0, 1.0, 2.5])
def test_edge_loss_is_switched_by_its_weight(edge_weight):
    """SC-UNeXt's joint loss: ``--edge_weight 0`` (the default) is plain DiceCE; a positive weight adds the edge
    term."""
    parser = ConfigParser()
    parser.read_config(configs_of("isic2018_skin_sc_unext") / "train.json")
    assert parser["edge_weight"] == 0.0
    parser.update({"edge_weight": edge_weight})
    loss = parser.get_parsed_content("loss")
    torch.manual_seed(1)
    logits, labels = torch.randn(2, 2, 32, 32), (torch.rand(2, 1, 32, 32) > 0.6).float()
    region = DiceCELoss(to_onehot_y=True, softmax=True)(logits, labels)
    expected = region + edge_weight * loss.edge_loss(logits, labels)
    torch.testing.assert_close(loss(logits, labels), expected)
    assert (loss(logits, labels) > region) == (edge_weight > 0)


@pytest.mark.subprocess
def test_bad_inputs_stop_with_one_line_before_training(demo_data, tmp_path):
    """Through the CLI: a missing dataset_dir and an RGB image for the 1-channel bundle. The other checks share
    the same SystemExit path and are covered in-process in test_bundle_components.py."""
    bundle, task = "brain_tumor_mri_gsconv_eca_unet", demo_data["brain_tumor"]
    rgb = tmp_path / "rgb"
    (rgb / "images").mkdir(parents=True)
    Image.new("RGB", (64, 64)).save(rgb / "images" / "1.png")
    item = {"image": "images/1.png", "label": str(task.root / "masks" / "1.png")}
    (rgb / "datalist.json").write_text(json.dumps({"training": [item], "validation": [item]}))
    cases = {
        "missing_dir": (tmp_path / "does_not_exist", f"{tmp_path / 'does_not_exist'}: dataset_dir does not exist"),
        "wrong_channels": (rgb, f"{rgb / 'images' / '1.png'}: image has 3 channel(s), the network expects 1"),
    }
    jobs = {}
    for name, (dataset_dir, _) in cases.items():
        overrides = {
            "bundle_root": str(tmp_path / name / "bundle_root"),
            "dataset_dir": str(dataset_dir),
            "num_workers": 0,
            **TINY_OVERRIDES[bundle],
        }
        jobs[name] = (cli_args(bundle, ["train.json"], overrides), tmp_path / name)
    for name, result in run_parallel(jobs).items():
        assert result.returncode != 0, name
        assert "Traceback" not in result.stderr, f"{name}: {result.stderr[-2000:]}"
        assert result.stderr.strip().splitlines()[-1].startswith(f"{INPUT_ERROR}: {cases[name][1]}")
        assert "Epoch" not in result.stdout and not (tmp_path / name / "bundle_root" / "models").exists()

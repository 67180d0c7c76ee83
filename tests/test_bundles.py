"""The five bundles through the real MONAI bundle CLI, plus export, metadata, MONAI Label expectations and input errors.

The CLI runs happen once per module (two at a time; the machine has 2 cores) in a fixture: every bundle trains for
one epoch with tiny widths on small demo data, then evaluates and segments a folder of images. Each test then checks
one outcome of those runs. ``verify_net_in_out``, ``ckpt_export`` and ``verify_metadata`` are called in-process
through the same functions ``python -m monai.bundle`` dispatches to, which saves an interpreter start each.
"""

from __future__ import annotations

import copy
import csv
import json
import sqlite3
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from monai.bundle import ConfigParser, ckpt_export, verify_metadata, verify_net_in_out

from conftest import BUNDLE_TASK, BUNDLES, BUNDLES_DIR, TINY_OVERRIDES, cli_args, run_parallel

from custom_networks.data.bundle_inputs import INPUT_ERROR

SCHEMA = BUNDLES_DIR / "metadata_schema.json"
MONAI_LABEL_BUNDLE = "lgg_mri_cbam_unet"
# per-bundle overrides beyond tiny widths: the attention type (issue: one override) and the SC-UNeXt joint loss
EXTRA = {"lgg_mri_attention_res_unet": {"network_def#attention": "se"}}
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


def network_overrides(bundle: str) -> dict:
    return {**TINY_OVERRIDES[bundle], **EXTRA.get(bundle, {})}


def in_channels_of(bundle: str) -> int:
    return ConfigParser.load_config_file(configs_of(bundle) / "inference.json")["in_channels"]


def build_network(bundle: str) -> torch.nn.Module:
    parser = ConfigParser()
    parser.read_config(configs_of(bundle) / "inference.json")
    parser.update(network_overrides(bundle))
    return parser.get_parsed_content("network_def")


def monai_label_args(bundle: str, task, bundle_root: Path) -> dict:
    """Overrides as MONAI Label's bundle train task passes them: explicit data lists, epochs, device, handlers."""
    parser = ConfigParser()
    parser.read_config(configs_of(bundle) / "train.json")

    def absolute(items):
        return [{key: str(task.root / value) for key, value in item.items()} for item in items]

    return {
        "bundle_root": str(bundle_root),
        "device": "cpu",
        "train#trainer#max_epochs": 1,
        "train#dataset#data": absolute(task.datalist["training"]),
        "validate#dataset#data": absolute(task.datalist["validation"]),
        "train#handlers": copy.deepcopy(parser["train"]["handlers"]),
    }


@pytest.fixture(scope="module")
def runs(demo_data, tmp_path_factory) -> dict:
    """Train, then evaluate and infer, every bundle through ``python -m monai.bundle run`` (cwd outside bundles)."""
    work = tmp_path_factory.mktemp("bundle_runs")
    train_jobs, layout = {}, {}
    for bundle in BUNDLES:
        task = demo_data[BUNDLE_TASK[bundle]]
        root, cwd = work / bundle / "bundle_root", work / bundle / "cwd"
        layout[bundle] = {"root": root, "cwd": cwd, "task": task, "pred": work / bundle / "pred"}
        common = {
            "bundle_root": str(root),
            "dataset_dir": str(task.root),
            "num_workers": 0,
            "batch_size": 2,
            **network_overrides(bundle),
        }
        train = {**common, "train#trainer#max_epochs": 1}
        if bundle == "isic2018_skin_sc_unext":
            layout[bundle]["mlflow_db"] = work / bundle / "mlruns.db"
            train.update(
                {
                    "use_edge_loss": "True",
                    "tracking": "mlflow",
                    "tracking_uri": f"sqlite:///{layout[bundle]['mlflow_db']}",
                    "run_name": "demo",
                }
            )
        args = cli_args(bundle, ["train.json"], train)
        if bundle == MONAI_LABEL_BUNDLE:
            args_file = work / bundle / "monai_label_overrides.json"
            args_file.parent.mkdir(parents=True, exist_ok=True)
            args_file.write_text(json.dumps(monai_label_args(bundle, task, root)))
            args = cli_args(bundle, ["train.json"], {"args_file": str(args_file), **network_overrides(bundle)})
        train_jobs[f"{bundle}-train"] = (args, cwd)
        layout[bundle]["common"] = common
    results = run_parallel(train_jobs)

    eval_jobs = {}
    for bundle in BUNDLES:
        info = layout[bundle]
        eval_jobs[f"{bundle}-evaluate"] = (
            cli_args(bundle, ["train.json", "evaluate.json"], info["common"]),
            info["cwd"],
        )
        infer = {
            "bundle_root": str(info["root"]),
            "dataset_dir": str(info["task"].infer_dir),
            "output_dir": str(info["pred"]),
            **network_overrides(bundle),
        }
        eval_jobs[f"{bundle}-infer"] = (cli_args(bundle, ["inference.json"], infer), info["cwd"])
    results.update(run_parallel(eval_jobs))
    for name, result in sorted(results.items()):
        print(f"{name}: {result.seconds:.1f} s")
    return {"results": results, "layout": layout}


@pytest.mark.parametrize("bundle", BUNDLES)
def test_train_writes_loadable_checkpoints_and_curves(runs, bundle):
    runs["results"][f"{bundle}-train"].check()
    models = runs["layout"][bundle]["root"] / "models"
    network = build_network(bundle)
    for name in ("model.pt", "model_final.pt"):
        state = torch.load(models / name, weights_only=True)
        network.load_state_dict(state)
    curves = runs["layout"][bundle]["root"] / "eval" / "training_curves.png"
    with Image.open(curves) as image:
        assert image.format == "PNG" and image.size[0] > 300
    assert list((runs["layout"][bundle]["root"] / "eval").glob("events.out.tfevents.*"))


def test_monai_label_style_overrides_train_and_save_model_pt(runs):
    """MONAI Label overrides the data lists, epochs, device, bundle_root and handlers and expects models/model.pt."""
    result = runs["results"][f"{MONAI_LABEL_BUNDLE}-train"].check()
    assert "Epoch[1] Metrics" in result.stdout
    assert (runs["layout"][MONAI_LABEL_BUNDLE]["root"] / "models" / "model.pt").is_file()


@pytest.mark.parametrize("bundle", BUNDLES)
def test_evaluate_writes_per_case_csv_and_summary(runs, bundle):
    runs["results"][f"{bundle}-evaluate"].check()
    out = runs["layout"][bundle]["root"] / "eval"
    metrics = dict(row for row in csv.reader((out / "metrics.csv").open()) if row)
    expected = {"val_mean_dice", "val_mean_iou", "val_hd95"}
    if bundle == "chest_xray_lung_ag_min_aspp_unet":
        expected.add("val_accuracy")
    assert set(metrics) == expected
    testing = runs["layout"][bundle]["task"].datalist["testing"]
    for name in ("val_mean_dice", "val_mean_iou", "val_hd95"):
        rows = list(csv.reader((out / f"{name}_raw.csv").open()))
        assert len(rows) == 1 + len(testing)
        assert {Path(row[0]).name for row in rows[1:]} == {Path(item["image"]).name for item in testing}
        summary = (out / f"{name}_summary.csv").read_text()
        assert summary.startswith("class,mean,median")
    assert 0.0 <= float(metrics["val_mean_dice"]) <= 1.0


@pytest.mark.parametrize("bundle", BUNDLES)
def test_inference_writes_masks_with_the_input_geometry(runs, bundle):
    runs["results"][f"{bundle}-infer"].check()
    info = runs["layout"][bundle]
    inputs = sorted(info["task"].infer_dir.iterdir())
    assert len(list(info["pred"].iterdir())) == len(inputs)
    for source in inputs:
        if source.name.endswith(".nii.gz"):
            mask, image = nib.load(info["pred"] / source.name.replace(".nii.gz", "_seg.nii.gz")), nib.load(source)
            assert mask.shape == image.shape[:3]
            np.testing.assert_allclose(mask.affine, image.affine, atol=1e-5)
            assert set(np.unique(np.asarray(mask.dataobj))) <= {0, 1}
        else:
            with Image.open(info["pred"] / f"{source.stem}_seg.png") as mask, Image.open(source) as image:
                assert mask.size == image.size
                assert set(np.unique(np.asarray(mask))) <= {0, 255}


def test_mlflow_tracking_records_the_run(runs):
    """`--tracking mlflow` with a local SQLite tracking URI records the training run and its loss."""
    runs["results"]["isic2018_skin_sc_unext-train"].check()
    with sqlite3.connect(runs["layout"]["isic2018_skin_sc_unext"]["mlflow_db"]) as db:
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
        **network_overrides(bundle),
    )


@pytest.mark.parametrize("bundle", BUNDLES)
def test_ckpt_export_torchscript_matches_eager(runs, bundle, tmp_path):
    runs["results"][f"{bundle}-train"].check()
    checkpoint = runs["layout"][bundle]["root"] / "models" / "model.pt"
    exported = tmp_path / "model.ts"
    ckpt_export(
        net_id="network_def",
        filepath=str(exported),
        ckpt_file=str(checkpoint),
        meta_file=str(configs_of(bundle) / "metadata.json"),
        config_file=str(configs_of(bundle) / "inference.json"),
        **network_overrides(bundle),
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
    meta = json.loads((configs_of(BUNDLES[0]) / "metadata.json").read_text())
    meta["network_data_format"]["inputs"]["image"]["spatial_shape"] = [512]
    broken = tmp_path / "metadata.json"
    broken.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"\[512\] is too short"):
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

    inference.update(network_overrides(bundle))
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


@pytest.mark.parametrize(
    "flag, expected",
    [
        (False, "DiceCELoss"),
        ("false", "DiceCELoss"),
        (True, "DiceCEEdgeLoss"),
        ("true", "DiceCEEdgeLoss"),
        ("True", "DiceCEEdgeLoss"),
    ],
)
def test_edge_loss_switch(flag, expected):
    parser = ConfigParser()
    parser.read_config(configs_of("isic2018_skin_sc_unext") / "train.json")
    parser.update({"use_edge_loss": flag})
    assert type(parser.get_parsed_content("loss")).__name__ == expected


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

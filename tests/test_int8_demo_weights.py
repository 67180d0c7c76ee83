"""The shipped demo weights of the brain bundle, exported by ``scripts/export_bundle_models.py``, keep their lesion
Dice in int8 on sample studies the export never saw, through ``inference.json`` + ``inference_onnx.json``; and the
command line runs that int8 model by default on the CPU only for the checkpoint it was verified for.

The sample studies of seeds 4-6 were not used to find or tune the quantization (that used seeds 1-3 and 7,
docs/quantization.md). The model picked for this CPU (``int8_model_for_this_cpu``) is tested, and the
uint8-weights model as well, which is the one a CPU without VNNI picks (on such a CPU the two are the same file).
"""

from __future__ import annotations

import json
import platform
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch

from custom_networks.cli import main as cli_main
from custom_networks.data import demo
from custom_networks.data.sample_study import lesion_dice, write_sample_study
from custom_networks.deploy import int8_models
from custom_networks.deploy.int8_models import (
    INT8_MODEL_FILES,
    VERIFICATION_FILE,
    int8_model_for_this_cpu,
    int8_weights_are_exact,
    verified_int8_model,
)
from custom_networks.file_hash import file_sha256
from custom_networks.runtime import demo_network_overrides

from conftest import BUNDLES_DIR, run_in_process
from test_deploy_bundles import export_cli

BRAIN = "brain_tumor_mri_gsconv_eca_unet"
DEMO_SHAPE = demo_network_overrides(BRAIN)  # the network and window the demo weights were trained with
SHAPE_OPTIONS = [f"--set={key}={json.dumps(value)}" for key, value in DEMO_SHAPE.items()]
UNSEEN_SEEDS = (4, 5, 6)
MAX_DICE_LOSS = 0.01


def lesion_mask(folder: Path) -> np.ndarray:
    (mask,) = folder.rglob("*_seg.nii.gz")
    return np.asarray(nib.load(mask).dataobj)


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict:
    """The demo weights as a trained bundle's ``models/model.pt``, exported with 128 px demo images for
    calibration (the weights' training size), and every unseen study segmented with torch and the int8 models."""
    work = tmp_path_factory.mktemp("int8_demo")
    root = work / "bundle"
    shutil.copytree(BUNDLES_DIR / BRAIN, root, ignore=shutil.ignore_patterns("sample_data"))
    shutil.copy(root / "models" / "demo_model.pt", root / "models" / "model.pt")
    demo.write_brain_tumor_png(work / "data", n_cases=40, size=128, seed=0)
    shape_args = [arg for key, value in DEMO_SHAPE.items() for arg in (f"--{key}", json.dumps(value))]
    printed = export_cli([str(BUNDLES_DIR / BRAIN), "--bundle_root", str(root), "--dataset_dir", str(work / "data"),
                          *shape_args])
    models = {"torch": None, "this_cpu": Path(int8_model_for_this_cpu(root / "models")),
              "uint8_weights": root / "models" / INT8_MODEL_FILES["uint8"]}
    masks: dict[tuple[str, int], np.ndarray] = {}
    for seed in UNSEEN_SEEDS:
        study = write_sample_study(work / f"study_{seed}", seed=seed)
        for kind, model in models.items():
            output = work / f"masks_{kind}_{seed}"
            overrides = {"bundle_root": str(root), "dataset_dir": str(study["dicom"]), "output_dir": str(output),
                         "device": "$torch.device('cpu')", **DEMO_SHAPE}
            configs = ["inference.json"]
            if model is not None:
                configs.append("inference_onnx.json")
                overrides["onnx_model"] = str(model)
            run_in_process(BRAIN, configs, overrides, workflow_type="infer")
            masks[kind, seed] = lesion_mask(output)
    return {"root": root, "printed": printed, "masks": masks, "work": work}


@pytest.mark.parametrize("kind", ["this_cpu", "uint8_weights"])
def test_int8_keeps_the_lesion_dice_of_torch_on_unseen_studies(exported, kind):
    for seed in UNSEEN_SEEDS:
        torch_dice = lesion_dice(exported["masks"]["torch", seed], seed=seed)
        int8_dice = lesion_dice(exported["masks"][kind, seed], seed=seed)
        assert torch_dice > 0.8, f"seed {seed}: the demo weights find the lesion (Dice {torch_dice:.3f})"
        assert abs(int8_dice - torch_dice) <= MAX_DICE_LOSS, f"seed {seed}: {int8_dice:.4f} vs {torch_dice:.4f}"
        agreement = np.mean(exported["masks"][kind, seed] == exported["masks"]["torch", seed])
        assert agreement >= 0.995, f"seed {seed}: int8 and torch masks agree on {agreement:.2%} of the voxels"


def test_export_verifies_both_static_models_and_records_the_checkpoint(exported):
    models = exported["root"] / "models"
    record = json.loads((models / VERIFICATION_FILE).read_text())
    assert set(record["models"]) == {"model_int8_dynamic.onnx", *INT8_MODEL_FILES.values()}
    assert all(check["written"] and check["agreement"] >= 0.99 for check in record["models"].values())
    assert verified_int8_model(models, models / "model.pt") == Path(int8_model_for_this_cpu(models))
    for name in INT8_MODEL_FILES.values():
        assert f"wrote {models / name}" in exported["printed"]


def test_cli_runs_the_verified_int8_model_by_default_and_torch_for_another_checkpoint(exported, capsys):
    root, study = exported["root"], exported["work"] / f"study_{UNSEEN_SEEDS[0]}" / "mr_volume.nii.gz"

    def infer(bundle: Path, output: Path, *options: str) -> str:
        assert cli_main(["infer", "--bundle", str(bundle), "--input", str(study), "--output", str(output),
                         "--device", "cpu", *SHAPE_OPTIONS, *options]) == 0
        return json.loads((output / "run_summary.json").read_text())["run"]["weights"]

    assert infer(root, exported["work"] / "cli_default") == int8_model_for_this_cpu(root / "models")
    assert "model: int8" in capsys.readouterr().out
    assert infer(root, exported["work"] / "cli_torch", "--model", "torch") == str(root / "models" / "model.pt")

    # a checkpoint changed after the export (retrained, say) is not what the int8 model was verified for
    retrained = exported["work"] / "retrained"
    shutil.copytree(root, retrained)
    checkpoint = retrained / "models" / "model.pt"
    state = torch.load(checkpoint, weights_only=True)
    torch.save({name: value * 1.01 for name, value in state.items()}, checkpoint)
    assert verified_int8_model(retrained / "models", checkpoint) is None
    assert infer(retrained, exported["work"] / "cli_retrained") == str(checkpoint)


@pytest.mark.parametrize(
    "machine, flags, weights",
    [
        ("x86_64", {"avx2", "avx512f", "avx512_vnni"}, "int8"),
        ("x86_64", {"avx2", "avx_vnni"}, "int8"),
        ("x86_64", {"avx2", "fma"}, "uint8"),  # e.g. AMD Zen 2/3, Intel before Cascade Lake
        ("x86_64", set(), "uint8"),  # flags unreadable: the model that is exact everywhere
        ("aarch64", set(), "int8"),
    ],
)
def test_int8_model_is_chosen_from_the_cpu_it_runs_on(tmp_path, machine, flags, weights):
    assert int8_weights_are_exact(machine, flags) == (weights == "int8")
    assert int8_model_for_this_cpu(tmp_path, machine, flags) == str(tmp_path / INT8_MODEL_FILES[weights])


@pytest.mark.parametrize("vnni", [True, False], ids=["cpu_with_vnni", "cpu_without_vnni"])
def test_pacs_batch_runs_the_int8_model_this_cpu_should_and_stores_the_seg_infer_writes(
    exported, orthanc, tmp_path, monkeypatch, vnni
):
    """``pacs-batch --model int8`` (and ``auto``, the export being verified for this checkpoint) runs the int8 file
    the CPU check picks, for both answers of the check (the CPU's flags faked), and stores the SEG that ``attention-
    unets infer --model int8`` writes for the same series: same pixels, same UIDs."""
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(int8_models, "cpu_flags", lambda: {"avx2", "fma", "avx512_vnni"} if vnni else {"avx2", "fma"})
    root = exported["root"]
    expected = root / "models" / INT8_MODEL_FILES["int8" if vnni else "uint8"]
    study = write_sample_study(tmp_path / "study", seed=UNSEEN_SEEDS[1])["dicom"]
    orthanc.upload(sorted(study.iterdir()))
    monkeypatch.setenv("PACS_USERNAME", orthanc.username)
    monkeypatch.setenv("PACS_PASSWORD", orthanc.password)

    def pacs_batch(model: str, job: Path) -> tuple[dict, Path]:
        status = cli_main(["pacs-batch", "--pacs", orthanc.dicomweb_url, "--bundle", str(root), "--model", model,
                           "--device", "cpu", *SHAPE_OPTIONS, "--ledger", str(job / "jobs.sqlite"), "--report",
                           str(job / "report"), "--store", "pacs,folder", "--output", str(job / "segs")])
        assert status == 0
        (seg,) = (job / "segs").rglob("seg.dcm")
        return json.loads((job / "report" / "series.json").read_text())["run"], seg

    run, pacs_seg = pacs_batch("int8", tmp_path / "job_int8")
    assert run["weights_sha256"] == file_sha256(expected)
    if not vnni:
        assert pacs_batch("auto", tmp_path / "job_auto")[0]["weights_sha256"] == file_sha256(expected)

    assert cli_main(["infer", "--bundle", str(root), "--model", "int8", "--device", "cpu", *SHAPE_OPTIONS, "--input",
                     str(study), "--output", str(tmp_path / "folder")]) == 0
    summary = json.loads((tmp_path / "folder" / "run_summary.json").read_text())
    assert Path(summary["run"]["weights"]) == expected.resolve()
    (folder_seg,) = (tmp_path / "folder").glob("*_seg.dcm")
    stored, written = pydicom.dcmread(pacs_seg), pydicom.dcmread(folder_seg)
    assert (stored.SeriesInstanceUID, stored.SOPInstanceUID) == (written.SeriesInstanceUID, written.SOPInstanceUID)
    assert stored.pixel_array.any()
    np.testing.assert_array_equal(stored.pixel_array, written.pixel_array)

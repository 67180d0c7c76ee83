"""MONAI Label serving the five bundles: a real server (``monailabel_app``) in the separate MONAI Label
environment, started as a subprocess on 127.0.0.1, and MONAI Label's own client (``monailabel.client``, run in
that environment through ``python -m monailabel_app.client``, which prints JSON).

The environment is built by ``scripts/setup_monailabel.sh`` (``.ci/run`` runs it before pytest). The weights are
those of conftest's ``trained_bundles`` (tiny widths, one epoch) and, for the brain bundle, its shipped demo
weights; the labels MONAI Label returns are compared with this project's own inference of the same image with
the same weights (``monai.bundle`` workflows of ``inference.json``).
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import requests
import torch
from monai.bundle import ConfigParser
from PIL import Image

from conftest import BUNDLES, BUNDLES_DIR, ML_PYTHON, TINY_OVERRIDES, add_volume, run_in_process
from monailabel_server import (  # noqa: E402
    BRAIN,
    BRAIN_DEMO_OVERRIDES,
    BRAIN_DEMO_WEIGHTS,
    CHEST,
    SEG_STORAGE,
    MonaiLabelServer,
    ml_env,
    sha256,
)

pytestmark = pytest.mark.monailabel


def project_inference(bundle: str, bundle_root: Path, configs: list[str], image: Path, output: Path,
                      overrides: dict) -> Path:
    """This project's own inference (``inference.json``) of one image; the mask it writes."""
    data = output / "input"
    data.mkdir(parents=True)
    shutil.copy(image, data)
    run_in_process(bundle, configs, {"bundle_root": str(bundle_root), "dataset_dir": str(data),
                                     "output_dir": str(output / "masks"), "device": "$torch.device('cpu')",
                                     **overrides}, workflow_type="infer")
    return next((output / "masks").glob(f"{image.name.split('.')[0]}_seg.*"))


def read_label(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Label values and affine (``None`` for a 2D image file) of a NIfTI or PNG label/mask."""
    if path.name.endswith((".nii", ".nii.gz")):
        image = nib.load(path)
        return np.asarray(image.dataobj), image.affine
    return np.asarray(Image.open(path)), None


def image_shape(path: Path) -> tuple[int, ...]:
    if path.name.endswith((".nii", ".nii.gz")):
        return nib.load(path).shape[:3]
    return np.asarray(Image.open(path)).shape[:2]


def balanced_weights(bundle: str, trained: Path, image: Path, bundle_root: Path) -> tuple[Path, np.ndarray]:
    """``trained`` weights with the class-1 bias of the output layer shifted by the median logit difference on
    ``image``, so that about half of it is class 1: one-epoch tiny weights often give one class everywhere, which
    would make the comparison of two labels one of two constant images. Written to
    ``bundle_root/models/model.pt``; returned with the pixels (in the PNG label's (rows, columns) order) whose
    logits then tie within float32 rounding, where the server (numpy 1, one thread) may decide either way."""
    parser = ConfigParser()
    parser.read_config(BUNDLES_DIR / bundle / "configs" / "inference.json")
    for key, value in TINY_OVERRIDES[bundle].items():
        parser[key] = value
    network = parser.get_parsed_content("network_def").eval()
    checkpoint = torch.load(trained, map_location="cpu")
    state = checkpoint.get("model", checkpoint)
    data = parser.get_parsed_content("preprocessing")({"image": str(image)})
    inferer = parser.get_parsed_content("inferer")

    def logit_difference() -> torch.Tensor:
        network.load_state_dict(state)
        with torch.no_grad():
            logits = inferer(data["image"][None], network)[0]
        return (logits[1] - logits[0]).as_tensor()

    bias = next(k for k in reversed(list(state)) if k.endswith("bias") and tuple(state[k].shape) == (2,))
    state[bias][1] -= torch.median(logit_difference())
    difference = logit_difference()
    assert 0.3 < float((difference > 0).float().mean()) < 0.7, f"{bundle}: {bias} is not the output layer's bias"
    ties = (difference.abs() <= 1e-4 * difference.abs().max() + 1e-6).numpy().T
    target = bundle_root / "models" / "model.pt"
    target.parent.mkdir(parents=True)
    torch.save(checkpoint, target)
    return target, ties


@pytest.fixture(scope="module")
def served(trained_bundles, tmp_path_factory):
    """One server on a studies folder of 2D demo images (LGG TIFF, ISIC JPEG, chest X-ray PNG) and two NIfTI
    volumes, serving all five bundles with the trained weights (the brain bundle: its demo weights)."""
    root = tmp_path_factory.mktemp("monailabel")
    studies = root / "studies"
    studies.mkdir()
    cases = {}
    for bundle in (CHEST, "isic2018_skin_sc_unext", "lgg_mri_cbam_unet"):
        first = sorted(p for p in trained_bundles.bundles[bundle].task.infer_dir.iterdir() if "volume" not in p.name)
        cases[bundle] = shutil.copy(first[0], studies)
    cases["lgg_mri_attention_res_unet"] = cases["lgg_mri_cbam_unet"]
    cases[f"{CHEST}/volume"] = shutil.copy(trained_bundles.bundles[CHEST].task.infer_dir / "volume.nii.gz",
                                           studies / "chest_volume.nii.gz")
    brain_volume = root / "brain_volume"
    brain_volume.mkdir()
    cases[BRAIN] = shutil.copy(add_volume(brain_volume, channels=1, shape=(80, 72, 6)), studies / "mr_volume.nii.gz")
    roots = {b: root / "weights" / b for b in BUNDLES if b != BRAIN}
    weights, ties = {BRAIN: BRAIN_DEMO_WEIGHTS}, {}
    for bundle, bundle_root in roots.items():
        trained = trained_bundles.bundles[bundle].root / "models" / "model.pt"
        weights[bundle], ties[bundle] = balanced_weights(bundle, trained, cases[bundle], bundle_root)
    overrides = {**TINY_OVERRIDES, BRAIN: BRAIN_DEMO_OVERRIDES}
    with MonaiLabelServer(root, str(studies), weights, overrides) as server:
        server.cases = {k: Path(v) for k, v in cases.items()}
        server.bundle_roots = roots
        server.ties = ties
        yield server


def test_info_lists_the_five_models_with_labels_and_dimension_2(served):
    info = served.client("info")
    expected = {}
    for bundle in BUNDLES:
        metadata = json.loads((BUNDLES_DIR / bundle / "configs" / "metadata.json").read_text())
        channels = metadata["network_data_format"]["outputs"]["pred"]["channel_def"]
        expected[bundle] = {name.lower(): int(k) for k, name in channels.items() if name.lower() != "background"}
    assert {name: model["labels"] for name, model in info["models"].items()} == expected
    assert {model["dimension"] for model in info["models"].values()} == {2}
    assert {model["type"] for model in info["models"].values()} == {"segmentation"}
    assert sorted(info["trainers"]) == sorted(BUNDLES)


@pytest.mark.parametrize(
    "case",
    [CHEST, "isic2018_skin_sc_unext", "lgg_mri_cbam_unet", "lgg_mri_attention_res_unet", f"{CHEST}/volume", BRAIN],
)
def test_infer_returns_the_projects_label_with_the_inputs_geometry(served, case, tmp_path):
    bundle = case.split("/")[0]
    image = served.cases[case]
    is_volume = image.name.endswith(".nii.gz")
    image_id = image.name.split(".")[0]
    returned = tmp_path / f"returned{'.nii.gz' if is_volume else '.png'}"
    answer = served.client("infer", bundle, image_id, "--output", str(returned))
    assert answer["params"]["label_names"] == served.client("info")["models"][bundle]["labels"]

    if bundle == BRAIN:
        ours = project_inference(BRAIN, BUNDLES_DIR / BRAIN, ["inference.json", "demo.json"], image, tmp_path,
                                 {})
    else:
        ours = project_inference(bundle, served.bundle_roots[bundle], ["inference.json"], image, tmp_path,
                                 TINY_OVERRIDES[bundle])
    label, affine = read_label(returned)
    mask, mask_affine = read_label(ours)
    print(f"{case}: label values and counts", *np.unique(label, return_counts=True))
    assert label.shape == image_shape(image)
    if is_volume:
        np.testing.assert_allclose(affine, nib.load(image).affine, atol=1e-4)
        np.testing.assert_allclose(affine, mask_affine, atol=1e-4)
        np.testing.assert_array_equal(label, mask)
    else:
        # the project's PNG masks store label 1 as 255; pixels whose logits tie may go either way
        ties = served.ties[bundle]
        assert ties.mean() < 0.05
        np.testing.assert_array_equal(np.where(ties, 0, label), np.where(ties, 0, mask // 255))
    if case != f"{CHEST}/volume":
        # both classes (demo weights; balanced_weights for the others): not a comparison of two constant images
        assert 0 < label.mean() < 1


def test_train_from_labels_writes_model_pt_and_the_next_inference_uses_it(trained_bundles, demo_data, tmp_path):
    """Labels saved through MONAI Label's client, one epoch of ``/train``, then ``/infer`` with the new weights."""
    task = demo_data["brain_tumor"]
    studies = tmp_path / "studies"
    studies.mkdir()
    images = sorted((task.root / "images").glob("*.png"))[:6]
    for image in images:
        shutil.copy(image, studies)
    weights = {BRAIN: BRAIN_DEMO_WEIGHTS}
    with MonaiLabelServer(tmp_path, str(studies), weights, {BRAIN: BRAIN_DEMO_OVERRIDES}, models=[BRAIN]) as server:
        for image in images:
            server.client("save-label", image.stem, str(task.root / "masks" / image.name))
        assert len(list((studies / "labels" / "final").glob("*.png"))) == len(images)
        before_label = tmp_path / "before.png"
        server.client("infer", BRAIN, images[0].stem, "--output", str(before_label))
        before = sha256(server.model_file(BRAIN))
        trained = server.client("train", BRAIN, "--max-epochs", "1", "--val-split", "0.5", timeout=600)
        assert trained["status"]["status"] == "DONE", server.log_tail()
        after = sha256(server.model_file(BRAIN))
        assert after != before
        after_label = tmp_path / "after.png"
        server.client("infer", BRAIN, images[0].stem, "--output", str(after_label))
        ours = project_inference(BRAIN, server.model_file(BRAIN).parents[1], ["inference.json"], images[0],
                                 tmp_path / "ours", BRAIN_DEMO_OVERRIDES)
    new, old = read_label(after_label)[0], read_label(before_label)[0]
    assert not np.array_equal(new, old)
    np.testing.assert_array_equal(new, read_label(ours)[0] // 255)


def test_dicomweb_datastore_on_orthanc_lists_infers_and_stores_a_dicom_seg(orthanc, tmp_path, dciodvfy_errors):
    """Orthanc (authentication on) as MONAI Label's DICOMweb datastore: the series is listed and segmented, and a
    corrected label saved as final arrives in Orthanc as a DICOM SEG referencing the series."""
    series = sorted((BUNDLES_DIR / BRAIN / "sample_data" / "mr_series").glob("*.dcm"))
    orthanc.upload(series)
    source = pydicom.dcmread(series[0], stop_before_pixels=True)
    credentials = {"MONAI_LABEL_DICOMWEB_USERNAME": orthanc.username,
                   "MONAI_LABEL_DICOMWEB_PASSWORD": orthanc.password}
    server = MonaiLabelServer(tmp_path, orthanc.dicomweb_url, {BRAIN: BRAIN_DEMO_WEIGHTS},
                              {BRAIN: BRAIN_DEMO_OVERRIDES}, models=[BRAIN], env=credentials,
                              extra_args=["--dicomweb-modality", "MR"])
    with server:
        assert server.client("info")["datastore"]["total"] == 1
        assert server.client("next-sample")["id"] == source.SeriesInstanceUID
        returned = tmp_path / "returned.nii.gz"
        server.client("infer", BRAIN, source.SeriesInstanceUID, "--output", str(returned))
        label = nib.load(returned)
        assert sorted(label.shape) == sorted((int(source.Rows), int(source.Columns), len(series)))
        # a radiologist's correction: the returned label plus a block of tumour
        corrected = np.asarray(label.dataobj).copy()
        corrected[10:20, 10:20, 5:9] = 1
        corrected_file = tmp_path / "corrected.nii.gz"
        nib.save(nib.Nifti1Image(corrected.astype(np.uint8), label.affine), corrected_file)
        series_before = orthanc.series_count()
        server.client("save-label", source.SeriesInstanceUID, str(corrected_file), "--tag", "final", "--label",
                      "tumor", "--model", BRAIN)
    assert orthanc.series_count() == series_before + 1
    segs = [s for s in orthanc.rest_get("/series?expand") if s["MainDicomTags"].get("Modality") == "SEG"]
    assert len(segs) == 1
    instance = segs[0]["Instances"][0]
    response = requests.get(f"{orthanc.url}/instances/{instance}/file", auth=orthanc.auth, timeout=30)
    response.raise_for_status()
    seg_file = tmp_path / "seg.dcm"
    seg_file.write_bytes(response.content)
    seg = pydicom.dcmread(seg_file)
    assert seg.SOPClassUID == SEG_STORAGE
    assert seg.StudyInstanceUID == source.StudyInstanceUID
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == source.SeriesInstanceUID
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["tumor"]
    # the SEG's frames hold exactly the corrected label's voxels (BINARY: one bit per pixel)
    assert seg.SegmentationType == "BINARY"
    assert int(seg.pixel_array.sum()) == int((corrected > 0).sum())
    assert dciodvfy_errors(seg_file) == []


def test_serves_with_only_the_loopback_interface(tmp_path):
    """In a network namespace with only ``lo`` (no route anywhere else) the server starts and segments: nothing at
    start-up or inference needs an outbound connection (no model zoo, no dcmqi download)."""
    studies = tmp_path / "studies"
    studies.mkdir()
    image = shutil.copy(add_volume(tmp_path, channels=1, shape=(64, 64, 3)), studies / "offline.nii.gz")
    server = MonaiLabelServer(tmp_path, str(studies), {BRAIN: BRAIN_DEMO_WEIGHTS}, {BRAIN: BRAIN_DEMO_OVERRIDES},
                              models=[BRAIN])
    returned = tmp_path / "returned.nii.gz"
    python = shlex.quote(str(ML_PYTHON))
    script = f"""
set -e
ip link set lo up
ip -o link show | grep -v ': lo:' && exit 3
python3 -c 'import socket; socket.create_connection(("1.1.1.1", 443), timeout=2)' 2>/dev/null && exit 4
{python} {shlex.join(server.args)} > {shlex.quote(str(server.log))} 2>&1 &
server=$!
trap 'kill $server; wait $server || true' EXIT
for i in $(seq 300); do
    {python} -c 'import urllib.request; urllib.request.urlopen("{server.url}/info/")' 2>/dev/null && break
    sleep 0.3
done
{python} -m monailabel_app.client --url {server.url} info
{python} -m monailabel_app.client --url {server.url} infer {BRAIN} offline --output {shlex.quote(str(returned))}
"""
    done = subprocess.run(["unshare", "--net", "bash", "-c", script], capture_output=True, text=True, timeout=300,
                          env=server.env, cwd=tmp_path)
    assert done.returncode == 0, f"exit {done.returncode}: {done.stdout[-2000:]}{done.stderr[-2000:]}\n" \
        f"{server.log_tail()}"
    info, answer = (json.loads(line) for line in done.stdout.strip().splitlines()[-2:])
    assert list(info["models"]) == [BRAIN]
    assert answer["label"] == str(returned)
    label = nib.load(returned)
    assert label.shape == nib.load(image).shape
    np.testing.assert_allclose(label.affine, nib.load(image).affine, atol=1e-4)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--weights", "lgg_mri_cbam_unet"], "--weights lgg_mri_cbam_unet: expected BUNDLE=FILE"),
        (["--weights", "lgg_mri_cbam_unet=/nonexistent/model.pt"], "no such file /nonexistent/model.pt"),
        (["--models", "no_such_bundle"], "models: no bundle ['no_such_bundle']"),
        (["--models", BRAIN, "--weights", f"{CHEST}={BRAIN_DEMO_WEIGHTS}"], f"--weights: ['{CHEST}'] not among"),
        (["--overrides", "/nonexistent.json"], "overrides /nonexistent.json:"),
    ],
)
def test_launcher_rejects_bad_options_in_one_line(args, message, tmp_path):
    done = subprocess.run([str(ML_PYTHON), "-m", "monailabel_app.launch", "--studies", str(tmp_path),
                           "--work", str(tmp_path / "work"), *args], capture_output=True, text=True, timeout=60,
                          env=ml_env(tmp_path), cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and message in done.stderr, done.stderr
    assert not (tmp_path / "work").exists()

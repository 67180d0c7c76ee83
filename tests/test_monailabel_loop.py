"""The MONAI Label loop as a radiologist's tools drive it, on one real server (``monailabel_app``) over plain HTTP
(as 3D Slicer's module and OHIF call it) and with MONAI Label's own client: what bad requests answer, what an
answer says about the weights that ran, active learning, and retraining from a correction saved on a 3D volume.

The studies folder holds a real MR volume (the brain bundle's sample), a blank volume and a noise volume of the same
grid, three files no bundle can read (truncated, NaN, 4D) and one DICOM file. The brain bundle runs its demo
weights; the chest X-ray bundle is served without weights. The tests run in file order on the one server: the
labels are saved last.
"""

from __future__ import annotations

import shutil

import nibabel as nib
import numpy as np
import pytest
import requests

from conftest import BUNDLES_DIR
from monailabel_server import BRAIN, BRAIN_DEMO_OVERRIDES, BRAIN_DEMO_WEIGHTS, CHEST, MonaiLabelServer, sha256

pytestmark = pytest.mark.monailabel

SAMPLE_MR = BUNDLES_DIR / BRAIN / "sample_data" / "mr_volume.nii.gz"
UNREADABLE = {"corrupt": "truncated or corrupt NIfTI file", "nan": "1 NaN or infinite voxel values"}


def write_studies(studies) -> None:
    """The studies folder of the module docstring."""
    studies.mkdir()
    mr = nib.load(SAMPLE_MR)
    shutil.copy(SAMPLE_MR, studies / "mr.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros(mr.shape, np.float32), mr.affine), studies / "a_blank.nii.gz")
    noise = np.random.default_rng(0).uniform(0, 255, mr.shape).astype(np.float32)
    nib.save(nib.Nifti1Image(noise, mr.affine), studies / "z_noise.nii.gz")
    with_nan = mr.get_fdata().astype(np.float32)
    with_nan[3, 3, 3] = np.nan
    nib.save(nib.Nifti1Image(with_nan, mr.affine), studies / "nan.nii.gz")
    nib.save(nib.Nifti1Image(np.ones((16, 16, 4, 2), np.float32), np.eye(4)), studies / "fourd.nii.gz")
    data = SAMPLE_MR.read_bytes()
    (studies / "corrupt.nii.gz").write_bytes(data[: len(data) // 3])
    shutil.copy(next((BUNDLES_DIR / BRAIN / "sample_data" / "mr_series").glob("*.dcm")), studies / "slice.dcm")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("monailabel_loop")
    write_studies(root / "studies")
    with MonaiLabelServer(root, str(root / "studies"), {BRAIN: BRAIN_DEMO_WEIGHTS}, {BRAIN: BRAIN_DEMO_OVERRIDES},
                          models=[BRAIN, CHEST]) as server:
        yield server


def post_infer(server, model: str, image: str) -> requests.Response:
    return requests.post(f"{server.url}/infer/{model}", params={"image": image, "output": "json"}, timeout=300)


def answers_info(server) -> bool:
    return requests.get(f"{server.url}/info/", timeout=30).ok


def test_info_lists_every_bundle_and_how_to_get_missing_weights(server):
    info = server.client("info")
    assert list(info["models"]) == [BRAIN]
    assert info["bundles"][BRAIN] == {"weights": True}
    assert info["bundles"][CHEST]["weights"] is False
    assert f"--weights {CHEST}=FILE" in info["bundles"][CHEST]["how_to_get_weights"]
    assert sorted(info["strategies"]) == ["first", "flip_disagreement", "random"]


def test_start_up_names_each_unreadable_study_once_and_leaves_it_out(server):
    log = server.log_tail(200_000)
    for name, reason in UNREADABLE.items():
        lines = [line for line in log.splitlines() if f"studies: {name}.nii.gz left out of the datastore" in line]
        assert len(lines) == 1 and reason in lines[0], lines
    assert "holds DICOM files (1) besides 4 images" in log and "--studies http://127.0.0.1:8042/dicom-web" in log
    listed = requests.get(f"{server.url}/datastore/", params={"output": "all"}, timeout=30).json()["objects"]
    assert sorted(listed) == ["a_blank", "fourd", "mr", "z_noise"]


@pytest.mark.parametrize(
    ("model", "image", "status", "reason"),
    [
        (BRAIN, "no_such_image", 404, "image no_such_image: no such image in the studies folder"),
        (BRAIN, "corrupt", 422, "corrupt.nii.gz: truncated or corrupt NIfTI file (EOFError"),
        (BRAIN, "nan", 422, "nan.nii.gz: 1 NaN or infinite voxel values"),
        (BRAIN, "fourd", 422, "fourd.nii.gz: 4D NIfTI (shape (16, 16, 4, 2)): give one 2D or 3D image per file"),
        ("brain_tumour_mri_gsconv_eca_unet", "mr", 404,
         f"model brain_tumour_mri_gsconv_eca_unet: no such model; did you mean {BRAIN}?"),
        (CHEST, "mr", 409, f"model {CHEST}: no weights yet"),
    ],
    ids=["unknown-image", "corrupt-nifti", "nan-volume", "4d-nifti", "model-typo", "no-weights"],
)
def test_a_bad_infer_request_gets_its_one_line_reason_and_the_server_stays_up(server, model, image, status, reason):
    response = post_infer(server, model, image)
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert reason in detail and "\n" not in detail
    assert answers_info(server)


def test_infer_says_which_weights_ran(server):
    response = post_infer(server, BRAIN, "mr")
    assert response.ok, response.text
    answer = response.json()
    assert answer["model_file"] == str(server.model_file(BRAIN))
    assert answer["weights_sha256"] == sha256(server.model_file(BRAIN)) == sha256(BRAIN_DEMO_WEIGHTS)
    assert answer["demo_weights"] is True


def test_active_learning_first_random_and_the_image_the_model_is_least_sure_of(server):
    """``first`` takes the first name; ``flip_disagreement`` the noise volume, whose segmentation changes most when
    mirrored (measured with the demo weights: about 0.04 of the probability mass, against 0.004 for the MR volume
    and 0.0007 for the blank one); the unreadable files are never offered."""
    assert server.client("next-sample", "--strategy", "first")["id"] == "a_blank"
    readable = {"a_blank", "mr", "z_noise", "fourd"}
    assert {server.client("next-sample", "--strategy", "random")["id"] for _ in range(3)} <= readable
    chosen = requests.post(f"{server.url}/activelearning/flip_disagreement", json={"model": BRAIN}, timeout=300)
    assert chosen.ok, chosen.text
    assert chosen.json()["id"] == "z_noise"
    assert chosen.json()["disagreement"] > 0


def test_a_run_without_usable_labels_fails_with_its_reason_in_the_status(server):
    trained = server.client("train", BRAIN, "--max-epochs", "1", timeout=600)
    assert trained["status"]["status"] == "ERROR"
    assert f"training {BRAIN} failed: no usable labels among 0 in the datastore" in trained["status"]["details"][-1]
    assert answers_info(server)


def test_a_3d_correction_retrains_the_model_and_a_malformed_label_is_named(server, tmp_path):
    """A corrected 3D label saved with MONAI Label's client and a label of the wrong shape saved over plain HTTP;
    one epoch of ``/train``; the run leaves the bad label out by name, and the next answer names the new weights."""
    mr = nib.load(SAMPLE_MR)
    corrected = np.zeros(mr.shape, np.uint8)
    corrected[40:70, 50:80, 8:14] = 1
    corrected_file = tmp_path / "corrected.nii.gz"
    nib.save(nib.Nifti1Image(corrected, mr.affine), corrected_file)
    server.client("save-label", "mr", str(corrected_file), "--label", "tumor", "--model", BRAIN)
    malformed = tmp_path / "malformed.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((64, 64, 10), np.uint8), mr.affine), malformed)
    with open(malformed, "rb") as label:
        saved = requests.put(f"{server.url}/datastore/label", params={"image": "a_blank", "tag": "final"},
                             files={"label": label}, data={"params": "{}"}, timeout=60)
    assert saved.ok, saved.text
    before = sha256(server.model_file(BRAIN))

    trained = server.client("train", BRAIN, "--max-epochs", "1", "--val-split", "0.5", timeout=600)
    status = trained["status"]
    assert status["status"] == "DONE", "\n".join(status.get("details", [])) + server.log_tail()
    assert "a_blank.nii.gz: label shape (64, 64, 10) differs from its image's (128, 128, 24)" in status["details"][-1]
    assert "mr.nii.gz" not in status["details"][-1]
    after = sha256(server.model_file(BRAIN))
    assert after != before

    answer = post_infer(server, BRAIN, "mr").json()
    assert answer["weights_sha256"] == after
    assert answer["demo_weights"] is False

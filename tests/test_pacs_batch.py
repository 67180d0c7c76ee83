"""The PACS batch job end to end against a real Orthanc (DICOMweb and DIMSE), with the brain bundle's demo weights.

Round trip (SEG in the PACS references its source and equals, voxel for voxel, the mask a folder run writes), a
re-run that adds nothing, ``kill -9`` then the same command, the PACS stopped mid-batch then ``--retry-failed``,
bad series among good ones, a wrong password, compressed copies, watch mode.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
import requests
from pydicom.sr.codedict import codes
from pydicom.uid import JPEG2000Lossless, JPEGLosslessSV1, RLELossless

from custom_networks.cli import main
from custom_networks.clinical.dicom_series import discover_series, sort_series
from custom_networks.clinical.secondary_capture import deterministic_sc_uids
from custom_networks.clinical.seg_writer import deterministic_seg_uids
from custom_networks.clinical.sr_writer import deterministic_sr_uids
from custom_networks.data.sample_study import make_sample_study
from custom_networks.runtime import prepare_bundle

from clinical_fixtures import Study, write_rt_plan, write_series, write_undecodable_slice
from conftest import CLIENT_AET, subprocess_env
from orthanc_server import OrthancServer, free_port

BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "brain_tumor_mri_gsconv_eca_unet"
PATIENT_NAME = "Doe^Jane^Secret"
PATIENT_ID = "PID-77125"
SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"

pytestmark = pytest.mark.orthanc


def study(seed: str) -> Study:
    return Study.seeded(seed, patient_id=PATIENT_ID, patient_name=PATIENT_NAME)


def mr_series(folder: Path, seed: int, of_study: Study, description: str = "T1 axial", slices: int = 12,
              **kwargs) -> list[Path]:
    """A small sample-like MR head series with a lesion (96 x 96 x ``slices``), files in ``folder``."""
    image = make_sample_study(shape=(96, 96, slices), seed=seed).image
    written = write_series(folder, image, spacing=(0.9, 0.9, 5.0), study=of_study, description=description,
                           uid_seed=f"pacs test {folder.name} {seed}", **kwargs)
    return written.files


def series_uid(files: list[Path]) -> str:
    return str(pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID)


def batch_args(server: OrthancServer, root: Path, *extra: str) -> list[str]:
    return ["pacs-batch", "--pacs", server.dicomweb_url, "--bundle", str(BUNDLE), "--demo", "--device", "cpu",
            "--ledger", str(root / "jobs.sqlite"), "--report", str(root / "report"), "--backoff", "0.2", *extra]


@pytest.fixture
def credentials(monkeypatch):
    """Put a server's credentials in the environment, as a job's operator does."""

    def put(server: OrthancServer) -> None:
        monkeypatch.setenv("PACS_USERNAME", server.username)
        monkeypatch.setenv("PACS_PASSWORD", server.password)

    return put


def seg_instances(server: OrthancServer, source_series_uid: str) -> list[str]:
    """Orthanc ids of the SEG instances that reference ``source_series_uid``."""
    found = []
    for series_id in server.rest_get("/series"):
        series = server.rest_get(f"/series/{series_id}")
        if series["MainDicomTags"].get("Modality") != "SEG":
            continue
        for instance in series["Instances"]:
            tags = server.rest_get(f"/instances/{instance}/simplified-tags")
            referenced = tags.get("ReferencedSeriesSequence", [{}])[0].get("SeriesInstanceUID")
            if referenced == source_series_uid:
                found.append(instance)
    return found


def download(server: OrthancServer, instance: str, path: Path) -> Path:
    response = requests.get(f"{server.url}/instances/{instance}/file", auth=server.auth, timeout=30)
    response.raise_for_status()
    path.write_bytes(response.content)
    return path


def seg_label_volume(seg_path: Path, source_folder: Path) -> np.ndarray:
    """The SEG's segment 1 as a ``[column, row, slice]`` boolean volume on the source series' grid."""
    seg = hd.seg.segread(seg_path)
    ordered = sort_series(discover_series(source_folder)[0])
    uids = [str(header.SOPInstanceUID) for header in ordered.headers]
    pixels = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids, segment_numbers=[1],
                                               assert_missing_frames_are_empty=True)
    return np.transpose(pixels[..., 0], (2, 1, 0)) != 0


def folder_mask(source_folder: Path, output: Path) -> np.ndarray:
    """The mask ``attention-unets infer`` writes for the series folder (the bundle's folder run)."""
    assert main(["infer", "--bundle", str(BUNDLE), "--demo", "--device", "cpu", "--input", str(source_folder),
                 "--output", str(output)]) == 0
    return np.asarray(nib.load(output / f"{source_folder.name}_seg.nii.gz").dataobj) != 0


def ledger_states(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as db:
            return dict(db.execute("SELECT series_uid, state FROM series"))
    except sqlite3.OperationalError:  # the job is still creating the ledger
        return {}


def report(root: Path) -> dict[str, dict]:
    return {row["series_uid"]: row for row in json.loads((root / "report" / "series.json").read_text())["series"]}


def leftovers(*folders: Path) -> list[Path]:
    """Temporary files a run must not leave: half-written outputs and scratch folders."""
    found = []
    for folder in folders:
        if folder.exists():
            found += [p for p in folder.rglob("*") if p.name.startswith(".partial-") or p.name == "tmp"]
            found += [p for p in folder.rglob(".bundle-output-*")]
    return found


@pytest.fixture(scope="module")
def pacs(tmp_path_factory):
    """A module's Orthanc with two good studies: study A holds "T1 axial" (12 slices) and "T2 axial" (8, the
    bundle's rules choose the larger series), study B a "T1 axial" of another head."""
    root = tmp_path_factory.mktemp("pacs")
    client_port = free_port()
    server = OrthancServer(root / "orthanc", modalities={CLIENT_AET: (CLIENT_AET, "127.0.0.1", client_port)})
    server.client_port = client_port
    a, b = study("study A"), study("study B")
    server.series = {
        "a_t1": mr_series(root / "a_t1", 0, a),
        "a_t2": mr_series(root / "a_t2", 5, a, description="T2 axial", slices=8),
        "b_t1": mr_series(root / "b_t1", 1, b),
    }
    server.studies = {"a": a, "b": b}
    with server:
        for files in server.series.values():
            server.upload(files)
        yield server


def test_round_trip_then_rerun_adds_nothing(pacs, tmp_path, credentials, capfd, dciodvfy_errors):
    credentials(pacs)
    study_uids = ",".join(s.study_instance_uid for s in pacs.studies.values())
    args = batch_args(pacs, tmp_path, "--modality", "MR", "--study-uid", study_uids, "--study-date",
                      "20240101-20241231", "--store", "pacs,folder", "--output", str(tmp_path / "segs"), "--nifti",
                      "--secondary-capture", "--viewer-url", "http://127.0.0.1:3000/viewer")
    assert main(args) == 0
    info = prepare_bundle(BUNDLE, demo=True, device="cpu")
    chosen = {name: series_uid(pacs.series[name]) for name in ("a_t1", "b_t1")}
    rows = report(tmp_path)
    assert rows[series_uid(pacs.series["a_t2"])]["outcome"] == "skipped"
    for name, uid in chosen.items():
        row = rows[uid]
        assert (row["state"], row["outcome"], row["attempts"]) == ("verified", "done", 1), row
        expected = deterministic_seg_uids(uid, info.name, info.version, info.weights_sha256, 1)
        assert (row["seg_series_uid"], row["seg_sop_uid"]) == (expected.series_uid, expected.sop_uid)
        assert set(row["seconds"]) >= {"retrieve", "decode", "network", "seg_encoding", "store", "verify"}
        assert row["segments"][0]["label"] == "tumor" and row["segments"][0]["volume_ml"] > 0
        assert (tmp_path / "report" / row["thumbnail"]).is_file()
        # the SEG in the PACS references its source series and equals the folder run's mask voxel for voxel
        [instance] = seg_instances(pacs, uid)
        seg_path = download(pacs, instance, tmp_path / f"{name}.dcm")
        seg = pydicom.dcmread(seg_path)
        assert seg.SOPClassUID == SEG_STORAGE and seg.SOPInstanceUID == expected.sop_uid
        assert seg.StudyInstanceUID == row["study_uid"]
        assert dciodvfy_errors(seg_path) == []
        source_folder = pacs.series[name][0].parent
        from_pacs = seg_label_volume(seg_path, source_folder)
        reference = folder_mask(source_folder, tmp_path / f"folder_{name}")
        assert from_pacs.any() and np.array_equal(from_pacs, reference)
        # the folder store holds the same SEG, SR and Secondary Capture and the NIfTI mask
        kept = tmp_path / "segs" / row["study_uid"] / uid
        assert pydicom.dcmread(kept / "seg.dcm").SOPInstanceUID == expected.sop_uid
        assert np.array_equal(np.asarray(nib.load(kept / "mask.nii.gz").dataobj) != 0, reference)
        # the SR in the PACS: the report's volume (the run summary's), referencing this SEG and the source series
        sr_uids = deterministic_sr_uids(uid, info.name, info.version, info.weights_sha256)
        sr_path = download(pacs, pacs.lookup(sr_uids.sop_uid), tmp_path / f"{name}_sr.dcm")
        sr = hd.sr.srread(sr_path)
        assert sr.SeriesInstanceUID == sr_uids.series_uid and sr.StudyInstanceUID == row["study_uid"]
        (group,) = sr.content.get_volumetric_roi_measurement_groups()
        assert group.referenced_segment.referenced_sop_instance_uid == expected.sop_uid
        assert group.referenced_segment.source_series_for_segmentation.value == uid
        (volume,) = group.get_measurements(name=codes.SCT.Volume)
        assert volume.value == pytest.approx(row["segments"][0]["volume_ml"], abs=0.01)
        assert pydicom.dcmread(kept / "sr.dcm").SOPInstanceUID == sr_uids.sop_uid
        assert dciodvfy_errors(sr_path) == []
        sc_uids = deterministic_sc_uids(uid, info.name, info.version, info.weights_sha256)
        sc_path = download(pacs, pacs.lookup(sc_uids.sop_uid), tmp_path / f"{name}_sc.dcm")
        sc = pydicom.dcmread(sc_path)
        assert list(sc.ImageType)[:2] == ["DERIVED", "SECONDARY"] and sc.StudyInstanceUID == row["study_uid"]
        assert dciodvfy_errors(sc_path) == []
        # the HTML report links the series to the viewer
        assert f'href="http://127.0.0.1:3000/viewer?StudyInstanceUIDs={row["study_uid"]}"' in (
            tmp_path / "report" / "index.html").read_text()

    before = pacs.instance_count()
    assert main(args) == 0
    assert pacs.instance_count() == before
    rows = report(tmp_path)
    assert {rows[uid]["outcome"] for uid in chosen.values()} == {"already done"}
    assert leftovers(tmp_path / "jobs.sqlite.work", tmp_path / "segs", tmp_path / "report") == []

    # nothing patient-identifying or secret in what the job writes or logs
    logs = capfd.readouterr()
    for path in [*(tmp_path / "report").rglob("*.*"), tmp_path / "jobs.sqlite"]:
        if path.suffix != ".png":
            text = path.read_bytes()
            for secret in (PATIENT_NAME, PATIENT_ID, "19700101", pacs.password):
                assert secret.encode() not in text, (secret, path)
    for secret in (PATIENT_NAME, PATIENT_ID, pacs.password):
        assert secret not in logs.out + logs.err


def test_dimse_round_trip_matches_the_folder_run(pacs, tmp_path):
    """The same job over DIMSE (C-FIND, C-GET, C-STORE, IMAGE-level C-FIND): one SEG, equal to the folder run."""
    a_t1 = series_uid(pacs.series["a_t1"])
    args = ["pacs-batch", "--pacs", f"{pacs.aet}@127.0.0.1:{pacs.dicom_port}", "--calling-aet", CLIENT_AET,
            "--bundle", str(BUNDLE), "--demo", "--device", "cpu", "--ledger", str(tmp_path / "dimse.sqlite"),
            "--report", str(tmp_path / "report"), "--study-uid", pacs.studies["a"].study_instance_uid,
            "--modality", "MR"]
    assert main(args) == 0
    [instance] = seg_instances(pacs, a_t1)
    seg = download(pacs, instance, tmp_path / "seg.dcm")
    source_folder = pacs.series["a_t1"][0].parent
    assert np.array_equal(seg_label_volume(seg, source_folder), folder_mask(source_folder, tmp_path / "folder"))
    before = pacs.instance_count()
    assert main(args) == 0
    assert pacs.instance_count() == before
    assert report(tmp_path)[a_t1]["outcome"] == "already done"


def truncated_pixel_copy(files: list[Path]) -> list[Path]:
    """Cut the Pixel Data of the middle instance to half its length (a well-formed file, a truncated image)."""
    path = files[len(files) // 2]
    ds = pydicom.dcmread(path)
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 4 * 2]
    ds.save_as(path)
    return files


def test_bad_series_fail_with_one_line_reasons_while_good_ones_finish(pacs, tmp_path, credentials):
    credentials(pacs)
    root = tmp_path
    studies = {name: study(f"bad {name}") for name in ("good", "rt", "truncated", "gap", "tie")}
    good = mr_series(root / "good", 2, studies["good"])
    rt_plan = write_rt_plan(root / "rt" / "plan.dcm", studies["rt"])
    truncated = truncated_pixel_copy(mr_series(root / "truncated", 3, studies["truncated"]))
    gap = mr_series(root / "gap", 4, studies["gap"])
    gap_files = [path for path in gap if path != sorted(gap)[5]]
    tie = [mr_series(root / f"tie{k}", 6 + k, studies["tie"], description=f"T1 axial {k}") for k in (1, 2)]
    undecodable = write_undecodable_slice(root / "codec" / "slice.dcm", JPEGLosslessSV1)
    codec_study = str(pydicom.dcmread(undecodable, stop_before_pixels=True).StudyInstanceUID)
    pacs.upload([*good, rt_plan, *truncated, *gap_files, *tie[0], *tie[1], undecodable])
    study_uids = [s.study_instance_uid for s in studies.values()] + [codec_study]
    assert main(batch_args(pacs, root, "--study-uid", ",".join(study_uids))) == 1

    rows = report(root)
    assert rows[series_uid(good)]["outcome"] == "done"
    expected = {
        series_uid([rt_plan]): "no series matches",
        series_uid(truncated): "unreadable pixel data",
        series_uid(gap): "slice gap or uneven spacing",
        series_uid(tie[0]): "2 series tie for most slices (12)",
        series_uid(tie[1]): "2 series tie for most slices (12)",
        series_uid([undecodable]): "has no decoder installed",
    }
    for uid, words in expected.items():
        row = rows[uid]
        assert row["outcome"] == "failed" and words in row["reason"] and "\n" not in row["reason"], row
    assert "pylibjpeg" in rows[series_uid([undecodable])]["reason"]
    assert ledger_states(root / "jobs.sqlite")[series_uid(truncated)] == "failed"


def test_wrong_password_is_one_line_naming_the_server(pacs, tmp_path, monkeypatch, capfd):
    monkeypatch.setenv("PACS_USERNAME", pacs.username)
    monkeypatch.setenv("PACS_PASSWORD", "not-the-password-9f3")
    assert main(batch_args(pacs, tmp_path)) == 2
    err = capfd.readouterr().err.strip().splitlines()
    assert err[-1] == f"error: {pacs.dicomweb_url}: QIDO-RS series query: credentials refused (HTTP 401)"
    assert not any("not-the-password-9f3" in line for line in err)
    credentials_file = tmp_path / "credentials.json"
    credentials_file.write_text(json.dumps({"username": pacs.username, "password": "wrong-again-71"}))
    monkeypatch.delenv("PACS_PASSWORD")
    assert main(batch_args(pacs, tmp_path, "--credentials", str(credentials_file))) == 2
    assert "wrong-again-71" not in capfd.readouterr().err


def test_compressed_copies_give_the_same_mask(pacs, tmp_path, credentials):
    credentials(pacs)
    plain_study, rle_study, j2k_study = study("plain"), study("rle"), study("j2k")
    plain = mr_series(tmp_path / "plain", 7, plain_study)
    rle = mr_series(tmp_path / "rle", 7, rle_study, transfer_syntax=RLELossless)
    j2k = mr_series(tmp_path / "j2k", 7, j2k_study)
    for path in j2k:
        ds = pydicom.dcmread(path)
        ds.compress(JPEG2000Lossless)
        ds.save_as(path)
    pacs.upload([*plain, *rle, *j2k])
    studies = ",".join(s.study_instance_uid for s in (plain_study, rle_study, j2k_study))
    assert main(batch_args(pacs, tmp_path, "--study-uid", studies)) == 0
    masks = {}
    for name, files in {"plain": plain, "rle": rle, "j2k": j2k}.items():
        [instance] = seg_instances(pacs, series_uid(files))
        masks[name] = seg_label_volume(download(pacs, instance, tmp_path / f"{name}_seg.dcm"), files[0].parent)
    assert masks["plain"].any()
    assert np.array_equal(masks["plain"], masks["rle"]) and np.array_equal(masks["plain"], masks["j2k"])
    stored = {pydicom.dcmread(files[0], stop_before_pixels=True).file_meta.TransferSyntaxUID for files in (rle, j2k)}
    assert stored == {RLELossless, JPEG2000Lossless}


def test_watch_mode_processes_series_as_they_arrive(pacs, tmp_path, credentials):
    credentials(pacs)
    first, later = study("watch 1"), study("watch 2")
    pacs.upload(mr_series(tmp_path / "w1", 8, first))
    later_files = mr_series(tmp_path / "w2", 9, later)
    ledger = tmp_path / "jobs.sqlite"
    failures = []

    def operator() -> None:
        try:
            deadline = time.monotonic() + 120
            while "verified" not in ledger_states(ledger).values():
                assert time.monotonic() < deadline, "first series never verified"
                time.sleep(0.1)
            pacs.upload(later_files)
            while list(ledger_states(ledger).values()).count("verified") < 2:
                assert time.monotonic() < deadline, "the series stored later was never processed"
                time.sleep(0.1)
        except AssertionError as error:
            failures.append(error)
        finally:
            os.kill(os.getpid(), signal.SIGTERM)

    thread = threading.Thread(target=operator, daemon=True)
    thread.start()
    studies = f"{first.study_instance_uid},{later.study_instance_uid}"
    status = main(batch_args(pacs, tmp_path, "--study-uid", studies, "--watch", "--poll-interval", "0.3",
                             "--max-polls", "400"))
    thread.join(10)
    assert not failures, failures
    assert status == 0
    assert {row["outcome"] for row in report(tmp_path).values()} == {"done"}
    assert len(seg_instances(pacs, series_uid(later_files))) == 1


def three_studies(server: OrthancServer, root: Path) -> list[list[Path]]:
    series = [mr_series(root / f"s{k}", 10 + k, study(f"fault {k}")) for k in range(3)]
    for files in series:
        server.upload(files)
    return series


def test_kill_9_then_the_same_command_stores_every_series_once(orthanc, tmp_path, credentials):
    credentials(orthanc)
    series = three_studies(orthanc, tmp_path / "data")
    args = batch_args(orthanc, tmp_path, "--store", "pacs,folder", "--output", str(tmp_path / "segs"))
    rng = np.random.default_rng(20261201)
    # kill when the ledger has shown this many (series, state) changes: anywhere from the first queued series to
    # the last series stored but not yet confirmed
    kill_at = int(rng.integers(1, 3 * 4))
    entry = "import sys; from custom_networks.cli import main; sys.exit(main(sys.argv[1:]))"
    command = [sys.executable, "-c", entry, *args]
    process = subprocess.Popen(command, cwd=tmp_path, env=subprocess_env(), stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    seen: set[tuple[str, str]] = set()
    deadline = time.monotonic() + 180
    while process.poll() is None and len(seen) < kill_at and time.monotonic() < deadline:
        seen |= set(ledger_states(tmp_path / "jobs.sqlite").items())
        time.sleep(0.01)
    process.kill()
    process.wait()
    assert len(seen) >= kill_at, f"the job ended before the kill point: {process.stderr.read().decode()[-2000:]}"

    assert main(args) == 0
    for files in series:
        assert len(seg_instances(orthanc, series_uid(files))) == 1
    assert set(ledger_states(tmp_path / "jobs.sqlite").values()) == {"verified"}
    assert leftovers(tmp_path / "jobs.sqlite.work", tmp_path / "segs", tmp_path / "report") == []
    assert not (tmp_path / "jobs.sqlite.work" / "tmp").exists()


def test_pacs_down_mid_batch_fails_in_flight_series_then_retry_failed_completes(orthanc, tmp_path, credentials):
    credentials(orthanc)
    series = three_studies(orthanc, tmp_path / "data")
    ledger = tmp_path / "jobs.sqlite"

    def stop_after_first_series() -> None:
        deadline = time.monotonic() + 120
        while "verified" not in ledger_states(ledger).values() and time.monotonic() < deadline:
            time.sleep(0.02)
        orthanc.stop()

    stopper = threading.Thread(target=stop_after_first_series, daemon=True)
    stopper.start()
    args = batch_args(orthanc, tmp_path, "--retries", "2", "--timeout", "5")
    assert main(args) == 1
    stopper.join(30)
    rows = report(tmp_path)
    outcomes = [row["outcome"] for row in rows.values()]
    # the first series was confirmed before the stop; whatever was in flight or came after failed
    assert len(rows) == 3 and set(outcomes) == {"done", "failed"}, rows
    for row in rows.values():
        if row["outcome"] == "failed":
            assert "gave up after 2 attempt(s)" in row["reason"] and orthanc.dicomweb_url in row["reason"], row

    orthanc.start()
    assert main(args + ["--retry-failed"]) == 0
    for files in series:
        assert len(seg_instances(orthanc, series_uid(files))) == 1
    retried = report(tmp_path)
    for uid, row in rows.items():
        assert retried[uid]["outcome"] == ("done" if row["outcome"] == "failed" else "already done"), retried[uid]


def test_sigterm_finishes_the_series_in_flight_and_the_next_run_does_the_rest(pacs, tmp_path, credentials):
    credentials(pacs)
    studies = [study(f"sigterm {k}") for k in range(3)]
    series = [mr_series(tmp_path / f"t{k}", 20 + k, s) for k, s in enumerate(studies)]
    for files in series:
        pacs.upload(files)
    ledger = tmp_path / "jobs.sqlite"

    def terminate_after_first_series() -> None:
        deadline = time.monotonic() + 120
        while "verified" not in ledger_states(ledger).values() and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=terminate_after_first_series, daemon=True).start()
    args = batch_args(pacs, tmp_path, "--study-uid", ",".join(s.study_instance_uid for s in studies))
    assert main(args) == 130
    rows = report(tmp_path)
    outcomes = sorted(row["outcome"] for row in rows.values())
    # the signal came during the second series (or at its start): it is finished, the third is not started
    assert outcomes in (["done", "done", "not run"], ["done", "not run", "not run"]), rows
    states = ledger_states(ledger)
    assert sorted(states.values()) in (["queued", "verified", "verified"], ["queued", "queued", "verified"])
    assert main(args) == 0
    assert sorted(row["outcome"] for row in report(tmp_path).values()).count("done") == 3 - outcomes.count("done")
    for files in series:
        assert len(seg_instances(pacs, series_uid(files))) == 1

"""Small parts of the PACS batch job, one function each: retries, credentials, series selection, the ledger and
the plan it gives, deterministic SEG UIDs, PACS specs and the command line's option checks."""

from __future__ import annotations

import json
import sqlite3

import pydicom
import pytest
import torch

from custom_networks.clinical import LoadClinicalImage
from custom_networks.clinical.dicom_series import SeriesRules
from custom_networks.clinical.seg_writer import SaveDicomSegd, deterministic_seg_uids
from custom_networks.errors import InputError
from custom_networks.pacs.client import PacsError, SeriesRef, TransientPacsError
from custom_networks.pacs.connect import open_pacs
from custom_networks.pacs.credentials import Credentials, load_credentials
from custom_networks.pacs.dicomweb import DicomWebClient, public_url
from custom_networks.pacs.engine import plan_batch
from custom_networks.pacs.ledger import JobKey, Ledger
from custom_networks.pacs.processor import START_RETRIEVE, START_STORE, START_VERIFY
from custom_networks.pacs.report import OUTCOME_ALREADY_DONE, OUTCOME_FAILED, OUTCOME_SKIPPED
from custom_networks.pacs.retry import RetryPolicy, with_retries
from custom_networks.pacs.selection import select_per_study

from clinical_fixtures import marker_volume, write_series

KEY = JobKey("bundle", "1.0", "ab" * 32)


def ref(uid: str, study: str = "1.2.3", modality: str = "MR", description: str = "T1", n: int | None = 10) -> SeriesRef:
    return SeriesRef(study, uid, modality, description, 1, n)


def test_retries_back_off_exponentially_then_give_up_naming_the_attempts():
    waits = []
    calls = []

    def failing():
        calls.append(1)
        raise TransientPacsError("pacs: connection refused")

    with pytest.raises(TransientPacsError, match=r"connection refused \(gave up after 4 attempt\(s\)\)"):
        with_retries(failing, RetryPolicy(attempts=4, initial_delay_s=0.5, max_delay_s=1.5), "query", waits.append)
    assert len(calls) == 4 and waits == [0.5, 1.0, 1.5]


def test_retries_stop_at_the_first_success_and_never_retry_permanent_errors():
    answers = iter([TransientPacsError("503"), "ok"])

    def flaky():
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    waits = []
    assert with_retries(flaky, RetryPolicy(attempts=3, initial_delay_s=2.0), "query", waits.append) == "ok"
    assert waits == [2.0]
    calls = []

    def refused():
        calls.append(1)
        raise PacsError("pacs: HTTP 404")

    with pytest.raises(PacsError, match="HTTP 404"):
        with_retries(refused, RetryPolicy(attempts=5), "query", waits.append)
    assert len(calls) == 1


def test_credentials_from_environment_or_file_never_in_repr(tmp_path):
    found = load_credentials(env={"PACS_USERNAME": "batch", "PACS_PASSWORD": "s3cret-pw"})
    assert found.basic_auth == ("batch", "s3cret-pw") and "s3cret-pw" not in repr(found)
    token = load_credentials(env={"PACS_TOKEN": "tok-123"})
    assert token.token == "tok-123" and token.basic_auth is None and "tok-123" not in repr(token)
    path = tmp_path / "pacs.json"
    path.write_text(json.dumps({"username": "u", "password": "file-pw"}))
    assert load_credentials(path, env={}).basic_auth == ("u", "file-pw")
    assert load_credentials(env={}) == Credentials()


@pytest.mark.parametrize(
    "content, words",
    [
        ('{"username": "u", "token": "t"}', "not both"),
        ('{"password": "p"}', "without a username"),
        ('{"user": "u"}', "unknown field"),
        ('{"username": "u", "password": "p-in-broken-json"', "not a JSON object"),
    ],
)
def test_bad_credentials_files_are_one_line_errors_without_the_secret(tmp_path, content, words):
    path = tmp_path / "pacs.json"
    path.write_text(content)
    with pytest.raises(InputError, match=words) as raised:
        load_credentials(path, env={})
    assert "p-in-broken-json" not in str(raised.value) and str(path) in str(raised.value)


def test_selection_applies_the_bundle_rules_per_study():
    rules = SeriesRules(("MR",), None, True)
    big, small = ref("1.1", n=20), ref("1.2", description="T2", n=12)
    plan = ref("1.3", modality="RTPLAN", n=1)
    tied = [ref("2.1", study="2", n=8), ref("2.2", study="2", n=8)]
    only_plan = ref("3.1", study="3", modality="RTPLAN", n=1)
    selection = select_per_study([big, small, plan, *tied, only_plan], rules)
    assert selection.chosen == (big,)
    assert [series for series, _ in selection.skipped] == [small]  # the RT plan beside the chosen one is no news
    failed = dict((series.series_uid, reason) for series, reason in selection.failed)
    assert set(failed) == {"2.1", "2.2", "3.1"}
    assert "2 series tie for most slices (8)" in failed["2.1"] and "no series matches" in failed["3.1"]


def test_selection_without_instance_counts_does_not_guess():
    selection = select_per_study([ref("1.1", n=None), ref("1.2", n=None)], SeriesRules(("MR",)))
    assert selection.chosen == () and "gave no number of instances" in selection.failed[0][1]
    assert select_per_study([ref("1.1", n=None)], SeriesRules(("MR",))).chosen == (ref("1.1", n=None),)


def test_dicomweb_client_sends_a_bearer_token_or_basic_auth_and_checks_tls_with_the_ca_file(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("not checked until a request")
    client = DicomWebClient("https://pacs.example/dicom-web", credentials=Credentials(token="tok-9", ca_file=str(ca)))
    session = client._client._session
    assert session.headers["Authorization"] == "Bearer tok-9" and session.verify == str(ca) and session.auth is None
    basic = DicomWebClient("http://127.0.0.1:1/dicom-web", credentials=Credentials("u", "pw"))
    assert basic._client._session.auth == ("u", "pw") and "Authorization" not in basic._client._session.headers


def test_selection_with_a_description_pattern_and_without_preferring_the_largest():
    rules = SeriesRules((), "t1", False)
    selection = select_per_study([ref("1.1", description="AX T1 post"), ref("1.2", description="FLAIR")], rules)
    assert [series.series_uid for series in selection.chosen] == ["1.1"]
    rules_off = SeriesRules((), None, False)
    selection = select_per_study([ref("1.1"), ref("1.2")], rules_off)
    assert selection.chosen == () and "prefer_most_slices is off" in selection.failed[0][1]


def test_ledger_is_wal_and_keeps_one_row_per_series_and_job_key(tmp_path):
    path = tmp_path / "jobs.sqlite"
    with Ledger(path, KEY) as ledger:
        ledger.enqueue(ref("1.1"))
        ledger.enqueue(ref("1.1"))
        ledger.start_attempt("1.1")
        ledger.set_state("1.1", "inferred", seconds={"network": 1.5}, seg_path="/r/1.1/seg.dcm")
        row = ledger.get("1.1")
        assert (row.state, row.attempts, row.seconds, row.seg_path) == ("inferred", 1, {"network": 1.5},
                                                                         "/r/1.1/seg.dcm")
        with pytest.raises(ValueError, match="unknown state"):
            ledger.set_state("1.1", "done")
    with Ledger(path, JobKey("bundle", "1.0", "cd" * 32)) as other_weights:
        assert other_weights.get("1.1") is None
        other_weights.enqueue(ref("1.1"))
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("SELECT COUNT(*) FROM series").fetchone()[0] == 2


def test_plan_resumes_each_series_from_its_ledger_state(tmp_path):
    results = tmp_path / "results"
    (results / "inferred").mkdir(parents=True)
    (results / "inferred" / "seg.dcm").write_bytes(b"seg")
    (results / "failed_store").mkdir()
    (results / "failed_store" / "seg.dcm").write_bytes(b"seg")
    states = {"new": None, "queued": "queued", "retrieved": "retrieved", "inferred": "inferred",
              "inferred_gone": "inferred", "stored": "stored", "verified": "verified", "failed": "failed",
              "failed_store": "failed"}
    with Ledger(tmp_path / "jobs.sqlite", KEY) as ledger:
        for uid, state in states.items():
            ledger.enqueue(ref(uid, study=uid))
            if state:
                ledger.set_state(uid, state, last_error="boom" if state == "failed" else "",
                                 failed_stage="store" if uid == "failed_store" else "")
        selection = select_per_study([ref(uid, study=uid) for uid in states], SeriesRules())
        plan = plan_batch(selection, ledger, retry_failed=False, results_dir=results)
        starts = {task.series.series_uid: task.start for task in plan.tasks}
        assert starts == {"new": START_RETRIEVE, "queued": START_RETRIEVE, "retrieved": START_RETRIEVE,
                          "inferred": START_STORE, "inferred_gone": START_RETRIEVE, "stored": START_VERIFY}
        assert plan.not_run["verified"] == (OUTCOME_ALREADY_DONE, "")
        assert plan.not_run["failed"][0] == OUTCOME_FAILED and "retry_failed" in plan.not_run["failed"][1]
        retry = plan_batch(selection, ledger, retry_failed=True, results_dir=results)
        starts = {task.series.series_uid: task.start for task in retry.tasks}
        assert starts["failed"] == START_RETRIEVE and starts["failed_store"] == START_STORE


def test_plan_records_selection_failures_and_reports_skipped_series(tmp_path):
    with Ledger(tmp_path / "jobs.sqlite", KEY) as ledger:
        selection = select_per_study([ref("1", n=5), ref("2", n=3), ref("3", study="9", n=4),
                                      ref("4", study="9", n=4)], SeriesRules(("MR",)))
        plan = plan_batch(selection, ledger, retry_failed=False, results_dir=tmp_path)
        assert [task.series.series_uid for task in plan.tasks] == ["1"]
        assert plan.not_run["2"][0] == OUTCOME_SKIPPED
        assert ledger.get("3").state == "failed" and "tie" in ledger.get("3").last_error


def test_seg_uids_depend_on_series_bundle_version_and_weights_only():
    first = deterministic_seg_uids("1.2.3", "brain", "0.1.0", "ab" * 32, 2)
    assert first == deterministic_seg_uids("1.2.3", "brain", "0.1.0", "ab" * 32, 2)
    assert len({first.series_uid, first.sop_uid, *first.tracking_uids}) == 4
    for changed in (("1.2.4", "brain", "0.1.0", "ab" * 32), ("1.2.3", "chest", "0.1.0", "ab" * 32),
                    ("1.2.3", "brain", "0.2.0", "ab" * 32), ("1.2.3", "brain", "0.1.0", "cd" * 32)):
        other = deterministic_seg_uids(*changed, 2)
        assert other.series_uid != first.series_uid and other.sop_uid != first.sop_uid
    assert all(len(uid) <= 64 and uid.is_valid for uid in (first.series_uid, first.sop_uid))


def test_pacs_specs_and_urls():
    assert public_url("https://user:pw@pacs.example:8443/dicom-web/?x=1") == "https://pacs.example:8443/dicom-web"
    client = open_pacs("http://127.0.0.1:8042/dicom-web/", Credentials("u", "pw"))
    assert isinstance(client, DicomWebClient) and client.name == "http://127.0.0.1:8042/dicom-web"
    with pytest.raises(PacsError, match="no credentials in the URL"):
        DicomWebClient("http://u:pw@127.0.0.1:8042/dicom-web")
    for spec in ("127.0.0.1:104", "ORTHANC@host", "pacs.example/dicom-web", "A@h:99999"):
        with pytest.raises(InputError, match=f"^pacs {spec}: ") as refused:
            open_pacs(spec)
        assert refused.value.parameter == "pacs"


@pytest.mark.parametrize(
    "options, words",
    [
        (["--study-date", "2026-01-01"], "--study-date 2026-01-01: expected YYYYMMDD"),
        (["--store", "cloud"], "--store cloud: expected pacs, folder"),
        (["--store", "folder"], "--store folder: give the folder with --output"),
        (["--nifti"], "--nifti: the NIfTI masks go to --output"),
        (["--retries", "0"], "--retries 0: at least 1"),
        (["--address", "auto"], "--address: only for --engine ray"),
        (["--device", "gpu"], "--device gpu: expected auto, cpu, cuda or cuda:N"),
        (["--model", "int8", "--weights", "/nonexistent/model.onnx"], "--weights /nonexistent/model.onnx: no such"),
        (["--model", "int8"], "--model int8: the demo weights are a torch checkpoint; use torch or auto, or give "
                              "--weights <an ONNX model exported from them>"),
        (["--set", "network_def#feature=[8]"], "--set network_def#feature: the bundle has no config id"),
        (["--pacs", "ORTHANC@host"], "--pacs ORTHANC@host: expected a DICOMweb URL"),
    ],
)
def test_bad_options_are_one_line_errors(tmp_path, capsys, options, words):
    from custom_networks.cli import main

    args = ["pacs-batch", "--pacs", "http://127.0.0.1:9/dicom-web", "--bundle", "brain_tumor_mri_gsconv_eca_unet",
            "--demo", "--ledger", str(tmp_path / "j.sqlite"), "--report", str(tmp_path / "r"), *options]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and words in err, err


@pytest.mark.parametrize(
    "options, words",
    [
        (["--address", "auto"], "--address: only for --engine ray"),
        (["--engine", "ray", "--threads-per-worker", "0"], "--threads-per-worker 0: at least 1"),
        (["--engine", "ray", "--workers", "0"], "--workers 0: at least 1"),
    ],
)
def test_pacs_listen_engine_options_are_one_line_errors(tmp_path, capsys, options, words):
    from custom_networks.cli import main

    rules = tmp_path / "rules.yaml"
    rules.write_text("rules:\n  - name: brain\n    bundle: brain_tumor_mri_gsconv_eca_unet\n    demo: true\n")
    args = ["pacs-listen", "--allow-aet", "ORTHANC", "--rules", str(rules), "--spool", str(tmp_path / "spool"),
            "--ledger", str(tmp_path / "node.sqlite"), "--output", str(tmp_path / "out"), *options]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and words in err, err
    assert not (tmp_path / "spool").exists()  # refused before anything was written


def test_study_date_ranges():
    from custom_networks.cli.pacs_batch import _date_range

    assert _date_range("20260101-20261130") == ("20260101", "20261130")
    assert _date_range("20260101") == ("20260101", "20260101")
    assert _date_range("20260101-") == ("20260101", "")
    assert _date_range("-20261130") == ("", "20261130")
    assert _date_range(None) is None


def test_a_second_job_on_the_same_ledger_is_refused(tmp_path):
    from custom_networks.pacs.job import _ledger_lock

    ledger = tmp_path / "jobs.sqlite"
    with _ledger_lock(ledger):
        with pytest.raises(InputError, match="another job is running with this ledger"):
            with _ledger_lock(ledger):
                pass
    with _ledger_lock(ledger):
        pass


def test_seg_writer_uids_are_deterministic_with_the_weights_hash_and_random_without(tmp_path):
    labels = {"0": "background", "1": "tumour"}
    tissue = {"scheme": "SCT", "value": "85756007", "meaning": "Tissue"}
    codes = {"1": {"category": tissue, "type": tissue}}
    written = write_series(tmp_path / "mr", marker_volume())
    image = LoadClinicalImage()(tmp_path / "mr")
    label = (image > 500).to(torch.uint8)

    def seg_uids_written(out: str, **kwargs) -> tuple[str, str, str]:
        writer = SaveDicomSegd("pred", tmp_path / out, labels, "brain", "0.1.0", codes, **kwargs)
        path = writer({"pred": label.clone(), "image": image})["pred"].meta["clinical_outputs"][-1]
        seg = pydicom.dcmread(path)
        return seg.SeriesInstanceUID, seg.SOPInstanceUID, seg.SegmentSequence[0].TrackingUID

    first = seg_uids_written("a", weights_sha256="ab" * 32)
    again = seg_uids_written("b", weights_sha256="ab" * 32)
    expected = deterministic_seg_uids(written.series_instance_uid, "brain", "0.1.0", "ab" * 32, 1)
    assert first == again == (expected.series_uid, expected.sop_uid, expected.tracking_uids[0])
    assert seg_uids_written("c", weights_sha256="cd" * 32)[:2] != first[:2]
    random_1, random_2 = seg_uids_written("d"), seg_uids_written("e")
    assert len({random_1[0], random_2[0], first[0]}) == 3 and random_1[1] != random_2[1]

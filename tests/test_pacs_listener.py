"""The push listener (``pacs-listen``, ``custom_networks.pacs.listener``) against a real Orthanc that pushes to it,
with the brain bundle's demo weights on small MR series that carry a patient name and ID.

Orthanc knows the listener as the modality ``CLIENT_AET`` (the ``orthanc`` fixture registers it at
``orthanc.client_port``) and pushes with ``POST /modalities/{id}/store``, as a routing rule would; the listener
sends its results back to Orthanc by C-STORE and confirms them by C-FIND. Covered: the round trip (SEG and SR back
in Orthanc, referencing the source, after the completion timeout), an AE title that is not allowed, a series no
rule matches and one a rule ignores (skipped), a bad series among good ones (failed with its one-line reason),
``kill -9`` mid-series then a restart and a second push (one result per series, an empty spool), and the audit log
(the expected events, no patient name or ID).
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest
import requests
from pydicom.uid import JPEGLosslessSV1
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from custom_networks.clinical.seg_writer import deterministic_seg_uids
from custom_networks.data.sample_study import make_sample_study
from custom_networks.errors import InputError
from custom_networks.pacs.audit import read_audit
from custom_networks.pacs.credentials import Credentials
from custom_networks.pacs.listener import Listener, ListenerOptions
from custom_networks.pacs.retry import RetryPolicy
from custom_networks.pacs.routing import SeriesAttributes, load_rules
from custom_networks.runtime import prepare_bundle

from clinical_fixtures import Study, write_series, write_undecodable_slice
from conftest import CLIENT_AET, subprocess_env
from orthanc_server import OrthancServer

pytestmark = pytest.mark.orthanc

BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "brain_tumor_mri_gsconv_eca_unet"
# the bundle writes a DICOM SR measurement report beside the SEG when its config has the SR writer
WRITES_SR = "sr_writer" in json.loads((BUNDLE / "configs" / "inference.json").read_text())
PATIENT_NAME = "Doe^Jane^Secret"
PATIENT_ID = "PID-77125"
COMPLETE_AFTER = 2.0
# seconds a series may take from its completion to its SEG confirmed in Orthanc (model load included), on a
# loaded 2-core machine
PROCESSING_S = 120.0
RULES = """\
rules:
  - name: localizers
    series_description: "*localizer*"
    ignore: true
  - name: brain-mr
    modality: MR
    bundle: {bundle}
    demo: true
    device: cpu
"""


def study(seed: str) -> Study:
    return Study.seeded(seed, patient_id=PATIENT_ID, patient_name=PATIENT_NAME)


def mr_series(folder: Path, seed: int, of_study: Study, description: str = "T1 axial") -> list[Path]:
    """A small sample-like MR head series with a lesion (96 x 96 x 8), files in ``folder``."""
    image = make_sample_study(shape=(96, 96, 8), seed=seed).image
    written = write_series(folder, image, spacing=(0.9, 0.9, 5.0), study=of_study, description=description,
                           uid_seed=f"listener test {folder.name} {seed}", attributes={"BodyPartExamined": "BRAIN"})
    return written.files


def series_uid(files: list[Path]) -> str:
    return str(pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID)


def rules_file(folder: Path) -> Path:
    path = folder / "routing.yaml"
    path.write_text(RULES.format(bundle=BUNDLE))
    return path


def destination(orthanc: OrthancServer) -> str:
    return f"{orthanc.aet}@127.0.0.1:{orthanc.dicom_port}"


def listener_options(orthanc: OrthancServer, root: Path, **kwargs) -> ListenerOptions:
    """The node as Orthanc knows it: AE title ``CLIENT_AET`` on ``orthanc.client_port``, accepting Orthanc."""
    values = {"ae_title": CLIENT_AET, "port": orthanc.client_port, "allowed_aets": (orthanc.aet,),
              "rules": load_rules(rules_file(root)), "spool": root / "spool", "ledger": root / "node.sqlite",
              "audit": root / "audit.jsonl", "complete_after": COMPLETE_AFTER, "send_to": destination(orthanc),
              "timeout_s": 10.0, "retry": RetryPolicy(attempts=2, initial_delay_s=0.2), **kwargs}
    return ListenerOptions(**values)


def wait_for(condition: Callable[[], object], timeout: float, what: str, interval: float = 0.1,
             log: Path | None = None):
    """``condition()``'s first true value, polled every ``interval`` seconds; fails after ``timeout`` seconds
    (with the end of ``log``, a listener's output, when given)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    tail = f"\n{log.read_text()[-3000:]}" if log is not None and log.exists() else ""
    raise AssertionError(f"{what}: not within {timeout:.0f} s{tail}")


def results_in_study(orthanc: OrthancServer, study_uid: str, modality: str) -> list[str]:
    """Orthanc ids of the instances of ``modality`` (SEG, SR) in the study."""
    found = []
    for series in orthanc.rest_get(f"/studies/{orthanc.lookup(study_uid)}/series"):
        if series["MainDicomTags"].get("Modality") == modality:
            found += series["Instances"]
    return found


def download(orthanc: OrthancServer, instance: str) -> pydicom.Dataset:
    response = requests.get(f"{orthanc.url}/instances/{instance}/file", auth=orthanc.auth, timeout=30)
    response.raise_for_status()
    path = Path(orthanc.root) / f"{instance}.dcm"
    path.write_bytes(response.content)
    return pydicom.dcmread(path)


def ledger_rows(path: Path, table: str = "series") -> dict[str, dict]:
    """The ledger's rows by series UID (the ledger's own table, or the listener's ``listener_series``)."""
    if not path.exists():
        return {}
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as db:
            db.row_factory = sqlite3.Row
            return {row["series_uid"]: dict(row) for row in db.execute(f"SELECT * FROM {table}")}
    except sqlite3.OperationalError:  # the listener is still creating it
        return {}


def spooled(spool: Path) -> list[Path]:
    """Every file in the spool but the listener's lock."""
    return [path for path in spool.rglob("*") if path.is_file() and path.name != ".lock"] if spool.exists() else []


def events(audit: Path, name: str) -> list[dict]:
    return [event for event in read_audit(audit) if event["event"] == name]


def test_routing_rules_pick_the_bundle_and_refuse_a_malformed_file(tmp_path):
    rules = load_rules(rules_file(tmp_path))
    route = rules.route(SeriesAttributes("MR", "AX T1 post", "BRAIN"))
    assert (route.rule.name, route.request.bundle, route.request.demo) == ("brain-mr", str(BUNDLE), True)
    assert rules.route(SeriesAttributes("MR", "3-Plane LOCALIZER")).reason == "ignored by routing rule 'localizers'"
    assert rules.route(SeriesAttributes("CT", "head")).reason == "no routing rule matches (CT)"
    assert rules.route(SeriesAttributes("SEG")).skipped  # the node's own results, routed back, start no loop
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules:\n  - modalty: MR\n    bundle: brain_tumor_mri_gsconv_eca_unet\n")
    with pytest.raises(InputError, match=r"rule 1 \('rule 1'\): unknown field 'modalty'; did you mean modality\?"):
        load_rules(bad)
    bad.write_text("rules:\n  - modality: MR\n")
    with pytest.raises(InputError, match="give either a bundle or ignore: true"):
        load_rules(bad)


def test_orthanc_pushes_a_study_and_gets_seg_and_sr_back_with_an_audit_of_uids_only(orthanc, tmp_path, capfd):
    pushed_study = study("push round trip")
    files = mr_series(tmp_path / "t1", 0, pushed_study)
    source_uid = series_uid(files)
    orthanc.upload(files)
    options = listener_options(orthanc, tmp_path)
    with Listener(options) as listener:
        orthanc.push(CLIENT_AET, [orthanc.lookup(pushed_study.study_instance_uid)])
        pushed = time.monotonic()
        [seg_id] = wait_for(lambda: results_in_study(orthanc, pushed_study.study_instance_uid, "SEG"),
                            COMPLETE_AFTER + PROCESSING_S, "the SEG back in Orthanc")
        seconds_to_seg = time.monotonic() - pushed
        assert listener.wait_idle(60)
        # pushed again (the SEG with it): already done, nothing stored twice, the SEG skipped
        instances = orthanc.instance_count()
        orthanc.push(CLIENT_AET, [orthanc.lookup(pushed_study.study_instance_uid)])
        assert listener.wait_idle(COMPLETE_AFTER + 60)
        assert orthanc.instance_count() == instances

    # the SEG references the source series, with the UIDs derived from series, bundle and weights; the SR (when the
    # bundle writes one) is there once
    info = prepare_bundle(BUNDLE, demo=True, device="cpu")
    expected = deterministic_seg_uids(source_uid, info.name, info.version, info.weights_sha256, 1)
    seg = download(orthanc, seg_id)
    assert seg.SOPInstanceUID == expected.sop_uid and seg.SeriesInstanceUID == expected.series_uid
    assert seg.StudyInstanceUID == pushed_study.study_instance_uid
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == source_uid
    assert len(results_in_study(orthanc, pushed_study.study_instance_uid, "SR")) == int(WRITES_SR)
    row = ledger_rows(options.ledger)[source_uid]
    assert (row["state"], row["attempts"], row["seg_sop_uid"]) == ("verified", 1, expected.sop_uid)
    assert spooled(options.spool) == []
    print(f"SEG back in Orthanc {seconds_to_seg:.1f} s after the push (complete_after {COMPLETE_AFTER} s)")

    # the audit log: the association with the instances per series, then the series' way through, UIDs only
    audit = options.audit
    opened = events(audit, "association_opened")
    assert {(event["calling_aet"], event["called_aet"]) for event in opened} == {(orthanc.aet, CLIENT_AET)}
    assert opened[0]["peer"].startswith("127.0.0.1:")
    closed = events(audit, "association_closed")
    assert len(closed) == len(opened) and {event["how"] for event in closed} == {"released"}
    assert closed[0]["instances"] == {source_uid: len(files)}
    # the second push sends the study as it is now (Orthanc may open an association per SOP class): the source
    # series and the node's own results
    second_push = Counter()
    for event in closed[1:]:
        second_push.update(event["instances"])
    assert second_push[source_uid] == len(files) and second_push[expected.series_uid] == 1
    complete = events(audit, "series_complete")
    assert (complete[0]["series_uid"], complete[0]["instances"]) == (source_uid, len(files))
    assert complete[0]["idle_s"] >= COMPLETE_AFTER
    [skipped_seg] = [event for event in events(audit, "series_skipped") if event["modality"] == "SEG"]
    assert (skipped_seg["series_uid"], skipped_seg["reason"]) == (expected.series_uid,
                                                                  "non-image object (SEG), never segmented")
    assert events(audit, "series_queued")[0]["series_uid"] == source_uid
    [sent] = events(audit, "series_sent")
    assert sent["destination"] == [destination(orthanc)]
    processed, again = events(audit, "series_processed")
    assert (processed["outcome"], processed["rule"], processed["seg_sop_uid"]) == ("done", "brain-mr", expected.sop_uid)
    assert processed["seconds"] > 0 and {"network", "store", "verify"} <= set(processed["stages"])
    assert (again["series_uid"], again["outcome"]) == (source_uid, "already done")
    order = [event["event"] for event in read_audit(audit)]
    assert order[0] == "listener_started" and order[-1] == "listener_stopped"
    assert order.index("association_closed") < order.index("series_complete") < order.index("series_processed")
    logs = capfd.readouterr()
    for text in (audit.read_bytes(), options.ledger.read_bytes(), (logs.out + logs.err).encode()):
        for secret in (PATIENT_NAME, PATIENT_ID, "19700101"):
            assert secret.encode() not in text, secret


def test_unknown_ae_rejected_unmatched_series_skipped_bad_series_failed_while_others_go_on(orthanc, tmp_path):
    good_study, other_study = study("listener good"), study("listener other")
    good = mr_series(tmp_path / "good", 1, good_study)
    localizer = mr_series(tmp_path / "localizer", 2, good_study, description="3-plane localizer")
    ct = write_series(tmp_path / "ct", make_sample_study(shape=(32, 32, 3), seed=3).image, modality="CT",
                      study=other_study, description="CT head").files
    undecodable = write_undecodable_slice(tmp_path / "codec" / "slice.dcm", JPEGLosslessSV1)
    bad_study = str(pydicom.dcmread(undecodable, stop_before_pixels=True).StudyInstanceUID)
    orthanc.upload([*good, *localizer, *ct, undecodable])
    # results by STOW-RS this time, and into a folder too
    options = listener_options(orthanc, tmp_path, send_to=orthanc.dicomweb_url, output_dir=tmp_path / "segs",
                               credentials=Credentials(orthanc.username, orthanc.password),
                               report_dir=tmp_path / "report")
    with Listener(options) as listener:
        # an AE title that is not allowed is rejected at association: calling AE title not recognised
        stranger = AE(ae_title="STRANGER")
        stranger.add_requested_context(Verification)
        association = stranger.associate("127.0.0.1", listener.port, ae_title=CLIENT_AET)
        assert association.is_rejected
        answer = association.acceptor.primitive
        assert (answer.result_source, answer.diagnostic) == (1, 3)
        studies = [orthanc.lookup(uid) for uid in (good_study.study_instance_uid, other_study.study_instance_uid,
                                                   bad_study)]
        orthanc.push(CLIENT_AET, studies)
        assert listener.wait_idle(COMPLETE_AFTER + PROCESSING_S)

    seen = ledger_rows(options.ledger, "listener_series")
    assert (seen[series_uid(ct)]["outcome"], seen[series_uid(ct)]["reason"]) == ("skipped",
                                                                                 "no routing rule matches (CT)")
    assert seen[series_uid(localizer)]["outcome"] == "skipped"
    assert seen[series_uid(localizer)]["reason"] == "ignored by routing rule 'localizers'"
    states = ledger_rows(options.ledger)
    assert states[series_uid(good)]["state"] == "verified"
    bad = states[series_uid([undecodable])]
    assert bad["state"] == "failed" and "has no decoder installed" in bad["last_error"], bad
    assert "\n" not in bad["last_error"]
    [seg_id] = results_in_study(orthanc, good_study.study_instance_uid, "SEG")
    kept = tmp_path / "segs" / good_study.study_instance_uid / series_uid(good) / "seg.dcm"
    assert pydicom.dcmread(kept).SOPInstanceUID == download(orthanc, seg_id).SOPInstanceUID
    for skipped_or_failed in (bad_study, other_study.study_instance_uid):
        assert results_in_study(orthanc, skipped_or_failed, "SEG") == []
    assert spooled(options.spool) == []
    # the audit log and the report say the same
    [rejected] = events(options.audit, "association_rejected")
    assert (rejected["calling_aet"], rejected["reason"]) == ("STRANGER", "calling AE title not allowed")
    skipped = {event["series_uid"]: event for event in events(options.audit, "series_skipped")}
    assert set(skipped) == {series_uid(ct), series_uid(localizer)}
    processed = {event["series_uid"]: event for event in events(options.audit, "series_processed")}
    assert processed[series_uid(good)]["outcome"] == "done"
    assert processed[series_uid([undecodable])]["outcome"] == "failed"
    assert "has no decoder installed" in processed[series_uid([undecodable])]["reason"]
    report = {row["series_uid"]: row for row in json.loads((tmp_path / "report" / "series.json").read_text())["series"]}
    assert {uid: report[uid]["outcome"] for uid in (series_uid(good), series_uid(ct), series_uid([undecodable]))} == {
        series_uid(good): "done", series_uid(ct): "skipped", series_uid([undecodable]): "failed"}


def listen_command(orthanc: OrthancServer, root: Path) -> list[str]:
    entry = "import sys; from custom_networks.cli import main; sys.exit(main(sys.argv[1:]))"
    return [sys.executable, "-c", entry, "pacs-listen", "--ae-title", CLIENT_AET, "--port", str(orthanc.client_port),
            "--allow-aet", orthanc.aet, "--complete-after", str(COMPLETE_AFTER), "--rules", str(rules_file(root)),
            "--spool", str(root / "spool"), "--ledger", str(root / "node.sqlite"), "--audit",
            str(root / "audit.jsonl"), "--send-to", destination(orthanc), "--timeout", "10", "--backoff", "0.2"]


def start_listener(command: list[str], root: Path, starts: int) -> subprocess.Popen:
    """Start the command line listener (output in ``listener-<starts>.log``); return once the audit log says it
    listens (its ``starts``-th start)."""
    log = root / f"listener-{starts}.log"
    with open(log, "wb") as stream:
        process = subprocess.Popen(command, cwd=root, env=subprocess_env(), stdout=stream, stderr=subprocess.STDOUT)

    def started() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"the listener exited: {log.read_text()[-3000:]}")
        return (root / "audit.jsonl").exists() and len(events(root / "audit.jsonl", "listener_started")) >= starts

    wait_for(started, 120, "the listener to start")
    return process


def test_kill_9_mid_series_then_restart_and_push_again_gives_one_result_per_series(orthanc, tmp_path):
    first, second = study("kill first"), study("kill second")
    series = {"a": mr_series(tmp_path / "a", 4, first), "b": mr_series(tmp_path / "b", 5, second)}
    uids = {name: series_uid(files) for name, files in series.items()}
    for files in series.values():
        orthanc.upload(files)
    command = listen_command(orthanc, tmp_path)
    ledger, spool = tmp_path / "node.sqlite", tmp_path / "spool"
    pushes = {"a": orthanc.lookup(first.study_instance_uid), "b": orthanc.lookup(second.study_instance_uid)}

    process = start_listener(command, tmp_path, 1)
    try:
        orthanc.push(CLIENT_AET, [pushes["a"]])
        # series a is being processed (retrieved from the spool, model loading or segmenting)...
        wait_for(lambda: ledger_rows(ledger).get(uids["a"], {}).get("state") in ("retrieved", "inferred"), 60,
                 "series a in processing", interval=0.02, log=tmp_path / "listener-1.log")
        # ... and series b arrives in full, but is not complete yet (less than complete_after ago): kill -9
        orthanc.push(CLIENT_AET, [pushes["b"]])
        process.send_signal(signal.SIGKILL)
        process.wait(30)
    finally:
        process.kill()
    # series b was never complete; series a was in processing (a very fast machine may have finished it)
    state_of_a = ledger_rows(ledger)[uids["a"]]["state"]
    print(f"killed with series a {state_of_a}")
    assert uids["b"] not in ledger_rows(ledger)
    left = {path.parent.name for path in spooled(spool)}
    assert uids["b"] in left and (uids["a"] in left or state_of_a == "verified"), (left, state_of_a)

    process = start_listener(command, tmp_path, 2)
    try:
        resumed = {event["series_uid"] for event in events(tmp_path / "audit.jsonl", "series_resumed")}
        assert resumed == left
        orthanc.push(CLIENT_AET, list(pushes.values()))
        done = wait_for(lambda: {row["state"] for row in ledger_rows(ledger).values()} == {"verified"}
                        and len(ledger_rows(ledger)) == 2 and not spooled(spool), 2 * (COMPLETE_AFTER + PROCESSING_S),
                        "both series verified and the spool empty", log=tmp_path / "listener-2.log")
        assert done
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0
    finally:
        process.kill()

    for name, of_study in (("a", first), ("b", second)):
        assert len(results_in_study(orthanc, of_study.study_instance_uid, "SEG")) == 1, name
        assert len(results_in_study(orthanc, of_study.study_instance_uid, "SR")) == int(WRITES_SR), name
    assert spooled(spool) == [] and not any(path.is_dir() for path in spool.iterdir())
    assert not (tmp_path / "node.sqlite.work" / "tmp").exists()

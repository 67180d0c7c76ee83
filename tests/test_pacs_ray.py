"""``--engine ray`` against a real Orthanc on one local Ray instance (2 CPUs) for the module: the same SEG UIDs and
masks as the local engine, the model loaded once per actor, and the command line joining an existing cluster."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import ray

from custom_networks.clinical.seg_writer import deterministic_seg_uids
from custom_networks.data.sample_study import make_sample_study
from custom_networks.errors import InputError
from custom_networks.pacs.client import QueryFilters
from custom_networks.pacs.connect import PacsConnection
from custom_networks.pacs.dimse import DimseClient
from custom_networks.pacs.engine import BatchBook, StopRequest
from custom_networks.pacs.job import EXIT_OK, JobOptions, run_job
from custom_networks.pacs.ledger import JobKey, Ledger
from custom_networks.pacs.processor import OutputOptions, SeriesTask
from custom_networks.pacs.ray_engine import RayEngine
from custom_networks.pacs.retry import RetryPolicy
from custom_networks.runtime import BundleRequest, prepare_bundle

from clinical_fixtures import Study, write_series
from conftest import subprocess_env

# what pacs-batch stores per series: the DICOM SEG and the DICOM SR measurement report
RESULTS_PER_SERIES = 2
BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "brain_tumor_mri_gsconv_eca_unet"
START_LINE = re.compile(r"Ray worker (\d+) \(pid (\d+) on [^)]+\): model loaded at ([\d.]+)")
WORKER_LINE = re.compile(r"Ray worker (\d+) \(pid (\d+) on [^)]+\): (\d+) series, model loaded at ([\d.]+)")

pytestmark = [pytest.mark.orthanc, pytest.mark.ray]


@pytest.fixture(scope="module")
def ray_address(tmp_path_factory):
    """One local Ray instance with 2 CPUs for the module (starting one costs several seconds of CPU); its files
    in a temporary folder, not in /tmp/ray."""
    ray.init(num_cpus=2, include_dashboard=False, _temp_dir=str(tmp_path_factory.mktemp("ray")))
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def upload_studies(orthanc, root: Path) -> dict[str, str]:
    """Three studies of sample-like MR heads with lesions; study A also has a shorter series the bundle's rules
    skip. Returns the chosen series' UIDs by name (and the skipped one as ``"a_short"``)."""
    shapes = {"a": (96, 96, 8), "a_short": (96, 96, 5), "b": (96, 96, 6), "c": (80, 96, 7)}
    studies = {"a": Study(), "b": Study(), "c": Study()}
    uids = {}
    for seed, (name, shape) in enumerate(shapes.items()):
        image = make_sample_study(shape=shape, seed=30 + seed).image
        written = write_series(root / "series" / name, image, spacing=(0.9, 0.9, 5.0), study=studies[name[0]],
                               description="AX T1", uid_seed=f"ray test {name}")
        orthanc.upload(written.files)
        uids[name] = written.series_instance_uid
    return uids


def job(orthanc, root: Path, engine: str, store_pacs: bool) -> JobOptions:
    """The job over DIMSE (C-GET) with the brain bundle's demo weights, SEGs and NIfTI masks kept in root/out."""
    connection = PacsConnection(f"{orthanc.aet}@127.0.0.1:{orthanc.dicom_port}",
                                retry=RetryPolicy(attempts=2, initial_delay_s=0.2), calling_aet=orthanc.client_aet)
    outputs = OutputOptions(str(root / "work" / "results"), store_pacs=store_pacs, output_dir=str(root / "out"),
                            write_nifti=True)
    return JobOptions(connection, BundleRequest(str(BUNDLE), demo=True, device="cpu"), outputs,
                      QueryFilters(modality="MR"), root / "jobs.sqlite", root / "report", root / "work",
                      engine=engine, workers=2)


def report_rows(root: Path) -> dict[str, dict]:
    return {row["series_uid"]: row for row in json.loads((root / "report" / "series.json").read_text())["series"]}


def kept(root: Path, study_uid: str, series_uid: str) -> tuple[pydicom.Dataset, np.ndarray]:
    folder = root / "out" / study_uid / series_uid
    return pydicom.dcmread(folder / "seg.dcm"), np.asarray(nib.load(folder / "mask.nii.gz").dataobj)


def assert_ray_gave_the_local_engines_segs(root: Path, chosen: dict[str, str], pacs) -> None:
    """Every chosen series done by both jobs (``root/local``, ``root/ray``), with the deterministic SEG UIDs, equal
    masks and SEG pixels, and the Ray job's SEG in ``pacs``."""
    info = prepare_bundle(BUNDLE, demo=True, device="cpu")
    local_rows, ray_rows = report_rows(root / "local"), report_rows(root / "ray")
    for name, uid in chosen.items():
        local_row, ray_row = local_rows[uid], ray_rows[uid]
        assert (local_row["outcome"], ray_row["outcome"]) == ("done", "done"), (local_row, ray_row)
        expected = deterministic_seg_uids(uid, info.name, info.version, info.weights_sha256, 1)
        for row in (local_row, ray_row):
            assert (row["seg_series_uid"], row["seg_sop_uid"]) == (expected.series_uid, expected.sop_uid)
        local_seg, local_mask = kept(root / "local", local_row["study_uid"], uid)
        ray_seg, ray_mask = kept(root / "ray", ray_row["study_uid"], uid)
        assert (ray_seg.SeriesInstanceUID, ray_seg.SOPInstanceUID) == (expected.series_uid, expected.sop_uid)
        assert (local_seg.SeriesInstanceUID, local_seg.SOPInstanceUID) == (expected.series_uid, expected.sop_uid)
        assert local_mask.any(), name
        np.testing.assert_array_equal(ray_mask, local_mask)
        np.testing.assert_array_equal(ray_seg.pixel_array, local_seg.pixel_array)
        assert pacs.has_instance(ray_row["study_uid"], expected.series_uid, expected.sop_uid)


def worker_lines(text: str) -> list[tuple[int, int, int, float]]:
    """(worker, pid, series, when its model was loaded) of each worker's closing log line."""
    return [(int(match[1]), int(match[2]), int(match[3]), float(match[4])) for match in WORKER_LINE.finditer(text)]


def load_times(text: str) -> dict[int, float]:
    """pid -> when the worker's model was loaded, from the workers' start log lines."""
    return {int(match[2]): float(match[3]) for match in START_LINE.finditer(text)}


def test_ray_engine_gives_the_local_engines_segs_and_loads_the_model_once_per_actor(
    orthanc, ray_address, tmp_path, caplog
):
    uids = upload_studies(orthanc, tmp_path)
    chosen = {name: uid for name, uid in uids.items() if name != "a_short"}
    assert run_job(job(orthanc, tmp_path / "local", "local", store_pacs=False)) == EXIT_OK
    before = orthanc.instance_count()
    with caplog.at_level(logging.INFO, logger="custom_networks.pacs.ray_engine"):
        assert run_job(job(orthanc, tmp_path / "ray", "ray", store_pacs=True)) == EXIT_OK

    # two actors in their own processes shared the three series, each process loaded the model once
    workers = worker_lines(caplog.text)
    assert len(workers) == 2 and {pid for _, pid, _, _ in workers}.isdisjoint({os.getpid()})
    assert len({pid for _, pid, _, _ in workers}) == 2
    assert sum(series for _, _, series, _ in workers) == len(chosen)
    # the model each actor loaded at start is the one it closed with: loaded once, not per series
    assert {pid: loaded_at for _, pid, _, loaded_at in workers} == load_times(caplog.text)

    assert report_rows(tmp_path / "ray")[uids["a_short"]]["outcome"] == "skipped"
    pacs = DimseClient(orthanc.aet, "127.0.0.1", orthanc.dicom_port, calling_aet=orthanc.client_aet)
    assert_ray_gave_the_local_engines_segs(tmp_path, chosen, pacs)
    # one SEG and one SR per chosen series went into the PACS
    assert orthanc.instance_count() == before + RESULTS_PER_SERIES * len(chosen)


def test_command_line_joins_an_existing_cluster_and_stores_nothing_twice(orthanc, ray_address, tmp_path):
    """``attention-unets pacs-batch --engine ray --address <cluster>`` from another process, with a new ledger: it
    segments and stores every series again, and Orthanc's instance count shows the SEGs replaced, not added."""
    uids = upload_studies(orthanc, tmp_path)
    first = run_job(job(orthanc, tmp_path / "first", "local", store_pacs=True))
    assert first == EXIT_OK
    before = orthanc.instance_count()
    root = tmp_path / "cli"
    cli = ["-c", "import sys; from custom_networks.cli import main; sys.exit(main())"]
    args = [*cli, "pacs-batch", "--pacs", f"{orthanc.aet}@127.0.0.1:{orthanc.dicom_port}",
            "--calling-aet", orthanc.client_aet, "--bundle", str(BUNDLE), "--demo", "--device", "cpu",
            "--modality", "MR", "--ledger", str(root / "jobs.sqlite"), "--report", str(root / "report"),
            "--engine", "ray", "--address", ray_address, "--workers", "2"]
    root.mkdir()
    done = subprocess.run([sys.executable, *args], cwd=root, capture_output=True, text=True, timeout=600,
                          env=subprocess_env())
    assert done.returncode == 0, done.stderr[-4000:]
    assert orthanc.instance_count() == before
    rows = report_rows(root)
    assert {rows[uids[name]]["outcome"] for name in ("a", "b", "c")} == {"done"}
    workers = worker_lines(done.stderr)
    assert len(workers) == 2, done.stderr[-4000:]
    assert {pid: loaded_at for _, pid, _, loaded_at in workers} == load_times(done.stderr)


def test_sigterm_finishes_the_series_in_flight_then_the_same_command_completes(orthanc, ray_address, tmp_path):
    """SIGTERM to a Ray job (one actor, on the module's cluster) after its first series: the series in flight is
    finished and stored, none is started after it, exit 130; the same command then does the rest, and the PACS
    ends with one SEG and one SR per series."""
    uids = upload_studies(orthanc, tmp_path)
    before = orthanc.instance_count()
    root = tmp_path / "job"
    root.mkdir()
    cli = ["-c", "import sys; from custom_networks.cli import main; sys.exit(main())"]
    args = [*cli, "pacs-batch", "--pacs", f"{orthanc.aet}@127.0.0.1:{orthanc.dicom_port}",
            "--calling-aet", orthanc.client_aet, "--bundle", str(BUNDLE), "--demo", "--device", "cpu",
            "--modality", "MR", "--ledger", str(root / "jobs.sqlite"), "--report", str(root / "report"),
            "--engine", "ray", "--address", ray_address, "--workers", "1"]
    log = root / "first.log"
    with open(log, "w") as stream:
        process = subprocess.Popen([sys.executable, *args], cwd=root, stdout=stream, stderr=subprocess.STDOUT,
                                   text=True, env=subprocess_env())
    deadline = time.monotonic() + 300
    while "[1/3] series" not in log.read_text() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=300) == 130, log.read_text()[-4000:]
    outcomes = [row["outcome"] for row in report_rows(root).values() if row["outcome"] != "skipped"]
    # the first series, and the one in flight when the signal came (if any), are done; nothing else was started
    assert 1 <= outcomes.count("done") <= 2 and outcomes.count("not run") == 3 - outcomes.count("done"), outcomes
    assert orthanc.instance_count() == before + RESULTS_PER_SERIES * outcomes.count("done")

    done = subprocess.run([sys.executable, *args], cwd=root, capture_output=True, text=True, timeout=600,
                          env=subprocess_env())
    assert done.returncode == 0, done.stderr[-4000:]
    rows = report_rows(root)
    assert {rows[uids[name]]["outcome"] for name in ("a", "b", "c")} <= {"done", "already done"}
    assert orthanc.instance_count() == before + RESULTS_PER_SERIES * 3


def test_a_dead_worker_fails_only_its_series_and_is_replaced(orthanc, ray_address, tmp_path):
    """The only actor is killed before its first series: a new actor (its own model load) is given that series once
    more, and stores and confirms it. A series whose actor dies twice (its argument ends the actor process when it
    is unpickled there) fails naming the dead worker; a third new actor then takes the next series."""
    import dataclasses

    uids = upload_studies(orthanc, tmp_path)
    options = job(orthanc, tmp_path / "job", "ray", store_pacs=True)
    info = options.request.prepare()
    request = options.request.pinned(info)  # as run_job resolves it
    pacs = DimseClient(orthanc.aet, "127.0.0.1", orthanc.dicom_port, calling_aet=orthanc.client_aet)
    refs = {ref.series_uid: ref for ref in pacs.find_series(QueryFilters(modality="MR"))}

    class KillsItsActor(type(refs[uids["c"]])):
        def __reduce__(self):
            return (os._exit, (1,))

    deadly = KillsItsActor(**dataclasses.asdict(refs[uids["c"]]))
    tasks = [SeriesTask(refs[uids["b"]]), SeriesTask(deadly), SeriesTask(refs[uids["a"]])]
    engine = RayEngine(options.connection, request, options.outputs, workers=1)
    with Ledger(options.ledger, JobKey(info.name, info.version, info.weights_sha256)) as ledger:
        for task in tasks:
            ledger.enqueue(task.series)
        book = BatchBook(ledger, options.report_dir)
        ray.kill(engine._actors[0])
        try:
            engine.run(tasks, book, StopRequest())
            workers = engine.describe_workers()
        finally:
            engine.close()
        retried, failed, last = (book.results[task.series.series_uid] for task in tasks)
        assert retried.state == "verified" and last.state == "verified"
        assert (failed.state, failed.failed_stage) == ("failed", "engine")
        assert failed.reason.startswith("the Ray worker died while processing this series")
        # the first actor, the one the retried series got, and the two the deadly series killed; then a fourth
        assert engine.actors_started == 4
        # one live actor, the last replacement, which loaded its model and processed the last series
        assert [worker["processed"] for worker in workers] == [1]
        rows = [ledger.get(task.series.series_uid) for task in tasks]
        assert [(row.state, row.attempts) for row in rows] == [("verified", 2), ("failed", 2), ("verified", 1)]
    for result in (retried, last):
        assert pacs.has_instance(result.series.study_uid, result.seg_series_uid, result.seg_sop_uid)
    assert not pacs.has_instance(failed.series.study_uid, failed.seg_series_uid, failed.seg_sop_uid)


def test_c_move_with_several_ray_workers_is_refused(tmp_path):
    connection = PacsConnection("ORTHANC@127.0.0.1:4242", retrieve="move", storage_port=11113)
    with pytest.raises(InputError, match="retrieve move with engine ray: .*use retrieve=get") as refused:
        RayEngine(connection, BundleRequest(str(BUNDLE)), OutputOptions(str(tmp_path)), workers=2)
    assert refused.value.parameter == "retrieve"

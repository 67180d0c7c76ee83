"""Planning, resume, store, verify and retry of the PACS job without a PACS server or a model.

The processor gets an in-memory PACS (the :class:`~custom_networks.pacs.client.PacsClient` protocol, with faults
to inject) and a segmenter that writes a real, minimal DICOM file with the SEG UIDs the bundle would give; the
ledger, batch book, local engine and processor are the job's own. Orthanc and the real bundle are the proof in
``test_pacs_batch.py``; here each job rule is checked on its own, fast.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from custom_networks.pacs.client import PacsError, QueryFilters, SeriesRef, TransientPacsError
from custom_networks.pacs.engine import BatchBook, LocalEngine, StopRequest, plan_batch
from custom_networks.pacs.ledger import STATE_FAILED, STATE_INFERRED, STATE_STORED, STATE_VERIFIED, JobKey, Ledger
from custom_networks.pacs.processor import (
    START_RETRIEVE,
    START_STORE,
    START_VERIFY,
    OutputOptions,
    SeriesProcessor,
    seg_uids,
)
from custom_networks.pacs.retry import RetryPolicy
from custom_networks.pacs.selection import Selection
from custom_networks.runtime import BundleRun, SegmentOutcome, prepare_bundle

from conftest import BUNDLES_DIR

SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"


class InMemoryPacs:
    """A PACS in a dict: series to retrieve, instances stored; ``faults[method]`` lists errors to raise first."""

    name = "memory-pacs"

    def __init__(self, series: Sequence[SeriesRef]) -> None:
        self.series = {ref.series_uid: ref for ref in series}
        self.stored: dict[str, pydicom.Dataset] = {}
        self.calls: dict[str, int] = {}
        self.faults: dict[str, list[Exception]] = {}
        self.hide_stored = False

    def _call(self, method: str) -> None:
        self.calls[method] = self.calls.get(method, 0) + 1
        if self.faults.get(method):
            raise self.faults[method].pop(0)

    def find_series(self, filters: QueryFilters) -> list:
        self._call("find_series")
        return list(self.series.values())

    def retrieve_series(self, series: SeriesRef, folder: Path) -> list[Path]:
        self._call("retrieve_series")
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{series.series_uid}.dcm"
        path.write_bytes(b"pixels")
        return [path]

    def store(self, paths: Sequence[Path]) -> None:
        self._call("store")
        for path in paths:
            header = pydicom.dcmread(path)
            self.stored[str(header.SOPInstanceUID)] = header

    def has_instance(self, study_uid: str, series_uid: str, sop_uid: str) -> bool:
        self._call("has_instance")
        return not self.hide_stored and sop_uid in self.stored

    def close(self) -> None:
        pass


class FakeSegmenter:
    """Writes, per case, a minimal DICOM file carrying the SEG UIDs the bundle of ``run`` derives."""

    def __init__(self, run: BundleRun, output_dir: Path, fail: Callable[[Path], str] | None = None) -> None:
        self.run, self.output_dir, self.fail = run, output_dir, fail
        self.cases: list[str] = []

    def segment(self, case: Path) -> SegmentOutcome:
        self.cases.append(case.name)
        if self.fail and self.fail(case):
            return SegmentOutcome(False, self.fail(case))
        series_uid, sop_uid = seg_uids(self.run, case.name)
        dataset = pydicom.Dataset()
        dataset.file_meta = FileMetaDataset()
        dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        dataset.file_meta.MediaStorageSOPClassUID = SEG_STORAGE
        dataset.file_meta.MediaStorageSOPInstanceUID = sop_uid
        dataset.SOPClassUID, dataset.SOPInstanceUID, dataset.SeriesInstanceUID = SEG_STORAGE, sop_uid, series_uid
        self.output_dir.mkdir(parents=True, exist_ok=True)
        path = self.output_dir / f"{case.name}_seg.dcm"
        dataset.save_as(path, enforce_file_format=True)
        segments = ({"label": "tumor", "voxels": 10, "volume_ml": 0.5},)
        return SegmentOutcome(True, "", {"seg": path}, segments, {"network": 0.01})


@pytest.fixture(scope="module")
def bundle_run() -> BundleRun:
    return prepare_bundle(BUNDLES_DIR / "brain_tumor_mri_gsconv_eca_unet", demo=True, device="cpu")


def refs(count: int, seed: str = "a") -> list[SeriesRef]:
    return [SeriesRef(f"1.2.826.0.1.{seed}.{k}", f"1.2.826.0.2.{ord(seed)}.{k}", "MR", "T1", k, 12)
            for k in range(count)]


class Job:
    """The pieces of one local job run: PACS, ledger, book, processor and the segmenter's calls."""

    def __init__(self, root: Path, run: BundleRun, pacs: InMemoryPacs, retry: RetryPolicy,
                 output_dir: Path | None = None, fail: Callable[[Path], str] | None = None) -> None:
        self.root, self.pacs = root, pacs
        self.outputs = OutputOptions(str(root / "results"), output_dir=str(output_dir) if output_dir else None)
        self.segmenter = FakeSegmenter(run, root / "bundle-output", fail)
        self.processor = SeriesProcessor(pacs, self.segmenter, self.outputs, retry)
        self.ledger = Ledger(root / "jobs.sqlite", JobKey(run.name, run.version, run.weights_sha256))
        self.book = BatchBook(self.ledger, root / "report")

    def plan(self, retry_failed: bool = False):
        series = list(self.pacs.series.values())
        return plan_batch(Selection(tuple(series), (), ()), self.ledger, retry_failed, Path(self.outputs.results_dir))

    def run(self, retry_failed: bool = False):
        plan = self.plan(retry_failed)
        LocalEngine(self.processor, self.root / "tmp").run(plan.tasks, self.book, StopRequest())
        return plan


def test_a_batch_stores_one_seg_per_series_and_a_rerun_plans_nothing(tmp_path, bundle_run):
    pacs = InMemoryPacs(refs(3))
    job = Job(tmp_path, bundle_run, pacs, RetryPolicy(attempts=1))
    plan = job.run()
    assert [task.start for task in plan.tasks] == [START_RETRIEVE] * 3
    for ref in pacs.series.values():
        row = job.ledger.get(ref.series_uid)
        assert row.state == STATE_VERIFIED and row.attempts == 1
        assert (row.seg_series_uid, row.seg_sop_uid) == seg_uids(bundle_run, ref.series_uid)
        assert row.segments[0]["volume_ml"] == 0.5
    assert sorted(pacs.stored) == sorted(seg_uids(bundle_run, uid)[1] for uid in pacs.series)
    # the results folder keeps nothing once a SEG is confirmed; the scratch copy of each series is gone
    assert not any((tmp_path / "results").rglob("*.dcm")) and not any((tmp_path / "tmp").rglob("*.dcm"))
    again = job.plan()
    assert again.tasks == () and {outcome for outcome, _ in again.not_run.values()} == {"already done"}


def test_a_seg_computed_before_a_crash_is_only_stored_and_a_stored_one_only_confirmed(tmp_path, bundle_run):
    """Resume: ``inferred`` with the SEG kept -> store and verify, no retrieve or segmentation; ``stored`` ->
    verify only."""
    pacs = InMemoryPacs(refs(2, "b"))
    job = Job(tmp_path, bundle_run, pacs, RetryPolicy(attempts=1))
    first, second = pacs.series.values()
    # series 1 was segmented (SEG in the results folder) when the job was killed; series 2 was stored
    job.plan()
    kept = job.segmenter.segment(Path(first.series_uid))
    (tmp_path / "results" / first.series_uid).mkdir(parents=True)
    kept.files["seg"].rename(tmp_path / "results" / first.series_uid / "seg.dcm")
    job.ledger.set_state(first.series_uid, STATE_INFERRED)
    stored = job.segmenter.segment(Path(second.series_uid))
    pacs.store([stored.files["seg"]])
    job.ledger.set_state(second.series_uid, STATE_STORED)
    job.segmenter.cases.clear()
    pacs.calls.clear()

    plan = job.run()
    assert [task.start for task in plan.tasks] == [START_STORE, START_VERIFY]
    assert job.segmenter.cases == [] and "retrieve_series" not in pacs.calls
    assert pacs.calls["store"] == 1 and pacs.calls["has_instance"] == 2
    assert {job.ledger.get(uid).state for uid in pacs.series} == {STATE_VERIFIED}


def test_transient_store_failures_are_retried_and_a_failure_keeps_the_seg_for_retry_failed(tmp_path, bundle_run):
    pacs = InMemoryPacs(refs(2, "c"))
    job = Job(tmp_path, bundle_run, pacs, RetryPolicy(attempts=3, initial_delay_s=0.01, max_delay_s=0.01))
    first, second = pacs.series.values()
    # two transient failures of the first store are absorbed by the retries
    pacs.faults["store"] = [TransientPacsError("memory-pacs: 503"), TransientPacsError("memory-pacs: 503")]
    job.run()
    assert job.ledger.get(first.series_uid).state == STATE_VERIFIED and pacs.calls["store"] == 4

    # a third series meets a PACS that stays down: it fails at "store" naming the PACS, its SEG is kept
    third = refs(1, "d")[0]
    pacs.series[third.series_uid] = third
    pacs.faults["store"] = [TransientPacsError("memory-pacs: connection refused")] * 3
    job.run()
    row = job.ledger.get(third.series_uid)
    assert (row.state, row.failed_stage) == (STATE_FAILED, "store")
    assert row.last_error.startswith("memory-pacs: connection refused (gave up after 3 attempt(s))")
    assert (tmp_path / "results" / third.series_uid / "seg.dcm").is_file()

    # without retry_failed it waits; with it, only the store is done again (no new segmentation)
    assert third.series_uid not in {task.series.series_uid for task in job.plan().tasks}
    job.segmenter.cases.clear()
    plan = job.run(retry_failed=True)
    assert [(task.series.series_uid, task.start) for task in plan.tasks] == [(third.series_uid, START_STORE)]
    assert job.segmenter.cases == [] and job.ledger.get(third.series_uid).state == STATE_VERIFIED
    assert job.ledger.get(third.series_uid).attempts == 2


def test_a_seg_the_pacs_does_not_return_fails_verify_and_a_bad_series_fails_alone(tmp_path, bundle_run):
    pacs = InMemoryPacs(refs(3, "e"))
    uids = list(pacs.series)
    job = Job(tmp_path, bundle_run, pacs, RetryPolicy(attempts=1),
              fail=lambda case: "IM0003.dcm: truncated pixel data" if case.name == uids[1] else "")
    pacs.faults["retrieve_series"] = [PacsError("memory-pacs: series 0 is gone")]
    job.run()
    states = {uid: (job.ledger.get(uid).state, job.ledger.get(uid).failed_stage) for uid in uids}
    assert states == {uids[0]: (STATE_FAILED, "retrieve"), uids[1]: (STATE_FAILED, "infer"),
                      uids[2]: (STATE_VERIFIED, "")}
    assert job.ledger.get(uids[1]).last_error == "IM0003.dcm: truncated pixel data"

    pacs.hide_stored = True  # the PACS accepts the SEG but a query does not find it
    fourth = refs(1, "f")[0]
    pacs.series = {fourth.series_uid: fourth}
    job.run()
    row = job.ledger.get(fourth.series_uid)
    assert (row.state, row.failed_stage) == (STATE_FAILED, "verify")
    assert "is not found by a query" in row.last_error


def test_results_also_kept_in_a_folder_are_checked_there(tmp_path, bundle_run):
    pacs = InMemoryPacs(refs(1, "g"))
    job = Job(tmp_path, bundle_run, pacs, RetryPolicy(attempts=1), output_dir=tmp_path / "segs")
    job.run()
    ref = next(iter(pacs.series.values()))
    kept = tmp_path / "segs" / ref.study_uid / ref.series_uid / "seg.dcm"
    assert pydicom.dcmread(kept).SOPInstanceUID == seg_uids(bundle_run, ref.series_uid)[1]
    assert job.ledger.get(ref.series_uid).files == {"seg": str(kept)}

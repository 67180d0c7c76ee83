"""What to do with each series (from the ledger), recording what happened, and the local single-process engine.

The driver of a job (this process) alone owns the ledger and the report. Planning (:func:`plan_batch`) and
recording (:class:`BatchBook`) are separate from the processing loop so that another engine (Ray,
``custom_networks.pacs.ray_engine``) runs the same job with its own loop: it calls ``book.start(task)`` before a
series is handed out and ``book.finish(result)`` when its result comes back.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from custom_networks.pacs.client import SeriesRef
from custom_networks.pacs.ledger import (
    STATE_FAILED,
    STATE_INFERRED,
    STATE_QUEUED,
    STATE_RETRIEVED,
    STATE_STORED,
    STATE_VERIFIED,
    Ledger,
)
from custom_networks.pacs.processor import (
    FILE_NAMES,
    START_RETRIEVE,
    START_STORE,
    START_VERIFY,
    SeriesProcessor,
    SeriesResult,
    SeriesTask,
)
from custom_networks.pacs.report import OUTCOME_ALREADY_DONE, OUTCOME_FAILED, OUTCOME_SKIPPED, thumbnail_path
from custom_networks.pacs.selection import Selection

__all__ = ["BatchBook", "BatchPlan", "LocalEngine", "StopRequest", "plan_batch"]

logger = logging.getLogger(__name__)


class StopRequest:
    """Set by the first SIGINT/SIGTERM: the engine finishes the series in flight and starts no other. A second
    signal abandons the series in flight (``KeyboardInterrupt``); the ledger keeps its last committed state."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.signal_name = ""

    @property
    def requested(self) -> bool:
        return self.event.is_set()

    def request(self, name: str = "stop") -> None:
        self.signal_name = name
        self.event.set()

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; ``True`` when a stop was requested meanwhile."""
        return self.event.wait(seconds)

    @contextmanager
    def installed(self) -> Iterator[StopRequest]:
        """Handle SIGINT and SIGTERM while the block runs (main thread only)."""

        def handler(number, _frame) -> None:
            name = signal.Signals(number).name
            if self.requested:
                raise KeyboardInterrupt(name)
            logger.warning("%s: finishing the series in flight, then stopping (again to abandon it)", name)
            self.request(name)

        if threading.current_thread() is not threading.main_thread():
            # Python lets only the main thread install signal handlers; a job run from another thread is stopped
            # by calling request()
            yield self
            return
        previous = {number: signal.signal(number, handler) for number in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for number, old in previous.items():
                signal.signal(number, old)


@dataclass(frozen=True)
class BatchPlan:
    """The tasks to run now, and per series not run the outcome and reason (``series_uid`` -> pair)."""

    tasks: tuple[SeriesTask, ...]
    not_run: dict[str, tuple[str, str]] = field(default_factory=dict)
    series: dict[str, SeriesRef] = field(default_factory=dict)


def plan_batch(selection: Selection, ledger: Ledger, retry_failed: bool, results_dir: Path) -> BatchPlan:
    """Decide per series from its ledger row: verified ones are already done; failed ones wait for
    ``retry_failed``; a SEG computed but not stored (still in ``results_dir``) is only stored again; a stored one
    is only confirmed; anything else is processed from the start. Selection failures are recorded as failed."""
    tasks: list[SeriesTask] = []
    not_run: dict[str, tuple[str, str]] = {}
    series = {}
    for ref, reason in selection.skipped:
        series[ref.series_uid] = ref
        not_run[ref.series_uid] = (OUTCOME_SKIPPED, reason)
    for ref, reason in selection.failed:
        series[ref.series_uid] = ref
        if ledger.enqueue(ref).state == STATE_VERIFIED:
            # its SEG is on the PACS; a series that arrived later and ties with it does not undo that
            not_run[ref.series_uid] = (OUTCOME_ALREADY_DONE, "")
            continue
        ledger.set_state(ref.series_uid, STATE_FAILED, last_error=reason, failed_stage="select")
        not_run[ref.series_uid] = (OUTCOME_FAILED, reason)
    for ref in selection.chosen:
        series[ref.series_uid] = ref
        row = ledger.enqueue(ref)
        seg_kept = (Path(results_dir) / ref.series_uid / FILE_NAMES["seg"]).is_file()
        if row.state == STATE_VERIFIED:
            not_run[ref.series_uid] = (OUTCOME_ALREADY_DONE, "")
        elif row.state == STATE_FAILED and not retry_failed:
            not_run[ref.series_uid] = (OUTCOME_FAILED,
                                       f"failed earlier (retry_failed=True processes it again): {row.last_error}")
        elif row.state == STATE_STORED:
            tasks.append(SeriesTask(ref, START_VERIFY))
        elif seg_kept and (row.state == STATE_INFERRED or row.failed_stage in ("store", "verify")):
            tasks.append(SeriesTask(ref, START_STORE))
        else:
            tasks.append(SeriesTask(ref, START_RETRIEVE))
    return BatchPlan(tuple(tasks), not_run, series)


class BatchBook:
    """The driver's record of a batch: ledger states as series progress, results, report thumbnails.

    Args:
        ledger: the job's ledger.
        report_dir: where thumbnails go (``thumbnails/<series UID>.png``); ``None``: no report, no thumbnails.
    """

    def __init__(self, ledger: Ledger, report_dir: Path | None) -> None:
        self.ledger = ledger
        self.report_dir = Path(report_dir) if report_dir is not None else None
        self.results: dict[str, SeriesResult] = {}
        self.in_flight: set[str] = set()

    def start(self, task: SeriesTask) -> None:
        """A series is handed to a processor: one more attempt."""
        self.ledger.start_attempt(task.series.series_uid)
        if task.start == START_RETRIEVE:
            self.ledger.set_state(task.series.series_uid, STATE_QUEUED)
        self.in_flight.add(task.series.series_uid)

    def stage(self, task: SeriesTask, state: str, fields: dict) -> None:
        """A series reached ``retrieved``, ``inferred`` or ``stored`` (the local engine reports each)."""
        if state not in (STATE_RETRIEVED, STATE_INFERRED, STATE_STORED):
            raise ValueError(f"not a stage state: {state}")
        self.ledger.set_state(task.series.series_uid, state, **fields)

    def finish(self, result: SeriesResult) -> None:
        """Record how a series ended; a failure keeps the SEG path so that a retry may only store it."""
        uid = result.series.series_uid
        self.in_flight.discard(uid)
        self.results[uid] = result
        common = {"seconds": result.seconds, "seg_series_uid": result.seg_series_uid,
                  "seg_sop_uid": result.seg_sop_uid}
        if result.segments:
            common["segments"] = list(result.segments)
        if result.state == STATE_VERIFIED:
            self.ledger.set_state(uid, STATE_VERIFIED, last_error="", failed_stage="", files=result.files, **common)
        else:
            self.ledger.set_state(uid, STATE_FAILED, last_error=result.reason, failed_stage=result.failed_stage,
                                  **common)
            logger.warning("series %s failed (%s): %s", uid, result.failed_stage, result.reason)
        if result.thumbnail_png and self.report_dir is not None:
            from custom_networks.atomic_files import atomic_path

            with atomic_path(thumbnail_path(self.report_dir, uid)) as temporary:
                temporary.write_bytes(result.thumbnail_png)


class LocalEngine:
    """Series one after the other in this process, with one :class:`SeriesProcessor` (one model load).

    Args:
        processor: built once for the job.
        work_dir: scratch folder for retrieved series.
    """

    def __init__(self, processor: SeriesProcessor, work_dir: Path) -> None:
        self.processor = processor
        self.work_dir = Path(work_dir)

    def run(self, tasks: Sequence[SeriesTask], book: BatchBook, stop: StopRequest) -> None:
        """Process ``tasks`` in order until done or a stop is requested."""
        self.work_dir.mkdir(parents=True, exist_ok=True)
        for number, task in enumerate(tasks, start=1):
            if stop.requested:
                logger.warning("stopped (%s) before series %d of %d", stop.signal_name, number, len(tasks))
                return
            book.start(task)
            result = self.processor.process(task, self.work_dir, on_stage=book.stage)
            book.finish(result)
            logger.info("[%d/%d] series %s: %s %s", number, len(tasks), task.series.series_uid, result.state,
                        result.reason)

    def close(self) -> None:
        self.processor.close()

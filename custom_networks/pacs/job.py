"""A whole batch job: lock the ledger, clean up after a killed run, query, select, plan, run an engine, report.

With ``watch`` the query is repeated every ``poll_interval_s`` and new matching series are processed as they
arrive, until SIGINT/SIGTERM. The exit status is 0 when every series is done (now or before) or skipped by the
bundle's rules, 1 when some failed or the PACS could not be queried, 130 when abandoned by a second signal.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import fcntl
import logging
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from custom_networks.atomic_files import TEMP_PREFIX
from custom_networks.errors import InputError
from custom_networks.pacs.client import PacsAuthError, PacsError, QueryFilters
from custom_networks.pacs.connect import PacsConnection
from custom_networks.pacs.engine import BatchBook, BatchPlan, LocalEngine, StopRequest, plan_batch
from custom_networks.pacs.ledger import STATE_VERIFIED, JobKey, Ledger
from custom_networks.pacs.processor import OutputOptions, SeriesProcessor
from custom_networks.pacs.report import (
    OUTCOME_DONE,
    OUTCOME_FAILED,
    OUTCOME_NOT_RUN,
    ReportRow,
    thumbnail_path,
    write_report,
)
from custom_networks.pacs.retry import with_retries
from custom_networks.pacs.selection import select_per_study
from custom_networks.runtime import BundleRequest

__all__ = ["EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_OK", "JobOptions", "run_job"]

EXIT_OK, EXIT_FAILED, EXIT_INTERRUPTED = 0, 1, 130
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobOptions:
    """A whole job.

    Args:
        connection: the PACS.
        request: the bundle and model each series runs through.
        outputs: where the SEGs go.
        filters: which series the query returns.
        ledger: the SQLite ledger file.
        report_dir: where the report goes.
        work_dir: scratch space (retrieved series; SEGs waiting to be stored in ``outputs.results_dir``).
        retry_failed: process series that failed in an earlier run again.
        engine: ``"local"`` or ``"ray"``.
        address: Ray cluster address (``None``: a local Ray instance).
        workers: Ray actors.
        threads_per_worker: CPUs each Ray actor reserves and the torch / onnxruntime threads it runs with
            (``None``: 1).
        watch: keep polling for new series.
        poll_interval_s: seconds between polls in watch mode.
        max_polls: stop watching after this many polls (``None``: until stopped).
        viewer_url: a DICOMweb viewer (OHIF's ``.../viewer``) the HTML report links each study to.
    """

    connection: PacsConnection
    request: BundleRequest
    outputs: OutputOptions
    filters: QueryFilters
    ledger: Path
    report_dir: Path
    work_dir: Path
    retry_failed: bool = False
    engine: str = "local"
    address: str | None = None
    workers: int = 2
    threads_per_worker: int | None = None
    watch: bool = False
    poll_interval_s: float = 30.0
    max_polls: int | None = None
    viewer_url: str | None = None


@contextmanager
def _ledger_lock(ledger: Path) -> Iterator[None]:
    """One job per ledger at a time (a second one would process the same series twice)."""
    ledger.parent.mkdir(parents=True, exist_ok=True)
    with open(ledger.with_name(ledger.name + ".lock"), "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InputError(f"ledger {ledger}: another job is running with this ledger", parameter="ledger") from None
        yield


def _clean_leftovers(options: JobOptions) -> None:
    """What a killed run leaves: its scratch folder and half-written files (``.partial-*``) of any output."""
    shutil.rmtree(options.work_dir / "tmp", ignore_errors=True)
    results = Path(options.outputs.results_dir)
    output_dir = options.outputs.output_dir
    for folder in (results, options.report_dir, Path(output_dir) if output_dir else None):
        if folder is None or not folder.is_dir():
            continue
        for path in folder.rglob(f"{TEMP_PREFIX}*"):
            path.unlink(missing_ok=True)
    if results.is_dir():
        for path in results.glob(".bundle-output-*"):
            shutil.rmtree(path, ignore_errors=True)


def _remove_empty(folder: Path) -> None:
    if not folder.is_dir():
        return
    for path in sorted(folder.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if path.is_dir() and not any(path.iterdir()):
            path.rmdir()
    if not any(folder.iterdir()):
        folder.rmdir()


def _make_engine(options: JobOptions, pacs):
    if options.engine == "local":
        processor = SeriesProcessor.build(options.connection, options.request, options.outputs, pacs=pacs)
        return LocalEngine(processor, options.work_dir / "tmp")
    if options.engine == "ray":
        try:
            from custom_networks.pacs.ray_engine import RayEngine
        except ImportError as error:
            raise InputError(f"engine ray: the Ray engine is not available ({error})", parameter="engine") from None
        return RayEngine(options.connection, options.request, options.outputs, address=options.address,
                         workers=options.workers, threads_per_worker=options.threads_per_worker)
    raise InputError(f"engine {options.engine}: expected local or ray", parameter="engine")


def _rows(plan: BatchPlan, book: BatchBook, report_dir: Path) -> list[ReportRow]:
    rows = []
    for uid, series in plan.series.items():
        entry = book.ledger.get(uid)
        outcome, reason = plan.not_run.get(uid, (OUTCOME_NOT_RUN, "the job stopped before this series"))
        if uid in book.results:
            result = book.results[uid]
            outcome = OUTCOME_DONE if result.state == STATE_VERIFIED else OUTCOME_FAILED
            reason = result.reason
        elif uid in book.in_flight:
            outcome, reason = OUTCOME_NOT_RUN, "abandoned in flight (interrupted); the next run resumes it"
        thumbnail = thumbnail_path(report_dir, uid)
        rows.append(ReportRow(
            series, entry.state if entry else "", outcome, reason, entry.attempts if entry else 0,
            entry.seg_series_uid if entry else "", entry.seg_sop_uid if entry else "",
            tuple(entry.segments) if entry else (), dict(entry.seconds) if entry else {},
            dict(entry.files) if entry else {},
            str(thumbnail.relative_to(report_dir)) if thumbnail.is_file() else "",
        ))
    return sorted(rows, key=lambda row: (row.series.study_uid, row.series.series_number or 0, row.series.series_uid))


def run_job(options: JobOptions) -> int:
    """Run the job; returns the exit status (see the module docstring).

    Raises:
        InputError: bad options, the ledger is in use, the PACS refused the credentials.
    """
    with _ledger_lock(options.ledger):
        _clean_leftovers(options)
        info = options.request.prepare()
        # every process of the job runs the model the driver resolved and hashed (the ledger's key)
        options = dataclasses.replace(options, request=options.request.pinned(info))
        key = JobKey(info.name, info.version, info.weights_sha256)
        started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        pacs = options.connection.open()
        retry = options.connection.retry
        results_dir = Path(options.outputs.results_dir)
        stop = StopRequest()
        with Ledger(options.ledger, key) as ledger, stop.installed():
            book = BatchBook(ledger, options.report_dir)
            engine = None
            plan = BatchPlan(())
            polls = 0
            try:
                while True:
                    polls += 1
                    query_started = time.perf_counter()
                    try:
                        found = with_retries(lambda: pacs.find_series(options.filters), retry,
                                             f"{pacs.name}: query")
                    except PacsAuthError as error:
                        raise InputError(str(error)) from None
                    except PacsError as error:
                        if not options.watch:
                            logger.error("query failed: %s", error)
                            _write(options, _rows(plan, book, options.report_dir), pacs.name, info, started,
                                   str(error))
                            return EXIT_FAILED
                        logger.warning("query failed, trying again at the next poll: %s", error)
                        found = []
                    query_seconds = round(time.perf_counter() - query_started, 4)
                    selection = select_per_study(found, info.rules)
                    new_plan = plan_batch(selection, ledger, options.retry_failed, results_dir)
                    plan = BatchPlan(new_plan.tasks, {**plan.not_run, **new_plan.not_run},
                                     {**plan.series, **new_plan.series})
                    if new_plan.tasks and engine is None:
                        engine = _make_engine(options, pacs)
                    if new_plan.tasks:
                        logger.info("%d series to process, %d not run", len(new_plan.tasks), len(new_plan.not_run))
                        engine.run(new_plan.tasks, book, stop)
                    rows = _rows(plan, book, options.report_dir)
                    _write(options, rows, pacs.name, info, started, "", query_seconds)
                    if not options.watch or stop.requested:
                        break
                    if options.max_polls is not None and polls >= options.max_polls:
                        break
                    if stop.wait(options.poll_interval_s):
                        break
                if any(row.outcome == OUTCOME_FAILED for row in rows):
                    return EXIT_FAILED
                # series left "not run" only when a stop request ended the batch early
                return EXIT_INTERRUPTED if any(row.outcome == OUTCOME_NOT_RUN for row in rows) else EXIT_OK
            except KeyboardInterrupt:
                _write(options, _rows(plan, book, options.report_dir), pacs.name, info, started, "interrupted")
                return EXIT_INTERRUPTED
            finally:
                if engine is not None:
                    engine.close()
                pacs.close()
                shutil.rmtree(options.work_dir / "tmp", ignore_errors=True)
                _remove_empty(results_dir)
                with contextlib.suppress(OSError):
                    options.work_dir.rmdir()  # only when empty


def _write(options: JobOptions, rows: list[ReportRow], pacs_name: str, info, started: str, error: str,
           query_seconds: float | None = None) -> None:
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.outcome] = counts.get(row.outcome, 0) + 1
    run = {"bundle": info.name, "bundle_version": info.version, "weights_sha256": info.weights_sha256,
           "pacs": pacs_name, "engine": options.engine, "started": started, "counts": counts, "pid": os.getpid(),
           "query_seconds": query_seconds}
    if error:
        run["error"] = error
    paths = write_report(options.report_dir, rows, run, options.viewer_url)
    logger.info("report: %s", paths["html"])

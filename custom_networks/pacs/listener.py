"""An AI node the PACS pushes to: a DICOM storage SCP that segments each series once it is complete.

The PACS (a routing rule, an auto-routing script, a user's "send to") opens an association to the listener's AE
title and C-STOREs the instances of a study. The listener:

1. accepts associations only from the configured calling AE titles (others are rejected at association, "calling
   AE title not recognised") and addressed to its own AE title;
2. writes each instance under a temporary name, then renames it into the series' spool folder
   ``<spool>/<study UID>/<series UID>/<SOP UID>.dcm`` (:mod:`~custom_networks.pacs.spool`) before answering
   the C-STORE;
3. calls a series complete when no instance of it has arrived for ``complete_after`` seconds, and puts it in a
   bounded queue (when the queue is full, complete series wait in the spool: back-pressure on the processing side,
   the PACS keeps sending);
4. routes each complete series by the rules file (:mod:`~custom_networks.pacs.routing`): a series that no rule
   matches, or that a rule ignores, is recorded as skipped; the others run through the batch job's own
   :class:`~custom_networks.pacs.processor.SeriesProcessor`, ledger (:func:`~custom_networks.pacs.engine.plan_batch`,
   :class:`~custom_networks.pacs.engine.BatchBook`) and deterministic SEG / SR UIDs, with a
   :class:`~custom_networks.pacs.spool.SpoolClient` that takes the series from the spool and stores the results
   on the destination PACS (C-STORE or STOW-RS, confirmed by a query) and/or in the output folder;
5. removes the series' spool folder once the series reached a final state (verified, failed or skipped).

Restart safety: the spool keeps every series until it is final and the ledger keeps each series' state, so a
listener killed at any moment (``kill -9``) and started again removes half-written files, finds every series in
the spool (a series whose last instance arrived ``complete_after`` seconds ago or more is complete at once; the
others wait for the rest of their timeout) and finishes them from their ledger state; the deterministic UIDs make
a result stored twice one result. A series pushed again after its result was confirmed is recorded ``already
done``; one that failed is processed again. Only one listener (or ``pacs-batch`` job) uses a ledger at a time.

Workers: ``workers`` threads in this process, each with its own engine per bundle (model loaded once per worker
and bundle, on the first series routed to it). With ``engine="local"`` that is a
:class:`~custom_networks.pacs.engine.LocalEngine` in this process; with ``engine="ray"`` a
:class:`~custom_networks.pacs.ray_engine.RayEngine` of one actor (``pacs-batch``'s engine: ``threads_per_worker``
CPUs and threads, a dead actor replaced and its series handed to the new one once), so ``workers`` series run at
once on the Ray cluster at ``address`` (or a local instance the listener starts and stops). An actor reads its
series from the spool by path (:class:`~custom_networks.pacs.spool.SpoolConnection`) and stores the results on the
destination itself: on one machine that is the same disk; on several Ray nodes the spool, the work folder and any
output folder must be a shared file system mounted at the same path on every node, and every node must reach the
destination PACS. A local instance has ``workers x threads_per_worker`` CPUs per bundle rule (a worker keeps one
actor per bundle it has run, and runs one series at a time).

The audit log (JSON lines, :class:`~custom_networks.pacs.audit.AuditLog`) records, with the UTC time:

- ``listener_started`` / ``listener_stopped``: AE title, address, allowed calling AE titles, rules, destination;
- ``series_resumed``: a series found in the spool at start (instances, seconds since its last instance);
- ``association_opened`` / ``association_rejected`` / ``association_closed``: calling and called AE title, peer
  address; on close how it ended, its duration, and the instances received per series UID;
- ``series_complete`` (instances, idle seconds), ``series_queued``, ``series_skipped`` (reason),
  ``series_sent`` (destination, seconds), ``series_processed`` (rule, bundle, outcome ``done`` / ``failed`` /
  ``already done``, one-line reason, SEG UIDs, seconds in all and per stage).

UIDs, AE titles and addresses only: no patient name, ID or birth date, no series description.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import fcntl
import json
import logging
import os
import queue
import shutil
import socket
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification

from custom_networks.atomic_files import TEMP_PREFIX
from custom_networks.errors import InputError
from custom_networks.pacs.audit import AuditLog
from custom_networks.pacs.client import PacsError, SeriesRef
from custom_networks.pacs.connect import DIMSE_SPEC, PacsConnection, open_pacs
from custom_networks.pacs.credentials import Credentials
from custom_networks.pacs.engine import BatchBook, LocalEngine, StopRequest, plan_batch
from custom_networks.pacs.ledger import STATE_FAILED, STATE_STORED, STATE_VERIFIED, JobKey, Ledger
from custom_networks.pacs.processor import OutputOptions, SeriesProcessor, SeriesResult, SeriesTask
from custom_networks.pacs.ray_engine import RayEngine, start_ray
from custom_networks.pacs.report import (
    OUTCOME_DONE,
    OUTCOME_FAILED,
    OUTCOME_NOT_RUN,
    OUTCOME_SKIPPED,
    ReportRow,
    thumbnail_path,
    write_report,
)
from custom_networks.pacs.retry import RetryPolicy
from custom_networks.pacs.routing import RoutingRule, RoutingRules
from custom_networks.pacs.selection import Selection
from custom_networks.pacs.spool import (
    SpoolClient,
    SpoolConnection,
    SpooledSeries,
    read_spooled_series,
    remove_spooled,
    safe_uid,
    series_folder,
    spooled_files,
    spooled_series,
    write_instance,
)
from custom_networks.runtime import BundleRequest

__all__ = ["EXIT_ABANDONED", "EXIT_OK", "Listener", "ListenerOptions", "check_ae_title"]

logger = logging.getLogger(__name__)
# pynetdicom logs data sets at INFO (patient names and IDs among them): warnings only, unless the application set it
_PYNETDICOM_LOGGER = logging.getLogger("pynetdicom")
if _PYNETDICOM_LOGGER.level == logging.NOTSET:
    _PYNETDICOM_LOGGER.setLevel(logging.WARNING)

EXIT_OK, EXIT_ABANDONED = 0, 130
# C-STORE statuses: success; out of resources (the spool cannot be written); cannot understand (no usable UIDs)
_SUCCESS, _OUT_OF_RESOURCES, _CANNOT_UNDERSTAND = 0x0000, 0xA700, 0xC000
_RECEIVING, _QUEUED, _PROCESSING = "receiving", "queued", "processing"
# outcomes of the listener's own table in the ledger file: routed to a bundle (its state is in the ledger's series
# table), skipped, or failed before routing (no readable header)
_ROUTED = "routed"
_SEEN_SCHEMA = """
CREATE TABLE IF NOT EXISTS listener_series (
    series_uid TEXT PRIMARY KEY,
    study_uid TEXT NOT NULL,
    modality TEXT NOT NULL DEFAULT '',
    series_description TEXT NOT NULL DEFAULT '',
    series_number INTEGER,
    n_instances INTEGER,
    rule TEXT NOT NULL DEFAULT '',
    outcome TEXT NOT NULL CHECK (outcome IN ('routed', 'skipped', 'failed')),
    reason TEXT NOT NULL DEFAULT '',
    bundle TEXT NOT NULL DEFAULT '',
    bundle_version TEXT NOT NULL DEFAULT '',
    weights_sha256 TEXT NOT NULL DEFAULT '',
    updated TEXT NOT NULL
)
"""


def check_ae_title(title: str, parameter: str) -> str:
    """``title`` stripped, if it is a valid AE title (1 to 16 characters, no backslash or control character).

    Raises:
        InputError: it is not (the message starts with ``parameter``).
    """
    text = str(title).strip()
    if not 0 < len(text) <= 16 or "\\" in text or any(ord(c) < 32 or ord(c) > 126 for c in text):
        raise InputError(f"{parameter} {title!r}: an AE title is 1 to 16 printable ASCII characters without "
                         "backslash", parameter=parameter)
    return text


@dataclass(frozen=True)
class ListenerOptions:
    """How the listener runs.

    Args:
        ae_title: the node's AE title (the PACS's routing rule sends to it; the node sends results from it).
        port: the port it listens on.
        allowed_aets: calling AE titles accepted (the PACS's own AE title); others are rejected at association.
        rules: the routing rules (:func:`~custom_networks.pacs.routing.load_rules`).
        spool: the spool folder.
        ledger: the SQLite ledger (shared format with ``pacs-batch``).
        audit: the JSON-lines audit log.
        host: the address it listens on (default 127.0.0.1; a PACS on another machine needs an interface it reaches).
        complete_after: seconds without a new instance after which a series is complete.
        send_to: where results go: a DIMSE peer ``AE@host:port`` (C-STORE, confirmed by C-FIND) or a DICOMweb
            base URL (STOW-RS, confirmed by QIDO-RS); ``None``: only ``output_dir``.
        credentials: for a DICOMweb ``send_to``.
        output_dir: also (or only) keep the results in this folder, ``<study>/<series>/seg.dcm``.
        write_nifti: with ``output_dir``, keep the NIfTI mask too.
        workers: series processed at the same time (threads, each with its own model in this process or on a Ray
            actor).
        queue_size: complete series waiting for a worker, at most (default: twice ``workers``).
        work_dir: scratch space and results waiting to be stored (default ``<ledger>.work``).
        report_dir: write the ``pacs-batch`` report (series.csv/json, index.html) there after each series.
        timeout_s: seconds per network step (associations, DIMSE messages, HTTP requests).
        retry: backoff for transient failures of the destination.
        engine: ``"local"`` (the models in this process) or ``"ray"`` (on Ray actors).
        address: Ray cluster address (``auto``, ``host:6379``); ``None`` starts a local Ray instance.
        threads_per_worker: with ``engine="ray"``, CPUs each actor reserves and the threads it runs with
            (``None``: 1).
    """

    ae_title: str
    port: int
    allowed_aets: tuple[str, ...]
    rules: RoutingRules
    spool: Path
    ledger: Path
    audit: Path
    host: str = "127.0.0.1"
    complete_after: float = 60.0
    send_to: str | None = None
    credentials: Credentials | None = None
    output_dir: Path | None = None
    write_nifti: bool = False
    workers: int = 1
    queue_size: int | None = None
    work_dir: Path | None = None
    report_dir: Path | None = None
    timeout_s: float = 30.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    engine: str = "local"
    address: str | None = None
    threads_per_worker: int | None = None


def _check(options: ListenerOptions) -> ListenerOptions:
    """The options with AE titles stripped, or an :class:`InputError` naming the first bad one."""
    ae_title = check_ae_title(options.ae_title, "ae_title")
    if not options.allowed_aets:
        raise InputError("allowed_aets: give the calling AE title(s) of the PACS allowed to send",
                         parameter="allowed_aets")
    allowed = tuple(dict.fromkeys(check_ae_title(title, "allowed_aets") for title in options.allowed_aets))
    if not 0 <= int(options.port) < 65536:
        raise InputError(f"port {options.port}: expected 0 to 65535", parameter="port")
    if not options.complete_after > 0:
        raise InputError(f"complete_after {options.complete_after}: seconds, more than 0", parameter="complete_after")
    if options.workers < 1:
        raise InputError(f"workers {options.workers}: at least 1", parameter="workers")
    if options.engine not in ("local", "ray"):
        raise InputError(f"engine {options.engine}: expected local or ray", parameter="engine")
    if options.address and options.engine != "ray":
        raise InputError("address: only for engine ray", parameter="address")
    if options.threads_per_worker is not None and options.threads_per_worker < 1:
        raise InputError(f"threads_per_worker {options.threads_per_worker}: at least 1",
                         parameter="threads_per_worker")
    if options.queue_size is not None and options.queue_size < 1:
        raise InputError(f"queue_size {options.queue_size}: at least 1", parameter="queue_size")
    if options.send_to is None and options.output_dir is None:
        raise InputError("send_to: give a destination PACS (send_to) and/or an output folder (output_dir)",
                         parameter="send_to")
    if options.send_to is not None and not (options.send_to.startswith(("http://", "https://"))
                                            or DIMSE_SPEC.match(options.send_to)):
        raise InputError(f"send_to {options.send_to}: expected a DIMSE peer AE@host:port or a DICOMweb URL "
                         "http(s)://host:port/path", parameter="send_to")
    if options.write_nifti and options.output_dir is None:
        raise InputError("write_nifti: the NIfTI masks go to output_dir; give it", parameter="write_nifti")
    if not options.rules.bundle_rules():
        raise InputError(f"rules {options.rules.source}: no rule names a bundle; every series would be skipped",
                         parameter="rules")
    return dataclasses.replace(options, ae_title=ae_title, allowed_aets=allowed, port=int(options.port))


@contextlib.contextmanager
def _exclusive(path: Path, parameter: str, what: str) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if new) while the block runs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InputError(f"{parameter} {what}: another listener or job is using it", parameter=parameter) from None
        yield


@dataclass(frozen=True)
class _PreparedRule:
    """A bundle rule resolved at start: its request pinned to the model file hashed, and the ledger key."""

    rule: RoutingRule
    request: BundleRequest
    key: JobKey

    @property
    def request_id(self) -> str:
        """Identifies the model a processor runs (rules naming the same bundle and model share processors)."""
        return json.dumps(dataclasses.asdict(self.request), sort_keys=True, default=str)


@dataclass
class _Pending:
    """A series in the spool that has not reached a final state."""

    study_uid: str
    series_uid: str
    last_arrival: float
    state: str = _RECEIVING


class _SeriesTracker:
    """Which series are receiving, queued or processing. ``lock`` also guards the spool's files: the storage
    handler writes and the workers remove instances under it, so a series folder is never removed under a write."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._series: dict[str, _Pending] = {}

    def arrived(self, study_uid: str, series_uid: str, when: float) -> None:
        """An instance was spooled (the caller holds ``lock``)."""
        pending = self._series.get(series_uid)
        if pending is None:
            self._series[series_uid] = _Pending(study_uid, series_uid, when)
        else:
            pending.last_arrival = max(pending.last_arrival, when)

    def take_due(self, now: float, complete_after: float) -> list[_Pending]:
        """The receiving series with no instance for ``complete_after`` seconds, now marked queued."""
        with self.lock:
            due = [p for p in self._series.values() if p.state == _RECEIVING and now - p.last_arrival >= complete_after]
            for pending in due:
                pending.state = _QUEUED
        return due

    def set_state(self, series_uid: str, state: str) -> None:
        """(The caller holds ``lock``.)"""
        if series_uid in self._series:
            self._series[series_uid].state = state

    def done(self, series_uid: str, folder_gone: bool) -> None:
        """A series reached a final state (the caller holds ``lock``): forgotten, or receiving again when
        instances arrived while it was processed."""
        if folder_gone:
            self._series.pop(series_uid, None)
        elif series_uid in self._series:
            self._series[series_uid].state = _RECEIVING

    @property
    def busy(self) -> bool:
        with self.lock:
            return bool(self._series)


class _SeenSeries:
    """The listener's own table in the ledger file: each series it took in, its rule and outcome (routed to a
    bundle, skipped, or failed before routing). One instance per thread (SQLite connections stay in theirs)."""

    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(path, isolation_level=None, timeout=30)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(_SEEN_SCHEMA)

    def record(self, series: SeriesRef, outcome: str, rule: str = "", reason: str = "",
               key: JobKey | None = None) -> None:
        now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")
        key_values = (key.bundle, key.bundle_version, key.weights_sha256) if key else ("", "", "")
        self._db.execute(
            "INSERT OR REPLACE INTO listener_series (series_uid, study_uid, modality, series_description, "
            "series_number, n_instances, rule, outcome, reason, bundle, bundle_version, weights_sha256, updated) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (series.series_uid, series.study_uid, series.modality, series.series_description, series.series_number,
             series.n_instances, rule, outcome, reason, *key_values, now),
        )

    def rows(self) -> list[sqlite3.Row]:
        return list(self._db.execute("SELECT * FROM listener_series ORDER BY study_uid, series_number, series_uid"))

    def close(self) -> None:
        self._db.close()


class _Worker:
    """One worker thread's own objects: spool client, ledger connections, engines (one per model)."""

    def __init__(self, number: int, listener: Listener) -> None:
        options = listener.options
        self.number = number
        self.listener = listener
        destination = None
        if options.send_to is not None and options.engine == "local":
            # on Ray each actor opens its own (SpoolConnection)
            destination = open_pacs(options.send_to, options.credentials, timeout=options.timeout_s,
                                    calling_aet=options.ae_title)
        self.client = SpoolClient(options.spool, destination)
        self.work_dir = listener.work_dir / "tmp" / f"worker-{number}"
        self.seen = _SeenSeries(options.ledger)
        self._ledgers: dict[JobKey, Ledger] = {}
        self._engines: dict[str, LocalEngine | RayEngine] = {}

    def ledger(self, key: JobKey) -> Ledger:
        if key not in self._ledgers:
            self._ledgers[key] = Ledger(self.listener.options.ledger, key)
        return self._ledgers[key]

    def engine(self, prepared: _PreparedRule) -> LocalEngine | RayEngine:
        """The engine of the rule's model, built (the model loaded, here or on a Ray actor) on first use."""
        request_id = prepared.request_id
        if request_id not in self._engines:
            build = self._ray_engine if self.listener.options.engine == "ray" else self._local_engine
            self._engines[request_id] = build(prepared.request)
        return self._engines[request_id]

    def _local_engine(self, request: BundleRequest) -> LocalEngine:
        from custom_networks.runtime import Segmenter  # torch and MONAI load here

        listener = self.listener
        with listener.build_lock:
            output = listener.results_dir / f".bundle-output-{os.getpid()}-{self.number}-{len(self._engines)}"
            segmenter = Segmenter(request.prepare(), output)
        processor = SeriesProcessor(self.client, segmenter, listener.outputs, listener.options.retry)
        return LocalEngine(processor, self.work_dir)

    def _ray_engine(self, request: BundleRequest) -> RayEngine:
        listener = self.listener
        options = listener.options
        return RayEngine(listener.spool_connection(), request, listener.outputs, workers=1,
                         threads_per_worker=options.threads_per_worker, work_dir=self.work_dir)

    def close(self) -> None:
        for engine in self._engines.values():
            engine.close()
        self.client.close()
        for ledger in self._ledgers.values():
            ledger.close()
        self.seen.close()
        shutil.rmtree(self.work_dir, ignore_errors=True)


class _NodeBook(BatchBook):
    """The batch job's book of one series, also telling the audit log when its results were sent."""

    def __init__(self, ledger: Ledger, report_dir: Path | None, on_stored: Callable[[SeriesTask, dict], None]) -> None:
        super().__init__(ledger, report_dir)
        self._on_stored = on_stored

    def stage(self, task: SeriesTask, state: str, fields: dict) -> None:
        super().stage(task, state, fields)
        if state == STATE_STORED:
            self._on_stored(task, fields)


class Listener:
    """The AI node (see the module docstring): :meth:`start` and :meth:`stop` it, or :meth:`serve` until a signal.

    Args:
        options: how it runs; checked here (:class:`InputError` naming the parameter).
    """

    def __init__(self, options: ListenerOptions) -> None:
        self.options = _check(options)
        self.work_dir = Path(options.work_dir or Path(options.ledger).with_name(Path(options.ledger).name + ".work"))
        self.results_dir = self.work_dir / "results"
        self.outputs = OutputOptions(
            results_dir=str(self.results_dir),
            store_pacs=options.send_to is not None,
            output_dir=str(options.output_dir) if options.output_dir is not None else None,
            write_nifti=options.write_nifti,
        )
        self.build_lock = threading.Lock()
        self._tracker = _SeriesTracker()
        self._queue: queue.Queue = queue.Queue(maxsize=options.queue_size or 2 * options.workers)
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._prepared: dict[str, _PreparedRule] = {}
        self._associations: dict[int, dict] = {}
        self._association_lock = threading.Lock()
        self._association_count = 0
        self._report_lock = threading.Lock()
        self._locks = contextlib.ExitStack()
        self._server = None
        self._audit: AuditLog | None = None
        self._listening = False
        self._owns_ray = False
        self.port = self.options.port
        self.destinations = self._destination_names()

    # ---- start and stop ---------------------------------------------------------------------------------------

    @property
    def address(self) -> str:
        return f"{self.options.ae_title}@{self.options.host}:{self.port}"

    def start(self) -> Listener:
        """Lock the ledger and spool, clean what a killed listener left, resolve the rules' bundles, take up the
        spooled series, then start the workers, the completion watcher and the storage SCP.

        Raises:
            InputError: the ledger or spool is in use, a rule's bundle cannot be prepared, the port is taken.
        """
        options = self.options
        if self._stopping.is_set():
            raise RuntimeError("a Listener starts once; make a new one")
        try:
            ledger = Path(options.ledger)
            self._locks.enter_context(_exclusive(ledger.with_name(ledger.name + ".lock"), "ledger", str(ledger)))
            Path(options.spool).mkdir(parents=True, exist_ok=True)
            self._locks.enter_context(_exclusive(Path(options.spool) / ".lock", "spool", str(options.spool)))
            self._clean_leftovers()
            self._prepare_rules()
            if options.engine == "ray":
                self._start_ray()
            _SeenSeries(ledger).close()  # the table exists before any worker reads it
            self._audit = AuditLog(options.audit)
            self._resume_spool()
            for number in range(1, options.workers + 1):
                self._start_thread(f"listener-worker-{number}", self._work, number)
            self._start_thread("listener-completion", self._watch_completion)
            self._start_server()
        except BaseException:
            self.stop()
            raise
        self._audit.record(
            "listener_started", ae_title=options.ae_title, host=options.host, port=self.port,
            allowed_aets=list(options.allowed_aets), complete_after_s=options.complete_after,
            workers=options.workers, engine=options.engine, rules=[rule.name for rule in options.rules.rules],
            destination=self.destinations, pid=os.getpid(),
        )
        self._listening = True
        logger.info("listening as %s for %s", self.address, ", ".join(options.allowed_aets))
        return self

    def stop(self, wait: bool = True) -> None:
        """Stop receiving, let each worker finish the series in flight (unless ``wait`` is false), release the
        locks. Queued and receiving series stay in the spool for the next start."""
        self._stopping.set()
        if self._server is not None:
            server, self._server = self._server, None
            server.shutdown()  # stops accepting; associations already open go on unless aborted
            for association in server.active_associations:
                association.abort()
        if wait:
            for thread in self._threads:
                thread.join()
        self._threads = []
        if self._audit is not None:
            if self._listening:
                self._audit.record("listener_stopped", ae_title=self.options.ae_title, abandoned=not wait)
            self._audit.close()
            self._audit = None
        if self._owns_ray:
            import ray

            ray.shutdown()
            self._owns_ray = False
        if wait:
            shutil.rmtree(self.work_dir / "tmp", ignore_errors=True)
            for folder in (self.results_dir, self.work_dir):
                with contextlib.suppress(OSError):
                    folder.rmdir()  # only when empty
        self._locks.close()

    def __enter__(self) -> Listener:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def serve(self, stop: StopRequest | None = None, on_ready: Callable[[Listener], None] | None = None) -> int:
        """Run until SIGINT/SIGTERM (or ``stop.request()``); the series in flight are finished first, a second
        signal abandons them. Returns the exit status: 0, or 130 when abandoned."""
        stop = stop or StopRequest()
        with stop.installed():
            self.start()
            try:
                if on_ready is not None:
                    on_ready(self)
                while not stop.wait(1.0):
                    pass
                self.stop()
            except KeyboardInterrupt:
                self.stop(wait=False)
                return EXIT_ABANDONED
        return EXIT_OK

    def wait_idle(self, timeout: float) -> bool:
        """Wait until every received series reached a final state; ``False`` if ``timeout`` seconds passed first."""
        deadline = time.monotonic() + timeout
        while self._tracker.busy:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def _start_thread(self, name: str, target: Callable, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _start_ray(self) -> None:
        """Join the Ray cluster at ``address``, or start a local instance stopped with the listener; in a process
        where Ray runs already (a test's instance) that one is used."""
        import ray

        if ray.is_initialized():
            return
        options = self.options
        bundle_models = len({prepared.request_id for prepared in self._prepared.values()})
        start_ray(options.address, options.workers * (options.threads_per_worker or 1) * bundle_models)
        self._owns_ray = True

    def spool_connection(self) -> SpoolConnection:
        """How a Ray actor opens the spool and the destination (each actor its own connection)."""
        options = self.options
        destination = None
        if options.send_to is not None:
            destination = PacsConnection(options.send_to, options.credentials, timeout_s=options.timeout_s,
                                         retry=options.retry, calling_aet=options.ae_title)
        return SpoolConnection(str(Path(options.spool).resolve()), destination, options.retry)

    def _destination_names(self) -> list[str]:
        """How the audit log names where results go (opening the destination checks ``send_to``)."""
        found = []
        if self.options.send_to is not None:
            try:
                client = open_pacs(self.options.send_to, self.options.credentials, calling_aet=self.options.ae_title)
            except (InputError, PacsError) as error:
                raise InputError(f"send_to {self.options.send_to}: {error}", parameter="send_to") from None
            found.append(client.name)
            client.close()
        if self.options.output_dir is not None:
            found.append("output folder")
        return found

    def _clean_leftovers(self) -> None:
        """What a killed listener leaves: scratch folders, bundle outputs and half-written files of any output."""
        shutil.rmtree(self.work_dir / "tmp", ignore_errors=True)
        folders = [self.results_dir, self.options.output_dir, self.options.report_dir]
        for folder in (Path(f) for f in folders if f is not None):
            if folder.is_dir():
                for path in folder.rglob(f"{TEMP_PREFIX}*"):
                    path.unlink(missing_ok=True)
        if self.results_dir.is_dir():
            for path in self.results_dir.glob(".bundle-output-*"):
                shutil.rmtree(path, ignore_errors=True)

    def _prepare_rules(self) -> None:
        """Resolve each bundle rule once (config stack, model file, its SHA-256: the ledger key), so that a bad
        rule stops the start, not the first series."""
        for rule in self.options.rules.bundle_rules():
            try:
                run = rule.request.prepare()
            except InputError as error:
                raise InputError(f"rules {self.options.rules.source}: rule '{rule.name}': {error}",
                                 parameter="rules") from None
            self._prepared[rule.name] = _PreparedRule(rule, rule.request.pinned(run),
                                                      JobKey(run.name, run.version, run.weights_sha256))

    def _resume_spool(self) -> None:
        """Take up every series a previous listener left in the spool; its last instance's time starts the
        timeout."""
        now = time.time()
        for study_uid, series_uid, last in spooled_series(self.options.spool):
            with self._tracker.lock:
                self._tracker.arrived(study_uid, series_uid, min(last, now))
            instances = len(spooled_files(series_folder(self.options.spool, study_uid, series_uid)))
            self._audit.record("series_resumed", study_uid=study_uid, series_uid=series_uid, instances=instances,
                               idle_s=round(max(now - last, 0.0), 3))

    # ---- the storage SCP --------------------------------------------------------------------------------------

    def _start_server(self) -> None:
        options = self.options
        ae = AE(ae_title=options.ae_title)
        ae.require_calling_aet = list(options.allowed_aets)
        ae.require_called_aet = True
        for attribute in ("acse_timeout", "dimse_timeout", "network_timeout"):
            setattr(ae, attribute, options.timeout_s)
        syntaxes = [str(uid) for uid in ALL_TRANSFER_SYNTAXES]
        for context in AllStoragePresentationContexts:
            ae.add_supported_context(context.abstract_syntax, syntaxes)
        ae.add_supported_context(Verification)
        handlers = [
            (evt.EVT_CONN_OPEN, self._on_connection),
            (evt.EVT_ACCEPTED, self._on_accepted),
            (evt.EVT_REJECTED, self._on_rejected),
            (evt.EVT_CONN_CLOSE, self._on_closed),
            (evt.EVT_C_STORE, self._on_store),
        ]
        try:
            self._server = ae.start_server((options.host, options.port), block=False, evt_handlers=handlers)
        except OSError as error:
            raise InputError(f"port {options.port}: cannot listen on {options.host}:{options.port} "
                             f"({error.strerror or error})", parameter="port") from None
        self.port = int(self._server.server_address[1])

    @staticmethod
    def _on_connection(event: evt.Event) -> None:
        """EVT_CONN_OPEN: no Nagle delay on the association's socket (about 40 ms per C-STORE response)."""
        event.assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    @staticmethod
    def _peer(event: evt.Event) -> str:
        return f"{event.assoc.requestor.address}:{event.assoc.requestor.port}"

    @staticmethod
    def _called_aet(event: evt.Event) -> str:
        primitive = event.assoc.requestor.primitive
        return str(getattr(primitive, "called_ae_title", "") or "").strip()

    def _on_accepted(self, event: evt.Event) -> None:
        with self._association_lock:
            self._association_count += 1
            number = self._association_count
            self._associations[id(event.assoc)] = {
                "number": number, "calling_aet": event.assoc.requestor.ae_title, "peer": self._peer(event),
                "opened": time.monotonic(), "instances": Counter(), "refused": 0,
            }
        self._record("association_opened", association=number, calling_aet=event.assoc.requestor.ae_title,
                     called_aet=self._called_aet(event), peer=self._peer(event))

    def _on_rejected(self, event: evt.Event) -> None:
        calling, called = event.assoc.requestor.ae_title, self._called_aet(event)
        if calling not in self.options.allowed_aets:
            reason = "calling AE title not allowed"
        elif called != self.options.ae_title:
            reason = "called AE title is not this node's"
        else:
            reason = "too many associations"
        logger.warning("association from %s at %s rejected: %s", calling, self._peer(event), reason)
        self._record("association_rejected", calling_aet=calling, called_aet=called, peer=self._peer(event),
                     reason=reason)

    def _on_closed(self, event: evt.Event) -> None:
        with self._association_lock:
            info = self._associations.pop(id(event.assoc), None)
        if info is None:
            return  # rejected, or never negotiated
        assoc = event.assoc
        how = "released" if getattr(assoc, "is_released", False) else (
            "aborted" if getattr(assoc, "is_aborted", False) else "closed")
        self._record("association_closed", association=info["number"], calling_aet=info["calling_aet"],
                     peer=info["peer"], how=how, seconds=round(time.monotonic() - info["opened"], 3),
                     instances=dict(info["instances"]), refused=info["refused"])

    def _on_store(self, event: evt.Event) -> int:
        """EVT_C_STORE: write the instance into its series' spool folder (temporary name, renamed)."""
        try:
            dataset = event.dataset
            study_uid = safe_uid(dataset.get("StudyInstanceUID"))
            series_uid = safe_uid(dataset.get("SeriesInstanceUID"))
            sop_uid = safe_uid(event.request.AffectedSOPInstanceUID)
        except Exception as error:  # noqa: BLE001 - an undecodable data set is the sender's problem, not a crash
            logger.warning("refused an instance whose data set cannot be decoded (%s)", type(error).__name__)
            return self._refused(event, _CANNOT_UNDERSTAND)
        if not (study_uid and series_uid and sop_uid):
            logger.warning("refused an instance without valid study, series and SOP instance UIDs")
            return self._refused(event, _CANNOT_UNDERSTAND)
        if self._stopping.is_set():
            return self._refused(event, _OUT_OF_RESOURCES)
        try:
            data = event.encoded_dataset()
            with self._tracker.lock:
                write_instance(self.options.spool, study_uid, series_uid, sop_uid, data)
                self._tracker.arrived(study_uid, series_uid, time.time())
        except OSError as error:
            logger.error("spool %s: cannot write an instance of series %s: %s", self.options.spool, series_uid,
                         error.strerror or error)
            return self._refused(event, _OUT_OF_RESOURCES)
        with self._association_lock:
            info = self._associations.get(id(event.assoc))
            if info is not None:
                info["instances"][series_uid] += 1
        return _SUCCESS

    def _refused(self, event, status: int) -> int:
        with self._association_lock:
            info = self._associations.get(id(event.assoc))
            if info is not None:
                info["refused"] += 1
        return status

    # ---- completion, queue and workers ------------------------------------------------------------------------

    def _record(self, event: str, **fields: object) -> None:
        audit = self._audit
        if audit is not None:
            audit.record(event, **fields)

    def _watch_completion(self) -> None:
        """Queue each series once no instance has arrived for ``complete_after`` seconds."""
        complete_after = self.options.complete_after
        tick = min(0.5, max(0.05, complete_after / 10))
        while not self._stopping.wait(tick):
            now = time.time()
            for pending in self._tracker.take_due(now, complete_after):
                folder = series_folder(self.options.spool, pending.study_uid, pending.series_uid)
                self._record("series_complete", study_uid=pending.study_uid, series_uid=pending.series_uid,
                             instances=len(spooled_files(folder)), idle_s=round(now - pending.last_arrival, 3))
                while not self._stopping.is_set():
                    try:
                        self._queue.put((pending.study_uid, pending.series_uid), timeout=0.5)
                    except queue.Full:
                        continue  # back-pressure: every worker is busy and the queue is full
                    self._record("series_queued", study_uid=pending.study_uid, series_uid=pending.series_uid,
                                 waiting=self._queue.qsize())
                    break

    def _work(self, number: int) -> None:
        try:
            worker = _Worker(number, self)
        except Exception:  # noqa: BLE001 - said in the log; the other workers go on
            logger.exception("worker %d cannot start", number)
            return
        try:
            while not self._stopping.is_set():
                try:
                    study_uid, series_uid = self._queue.get(timeout=0.5)
                except queue.Empty:
                    continue
                try:
                    self._handle(worker, study_uid, series_uid)
                except Exception as error:  # noqa: BLE001 - a bug on one series must not stop the node
                    logger.exception("series %s: unexpected error", series_uid)
                    self._record("series_processed", study_uid=study_uid, series_uid=series_uid,
                                 outcome=OUTCOME_FAILED, reason=f"{type(error).__name__}: {error}"[:500])
                    with self._tracker.lock:
                        self._tracker.done(series_uid, folder_gone=True)  # left in the spool for the next start
        finally:
            worker.close()

    def _handle(self, worker: _Worker, study_uid: str, series_uid: str) -> None:
        """One complete series: route it, process it (or record why not), then clear its spool folder."""
        started = time.perf_counter()
        folder = series_folder(self.options.spool, study_uid, series_uid)
        with self._tracker.lock:
            files = spooled_files(folder)
            self._tracker.set_state(series_uid, _PROCESSING)
        if not files:
            self._finish(folder, series_uid, [])
            return
        try:
            spooled = read_spooled_series(study_uid, series_uid, files)
        except PacsError as error:
            ref = SeriesRef(study_uid, series_uid, n_instances=len(files))
            worker.seen.record(ref, OUTCOME_FAILED, reason=str(error))
            self._record("series_processed", study_uid=study_uid, series_uid=series_uid, outcome=OUTCOME_FAILED,
                         failed_stage="route", reason=str(error), seconds=round(time.perf_counter() - started, 3))
            self._finish(folder, series_uid, files)
            return
        route = self.options.rules.route(spooled.attributes)
        rule_name = route.rule.name if route.rule is not None else ""
        if route.skipped:
            worker.seen.record(spooled.series, OUTCOME_SKIPPED, rule_name, route.reason)
            self._record("series_skipped", study_uid=study_uid, series_uid=series_uid,
                         modality=spooled.series.modality, rule=rule_name, reason=route.reason)
            logger.info("series %s: skipped (%s)", series_uid, route.reason)
        else:
            self._process(worker, spooled, self._prepared[rule_name], started)
        self._finish(folder, series_uid, files)
        self._write_report(worker)

    def _process(self, worker: _Worker, spooled: SpooledSeries, prepared: _PreparedRule, started: float) -> None:
        """Run the series through the batch job's planning, processor and book, as ``pacs-batch`` does."""
        series = spooled.series
        ledger = worker.ledger(prepared.key)
        worker.seen.record(series, _ROUTED, prepared.rule.name, key=prepared.key)
        # a series that failed before and is pushed again is processed again: the push is the retry
        plan = plan_batch(Selection((series,), (), ()), ledger, True, self.results_dir)
        common = {"study_uid": series.study_uid, "series_uid": series.series_uid, "rule": prepared.rule.name,
                  "bundle": prepared.key.bundle}
        if not plan.tasks:
            outcome, reason = plan.not_run.get(series.series_uid, (OUTCOME_NOT_RUN, ""))
            self._record("series_processed", **common, outcome=outcome, reason=reason,
                         seconds=round(time.perf_counter() - started, 3))
            return
        task = plan.tasks[0]
        book = _NodeBook(ledger, self.options.report_dir, self._sent)
        worker.client.take(spooled)
        try:
            result = self._run_engine(worker, prepared, task, book)
        finally:
            worker.client.release(series.series_uid)
        outcome = OUTCOME_DONE if result.state == STATE_VERIFIED else OUTCOME_FAILED
        self._record("series_processed", **common, outcome=outcome, failed_stage=result.failed_stage,
                     reason=result.reason, seg_series_uid=result.seg_series_uid, seg_sop_uid=result.seg_sop_uid,
                     seconds=round(time.perf_counter() - started, 3), stages=result.seconds)
        logger.info("series %s: %s %s", series.series_uid, outcome, result.reason)

    def _sent(self, task: SeriesTask, fields: dict) -> None:
        self._record("series_sent", study_uid=task.series.study_uid, series_uid=task.series.series_uid,
                     destination=self.destinations, seconds=round(fields.get("seconds", {}).get("store", 0.0), 3))

    def _run_engine(self, worker: _Worker, prepared: _PreparedRule, task: SeriesTask, book: BatchBook) -> SeriesResult:
        """The series through the rule's engine, recorded in ``book`` (attempt, stages, result); returns the result."""
        try:
            engine = worker.engine(prepared)
        except Exception as error:  # noqa: BLE001 - the model cannot be built: this series fails with the reason
            logger.exception("rule %s: the bundle cannot be built", prepared.rule.name)
            reason = f"the bundle of rule '{prepared.rule.name}' cannot be built: {type(error).__name__}: {error}"
            book.start(task)
            book.finish(SeriesResult(task.series, STATE_FAILED, reason[:500], failed_stage="engine"))
        else:
            # a stop of the listener lets the series in flight finish: the engine is never asked to stop
            engine.run([task], book, StopRequest())
        return book.results[task.series.series_uid]

    def _finish(self, folder: Path, series_uid: str, files: list[Path]) -> None:
        """The series reached a final state: remove the instances it was processed from."""
        with self._tracker.lock:
            gone = remove_spooled(folder, files)
            self._tracker.done(series_uid, gone)

    # ---- report -----------------------------------------------------------------------------------------------

    def _write_report(self, worker: _Worker) -> None:
        """The ``pacs-batch`` report of every series the node took in (when ``report_dir`` is set)."""
        report_dir = self.options.report_dir
        if report_dir is None:
            return
        rows = []
        for seen in worker.seen.rows():
            series = SeriesRef(seen["study_uid"], seen["series_uid"], seen["modality"], seen["series_description"],
                               seen["series_number"], seen["n_instances"])
            if seen["outcome"] != _ROUTED:
                rows.append(ReportRow(series, "", seen["outcome"], seen["reason"]))
                continue
            key = JobKey(seen["bundle"], seen["bundle_version"], seen["weights_sha256"])
            entry = worker.ledger(key).get(series.series_uid)
            if entry is None:
                continue
            outcome = {STATE_VERIFIED: OUTCOME_DONE, STATE_FAILED: OUTCOME_FAILED}.get(entry.state, OUTCOME_NOT_RUN)
            thumbnail = thumbnail_path(report_dir, series.series_uid)
            rows.append(ReportRow(
                entry.series, entry.state, outcome, entry.last_error if entry.state == STATE_FAILED else "",
                entry.attempts, entry.seg_series_uid, entry.seg_sop_uid, tuple(entry.segments), dict(entry.seconds),
                dict(entry.files), str(thumbnail.relative_to(report_dir)) if thumbnail.is_file() else "",
            ))
        counts = Counter(row.outcome for row in rows)
        run = {"listener": self.address, "rules": self.options.rules.source, "counts": dict(counts),
               "pid": os.getpid()}
        with self._report_lock:
            write_report(report_dir, rows, run)

"""``--engine ray``: the same batch job on a Ray cluster, an actor pool with the bundle's model loaded once per actor.

Each actor builds one :class:`~custom_networks.pacs.processor.SeriesProcessor` from the job's PACS connection,
bundle request and output options (so the model loads once per actor, wherever it runs) and
does retrieve, infer, store and verify for the series it is handed. The driver (the job's own process) alone owns
the ledger and the report: it calls ``book.start`` before handing a series out, applies the stage events actors
send back through a Ray queue (``retrieved``, ``inferred``, ``stored``, so that a killed driver resumes as the local
engine would) and ``book.finish`` when a result returns. ``ray.util.ActorPool`` does not fit: it hands the next
task to an actor only when the driver asks for a result, and cannot replace an actor that died.

An actor that dies while processing a series (its process, or its whole node, is gone: ``RayActorError``) is
replaced, and the series is handed once more to the next free actor (another one, or the replacement once it has
loaded its model; ``book.start`` again, one more ledger attempt, one result). Should that actor die too, the series is
recorded failed. Each result's log line names the Ray node the series ran on; ``describe()`` gives an actor's node
id. The event queue's actor is placed on the driver's node, so that losing a worker node does not lose it.

Without ``address`` a local Ray instance is started (``ray.init`` with ``workers`` CPUs, no dashboard) and shut
down at ``close``; with it (``auto``, ``host:6379``, ``ray://head:10001``) the job joins that cluster. In a process
where Ray is already initialised (a test module's instance) that instance is used and left running. Ray 2.60 cannot
be held to the loopback interface: it replaces ``127.0.0.1`` by the node's address and its servers listen on every
interface, protected by its token authentication (on by default, token in ``~/.ray/auth_token``).

Threads: each actor reserves ``threads_per_worker`` CPUs (default 1) and runs torch (OpenMP, MKL, oneDNN) and an
ONNX model's onnxruntime session with exactly that many threads (``torch.set_num_threads``, the bundle's
``onnx_num_threads``), and its process starts with ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` /
``OPENBLAS_NUM_THREADS`` set to it. Ray sets ``OMP_NUM_THREADS`` to the actor's CPUs only where the variable is
unset; a driver or ``ray start`` with it set (``scripts/benchmark_pacs.py`` sets 2) gave every actor that many
OpenMP threads on its one CPU, and two such actors on two cores ran their network 7 to 9 times slower than one
process with one thread. Actors also run at niceness 0 like the local engine, not Ray's default 15, which gives
them a few percent of a core against any other busy process on the node.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import queue
import shutil
import signal
import threading
import traceback
from collections.abc import Sequence
from pathlib import Path

from custom_networks.errors import InputError
from custom_networks.pacs.connect import PacsConnection
from custom_networks.pacs.engine import BatchBook, StopRequest
from custom_networks.pacs.ledger import STATE_FAILED
from custom_networks.pacs.processor import OutputOptions, SeriesProcessor, SeriesResult, SeriesTask
from custom_networks.pacs.spool import SpoolConnection
from custom_networks.runtime import BundleRequest

__all__ = ["RayEngine", "SeriesActor", "start_ray"]

logger = logging.getLogger(__name__)

# seconds the driver waits for a result before it looks at stop requests and stage events again
_POLL_S = 0.5
# times a series is handed out when the actors processing it die (its process or its node): once more, then failed
_DEATHS_ALLOWED = 2
_NOT_INSTALLED = "engine ray: Ray is not installed; pip install 'monai-attention-unets[ray]'"


class SeriesActor:
    """One Ray actor's state: its processor (the model, loaded once) and the queue stage events go to.

    Args:
        connection, request, outputs: the job's PACS (or the push listener's spool and destination), bundle and
            outputs.
        work_dir: scratch folder for retrieved series on the actor's node.
        events: a ``ray.util.queue.Queue`` for ``(series UID, state, fields)`` stage events.
        threads: torch and onnxruntime threads (default: the CPUs Ray assigned this actor).
    """

    def __init__(self, connection: PacsConnection | SpoolConnection, request: BundleRequest, outputs: OutputOptions,
                 work_dir: str, events, threads: int | None = None) -> None:
        self.threads = _set_threads(threads)
        if request.model in ("onnx", "int8"):
            request = dataclasses.replace(request, overrides={**request.overrides,
                                                              "onnx_num_threads": self.threads})
        if request.device.startswith("cuda"):
            # Ray shows an actor only the GPU(s) it reserved (CUDA_VISIBLE_DEVICES): that is cuda:0 here, whatever
            # index the job named
            request = dataclasses.replace(request, device="cuda")
        self.processor = SeriesProcessor.build(connection, request, outputs)
        self.work_dir = Path(work_dir)
        self.events = events
        self.processed = 0

    def describe(self) -> dict:
        """Where the actor runs, when its model was loaded (the same time as long as the actor lives) and how many
        series it processed."""
        import ray
        import torch

        return {"pid": os.getpid(), "node": ray.util.get_node_ip_address(),
                "node_id": ray.get_runtime_context().get_node_id(),
                "model_loaded_at": self.processor.segmenter.loaded_at, "processed": self.processed,
                "threads": torch.get_num_threads()}

    def process(self, task: SeriesTask) -> SeriesResult:
        def on_stage(stage_task: SeriesTask, state: str, fields: dict) -> None:
            self.events.put((stage_task.series.series_uid, state, fields))

        self.work_dir.mkdir(parents=True, exist_ok=True)
        result = self.processor.process(task, self.work_dir, on_stage=on_stage)
        self.processed += 1
        return result

    def close(self) -> None:
        self.processor.close()


def _set_threads(threads: int | None) -> int:
    """Size torch's thread pools in this actor process: ``threads``, default the CPUs Ray assigned the actor."""
    import ray
    import torch

    if threads is None:
        threads = max(1, int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1)))
    torch.set_num_threads(threads)
    return threads


def _worker_env(threads: int) -> dict[str, str]:
    """An actor process's environment: thread pools sized before any library starts one, normal priority."""
    count = str(threads)
    return {"OMP_NUM_THREADS": count, "MKL_NUM_THREADS": count, "OPENBLAS_NUM_THREADS": count,
            "RAY_worker_niceness": "0"}


def _last_line(error: BaseException) -> str:
    """The last line of a (Ray-wrapped) error: the original exception, without Ray's traceback."""
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else type(error).__name__


def start_ray(address: str | None, num_cpus: int, temp_dir: Path | None = None) -> None:
    """Join the Ray cluster at ``address``, or start a local instance with ``num_cpus`` CPUs (no dashboard; its
    files in ``temp_dir``, default Ray's). The caller shuts it down (``ray.shutdown()``).

    Raises:
        InputError: Ray is not installed, or the cluster cannot be started or reached.
    """
    try:
        import ray
    except ImportError:
        raise InputError(_NOT_INSTALLED, parameter="engine") from None
    # ray.init installs a native SIGTERM handler (it aborts the process) over the job's own (finish the series
    # in flight, then stop): put the job's back afterwards
    handlers = {}
    if threading.current_thread() is threading.main_thread():
        handlers = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        if address:
            ray.init(address=address)
        else:
            options = {"_temp_dir": str(temp_dir)} if temp_dir else {}
            ray.init(num_cpus=num_cpus, include_dashboard=False, **options)
    except (ConnectionError, RuntimeError, ValueError) as error:
        where = f"address={address}" if address else "a local Ray instance"
        raise InputError(f"engine ray: {where} cannot be started or reached: {_last_line(error)}",
                         parameter="engine") from None
    finally:
        for number, handler in handlers.items():
            if handler is not None:
                signal.signal(number, handler)


class RayEngine:
    """Series on a pool of Ray actors; the same ``run(tasks, book, stop)`` / ``close()`` as the local engine.

    Args:
        connection, request, outputs: the job's PACS, bundle and outputs (every actor builds its processor from
            them).
        address: Ray cluster address; ``None`` starts a local instance.
        workers: actors (each loads the model once).
        threads_per_worker: CPUs each actor reserves and the torch / onnxruntime threads it runs with (default 1).
        num_cpus: CPUs of a local instance (default ``workers * threads_per_worker``).
        num_gpus: GPUs each actor reserves (default 1 when ``request.device`` is ``cuda``..., else 0; fractions
            share a GPU).
        work_dir: scratch folder on each node (default: ``tmp`` beside ``outputs.results_dir``, which the job
            cleans).
        temp_dir: Ray's temporary folder for a local instance (default: Ray's, ``$RAY_TMPDIR`` or ``/tmp/ray``).

    Raises:
        InputError: Ray is not installed or cannot start, an actor cannot build its processor, or the options
            cannot work on Ray (C-MOVE with more than one actor).
    """

    def __init__(
        self,
        connection: PacsConnection | SpoolConnection,
        request: BundleRequest,
        outputs: OutputOptions,
        *,
        address: str | None = None,
        workers: int = 2,
        threads_per_worker: int | None = None,
        num_cpus: int | None = None,
        num_gpus: float | None = None,
        work_dir: Path | None = None,
        temp_dir: Path | None = None,
    ) -> None:
        if workers < 1:
            raise InputError(f"workers {workers}: at least 1", parameter="workers")
        if threads_per_worker is not None and threads_per_worker < 1:
            raise InputError(f"threads_per_worker {threads_per_worker}: at least 1", parameter="threads_per_worker")
        if isinstance(connection, PacsConnection) and connection.retrieve == "move" and workers > 1:
            raise InputError(
                "retrieve move with engine ray: every actor would need its own storage SCP registered on the "
                "PACS; use retrieve=get (C-GET), or workers=1", parameter="retrieve"
            )
        try:
            import ray
            from ray.util.queue import Queue
        except ImportError:
            raise InputError(_NOT_INSTALLED, parameter="engine") from None
        self._ray = ray
        self._owns_ray = not ray.is_initialized()
        if self._owns_ray:
            start_ray(address, num_cpus or workers * (threads_per_worker or 1), temp_dir)
        if num_gpus is None:
            num_gpus = 1 if request.device.startswith("cuda") else 0
        self.connection, self.request, self.outputs = connection, request, outputs
        self._abandoned = False
        self.work_dir = str(work_dir or Path(outputs.results_dir).parent / "tmp")
        # the queue's own actor needs no CPU: it must not take one of the workers' slots; it lives on the driver's
        # node, so that a worker node that dies does not take the stage events of the other series with it
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        self._events = Queue(actor_options={"num_cpus": 0, "scheduling_strategy": NodeAffinitySchedulingStrategy(
            ray.get_runtime_context().get_node_id(), soft=False)})
        self.threads_per_worker = threads_per_worker
        self._actor_class = ray.remote(num_cpus=threads_per_worker or 1, num_gpus=num_gpus,
                                       runtime_env={"env_vars": _worker_env(threads_per_worker or 1)})(SeriesActor)
        self._actors = [self._new_actor() for _ in range(workers)]
        self.actors_started = len(self._actors)
        # actors known to have loaded their model (a replacement joins once it has), and each one's Ray node id
        self._live: set[int] = set(range(workers))
        self._nodes: dict[int, str] = {}
        self._described: dict[int, dict] = {}
        # describe() of replacements still starting -> their index; a replacement waits for a node with free CPUs
        self._starting: dict = {}
        try:
            described = ray.get([actor.describe.remote() for actor in self._actors])
        except ray.exceptions.RayError as error:
            self.close()
            raise InputError(f"engine ray: a worker could not load the bundle: {_last_line(error)}",
                             parameter="engine") from None
        for index, info in enumerate(described):
            self._started(index, info)

    def _started(self, index: int, info: dict) -> None:
        self._nodes[index] = info["node_id"]
        self._described[index] = info
        self._live.add(index)
        logger.info("Ray worker %d (pid %d on %s node %s): model loaded at %.6f, %d thread(s)", index + 1,
                    info["pid"], info["node"], info["node_id"][:8], info["model_loaded_at"], info["threads"])

    def _new_actor(self):
        return self._actor_class.remote(self.connection, self.request, self.outputs, self.work_dir, self._events,
                                        self.threads_per_worker)

    def _apply_events(self, book: BatchBook, tasks: dict[str, SeriesTask]) -> None:
        """Record every stage event the actors have sent so far."""
        while True:
            try:
                series_uid, state, fields = self._events.get_nowait()
            except queue.Empty:
                return
            if series_uid in tasks:
                book.stage(tasks[series_uid], state, fields)

    def run(self, tasks: Sequence[SeriesTask], book: BatchBook, stop: StopRequest) -> None:
        """Process ``tasks`` on the actors until done or a stop is requested (the series in flight finish)."""
        try:
            self._run(list(tasks), book, stop)
        except BaseException:
            # a second signal abandons the series in flight: close() must not wait for them
            self._abandoned = True
            raise

    def _run(self, waiting: list[SeriesTask], book: BatchBook, stop: StopRequest) -> None:
        ray = self._ray
        by_uid = {task.series.series_uid: task for task in waiting}
        total, done = len(waiting), 0
        idle = sorted(self._live)
        in_flight: dict = {}  # result ref -> (actor index, task)
        # series whose actor died, to be handed out again (even after a stop request: they were in flight)
        again: list[SeriesTask] = []
        deaths: dict[str, int] = {}
        while (waiting and not stop.requested) or in_flight or again:
            while idle and (again or (waiting and not stop.requested)):
                index, task = idle.pop(0), (again or waiting).pop(0)
                book.start(task)
                in_flight[self._actors[index].process.remote(task)] = (index, task)
            ready, _ = ray.wait([*in_flight, *self._starting], num_returns=1, timeout=_POLL_S)
            # a result's stage events were queued before it returned: record them first
            self._apply_events(book, by_uid)
            for ref in ready:
                if ref in self._starting:
                    index = self._starting.pop(ref)
                    try:
                        self._started(index, ray.get(ref))
                        idle.append(index)
                    except ray.exceptions.RayError as error:
                        logger.error("Ray worker %d could not start: %s", index + 1, _last_line(error))
                    continue
                index, task = in_flight.pop(ref)
                result = self._result(ref, index, task, deaths)
                if index in self._live:
                    idle.append(index)
                if result is None:
                    again.append(task)
                    continue
                book.finish(result)
                done += 1
                logger.info("[%d/%d] series %s: %s on node %s%s", done, total, task.series.series_uid, result.state,
                            self._nodes.get(index, "?")[:8], f": {result.reason}" if result.reason else "")
            if not (in_flight or self._starting or idle) and (again or waiting):
                for task in again:
                    book.finish(SeriesResult(task.series, STATE_FAILED, "no Ray worker left to process this series",
                                             failed_stage="engine"))
                again.clear()
                logger.error("no Ray worker left: %d series not started", len(waiting))
                break
        if waiting:
            logger.warning("stopped (%s) with %d of %d series not started", stop.signal_name, len(waiting), total)

    def _result(self, ref, index: int, task: SeriesTask, deaths: dict[str, int]) -> SeriesResult | None:
        """The actor's result; a bug in the actor fails this series only. An actor that died is replaced, and its
        series is handed out once more (``None``) before it fails."""
        ray = self._ray
        uid = task.series.series_uid
        try:
            return ray.get(ref)
        except ray.exceptions.RayActorError as error:
            deaths[uid] = deaths.get(uid, 0) + 1
            again = deaths[uid] < _DEATHS_ALLOWED
            logger.error("Ray worker %d died on series %s (node %s: %s); starting a new one%s", index + 1, uid,
                         self._nodes.get(index, "?")[:8], _last_line(error),
                         ", and the series goes to the next free worker" if again else "")
            self._replace(index)
            if again:
                return None
            reason = f"the Ray worker died while processing this series: {_last_line(error)}"
        except ray.exceptions.RayTaskError as error:
            logger.error("Ray worker %d failed on series %s:\n%s", index + 1, task.series.series_uid,
                         "".join(traceback.format_exception_only(type(error), error)))
            reason = f"the Ray worker failed: {_last_line(error)}"
        return SeriesResult(task.series, STATE_FAILED, reason, failed_stage="engine")

    def _replace(self, index: int) -> None:
        """A new actor in place of the dead one at ``index``; it takes series once it has loaded its model."""
        self._live.discard(index)
        self._nodes.pop(index, None)
        dead = self._described.pop(index, None)
        if dead and dead["node"] == self._ray.util.get_node_ip_address():
            # the dead actor's bundle output folder, when it ran on this machine (elsewhere the next job's start
            # removes it, as it does a killed local job's)
            shutil.rmtree(Path(self.outputs.results_dir) / f".bundle-output-{dead['pid']}", ignore_errors=True)
        self._actors[index] = self._new_actor()
        self.actors_started += 1
        self._starting[self._actors[index].describe.remote()] = index

    def describe_workers(self) -> list[dict]:
        """Per live actor (not a replacement still waiting for a node): pid, node and node id, when its model was
        loaded and series processed."""
        live = sorted(self._live)
        return self._ray.get([self._actors[index].describe.remote() for index in live])

    def close(self) -> None:
        """Let the actors clean up, stop them, and shut down a Ray instance this engine started."""
        ray = self._ray
        try:
            if self._abandoned:
                return
            for index, info in zip(sorted(self._live), self.describe_workers(), strict=True):
                logger.info("Ray worker %d (pid %d on %s node %s): %d series, model loaded at %.6f", index + 1,
                            info["pid"], info["node"], info["node_id"][:8], info["processed"],
                            info["model_loaded_at"])
            ray.get([self._actors[index].close.remote() for index in sorted(self._live)], timeout=60)
        except ray.exceptions.RayError as error:
            logger.warning("Ray workers did not close cleanly: %s", _last_line(error))
        finally:
            for actor in self._actors:
                ray.kill(actor)
            self._events.shutdown()
            if self._owns_ray:
                ray.shutdown()

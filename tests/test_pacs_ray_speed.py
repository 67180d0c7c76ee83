"""A Ray actor's network is as fast per series as the local engine's, on the same series and the same one thread.

Issue 23: inside Ray actors the bundle's network took ~7x as long per series as in the local engine. The actors
inherited ``OMP_NUM_THREADS`` from the process that started Ray (Ray sets it to the actor's CPUs only where it is
unset), so each actor ran more OpenMP threads than the CPUs it reserved, and at Ray's worker niceness 15. Here Ray is
started from an environment that asks for more OpenMP threads than the machine has cores, as such a driver or
``ray start`` leaves it; one actor (1 CPU, ``threads_per_worker=1``) and the local engine's processor (torch at 1
thread) then segment the same series in alternation while another process keeps one core busy (as the second
worker, or another job, does), and the actor's median network seconds must stay within a generous factor of the
local median. An actor with more threads than its CPU, or at a lower priority than the busy process, is several
times slower.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import ray
import torch

from custom_networks.data.sample_study import make_sample_study
from custom_networks.pacs.client import QueryFilters
from custom_networks.pacs.connect import PacsConnection
from custom_networks.pacs.dimse import DimseClient
from custom_networks.pacs.engine import BatchBook, LocalEngine, StopRequest
from custom_networks.pacs.ledger import JobKey, Ledger
from custom_networks.pacs.processor import OutputOptions, SeriesProcessor, SeriesTask
from custom_networks.pacs.ray_engine import RayEngine
from custom_networks.pacs.retry import RetryPolicy
from custom_networks.runtime import BundleRequest

from clinical_fixtures import Study, write_series

pytestmark = [pytest.mark.orthanc, pytest.mark.ray]

BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "brain_tumor_mri_gsconv_eca_unet"
# a series whose network time (demo widths, 1 thread) is a few tenths of a second: long against timer noise, short
SHAPE = (96, 96, 12)
ROUNDS = 5
# the actor's median network seconds may be this many times the local median, plus the slack (scheduling noise of
# a machine shared with other jobs); the slowdown this catches was 7 to 9 times
FACTOR, SLACK_S = 1.5, 0.1


@pytest.fixture(scope="module")
def ray_with_inherited_threads(tmp_path_factory):
    """A local Ray instance (2 CPUs) whose processes inherit ``OMP_NUM_THREADS`` = twice the machine's cores."""
    saved = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = str(2 * (os.cpu_count() or 1))
    try:
        ray.init(num_cpus=2, include_dashboard=False, _temp_dir=str(tmp_path_factory.mktemp("ray")))
    finally:
        if saved is None:
            os.environ.pop("OMP_NUM_THREADS")
        else:
            os.environ["OMP_NUM_THREADS"] = saved
    yield
    ray.shutdown()


@contextmanager
def one_core_busy() -> Iterator[None]:
    """Another process (normal priority) spinning on one core while the block runs."""
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        yield
    finally:
        spinner.kill()
        spinner.wait()


def network_seconds(engine, task: SeriesTask, book: BatchBook) -> float:
    """One run of ``task`` through ``engine``; its network seconds."""
    engine.run([task], book, StopRequest())
    result = book.results[task.series.series_uid]
    assert result.state == "verified", result.reason
    return result.seconds["network"]


def test_a_ray_actors_network_is_as_fast_as_the_local_engines_on_one_thread(
    orthanc, ray_with_inherited_threads, tmp_path
):
    image = make_sample_study(shape=SHAPE, seed=7).image
    written = write_series(tmp_path / "series", image, spacing=(0.9, 0.9, 5.0), study=Study(), description="AX T1",
                           uid_seed="ray speed test")
    orthanc.upload(written.files)
    pacs = DimseClient(orthanc.aet, "127.0.0.1", orthanc.dicom_port, calling_aet=orthanc.client_aet)
    refs = {ref.series_uid: ref for ref in pacs.find_series(QueryFilters(modality="MR"))}
    task = SeriesTask(refs[written.series_instance_uid])

    connection = PacsConnection(f"{orthanc.aet}@127.0.0.1:{orthanc.dicom_port}",
                                retry=RetryPolicy(attempts=2, initial_delay_s=0.2), calling_aet=orthanc.client_aet)
    request = BundleRequest(str(BUNDLE), demo=True, device="cpu")
    info = request.prepare()
    request = request.pinned(info)
    # nothing stored on the PACS: retrieve and segment only, the network's time is what is compared
    local_outputs = OutputOptions(str(tmp_path / "local" / "results"), store_pacs=False)
    ray_outputs = OutputOptions(str(tmp_path / "ray" / "results"), store_pacs=False)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    processor = SeriesProcessor.build(connection, request, local_outputs, pacs=pacs)
    local = LocalEngine(processor, tmp_path / "local" / "work")
    remote = RayEngine(connection, request, ray_outputs, workers=1, threads_per_worker=1)
    try:
        with Ledger(tmp_path / "jobs.sqlite", JobKey(info.name, info.version, info.weights_sha256)) as ledger:
            ledger.enqueue(task.series)
            book = BatchBook(ledger, tmp_path / "report")
            (worker,) = remote.describe_workers()
            assert worker["threads"] == 1, worker
            # Ray starts workers at niceness 15: against any busy process they would get a few percent of a core
            assert os.getpriority(os.PRIO_PROCESS, worker["pid"]) <= os.getpriority(os.PRIO_PROCESS, 0)
            network_seconds(local, task, book), network_seconds(remote, task, book)  # warm both up
            local_s, ray_s = [], []
            with one_core_busy():
                for _ in range(ROUNDS):
                    local_s.append(network_seconds(local, task, book))
                    ray_s.append(network_seconds(remote, task, book))
    finally:
        remote.close()
        processor.close()
        pacs.close()
        torch.set_num_threads(threads)
    local_median, ray_median = statistics.median(local_s), statistics.median(ray_s)
    print(f"network seconds per series: local engine {local_s}, Ray actor {ray_s}")
    assert ray_median <= FACTOR * local_median + SLACK_S, (
        f"network seconds per series: Ray actor {ray_s} (median {ray_median:.3f}), "
        f"local engine at 1 thread {local_s} (median {local_median:.3f})"
    )

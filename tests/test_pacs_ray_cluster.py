"""``--engine ray`` on a real two-node Ray cluster on this machine: a head node and a second node, each started by
its own ``ray start`` process with one CPU, both on 127.0.0.1. Two actors (one CPU each) are placed one per node, give
the local engine's SEG UIDs and masks; then the second node's whole process tree is killed mid-batch and its series is
finished by the head node's actor: every series verified once, one SEG and one SR each in the PACS. The push-mode node
(``pacs-listen``'s :class:`Listener` with engine ray) joins the same cluster: studies Orthanc pushes to it are segmented
by one actor on each node and their SEG and SR stored back in Orthanc, as the local engine makes them.

Ray 2.60 listens on every interface whatever ``--node-ip-address`` says (see ``custom_networks.pacs.ray_engine``); its
token authentication is on when ``~/.ray/auth_token`` exists, and a driver given an explicit address must be told so
(``RAY_AUTH_MODE=token``). The nodes are stopped by killing the process trees this module started, not by
``ray stop``, which would stop every Ray process on the machine.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import threading
import time
import traceback
from pathlib import Path

import numpy as np
import pydicom
import pytest
import ray
from test_pacs_listener import COMPLETE_AFTER, PROCESSING_S, download, listener_options, mr_series, results_in_study
from test_pacs_listener import series_uid as first_series_uid
from test_pacs_listener import study as listener_study
from test_pacs_ray import (
    RESULTS_PER_SERIES,
    assert_ray_gave_the_local_engines_segs,
    job,
    report_rows,
    upload_studies,
)

from custom_networks.pacs.connect import PacsConnection
from custom_networks.pacs.credentials import Credentials
from custom_networks.pacs.dicomweb import DicomWebClient
from custom_networks.pacs.job import EXIT_OK, run_job
from custom_networks.pacs.listener import Listener

from conftest import CLIENT_AET
from orthanc_server import free_port

pytestmark = [pytest.mark.orthanc, pytest.mark.ray]

START_LINE = re.compile(r"Ray worker (\d+) \(pid (\d+) on \S+ node ([0-9a-f]{8})\): model loaded at")
RESULT_LINE = re.compile(r"\[\d+/\d+\] series ([\d.]+): (\w+) on node ([0-9a-f]{8})")
DIED_LINE = re.compile(r"Ray worker \d+ died on series ([\d.]+) \(node ([0-9a-f]{8})")
STARTED = "Ray runtime started."


def _descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (from /proc), parents first."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                # the command name may hold spaces and parentheses: the parent pid follows the last ')'
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop(0)
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def _kill_tree(process: subprocess.Popen) -> None:
    """SIGKILL a ``ray start --block`` process, everything it started (its raylet, the raylet's workers...) and its
    process group."""
    for pid in _descendants(process.pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)  # its own session (start_new_session): the same group
    except ProcessLookupError:
        pass
    process.wait(timeout=30)


class Cluster:
    """A head node and a second node on 127.0.0.1, one CPU each, in a temporary folder of their own."""

    def __init__(self) -> None:
        # short: Ray's socket paths under it must stay within the 107 characters of a Unix socket name
        self.temp_dir = Path(tempfile.mkdtemp(prefix="rayc", dir="/tmp"))
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        token = (Path.home() / ".ray" / "auth_token").is_file() or "RAY_AUTH_TOKEN" in os.environ
        self.env = {**os.environ, "RAY_TMPDIR": str(self.temp_dir), "RAY_AUTH_MODE": "token" if token else "disabled",
                    # a killed node is found dead after about 2 s, not Ray's default 15 or more
                    "RAY_health_check_initial_delay_ms": "1000", "RAY_health_check_period_ms": "500",
                    "RAY_health_check_timeout_ms": "1000", "RAY_health_check_failure_threshold": "3",
                    "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
        self.processes: dict[str, subprocess.Popen] = {}
        self.head_id = self.second_id = ""

    def _start(self, name: str, args: list[str]) -> None:
        log = self.temp_dir / f"{name}.log"
        with open(log, "w") as stream:
            self.processes[name] = subprocess.Popen(
                [shutil.which("ray") or "ray", "start", *args, "--num-cpus=1", "--node-ip-address=127.0.0.1",
                 "--disable-usage-stats", f"--temp-dir={self.temp_dir}", "--block"],
                stdout=stream, stderr=subprocess.STDOUT, env=self.env, start_new_session=True)
        deadline = time.monotonic() + 120
        while STARTED not in log.read_text():
            assert self.processes[name].poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.3)

    def start(self) -> None:
        self._start("head", ["--head", f"--port={self.port}", "--include-dashboard=false",
                             f"--dashboard-port={free_port()}", f"--ray-client-server-port={free_port()}"])
        self.start_second()

    def start_second(self) -> None:
        """(Re)start the second node and wait until both nodes are alive (a test before may have killed it)."""
        self._start("second", [f"--address={self.address}"])
        ray.init(address=self.address, logging_level=logging.WARNING)
        try:
            deadline = time.monotonic() + 60
            while len(alive := [node for node in ray.nodes() if node["Alive"]]) < 2:
                assert time.monotonic() < deadline, ray.nodes()
                time.sleep(0.3)
            assert len(alive) == 2 and all(node["Resources"].get("CPU") == 1 for node in alive), alive
            heads = [node["NodeID"] for node in alive if "node:__internal_head__" in node["Resources"]]
            assert len(heads) == 1, alive
            self.head_id = heads[0]
            self.second_id = next(node["NodeID"] for node in alive if node["NodeID"] != self.head_id)
        finally:
            ray.shutdown()

    def kill_second(self) -> None:
        _kill_tree(self.processes.pop("second"))

    def stop(self) -> None:
        for name in ("second", "head"):
            if name in self.processes:
                _kill_tree(self.processes.pop(name))
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def _reload_ray_config() -> None:
    """Ray reads ``RAY_AUTH_MODE`` into a configuration cached per process: refresh it (as Ray itself does when it
    turns token authentication on)."""
    from ray._raylet import Config

    Config.initialize("")


@pytest.fixture(scope="module")
def cluster():
    if ray.is_initialized():  # another module's instance: the job must join this cluster, not that one
        ray.shutdown()
    nodes = Cluster()
    saved = {name: os.environ.get(name) for name in ("RAY_AUTH_MODE", "RAY_TMPDIR")}
    try:
        # the job's driver runs in this process: it must speak the cluster's authentication
        os.environ["RAY_AUTH_MODE"] = nodes.env["RAY_AUTH_MODE"]
        os.environ["RAY_TMPDIR"] = str(nodes.temp_dir)
        _reload_ray_config()
        nodes.start()
        yield nodes
    finally:
        if ray.is_initialized():
            ray.shutdown()
        nodes.stop()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        _reload_ray_config()


def cluster_job(orthanc, root: Path, cluster: Cluster, store_pacs: bool):
    """``job``'s options on the cluster, over DICOMweb (the query, retrieval, store and confirmation go through
    Orthanc's DICOMweb plugin; the local engine's job in the same test goes over DIMSE)."""
    options = job(orthanc, root, "ray", store_pacs=store_pacs)
    connection = PacsConnection(orthanc.dicomweb_url, Credentials(orthanc.username, orthanc.password),
                                retry=options.connection.retry)
    return dataclasses.replace(options, connection=connection, address=cluster.address, workers=2,
                               threads_per_worker=1)


def test_actors_on_both_nodes_give_the_local_engines_segs(orthanc, cluster, tmp_path, caplog):
    uids = upload_studies(orthanc, tmp_path)
    chosen = {name: uid for name, uid in uids.items() if name != "a_short"}
    assert run_job(job(orthanc, tmp_path / "local", "local", store_pacs=False)) == EXIT_OK
    before = orthanc.instance_count()
    with caplog.at_level(logging.INFO, logger="custom_networks.pacs.ray_engine"):
        assert run_job(cluster_job(orthanc, tmp_path / "ray", cluster, store_pacs=True)) == EXIT_OK

    # one actor on each node, and every series' result line names one of the two nodes
    started = {int(match[1]): match[3] for match in START_LINE.finditer(caplog.text)}
    assert sorted(started.values()) == sorted([cluster.head_id[:8], cluster.second_id[:8]]), caplog.text[-3000:]
    ran_on = {match[1]: (match[2], match[3]) for match in RESULT_LINE.finditer(caplog.text)}
    assert set(ran_on) == set(chosen.values()), caplog.text[-3000:]
    assert {state for state, _ in ran_on.values()} == {"verified"}
    assert {node for _, node in ran_on.values()} <= set(started.values())

    pacs = DicomWebClient(orthanc.dicomweb_url, credentials=Credentials(orthanc.username, orthanc.password))
    assert_ray_gave_the_local_engines_segs(tmp_path, chosen, pacs)
    assert orthanc.instance_count() == before + RESULTS_PER_SERIES * len(chosen)


def _states(ledger: Path) -> dict[str, str]:
    if not ledger.is_file():
        return {}
    try:
        with sqlite3.connect(f"file:{ledger}?mode=ro", uri=True, timeout=5) as connection:
            return dict(connection.execute("SELECT series_uid, state FROM series").fetchall())
    except sqlite3.OperationalError:  # not created yet, or busy
        return {}


def test_a_killed_node_has_its_series_finished_on_the_head(orthanc, cluster, tmp_path, caplog):
    uids = upload_studies(orthanc, tmp_path)
    chosen = {name: uid for name, uid in uids.items() if name != "a_short"}
    before = orthanc.instance_count()
    root = tmp_path / "job"
    options = cluster_job(orthanc, root, cluster, store_pacs=True)
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["exit"] = run_job(options)
        except BaseException:  # reported by the assertion below
            outcome["error"] = traceback.format_exc()

    with caplog.at_level(logging.INFO, logger="custom_networks.pacs.ray_engine"):
        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        # both actors have a series in hand (retrieved, or further) when the second node is killed
        deadline = time.monotonic() + 180
        while sum(state in ("retrieved", "inferred") for state in _states(options.ledger).values()) < 2:
            assert thread.is_alive() and time.monotonic() < deadline, (outcome, caplog.text[-3000:])
            time.sleep(0.1)
        cluster.kill_second()
        thread.join(timeout=240)
        assert not thread.is_alive(), caplog.text[-3000:]
    assert outcome.get("exit") == EXIT_OK, (outcome, caplog.text[-3000:])

    # the series the second node had in hand died with it, and was finished by the head node's actor
    died = {match[1]: match[2] for match in DIED_LINE.finditer(caplog.text)}
    assert list(died.values()) == [cluster.second_id[:8]], caplog.text[-3000:]
    ran_on = [(match[1], match[2], match[3]) for match in RESULT_LINE.finditer(caplog.text)]
    assert sorted(uid for uid, _, _ in ran_on) == sorted(chosen.values()), caplog.text[-3000:]
    assert {state for _, state, _ in ran_on} == {"verified"}
    [retried] = died
    assert [node for uid, _, node in ran_on if uid == retried] == [cluster.head_id[:8]]

    rows = report_rows(root)
    assert {rows[uid]["outcome"] for uid in chosen.values()} == {"done"}
    assert {uid: rows[uid]["attempts"] for uid in chosen.values()} == {
        uid: 2 if uid == retried else 1 for uid in chosen.values()}
    # one SEG and one SR per series in the PACS, and nothing waiting in the results folder
    assert orthanc.instance_count() == before + RESULTS_PER_SERIES * len(chosen)
    results = Path(options.outputs.results_dir)
    assert not results.exists() or not any(results.iterdir()), list(results.rglob("*"))


def test_push_listener_on_ray_stores_the_local_engines_results_from_actors_on_both_nodes(orthanc, cluster, tmp_path,
                                                                                          caplog):
    if "second" not in cluster.processes:  # the node-kill test ran first
        cluster.start_second()
    studies = [listener_study(f"ray push {number}") for number in range(2)]
    sources = {}
    for number, pushed in enumerate(studies):
        files = mr_series(tmp_path / f"t1_{number}", number, pushed)
        orthanc.upload(files)
        sources[first_series_uid(files)] = pushed.study_instance_uid
    resources = [orthanc.lookup(pushed.study_instance_uid) for pushed in studies]
    # the local engine's results, kept in a folder only
    local, on_ray = tmp_path / "local", tmp_path / "ray"
    local.mkdir()
    on_ray.mkdir()
    with Listener(listener_options(orthanc, local, send_to=None, output_dir=local / "out")) as listener:
        orthanc.push(CLIENT_AET, resources)
        assert listener.wait_idle(COMPLETE_AFTER + PROCESSING_S)
    before = orthanc.instance_count()

    # the node joins the cluster itself (address), one actor per worker: one lands on each node's single CPU
    options = listener_options(orthanc, on_ray, engine="ray", address=cluster.address, workers=2,
                               threads_per_worker=1)
    with caplog.at_level(logging.INFO, logger="custom_networks.pacs.ray_engine"), Listener(options) as listener:
        orthanc.push(CLIENT_AET, resources)
        assert listener.wait_idle(COMPLETE_AFTER + PROCESSING_S), caplog.text[-3000:]
    assert not ray.is_initialized()  # the listener left the cluster when it stopped
    started = [match[3] for match in START_LINE.finditer(caplog.text)]
    assert sorted(started) == sorted([cluster.head_id[:8], cluster.second_id[:8]]), caplog.text[-3000:]
    ran_on = {match[1]: (match[2], match[3]) for match in RESULT_LINE.finditer(caplog.text)}
    assert set(ran_on) == set(sources) and {state for state, _ in ran_on.values()} == {"verified"}, ran_on

    # SEG and SR back in Orthanc, the same instances (UIDs, SEG pixels) the local engine wrote; nothing else stored
    assert orthanc.instance_count() == before + RESULTS_PER_SERIES * len(sources)
    for source, study_uid in sources.items():
        folder = local / "out" / study_uid / source
        for modality, name in (("SEG", "seg.dcm"), ("SR", "sr.dcm")):
            [stored_id] = results_in_study(orthanc, study_uid, modality)
            stored, written = download(orthanc, stored_id), pydicom.dcmread(folder / name)
            assert (stored.SeriesInstanceUID, stored.SOPInstanceUID) == (written.SeriesInstanceUID,
                                                                          written.SOPInstanceUID), modality
            if modality == "SEG":
                assert written.pixel_array.any()
                np.testing.assert_array_equal(stored.pixel_array, written.pixel_array)
    assert not any(path.is_file() and path.name != ".lock" for path in (on_ray / "spool").rglob("*"))

"""A real Orthanc PACS (Debian packages ``orthanc`` and ``orthanc-dicomweb``) for tests, on 127.0.0.1 only.

Orthanc 1.10 has no listen-address option and binds every interface, so the server runs with remote access off
and authentication on, and the tests send traffic to 127.0.0.1 alone. ``TCP_NODELAY=1`` keeps each DIMSE
instance from costing ~40 ms (Nagle + delayed ACK).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path

import requests

__all__ = ["ORTHANC_BINARY", "OrthancServer", "free_port", "orthanc_available"]

ORTHANC_BINARY = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
_START_TIMEOUT_S = 30.0
_STOP_TIMEOUT_S = 20.0


def orthanc_available() -> bool:
    """Whether the Orthanc binary and its DICOMweb plugin are installed (``.ci/run`` installs both)."""
    return Path(ORTHANC_BINARY).exists() and DICOMWEB_PLUGIN.exists()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class OrthancServer:
    """One Orthanc process with its storage in ``root``; start, stop and restart keep the same ports and data.

    Args:
        root: folder for the configuration, storage, index and log.
        username: the one registered HTTP user.
        password: its password (random when not given).
        modalities: DICOM peers Orthanc accepts, name -> ``(AE title, host, port)``; C-FIND, C-GET and C-MOVE
            from an AE that is not listed are refused.
        aet: Orthanc's own AE title.
    """

    def __init__(
        self,
        root: Path,
        *,
        username: str = "batch",
        password: str | None = None,
        modalities: dict[str, tuple[str, str, int]] | None = None,
        aet: str = "ORTHANC",
    ) -> None:
        self.root = Path(root)
        self.username = username
        self.password = password or secrets.token_urlsafe(12)
        self.modalities = dict(modalities or {})
        self.aet = aet
        self.http_port = free_port()
        self.dicom_port = free_port()
        self._process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        return f"{self.url}/dicom-web"

    @property
    def log_file(self) -> Path:
        return self.root / "orthanc.log"

    def _write_config(self) -> Path:
        storage = self.root / "storage"
        storage.mkdir(parents=True, exist_ok=True)
        config = {
            "Name": "attention-unets-test",
            "StorageDirectory": str(storage),
            "IndexDirectory": str(storage),
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": self.aet,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": True,
            "RegisteredUsers": {self.username: self.password},
            "DicomModalities": {name: list(peer) for name, peer in self.modalities.items()},
            "DicomCheckCalledAet": True,
            "DicomAlwaysAllowEcho": True,
            "DicomAlwaysAllowStore": True,
            "OverwriteInstances": True,
            "SaveJobs": False,
            "StableAge": 1,
            "HttpTimeout": 30,
            "Plugins": [str(DICOMWEB_PLUGIN)],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True, "Ssl": False,
                         "StudiesMetadata": "Full", "SeriesMetadata": "Full"},
        }
        path = self.root / "orthanc.json"
        path.write_text(json.dumps(config, indent=2))
        return path

    def start(self) -> OrthancServer:
        """Start Orthanc and wait until its REST API answers."""
        if self._process is not None and self._process.poll() is None:
            return self
        config = self._write_config()
        env = dict(os.environ, TCP_NODELAY="1")
        with open(self.log_file, "ab") as log:
            self._process = subprocess.Popen([ORTHANC_BINARY, str(config)], stdout=log, stderr=subprocess.STDOUT,
                                             env=env, cwd=self.root)
        deadline = time.monotonic() + _START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"Orthanc exited with {self._process.returncode}; see {self.log_file}")
            try:
                if requests.get(f"{self.url}/system", auth=self.auth, timeout=1).ok:
                    return self
            except requests.ConnectionError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"Orthanc did not answer within {_START_TIMEOUT_S:.0f} s; see {self.log_file}")

    def stop(self) -> None:
        """SIGTERM, then wait for the exit (the index database stays locked until then)."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def restart(self) -> OrthancServer:
        self.stop()
        return self.start()

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def __enter__(self) -> OrthancServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def auth(self) -> tuple[str, str]:
        return (self.username, self.password)

    def rest_get(self, path: str):
        """``GET <url><path>`` as JSON."""
        response = requests.get(f"{self.url}{path}", auth=self.auth, timeout=30)
        response.raise_for_status()
        return response.json()

    def upload(self, paths: Iterable[Path]) -> list[str]:
        """Store DICOM files through the REST API; returns the Orthanc instance ids."""
        ids = []
        for path in paths:
            response = requests.post(f"{self.url}/instances", data=Path(path).read_bytes(), auth=self.auth,
                                     timeout=30)
            response.raise_for_status()
            ids.append(response.json()["ID"])
        return ids

    def push(self, modality: str, resources: Iterable[str], asynchronous: bool = False) -> dict:
        """C-STORE ``resources`` (Orthanc ids of patients, studies, series or instances) to the registered modality
        ``modality``, as a routing rule does: ``POST /modalities/{modality}/store``. Synchronous by default (the
        answer comes when every instance was sent; a failed push raises); asynchronous returns the job at once."""
        body = {"Resources": list(resources), "Synchronous": not asynchronous}
        response = requests.post(f"{self.url}/modalities/{modality}/store", json=body, auth=self.auth, timeout=120)
        response.raise_for_status()
        return response.json()

    def lookup(self, uid: str) -> str:
        """The Orthanc id of the patient, study, series or instance with this DICOM identifier or UID."""
        response = requests.post(f"{self.url}/tools/lookup", data=uid, auth=self.auth, timeout=30)
        response.raise_for_status()
        found = response.json()
        if not found:
            raise KeyError(f"Orthanc holds nothing with the identifier {uid}")
        return found[0]["ID"]

    def instance_count(self) -> int:
        return int(self.rest_get("/statistics")["CountInstances"])

    def series_count(self) -> int:
        return int(self.rest_get("/statistics")["CountSeries"])

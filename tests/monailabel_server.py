"""The MONAI Label server of the tests: ``python -m monailabel_app.launch`` in the separate MONAI Label environment
as a subprocess on 127.0.0.1, with HOME, work folder and log in the test's folder; the brain bundle's demo weights
and widths. Shared by the MONAI Label test files (server, loop, viewer)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import requests

from custom_networks.runtime import demo_network_overrides

from conftest import BUNDLES_DIR, ML_PYTHON, REPO, free_port

BRAIN = "brain_tumor_mri_gsconv_eca_unet"
CHEST = "chest_xray_lung_ag_min_aspp_unet"
# the brain bundle's demo weights and the network they were trained with (configs/demo.json)
BRAIN_DEMO_OVERRIDES = demo_network_overrides(BRAIN)
BRAIN_DEMO_WEIGHTS = BUNDLES_DIR / BRAIN / "models" / "demo_model.pt"
SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
_START_TIMEOUT_S = 90



def ml_env(home: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment of the server and client processes: HOME in the test's folder (MONAI Label writes
    ``~/.cache/monailabel``), one torch thread, the repository importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MONAI_LABEL_", "PYTHON"))}
    env.update(HOME=str(home), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(REPO),
               PYTHONWARNINGS="ignore", **(extra or {}))
    return env


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class MonaiLabelServer:
    """``python -m monailabel_app.launch`` as a subprocess, with its work folder, HOME and log under ``root``."""

    def __init__(self, root: Path, studies: str, weights: dict[str, Path], overrides: dict, models=(), env=None,
                 extra_args=()):
        self.root = root
        self.work = root / "work"
        self.home = root / "home"
        self.home.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        overrides_file = root / "overrides.json"
        overrides_file.write_text(json.dumps(overrides))
        self.args = ["-m", "monailabel_app.launch", "--studies", studies, "--work", str(self.work), "--port",
                     str(self.port), "--overrides", str(overrides_file)]
        self.args += [a for name, file in weights.items() for a in ("--weights", f"{name}={file}")]
        if models:
            self.args += ["--models", ",".join(models)]
        self.args += list(extra_args)
        self.env = ml_env(self.home, env)
        self.log = root / "server.log"
        self.process: subprocess.Popen | None = None

    def model_file(self, bundle: str) -> Path:
        return self.work / "app" / "model" / bundle / "models" / "model.pt"

    def start(self) -> MonaiLabelServer:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen([str(ML_PYTHON), *self.args], cwd=self.root, env=self.env,
                                            stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + _START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"MONAI Label exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                if requests.get(f"{self.url}/info/", timeout=2).ok:
                    return self
            except requests.ConnectionError:
                pass
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"MONAI Label did not answer within {_START_TIMEOUT_S} s:\n{self.log_tail()}")

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def client(self, *args: str, timeout: float = 300) -> dict:
        """One ``monailabel_app.client`` action against this server; its JSON answer."""
        done = subprocess.run([str(ML_PYTHON), "-m", "monailabel_app.client", "--url", self.url, *args],
                              capture_output=True, text=True, timeout=timeout, env=self.env, cwd=self.root)
        assert done.returncode == 0, f"client {args}: {done.stdout[-2000:]}{done.stderr[-2000:]}\n{self.log_tail()}"
        return json.loads(done.stdout.strip().splitlines()[-1])

    def __enter__(self) -> MonaiLabelServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

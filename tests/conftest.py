"""Shared fixtures: small demo datasets in the public layouts, every bundle trained once and its inference run
once for the whole test run, and runners for the MONAI bundle CLI (a subprocess) and its workflows (in-process)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml
from monai.bundle import ConfigParser, ConfigWorkflow

from custom_networks.bundle_configs import SOURCES_FOLDER, bundle_names
from custom_networks.data import demo
from custom_networks.data.datalist import build_datalist, write_datalist
from custom_networks.runtime.overrides import bundle_cli_value

from ohif_viewer import browser_available
from orthanc_server import OrthancServer, free_port, orthanc_available

REPO = Path(__file__).resolve().parents[1]
BUNDLES_DIR = REPO / "bundles"
# the bundles, as their config sources list them (bundles/config_sources/<bundle>.yaml)
BUNDLES = tuple(bundle_names(BUNDLES_DIR))
_SOURCES = {bundle: yaml.safe_load((BUNDLES_DIR / SOURCES_FOLDER / f"{bundle}.yaml").read_text()) for bundle in BUNDLES}
# demo task generating the public layout each source's data set has
_DEMO_TASK_OF_DATASET = {"brain_tumor_mri": "brain_tumor", "lgg_mri": "lgg", "chest_xray_lung": "montgomery",
                         "isic2018": "isic2018"}
BUNDLE_TASK = {bundle: _DEMO_TASK_OF_DATASET[source["dataset"]] for bundle, source in _SOURCES.items()}
# tiny widths and sizes for CLI runs: U-Nets need sizes divisible by 2**(levels-1), the UNeXt family by 32
TINY_OVERRIDES = {
    bundle: {"network_def#features": [4, 8, 16, 24, 32] if "UNeXt" in source["network"] else [8, 16, 32],
             "spatial_size": [64, 64]}
    for bundle, source in _SOURCES.items()
}

# the separate MONAI Label environment (scripts/setup_monailabel.sh) the MONAI Label tests start the server in
ML_ENV = Path(os.environ.get("ATTUNETS_MONAILABEL_ENV", Path.home() / ".cache/attention-unets/monailabel-env"))
ML_PYTHON = ML_ENV / "bin" / "python"

# what a test marked with each of these needs, and how CI gets it: under CI=true a missing one fails the run,
# elsewhere the test is skipped with this reason (one policy for every service)
REQUIREMENTS = {
    "orthanc": (orthanc_available, "Orthanc is not installed: apt-get install orthanc orthanc-dicomweb"),
    "ray": (lambda: importlib.util.find_spec("ray") is not None, "Ray is not installed: pip install -e '.[ray]'"),
    "monailabel": (lambda: ML_PYTHON.exists(), f"no MONAI Label environment at {ML_ENV}: bash "
                   "scripts/setup_monailabel.sh"),
    "dicom_tools": (lambda: shutil.which("dciodvfy") is not None, "dciodvfy is missing: apt-get install dicom3tools"),
    "browser": (browser_available, "headless Chromium with OHIF is missing: apt-get install chromium chromium-driver, "
                "pip install selenium, bash scripts/setup_ohif.sh"),
}
# fixtures whose tests get a marker without saying so
_FIXTURE_MARKERS = {"orthanc": "orthanc", "trained_bundles": "training", "ray_address": "ray",
                    "dciodvfy_errors": "dicom_tools", "main_job": "subprocess", "wheel": "subprocess"}


def pytest_collection_modifyitems(items) -> None:
    for item in items:
        for fixture, marker in _FIXTURE_MARKERS.items():
            if fixture in item.fixturenames:
                item.add_marker(marker)


def pytest_runtest_setup(item) -> None:
    for marker in item.iter_markers():
        if marker.name in REQUIREMENTS:
            available, reason = REQUIREMENTS[marker.name]
            if not available():
                if os.environ.get("CI") == "true":
                    pytest.fail(f"{reason} (.ci/run installs it)", pytrace=False)
                pytest.skip(reason)


@dataclass
class DemoTask:
    """One generated dataset: its folder, datalist file, the datalist content and a folder of images to segment."""

    root: Path
    datalist_file: Path
    datalist: dict
    infer_dir: Path


def make_demo_task(
    base: Path, task: str, n: int, size: int | None = None, seed: int = 0, write_file: bool = True
) -> DemoTask:
    """Generate a demo dataset and its datalist (split by patient for LGG) plus a folder of the test images.

    With ``write_file`` the datalist is written to ``datalist.json`` (0.6/0.2/0.2 split); without, the bundles
    build it from the folder layout, and ``datalist`` holds what they build (``load_datalist``'s 0.7/0.2/0.1).
    """
    root = base / task
    if task == "brain_tumor":
        demo.write_brain_tumor_png(root, n_cases=n, size=size or 64, seed=seed)
    elif task == "lgg":
        demo.write_lgg_tif(root, n_patients=n, slices_per_patient=4, size=size or 64, seed=seed)
    elif task == "montgomery":
        demo.write_montgomery_cxr(root, n=n, size=size or 96, seed=seed)
    elif task == "shenzhen":
        demo.write_shenzhen_cxr(root, n=n, size=size or 96, seed=seed)
    else:
        # non-square and mixed sizes, as in ISIC, so that inference must restore each input's own shape
        sizes = ((size * 3 // 4, size), (size, size)) if size else ((48, 64), (64, 48), (56, 72))
        demo.write_isic2018(root, n=n, seed=seed, sizes=sizes)
    if write_file:
        datalist = build_datalist(root, val_fraction=0.2, test_fraction=0.2, seed=seed)
        write_datalist(datalist, root / "datalist.json")
    else:
        datalist = build_datalist(root, val_fraction=0.2, test_fraction=0.1)
    infer_dir = base / f"{task}_to_segment"
    infer_dir.mkdir()
    for item in datalist["testing"]:
        shutil.copy(root / item["image"], infer_dir)
    return DemoTask(root, root / "datalist.json", datalist, infer_dir)


def add_volume(folder: Path, channels: int, shape=(72, 64, 5), name: str = "volume.nii.gz") -> Path:
    """Write a NIfTI volume with uneven spacing into ``folder`` (4D when ``channels`` > 1)."""
    rng = np.random.default_rng(0)
    data = rng.uniform(0, 255, shape + ((channels,) if channels > 1 else ())).astype(np.float32)
    path = folder / name
    nib.save(nib.Nifti1Image(data, np.diag([0.8, 1.2, 3.0, 1.0])), path)
    return path


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory) -> dict[str, DemoTask]:
    """Small demo datasets for the CLI tests, generated once per session. The brain tumour set has no datalist
    file (the bundle builds one from the layout); the LGG and chest X-ray folders to segment also hold a 3D NIfTI
    volume (slice-by-slice path)."""
    base = tmp_path_factory.mktemp("demo")
    tasks = {
        "brain_tumor": make_demo_task(base, "brain_tumor", n=10, write_file=False),
        "lgg": make_demo_task(base, "lgg", n=5),
        "montgomery": make_demo_task(base, "montgomery", n=8),
        "isic2018": make_demo_task(base, "isic2018", n=8),
    }
    add_volume(tasks["lgg"].infer_dir, channels=3)
    add_volume(tasks["montgomery"].infer_dir, channels=1)
    return tasks


def cli_args(bundle: str, configs: Sequence[str], overrides: dict | None = None) -> list[str]:
    """Arguments of ``python -m monai.bundle run`` for configs of ``bundle`` plus ``--key value`` overrides."""
    files = [str(BUNDLES_DIR / bundle / "configs" / name) for name in configs]
    config_file = files[0] if len(files) == 1 else json.dumps(files)
    args = ["-m", "monai.bundle", "run", "--config_file", config_file]
    for key, value in (overrides or {}).items():
        args += [f"--{key}", bundle_cli_value(value)]
    return args


def subprocess_env(threads: int = 1) -> dict[str, str]:
    """Environment for CLI subprocesses: one torch thread each, since the tests run two at a time on 2 cores."""
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), PYTHONWARNINGS="ignore")
    return env


@dataclass
class CliResult:
    args: list[str]
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    def check(self) -> CliResult:
        assert self.returncode == 0, f"{' '.join(self.args)}\nexit {self.returncode}\n{self.stderr[-4000:]}"
        return self


def run_cli(args: list[str], cwd: Path, timeout: float = 600) -> CliResult:
    """Run one CLI command (``python <args>``) in ``cwd`` and capture its output."""
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=subprocess_env()
    )
    return CliResult([sys.executable, *args], done.returncode, done.stdout, done.stderr, time.perf_counter() - start)


def run_parallel(
    jobs: dict[str, tuple[list[str], Path]], workers: int = 2, timeout: float = 900
) -> dict[str, CliResult]:
    """Run CLI commands ``{name: (args, cwd)}`` with at most ``workers`` at a time (the machine has 2 cores)."""
    pending, running, results = list(jobs.items()), {}, {}
    deadline = time.monotonic() + timeout
    while pending or running:
        while pending and len(running) < workers:
            name, (args, cwd) = pending.pop(0)
            out, err = cwd / f"{name}.stdout", cwd / f"{name}.stderr"
            cwd.mkdir(parents=True, exist_ok=True)
            with open(out, "w") as fo, open(err, "w") as fe:
                process = subprocess.Popen(
                    [sys.executable, *args], cwd=cwd, stdout=fo, stderr=fe, text=True, env=subprocess_env()
                )
            running[name] = (process, args, cwd, time.perf_counter())
        for name, (process, args, cwd, start) in list(running.items()):
            if process.poll() is not None:
                results[name] = CliResult(
                    [sys.executable, *args],
                    process.returncode,
                    (cwd / f"{name}.stdout").read_text(),
                    (cwd / f"{name}.stderr").read_text(),
                    time.perf_counter() - start,
                )
                del running[name]
        if time.monotonic() > deadline:
            for process, *_ in running.values():
                process.kill()
            raise TimeoutError(f"bundle CLI runs did not finish in {timeout} s: {sorted(running)}")
        time.sleep(0.2)
    return results


def run_in_process(bundle: str, configs: Sequence[str], overrides: dict, workflow_type: str = "train") -> None:
    """What ``python -m monai.bundle run`` runs, in this process: every new interpreter spends about 15 s of CPU
    importing torch and MONAI, so the tests keep one real CLI run per config kind and run the rest here."""
    files = [str(BUNDLES_DIR / bundle / "configs" / name) for name in configs]
    workflow = ConfigWorkflow(config_file=files, logging_file=False, workflow_type=workflow_type, **overrides)
    workflow.initialize()
    workflow.run()
    workflow.finalize()


def infer_in_process(bundle: str, bundle_root: Path, data: Path, output: Path) -> None:
    """``inference.json`` of ``bundle`` at tiny widths on ``data`` with overlays, on the CPU, outputs to ``output``."""
    overrides = {"bundle_root": str(bundle_root), "dataset_dir": str(data), "output_dir": str(output),
                 "device": "$torch.device('cpu')", "save_overlays": True, **TINY_OVERRIDES[bundle]}
    run_in_process(bundle, ["inference.json"], overrides, workflow_type="infer")


# the bundle trained through the real CLI, with the overrides MONAI Label's train task passes
MONAI_LABEL_BUNDLE = "lgg_mri_cbam_unet"
# the bundle trained with its paper's joint loss and MLflow tracking
TRACKED_BUNDLE = "isic2018_skin_sc_unext"


def monai_label_args(bundle: str, task: DemoTask, bundle_root: Path) -> dict:
    """Overrides as MONAI Label's bundle train task passes them: explicit data lists, epochs, device, handlers."""
    parser = ConfigParser()
    parser.read_config(BUNDLES_DIR / bundle / "configs" / "train.json")

    def absolute(items):
        return [{key: str(task.root / value) for key, value in item.items()} for item in items]

    return {
        "bundle_root": str(bundle_root),
        "device": "cpu",
        "train#trainer#max_epochs": 1,
        "train#dataset#data": absolute(task.datalist["training"]),
        "validate#dataset#data": absolute(task.datalist["validation"]),
        "train#handlers": parser["train"]["handlers"],
    }


@dataclass
class TrainedBundle:
    """One bundle trained for one epoch at tiny widths: its bundle_root, demo task, overrides and masks."""

    root: Path
    task: DemoTask
    overrides: dict
    masks: Path


@dataclass
class TrainedBundles:
    bundles: dict[str, TrainedBundle]
    cli_train: CliResult
    mlflow_db: Path


@pytest.fixture(scope="session")
def trained_bundles(demo_data, tmp_path_factory) -> TrainedBundles:
    """Every bundle trained once per test run (1 epoch, tiny widths, demo data), then its ``inference.json`` run on
    the demo folder to segment, masks into ``masks``. ``MONAI_LABEL_BUNDLE`` trains through the real CLI in the
    background with MONAI Label's overrides (``--args_file``); the others in this process, ``TRACKED_BUNDLE`` with
    the edge loss on and MLflow tracking into a local SQLite file. Shared by the bundle and deploy tests."""
    work = tmp_path_factory.mktemp("trained_bundles")
    bundles = {}
    for bundle in BUNDLES:
        task = demo_data[BUNDLE_TASK[bundle]]
        root = work / bundle / "bundle_root"
        overrides = {"bundle_root": str(root), "dataset_dir": str(task.root), "num_workers": 0, "batch_size": 2,
                     **TINY_OVERRIDES[bundle]}
        bundles[bundle] = TrainedBundle(root, task, overrides, work / bundle / "masks")
    mlflow_db = work / "mlruns.db"
    args_file = work / "monai_label_overrides.json"
    trained = bundles[MONAI_LABEL_BUNDLE]
    args_file.write_text(json.dumps(monai_label_args(MONAI_LABEL_BUNDLE, trained.task, trained.root)))
    overrides = {"args_file": str(args_file), **TINY_OVERRIDES[MONAI_LABEL_BUNDLE]}
    cli = cli_args(MONAI_LABEL_BUNDLE, ["train.json"], overrides)
    with ThreadPoolExecutor(max_workers=1) as background:
        cli_train = background.submit(run_cli, cli, work)
        for bundle, trained in bundles.items():
            if bundle == MONAI_LABEL_BUNDLE:
                continue
            overrides = {**trained.overrides, "train#trainer#max_epochs": 1}
            tracking = {}
            if bundle == TRACKED_BUNDLE:
                overrides["edge_weight"] = 1.0
                tracking = {"tracking": "mlflow", "tracking_uri": f"sqlite:///{mlflow_db}", "run_name": "demo"}
            run_in_process(bundle, ["train.json"], {**overrides, **tracking})
        cli_result = cli_train.result().check()
    for bundle, trained in bundles.items():
        infer = {**trained.overrides, "dataset_dir": str(trained.task.infer_dir), "output_dir": str(trained.masks)}
        run_in_process(bundle, ["inference.json"], infer, workflow_type="infer")
    return TrainedBundles(bundles, cli_result, mlflow_db)


@pytest.fixture
def dciodvfy_errors():
    """``errors(path)``: the error lines ``dciodvfy`` (dicom3tools) prints about a DICOM file (warnings allowed);
    the whole report is printed for the log. Tests using it are marked ``dicom_tools``."""

    def errors(path: Path) -> list[str]:
        done = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=120, check=False)
        report = (done.stdout + done.stderr).splitlines()
        print(f"dciodvfy {path.name}:", *report, sep="\n  ")
        return [line for line in report if "Error" in line]

    return errors


# AE title of this project's own DICOM node (batch job, MONAI Label) as the test Orthanc knows it
CLIENT_AET = "ATTUNETS"


@pytest.fixture
def orthanc(tmp_path) -> OrthancServer:
    """A real Orthanc on 127.0.0.1 (authentication on) that accepts DIMSE requests from ``CLIENT_AET`` at
    ``orthanc.client_port`` (free for the test's own storage SCP); stopped after the test."""
    client_port = free_port()
    server = OrthancServer(tmp_path / "orthanc", modalities={CLIENT_AET: (CLIENT_AET, "127.0.0.1", client_port)})
    server.client_aet = CLIENT_AET
    server.client_port = client_port
    with server:
        yield server

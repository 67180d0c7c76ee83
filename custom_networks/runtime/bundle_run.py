"""How a bundle runs: the one place that turns (bundle, model, weights, demo, device, overrides) into a workflow.

Every way in (the Python API, ``attention-unets infer`` and ``pacs-batch``, the MONAI Label app, the ablation runner,
the scripts) calls :func:`prepare_bundle` and builds what it runs from the :class:`BundleRun` it returns, so they
cannot drift apart. :func:`prepare_bundle` decides, before anything heavy is built:

- the config stack: ``inference.json``, plus ``demo.json`` for the demo weights, plus ``inference_onnx.json`` for an
  ONNX model;
- the model: ``auto`` runs the static int8 ONNX model on the CPU when the export verified it for the bundle's
  ``models/model.pt`` (same SHA-256), else the torch checkpoint (always on CUDA, with the demo weights, and for a
  ``.pt`` file given as ``weights``); ``int8`` is the int8 file whose integer products this CPU computes exactly
  (:func:`~custom_networks.deploy.int8_models.int8_model_for_this_cpu`);
- the model file and its SHA-256 (which names the weights in the run summary and derives the SEG's UIDs);
- the overrides, each id checked against the config stack (the closest valid id named).

Example::

    run = prepare_bundle("brain_tumor_mri_gsconv_eca_unet", demo=True)
    workflow = run.workflow(dataset_dir="study/", output_dir="out/")
    workflow.run()
    workflow.finalize()
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from custom_networks.errors import InputError
from custom_networks.file_hash import file_sha256
from custom_networks.runtime.locate import bundle_folder
from custom_networks.runtime.overrides import check_overrides

if TYPE_CHECKING:
    from custom_networks.clinical.dicom_series import SeriesRules

__all__ = ["DEMO_CONFIG", "DEMO_WEIGHTS", "MODEL_CHOICES", "MODEL_FILES", "BundleRequest", "BundleRun",
           "build_workflow", "check_device", "demo_network_overrides", "prepare_bundle"]

# model kind -> (file in <bundle>/models/, config id that names it); int8's file depends on the CPU
MODEL_FILES = {"torch": ("model.pt", "ckpt_path"), "onnx": ("model.onnx", "onnx_model"), "int8": ("", "onnx_model")}
MODEL_CHOICES = ("auto", *MODEL_FILES)
DEMO_WEIGHTS = "demo_model.pt"
DEMO_CONFIG = "demo.json"
_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


@dataclass(frozen=True)
class BundleRun:
    """A bundle resolved for running; nothing is instantiated until :meth:`workflow`.

    Args:
        folder: the bundle folder.
        name, version: the bundle's name and version (``metadata.json``).
        model: the model kind that runs: ``"torch"``, ``"onnx"`` or ``"int8"``.
        model_file: the checkpoint or ONNX model.
        weights_sha256: its SHA-256.
        demo: whether the demo weights run (``configs/demo.json`` in the stack).
        device: ``"auto"`` (CUDA when there is one), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        configs: the config stack, in order.
        labels: label value to segment name (background left out).
        rules: the bundle's rules for picking the series of a study.
        overrides: checked config overrides.
    """

    folder: Path
    name: str
    version: str
    model: str
    model_file: Path
    weights_sha256: str
    demo: bool
    device: str
    configs: tuple[Path, ...]
    labels: dict[int, str]
    rules: SeriesRules
    overrides: dict = field(default_factory=dict)

    @property
    def metadata_file(self) -> Path:
        return self.folder / "configs" / "metadata.json"

    def settings(self, **values) -> dict:
        """The config overrides a workflow of this run gets: the user's, the bundle root, the model file and its
        hash, the device, then ``values`` (e.g. ``dataset_dir``, ``output_dir``)."""
        settings = {
            **self.overrides,
            "bundle_root": str(self.folder),
            MODEL_FILES[self.model][1]: str(self.model_file),
            "weights_sha256": self.weights_sha256,
        }
        if self.device != "auto":
            settings["device"] = f"$torch.device('{self.device}')"
        return {**settings, **values}

    def workflow(self, workflow_type: str = "infer", **values):
        """The bundle's ``ConfigWorkflow`` on this run's config stack with :meth:`settings` (``values`` last),
        initialised.

        Raises:
            InputError: the device is not there (parameter ``device``).
        """
        check_device(self.device)
        return build_workflow(self.configs, workflow_type, self.settings(**values))


def build_workflow(configs: Sequence[Path], workflow_type: str, settings: Mapping[str, object]):
    """MONAI's ``ConfigWorkflow`` on the config stack ``configs`` (of one bundle's ``configs/`` folder, whose
    ``metadata.json`` it reads) with ``settings`` as overrides, initialised: as ``python -m monai.bundle run``
    builds it, without its logging set-up."""
    from monai.bundle import ConfigWorkflow

    workflow = ConfigWorkflow(
        config_file=[str(path) for path in configs],
        meta_file=str(Path(configs[0]).parent / "metadata.json"),
        logging_file=False,
        workflow_type=workflow_type,
        **settings,
    )
    workflow.initialize()
    return workflow


@dataclass(frozen=True)
class BundleRequest:
    """What to run, as plain picklable fields, for a process that prepares the bundle itself (a Ray actor, a
    worker process of a service): ``prepare_bundle(**fields)``, see :func:`prepare_bundle` for each field."""

    bundle: str
    model: str = "auto"
    weights: str | None = None
    demo: bool = False
    device: str = "auto"
    overrides: dict = field(default_factory=dict)

    def prepare(self) -> BundleRun:
        return prepare_bundle(self.bundle, self.model, self.weights, self.demo, self.device, self.overrides)

    def pinned(self, run: BundleRun) -> BundleRequest:
        """This request with ``run``'s resolved model kind and file, so that every process of a job runs exactly
        the model its driver hashed (``auto`` and the int8 choice per CPU are decided once)."""
        return dataclasses.replace(self, bundle=str(run.folder), model=run.model, weights=str(run.model_file))


def check_device(device: str) -> None:
    """Refuse a device this process cannot use.

    Raises:
        InputError: not ``auto``, ``cpu``, ``cuda`` or ``cuda:N``, or CUDA asked for where there is none.
    """
    if not _DEVICE.fullmatch(device):
        raise InputError(f"device {device}: expected auto, cpu, cuda or cuda:N", parameter="device")
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise InputError(f"device {device}: this torch build or machine has no CUDA device; use cpu",
                             parameter="device")


def _on_cuda(device: str) -> bool:
    if device.startswith("cuda"):
        return True
    if device == "cpu":
        return False
    import torch

    return torch.cuda.is_available()


def _model_kind(folder: Path, model: str, weights: Path | None, demo: bool, device: str) -> str:
    """What ``model`` means for this bundle here (``auto`` resolved)."""
    if model not in MODEL_CHOICES:
        raise InputError(f"model {model}: expected one of {', '.join(MODEL_CHOICES)}", parameter="model")
    if demo and model in ("onnx", "int8") and weights is None:
        raise InputError(f"model {model}: the demo weights are a torch checkpoint; use torch or auto, or give "
                         "weights=<an ONNX model exported from them>", parameter="model")
    if model != "auto":
        return model
    if weights is not None:
        return "onnx" if weights.suffix.lower() == ".onnx" else "torch"
    if demo or _on_cuda(device):
        return "torch"
    from custom_networks.deploy.int8_models import verified_int8_model

    checkpoint = folder / "models" / MODEL_FILES["torch"][0]
    return "int8" if checkpoint.is_file() and verified_int8_model(folder / "models", checkpoint) else "torch"


def _model_file(folder: Path, model: str, weights: Path | None, demo: bool) -> Path:
    if weights is not None:
        if not weights.is_file():
            raise InputError(f"weights {weights}: no such model file", parameter="weights")
        return weights.resolve()
    if model == "int8":
        from custom_networks.deploy.int8_models import int8_model_for_this_cpu

        path = Path(int8_model_for_this_cpu(folder / "models"))
    else:
        path = folder / "models" / (DEMO_WEIGHTS if demo else MODEL_FILES[model][0])
    if not path.is_file():
        ways = ("train the bundle (configs/train.json writes models/model.pt), run its demo weights with demo=True "
                "where it ships them, or give weights=<model file>") if model == "torch" else (
                "export it with scripts/export_bundle_models.py, or give weights=<model file>")
        raise InputError(f"{path}: model file not found; {ways}")
    return path.resolve()


def demo_network_overrides(bundle: str | Path) -> dict:
    """What ``configs/demo.json`` sets besides the checkpoint: the network and window the demo weights were trained
    with (widths, switches, ``spatial_size``), for a run or a training that puts the demo weights, or weights
    trained like them, in another place than the demo config does.

    Raises:
        InputError: the bundle ships no demo weights.
    """
    path = _demo_config(bundle_folder(bundle))
    return {key: value for key, value in json.loads(path.read_text()).items()
            if key not in ("ckpt_path", "demo_weights")}


def _demo_config(folder: Path) -> Path:
    """The bundle's ``configs/demo.json``; ``InputError`` (parameter ``demo``) when it ships no demo weights."""
    path = folder / "configs" / DEMO_CONFIG
    if not path.is_file():
        raise InputError(f"demo: {folder.name} ships no demo weights (no configs/{DEMO_CONFIG})", parameter="demo")
    return path


def prepare_bundle(
    bundle: str | Path,
    model: str = "auto",
    weights: str | Path | None = None,
    demo: bool = False,
    device: str | None = None,
    overrides: Mapping[str, object] | None = None,
) -> BundleRun:
    """Resolve how ``bundle`` runs (see the module docstring); reads configs and hashes the model, builds nothing.

    Args:
        bundle: a bundle folder, or the name of a shipped bundle.
        model: ``"auto"``, ``"torch"``, ``"onnx"`` or ``"int8"``.
        weights: a model file instead of the bundle's (``.onnx`` runs as an ONNX model).
        demo: the bundle's shipped demo weights (a pipeline check, not for clinical use).
        device: ``"auto"`` (or ``None``), ``"cpu"``, ``"cuda"``, ``"cuda:N"``.
        overrides: config id to value, e.g. ``{"network_def#features": [8, 16, 32]}``.

    Raises:
        InputError: an unknown bundle, model kind, device form or config id; no demo weights; a missing model file.
    """
    from monai.bundle import ConfigParser

    from custom_networks.clinical.dicom_series import SeriesRules

    folder = bundle_folder(bundle)
    device = device or "auto"
    if not _DEVICE.fullmatch(device):
        raise InputError(f"device {device}: expected auto, cpu, cuda or cuda:N", parameter="device")
    weights = Path(weights) if weights is not None else None
    configs = [folder / "configs" / "inference.json"]
    if demo:
        configs.append(_demo_config(folder))
    kind = _model_kind(folder, model, weights, demo, device)
    if kind != "torch":
        configs.append(folder / "configs" / "inference_onnx.json")
    checked = check_overrides(overrides, configs)
    model_file = _model_file(folder, kind, weights, demo)

    parser = ConfigParser()
    parser.read_config([str(path) for path in configs])
    parser.read_meta(str(folder / "configs" / "metadata.json"))
    parser.update({**checked, "bundle_root": str(folder)})
    meta = parser.get_parsed_content("_meta_")
    channel_def = meta["network_data_format"]["outputs"]["pred"]["channel_def"]
    rules = SeriesRules(
        tuple(parser.get_parsed_content("series_modalities") or ()),
        parser.get_parsed_content("series_description"),
        bool(parser.get_parsed_content("series_prefer_most_slices")),
    )
    return BundleRun(
        folder=folder,
        name=str(parser.get_parsed_content("bundle_name")),
        version=str(meta["version"]),
        model=kind,
        model_file=model_file,
        weights_sha256=file_sha256(model_file),
        demo=demo,
        device=device,
        configs=tuple(configs),
        overrides=checked,
        labels={int(value): str(name) for value, name in channel_def.items() if int(value) != 0},
        rules=rules,
    )

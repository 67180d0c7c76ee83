"""A bundle's own inference workflow, parsed and its model loaded once, run on one DICOM series folder at a time.

``python -m monai.bundle run`` builds the workflow for one ``dataset_dir`` and loads the model at the start of the
run; a batch job segments series one by one as they are retrieved. So the workflow (``inference.json``, plus
``inference_onnx.json`` for ONNX models and ``demo.json`` for the demo weights) is built once, its
``CheckpointLoader`` handlers run once and are detached, and each series is handed to the same evaluator as a new
one-case dataset: the preprocessing, inferer, network, postprocessing and writers are the bundle's own, so a series
gives here exactly the files a folder run gives. The SEG writer gets the weights' SHA-256, which makes its UIDs
deterministic (:func:`~custom_networks.clinical.seg_writer.deterministic_seg_uids`).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from custom_networks.clinical.dicom_series import SeriesRules
from custom_networks.errors import InputError
from custom_networks.file_hash import file_sha256

__all__ = [
    "MODEL_KINDS",
    "BundleInfo",
    "BundlePipeline",
    "describe_bundle",
    "PipelineOutcome",
    "model_file",
    "model_loads",
]

# --model -> the model file in <bundle>/models/ and the config id that points at it (as `attention-unets infer`)
MODEL_KINDS = {
    "torch": ("model.pt", "ckpt_path"),
    "onnx": ("model.onnx", "onnx_model"),
    "int8": ("model_int8_static.onnx", "onnx_model"),
}
_DEMO_WEIGHTS = "demo_model.pt"
_SEG_WRITER = "SaveDicomSegd"
_LOADS = {"count": 0}


def model_loads() -> int:
    """How many times this process has loaded a bundle model (one per :class:`BundlePipeline`)."""
    return _LOADS["count"]


def model_file(bundle: Path, model: str = "torch", weights: Path | None = None, demo: bool = False) -> Path:
    """The model file a run uses: ``weights``, else the bundle's file for ``model`` (its demo weights with ``demo``).

    Raises:
        InputError: the file does not exist (the message says how to make it).
    """
    if model not in MODEL_KINDS:
        raise InputError(f"--model {model}: expected one of {sorted(MODEL_KINDS)}")
    name = _DEMO_WEIGHTS if demo and model == "torch" else MODEL_KINDS[model][0]
    path = Path(weights) if weights else bundle / "models" / name
    if not path.is_file():
        how = "export it with scripts/export_bundle_models.py" if model != "torch" else "train the bundle, use --demo"
        raise InputError(f"{path}: model file not found; {how}, or pass --weights")
    return path.resolve()


def _config_files(bundle: Path, model: str, demo: bool) -> list[Path]:
    """inference.json, plus demo.json for the demo weights, plus inference_onnx.json for ONNX models."""
    configs = [bundle / "configs" / "inference.json"]
    if demo:
        configs.append(bundle / "configs" / "demo.json")
        if not configs[-1].is_file():
            raise InputError(f"--demo: {bundle.name} ships no demo weights (no configs/demo.json)")
    if model != "torch":
        configs.append(bundle / "configs" / "inference_onnx.json")
    return configs


@dataclass(frozen=True)
class BundleInfo:
    """What a job needs to know of its bundle before (or without) loading the model.

    ``labels``: label value to segment name (background excepted). ``rules``: the bundle's series rules.
    """

    folder: Path
    name: str
    version: str
    weights: Path
    weights_sha256: str
    labels: dict[int, str]
    rules: SeriesRules
    configs: tuple[Path, ...]


def describe_bundle(
    bundle: Path,
    model: str = "torch",
    weights: Path | None = None,
    demo: bool = False,
    overrides: Mapping[str, object] | None = None,
) -> BundleInfo:
    """Read the bundle's configs (with ``overrides``) and hash its model file; nothing is instantiated.

    Raises:
        InputError: no such bundle config, demo config or model file.
    """
    from monai.bundle import ConfigParser

    bundle = Path(bundle).resolve()
    configs = _config_files(bundle, model, demo)
    path = model_file(bundle, model, weights, demo)
    parser = ConfigParser()
    parser.read_config([str(config) for config in configs])
    parser.read_meta(str(bundle / "configs" / "metadata.json"))
    parser.update({**dict(overrides or {}), "bundle_root": str(bundle)})
    channel_def = parser.get_parsed_content("_meta_")["network_data_format"]["outputs"]["pred"]["channel_def"]
    rules = SeriesRules(
        tuple(parser.get_parsed_content("series_modalities") or ()),
        parser.get_parsed_content("series_description"),
        bool(parser.get_parsed_content("series_prefer_most_slices")),
    )
    return BundleInfo(
        bundle,
        str(parser.get_parsed_content("bundle_name")),
        str(parser.get_parsed_content("_meta_")["version"]),
        path,
        file_sha256(path),
        {int(value): str(name) for value, name in channel_def.items() if int(value) != 0},
        rules,
        tuple(configs),
    )


@dataclass(frozen=True)
class PipelineOutcome:
    """What the bundle made of one series folder.

    ``files``: output kind (``"seg"``, ``"mask"``, ``"overlay"``) to path. ``segments``: the bundle's measurements
    per segment (label, voxels, volume_ml, ...). ``seconds``: ``decode`` (loading and preprocessing),
    ``network`` (the inferer), ``seg_encoding`` (the SEG writer) and ``postprocessing`` (the other writers).
    """

    ok: bool
    message: str = ""
    files: dict[str, Path] = field(default_factory=dict)
    segments: tuple[dict, ...] = ()
    seconds: dict[str, float] = field(default_factory=dict)


class BundlePipeline:
    """The inference workflow of ``bundle`` with its model loaded, segmenting one series folder per :meth:`run`.

    Args:
        bundle: the bundle folder (with ``configs/inference.json``).
        output_dir: where the bundle's writers put their files (one subfolder-free layout, named by series folder).
        model: ``"torch"``, ``"onnx"`` or ``"int8"`` (which model file and config).
        weights: model file instead of the bundle's.
        demo: the bundle's demo weights and ``configs/demo.json``.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"`` (or ``"cuda:1"``).
        overrides: config id -> value, as ``--set`` gives them.
    """

    def __init__(
        self,
        bundle: Path,
        output_dir: Path,
        *,
        model: str = "torch",
        weights: Path | None = None,
        demo: bool = False,
        device: str = "auto",
        overrides: Mapping[str, object] | None = None,
    ) -> None:
        self.info = describe_bundle(bundle, model, weights, demo, overrides)
        self.output_dir = Path(output_dir)
        bundle, configs = self.info.folder, list(self.info.configs)

        from ignite.engine import Events
        from monai.bundle import ConfigWorkflow
        from monai.handlers import CheckpointLoader

        config = {
            **dict(overrides or {}),
            "bundle_root": str(bundle),
            "output_dir": str(self.output_dir),
            "save_overlays": True,
            # the cases come one at a time from the batch job, not from a dataset_dir
            "dataset#data": [],
            MODEL_KINDS[model][1]: str(self.info.weights),
            f"writers#{_writer_index(configs)}#weights_sha256": self.info.weights_sha256,
        }
        if device != "auto":
            config["device"] = f"$torch.device('{device}')"
        self.workflow = ConfigWorkflow(
            config_file=[str(path) for path in configs],
            meta_file=str(bundle / "configs" / "metadata.json"),
            logging_file=False,
            workflow_type="infer",
            **config,
        )
        self.workflow.initialize()
        parser = self.workflow.parser
        self.dataset = parser.get_parsed_content("dataset")
        self.recorder = parser.get_parsed_content("recorder")
        self.evaluator = parser.get_parsed_content("evaluator")
        # load the weights now, once, and keep the loaders from loading them again at every run's start
        for handler in list(self.evaluator._event_handlers.get(Events.STARTED, [])):
            if isinstance(handler[0], CheckpointLoader):
                handler[0](self.evaluator)
                self.evaluator.remove_event_handler(handler[0], Events.STARTED)
        _LOADS["count"] += 1
        self._timer = _StageTimer(self.evaluator, self._seg_writer(parser))

    def _seg_writer(self, parser):
        return next(w for w in parser.get_parsed_content("writers") if type(w).__name__ == _SEG_WRITER)

    def run(self, folder: Path) -> PipelineOutcome:
        """Segment the series in ``folder`` (the bundle's series rules pick it); failures are an outcome, not raised.

        Errors of the network or writers propagate (the caller records them)."""
        from custom_networks.clinical.cases import STATUS_OK, cases_datalist, discover_cases

        shutil.rmtree(self.recorder.outcomes_dir, ignore_errors=True)
        self.dataset.data = cases_datalist(discover_cases(folder))
        self._timer.reset()
        # ignite keeps the length of the last epoch; a series that failed to load left it at 0 (MONAI then skips)
        self.evaluator.state.epoch_length = None
        self.evaluator.run()
        outcomes = self.recorder.outcomes()
        shutil.rmtree(self.recorder.outcomes_dir, ignore_errors=True)
        if len(outcomes) != 1:
            return PipelineOutcome(False, f"{folder}: the bundle recorded {len(outcomes)} outcomes for one series")
        outcome = outcomes[0]
        if outcome.status != STATUS_OK:
            return PipelineOutcome(False, outcome.message, seconds=self._timer.seconds())
        return PipelineOutcome(True, "", _output_kinds(outcome.outputs), outcome.segments, self._timer.seconds())


def _writer_index(configs: list[Path]) -> int:
    """Index of the SEG writer in the bundle's ``writers`` list (the last config defining ``writers`` wins)."""
    writers = None
    for path in configs:
        content = json.loads(path.read_text())
        writers = content.get("writers", writers)
    for index, writer in enumerate(writers or []):
        if isinstance(writer, dict) and str(writer.get("_target_", "")).endswith(_SEG_WRITER):
            return index
    raise InputError(f"{configs[0]}: the bundle's writers hold no {_SEG_WRITER}; a PACS job stores DICOM SEG")


def _output_kinds(outputs: tuple[str, ...]) -> dict[str, Path]:
    kinds = {}
    for output in outputs:
        name = output.lower()
        kind = "seg" if name.endswith(".dcm") else "overlay" if name.endswith(".png") else "mask"
        kinds[kind] = Path(output)
    return kinds


class _StageTimer:
    """Seconds per stage of one evaluator run, from ignite's events and a wrapped SEG writer."""

    def __init__(self, evaluator, seg_writer) -> None:
        from ignite.engine import Events
        from monai.engines.utils import IterationEvents

        self._marks: dict[str, float] = {}
        self._totals: dict[str, float] = {}
        events = {
            Events.GET_BATCH_STARTED: "get_batch_started",
            Events.GET_BATCH_COMPLETED: "get_batch_completed",
            IterationEvents.FORWARD_COMPLETED: "forward_completed",
            Events.ITERATION_COMPLETED: "iteration_completed",
        }
        for event, name in events.items():
            evaluator.add_event_handler(event, lambda _engine, name=name: self._mark(name))
        write = seg_writer.write

        def timed_write(*args, **kwargs):
            start = time.perf_counter()
            try:
                return write(*args, **kwargs)
            finally:
                self._add("seg_encoding", time.perf_counter() - start)

        seg_writer.write = timed_write

    def reset(self) -> None:
        self._marks.clear()
        self._totals.clear()

    def _add(self, stage: str, seconds: float) -> None:
        self._totals[stage] = self._totals.get(stage, 0.0) + seconds

    def _mark(self, name: str) -> None:
        now = time.perf_counter()
        spans = {"get_batch_completed": ("get_batch_started", "decode"),
                 "forward_completed": ("get_batch_completed", "network"),
                 "iteration_completed": ("forward_completed", "postprocessing")}
        if name in spans and spans[name][0] in self._marks:
            self._add(spans[name][1], now - self._marks[spans[name][0]])
        self._marks[name] = now

    def seconds(self) -> dict[str, float]:
        totals = dict(self._totals)
        # the SEG writer runs inside the postprocessing; count it once
        totals["postprocessing"] = max(totals.get("postprocessing", 0.0) - totals.get("seg_encoding", 0.0), 0.0)
        return {stage: round(value, 4) for stage, value in totals.items()}

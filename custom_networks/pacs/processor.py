"""One series through the whole job: retrieve, segment with the bundle, store the SEG, confirm it by a query.

:class:`SeriesProcessor` is built once per process (the local engine's, or each Ray actor's) from a
:class:`ProcessorSpec` of plain fields, so that it can be rebuilt anywhere from the same arguments; building it
loads the bundle's model, once. :meth:`SeriesProcessor.process` never raises for a bad series or a PACS that is
down: it returns a failed :class:`SeriesResult` with a one-line reason.
"""

from __future__ import annotations

import io
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pydicom

from custom_networks.atomic_files import atomic_path
from custom_networks.clinical.errors import find_case_error, one_line
from custom_networks.clinical.seg_writer import deterministic_seg_uids
from custom_networks.errors import find_input_error
from custom_networks.pacs.client import PacsError, SeriesRef
from custom_networks.pacs.connect import open_pacs
from custom_networks.pacs.credentials import Credentials
from custom_networks.pacs.ledger import STATE_FAILED, STATE_INFERRED, STATE_RETRIEVED, STATE_STORED, STATE_VERIFIED
from custom_networks.pacs.pipeline import BundleInfo
from custom_networks.pacs.retry import RetryPolicy, with_retries

__all__ = [
    "FILE_NAMES",
    "START_RETRIEVE",
    "START_STORE",
    "START_VERIFY",
    "ProcessorSpec",
    "SeriesProcessor",
    "SeriesResult",
    "SeriesTask",
    "StageCallback",
    "seg_uids",
]

# where a task starts: from the PACS, from a SEG computed earlier (store it), or from a stored SEG (confirm it)
START_RETRIEVE, START_STORE, START_VERIFY = "retrieve", "store", "verify"
# output kind -> file name in a series' result folder
FILE_NAMES = {"seg": "seg.dcm", "mask": "mask.nii.gz", "overlay": "overlay.png"}
_THUMBNAIL_PX = 320

logger = logging.getLogger(__name__)

StageCallback = Callable[["SeriesTask", str, dict], None]
"""Called as ``(task, state, fields)`` when a series reaches ``retrieved``, ``inferred`` or ``stored``."""


@dataclass(frozen=True)
class ProcessorSpec:
    """Everything a :class:`SeriesProcessor` is built from, as plain (picklable) fields.

    Args:
        bundle: the bundle folder.
        pacs: the PACS, as ``open_pacs`` reads it (DICOMweb URL or ``AE@host:port``).
        results_dir: where a series' SEG waits until it is confirmed stored (kept across restarts of the job).
        model: ``"torch"``, ``"onnx"`` or ``"int8"``.
        weights: a model file instead of the bundle's.
        demo: the bundle's demo weights.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``.
        overrides: bundle config overrides (``--set``).
        credentials: for the PACS.
        timeout_s: seconds per PACS request.
        retry: backoff for transient PACS failures.
        store_pacs: store the SEG on the PACS (and confirm it there).
        output_dir: also (or only) keep the results in this folder, ``<study>/<series>/seg.dcm``.
        write_nifti: with ``output_dir``, keep the NIfTI mask too.
        calling_aet, storage_port, retrieve: DIMSE settings (see ``open_pacs``).
    """

    bundle: str
    pacs: str
    results_dir: str
    model: str = "torch"
    weights: str | None = None
    demo: bool = False
    device: str = "auto"
    overrides: dict = field(default_factory=dict)
    credentials: Credentials | None = None
    timeout_s: float = 30.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    store_pacs: bool = True
    output_dir: str | None = None
    write_nifti: bool = False
    calling_aet: str = "ATTUNETS"
    storage_port: int | None = None
    retrieve: str = "get"


@dataclass(frozen=True)
class SeriesTask:
    """One series to process and where to start (``retrieve``, ``store`` or ``verify``)."""

    series: SeriesRef
    start: str = START_RETRIEVE


@dataclass(frozen=True)
class SeriesResult:
    """How one series ended.

    Args:
        series: the series.
        state: ``verified`` or ``failed``.
        reason: one line, for a failure.
        seg_series_uid, seg_sop_uid: the SEG's UIDs (deterministic).
        segments: per segment ``{"label", "voxels", "volume_ml"}``.
        seconds: per stage (``retrieve``, ``decode``, ``network``, ``seg_encoding``, ``postprocessing``, ``store``,
            ``verify``) of this attempt.
        files: output kind to the path kept in ``output_dir`` (nothing when only stored on the PACS).
        thumbnail_png: a small overlay picture for the report (PNG bytes), when the series was segmented now.
        failed_stage: the stage that failed.
    """

    series: SeriesRef
    state: str
    reason: str = ""
    seg_series_uid: str = ""
    seg_sop_uid: str = ""
    segments: tuple[dict, ...] = ()
    seconds: dict[str, float] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    thumbnail_png: bytes | None = None
    failed_stage: str = ""


def seg_uids(info: BundleInfo, series_uid: str) -> tuple[str, str]:
    """The (SeriesInstanceUID, SOPInstanceUID) of the SEG the bundle of ``info`` makes of series ``series_uid``."""
    uids = deterministic_seg_uids(series_uid, info.name, info.version, info.weights_sha256, len(info.labels))
    return str(uids.series_uid), str(uids.sop_uid)


class _StageFailed(Exception):
    def __init__(self, stage: str, reason: str) -> None:
        super().__init__(reason)
        self.stage = stage


class SeriesProcessor:
    """Retrieve, segment, store and confirm series, with the bundle's model loaded once.

    Args:
        spec: the settings.
        pacs: an open client (``None``: opened from ``spec.pacs``); the processor closes what it opened.
    """

    def __init__(self, spec: ProcessorSpec, pacs=None) -> None:
        from custom_networks.pacs.pipeline import BundlePipeline  # torch and MONAI load here

        self.spec = spec
        self._own_pacs = pacs is None
        self.pacs = pacs or open_pacs(spec.pacs, spec.credentials, timeout=spec.timeout_s,
                                      calling_aet=spec.calling_aet, storage_port=spec.storage_port,
                                      retrieve=spec.retrieve)
        self.results_dir = Path(spec.results_dir)
        self._pipeline_out = self.results_dir / f".bundle-output-{os.getpid()}"
        self.pipeline = BundlePipeline(Path(spec.bundle), self._pipeline_out, model=spec.model,
                                       weights=Path(spec.weights) if spec.weights else None, demo=spec.demo,
                                       device=spec.device, overrides=spec.overrides)

    @classmethod
    def from_spec(cls, spec: ProcessorSpec) -> SeriesProcessor:
        return cls(spec)

    @property
    def info(self) -> BundleInfo:
        return self.pipeline.info

    def seg_uids(self, series_uid: str) -> tuple[str, str]:
        """The (SeriesInstanceUID, SOPInstanceUID) of the SEG of ``series_uid``."""
        return seg_uids(self.pipeline.info, series_uid)

    def result_folder(self, series_uid: str) -> Path:
        return self.results_dir / series_uid

    def output_folder(self, series: SeriesRef) -> Path | None:
        return Path(self.spec.output_dir) / series.study_uid / series.series_uid if self.spec.output_dir else None

    def close(self) -> None:
        shutil.rmtree(self._pipeline_out, ignore_errors=True)
        if self._own_pacs:
            self.pacs.close()

    def process(self, task: SeriesTask, work_dir: Path, on_stage: StageCallback | None = None) -> SeriesResult:
        """Run ``task``; every failure becomes a failed result naming its stage and reason.

        Args:
            task: the series and where to start.
            work_dir: scratch space of this process; the series' retrieved files live in a subfolder that is
                removed before this returns.
            on_stage: told when the series reaches ``retrieved``, ``inferred`` and ``stored``.
        """
        series = task.series
        seg_series_uid, seg_sop_uid = self.seg_uids(series.series_uid)
        seconds: dict[str, float] = {}
        done = {"seconds": seconds, "seg_series_uid": seg_series_uid, "seg_sop_uid": seg_sop_uid}
        notify = on_stage or (lambda *_: None)
        folder = Path(work_dir) / series.series_uid
        segments: tuple[dict, ...] = ()
        thumbnail = None
        start = task.start
        if start == START_STORE and not (self.result_folder(series.series_uid) / FILE_NAMES["seg"]).is_file():
            start = START_RETRIEVE  # the SEG computed earlier is gone (another node's, or removed): compute it again
        try:
            if start == START_RETRIEVE:
                segments, thumbnail = self._retrieve_and_segment(task, folder, seconds, notify)
            if start in (START_RETRIEVE, START_STORE):
                self._store(series, seconds)
                notify(task, STATE_STORED, done)
            files = self._verify(series, seg_series_uid, seg_sop_uid, seconds)
        except _StageFailed as error:
            # files are named from the series folder on: the scratch path before it says nothing
            reason = str(error).replace(f"{Path(work_dir)}{os.sep}", "")
            return SeriesResult(series, STATE_FAILED, reason, seg_series_uid, seg_sop_uid, segments, seconds,
                                failed_stage=error.stage)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        shutil.rmtree(self.result_folder(series.series_uid), ignore_errors=True)
        return SeriesResult(series, STATE_VERIFIED, "", seg_series_uid, seg_sop_uid, segments, seconds, files,
                            thumbnail)

    def _stage(self, stage: str, seconds: dict[str, float], call: Callable, timed: bool = True):
        """``call()`` as stage ``stage``: its time added to ``seconds`` (if ``timed``), any error a reason."""
        start = time.perf_counter()
        try:
            return call()
        except _StageFailed:
            raise
        except Exception as error:  # noqa: BLE001 - one bad series never stops the batch: it becomes a reason
            raise _StageFailed(stage, _reason(error)) from error
        finally:
            if timed:
                seconds[stage] = round(seconds.get(stage, 0.0) + time.perf_counter() - start, 4)

    def _pacs_call(self, what: str, call: Callable):
        return with_retries(call, self.spec.retry, f"{self.pacs.name}: {what}")

    def _retrieve_and_segment(self, task: SeriesTask, folder: Path, seconds: dict, notify: StageCallback):
        series = task.series
        shutil.rmtree(folder, ignore_errors=True)
        self._stage("retrieve", seconds, lambda: self._pacs_call(
            f"retrieve {series.series_uid}", lambda: self.pacs.retrieve_series(series, folder)))
        notify(task, STATE_RETRIEVED, {"seconds": seconds})
        shutil.rmtree(self._pipeline_out, ignore_errors=True)
        # the pipeline times its own stages (decode, network, SEG encoding, other writers)
        outcome = self._stage("infer", seconds, lambda: self.pipeline.run(folder), timed=False)
        seconds.update(outcome.seconds)
        if not outcome.ok:
            raise _StageFailed("infer", outcome.message)
        kept = self._stage("infer", seconds, lambda: self._keep_results(series.series_uid, outcome.files), timed=False)
        fields = ("label", "voxels", "volume_ml")
        segments = tuple({key: segment[key] for key in fields} for segment in outcome.segments)
        notify(task, STATE_INFERRED, {"seconds": seconds, "segments": segments, "seg_path": str(kept["seg"])})
        return segments, _thumbnail(kept.get("overlay"))

    def _keep_results(self, series_uid: str, files: dict[str, Path]) -> dict[str, Path]:
        """Move the bundle's outputs into the series' result folder (renames: a crash leaves no partial file)."""
        if "seg" not in files:
            raise _StageFailed("infer", "the bundle wrote no DICOM SEG for this series")
        folder = self.result_folder(series_uid)
        folder.mkdir(parents=True, exist_ok=True)
        kept = {}
        for kind, path in files.items():
            target = folder / FILE_NAMES[kind]
            os.replace(path, target)
            kept[kind] = target
        return kept

    def _store(self, series: SeriesRef, seconds: dict) -> None:
        results = self.result_folder(series.series_uid)
        seg = results / FILE_NAMES["seg"]
        if self.spec.store_pacs:
            self._stage("store", seconds, lambda: self._pacs_call(
                f"store SEG of {series.series_uid}", lambda: self.pacs.store([seg])))
        target = self.output_folder(series)
        if target is not None:
            kinds = ["seg", "mask"] if self.spec.write_nifti else ["seg"]
            self._stage("store", seconds, lambda: _copy_into(results, target, [FILE_NAMES[k] for k in kinds]))

    def _verify(self, series: SeriesRef, seg_series_uid: str, seg_sop_uid: str, seconds: dict) -> dict[str, str]:
        if self.spec.store_pacs:
            found = self._stage("verify", seconds, lambda: self._pacs_call(
                f"query back SEG of {series.series_uid}",
                lambda: self.pacs.has_instance(series.study_uid, seg_series_uid, seg_sop_uid)))
            if not found:
                raise _StageFailed("verify", f"{self.pacs.name}: the stored SEG {seg_sop_uid} is not found by a query")
        files = {}
        target = self.output_folder(series)
        if target is not None:
            kinds = ["seg", "mask"] if self.spec.write_nifti else ["seg"]
            for kind in kinds:
                path = target / FILE_NAMES[kind]
                if not path.is_file():
                    raise _StageFailed("verify", f"{path}: missing from the output folder")
                files[kind] = str(path)
            header = pydicom.dcmread(target / FILE_NAMES["seg"], stop_before_pixels=True)
            if header.SOPInstanceUID != seg_sop_uid:
                raise _StageFailed("verify", f"{target / FILE_NAMES['seg']}: SOPInstanceUID is not this job's")
        return files


def _copy_into(source: Path, target: Path, names: list[str]) -> None:
    for name in names:
        if not (source / name).is_file():
            raise _StageFailed("store", f"{source / name}: missing (the bundle did not write it)")
        with atomic_path(target / name) as temporary:
            shutil.copyfile(source / name, temporary)


def _thumbnail(overlay: Path | None) -> bytes | None:
    """The overlay PNG scaled to fit ``_THUMBNAIL_PX``, as PNG bytes."""
    if overlay is None or not overlay.is_file():
        return None
    from PIL import Image

    with Image.open(overlay) as picture:
        picture.thumbnail((_THUMBNAIL_PX * 2, _THUMBNAIL_PX))
        buffer = io.BytesIO()
        picture.convert("RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def _reason(error: BaseException) -> str:
    """One line for a failure: the message of a PACS, case or input error, else the type and message."""
    if isinstance(error, PacsError):
        return one_line(error)
    found = find_case_error(error) or find_input_error(error)
    if found is not None:
        return one_line(found)
    return f"{type(error).__name__}: {one_line(error)}"[:500]

"""One series through the whole job: retrieve, segment with the bundle, store the SEG, confirm it by a query.

A :class:`SeriesProcessor` is given its PACS client, its segmenter (the bundle's workflow with the model loaded once,
:class:`~custom_networks.runtime.Segmenter`) and where results go (:class:`OutputOptions`); :meth:`SeriesProcessor.
build` makes all three from plain fields, so a Ray actor builds its own anywhere, and tests hand in an in-memory
PACS. :meth:`SeriesProcessor.process` never raises for a bad series or a PACS that is down: it returns a failed
:class:`SeriesResult` with a one-line reason.
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
from typing import Protocol

import pydicom

from custom_networks.atomic_files import atomic_path
from custom_networks.clinical.errors import find_case_error, one_line
from custom_networks.clinical.seg_writer import deterministic_seg_uids
from custom_networks.errors import find_input_error
from custom_networks.pacs.client import PacsClient, PacsError, SeriesRef
from custom_networks.pacs.connect import PacsConnection
from custom_networks.pacs.ledger import STATE_FAILED, STATE_INFERRED, STATE_RETRIEVED, STATE_STORED, STATE_VERIFIED
from custom_networks.pacs.retry import RetryPolicy, with_retries
from custom_networks.runtime import BundleRequest, BundleRun, SegmentOutcome

__all__ = [
    "FILE_NAMES",
    "START_RETRIEVE",
    "START_STORE",
    "START_VERIFY",
    "DICOM_RESULTS",
    "OutputOptions",
    "SeriesProcessor",
    "SeriesResult",
    "SeriesSegmenter",
    "SeriesTask",
    "StageCallback",
    "seg_uids",
]

# where a task starts: from the PACS, from a SEG computed earlier (store it), or from a stored SEG (confirm it)
START_RETRIEVE, START_STORE, START_VERIFY = "retrieve", "store", "verify"
# output kind -> file name in a series' result folder
FILE_NAMES = {"seg": "seg.dcm", "sr": "sr.dcm", "secondary_capture": "sc.dcm", "mask": "mask.nii.gz",
              "overlay": "overlay.png"}
# the results that go to the PACS (and, with an output folder, there): the SEG, the measurement report and, when the
# bundle writes one (save_secondary_capture), the overlay as a Secondary Capture
DICOM_RESULTS = ("seg", "sr", "secondary_capture")
_THUMBNAIL_PX = 320

logger = logging.getLogger(__name__)

StageCallback = Callable[["SeriesTask", str, dict], None]
"""Called as ``(task, state, fields)`` when a series reaches ``retrieved``, ``inferred`` or ``stored``."""


class SeriesSegmenter(Protocol):
    """What the processor needs of a segmenter (:class:`~custom_networks.runtime.Segmenter` is one)."""

    run: BundleRun
    output_dir: Path

    def segment(self, case: Path) -> SegmentOutcome:
        ...


@dataclass(frozen=True)
class OutputOptions:
    """Where a series' results go.

    Args:
        results_dir: where a series' SEG waits until it is confirmed stored (kept across restarts of the job).
        store_pacs: store the SEG on the PACS (and confirm it there).
        output_dir: also (or only) keep the results in this folder, ``<study>/<series>/seg.dcm``.
        write_nifti: with ``output_dir``, keep the NIfTI mask too.
    """

    results_dir: str
    store_pacs: bool = True
    output_dir: str | None = None
    write_nifti: bool = False


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


def seg_uids(run: BundleRun, series_uid: str) -> tuple[str, str]:
    """The (SeriesInstanceUID, SOPInstanceUID) of the SEG the bundle of ``run`` makes of series ``series_uid``."""
    uids = deterministic_seg_uids(series_uid, run.name, run.version, run.weights_sha256, len(run.labels))
    return str(uids.series_uid), str(uids.sop_uid)


class _StageFailed(Exception):
    def __init__(self, stage: str, reason: str) -> None:
        super().__init__(reason)
        self.stage = stage


class SeriesProcessor:
    """Retrieve, segment, store and confirm series.

    Args:
        pacs: the PACS client.
        segmenter: the bundle, loaded (its writers write into ``segmenter.output_dir``).
        outputs: where results go.
        retry: backoff for transient PACS failures.
        own_pacs: close ``pacs`` in :meth:`close` (the processor opened it).
    """

    def __init__(self, pacs: PacsClient, segmenter: SeriesSegmenter, outputs: OutputOptions,
                 retry: RetryPolicy | None = None, own_pacs: bool = False) -> None:
        self.pacs = pacs
        self.segmenter = segmenter
        self.outputs = outputs
        self.retry = retry or RetryPolicy()
        self._own_pacs = own_pacs
        self.results_dir = Path(outputs.results_dir)

    @classmethod
    def build(cls, connection: PacsConnection, request: BundleRequest, outputs: OutputOptions,
              pacs: PacsClient | None = None) -> SeriesProcessor:
        """A processor with its own segmenter (the model loads here, once) and, unless ``pacs`` is given, its own
        connection."""
        from custom_networks.runtime import Segmenter  # torch and MONAI load here

        segmenter = Segmenter(request.prepare(), Path(outputs.results_dir) / f".bundle-output-{os.getpid()}")
        return cls(pacs or connection.open(), segmenter, outputs, connection.retry, own_pacs=pacs is None)

    @property
    def info(self) -> BundleRun:
        return self.segmenter.run

    def seg_uids(self, series_uid: str) -> tuple[str, str]:
        """The (SeriesInstanceUID, SOPInstanceUID) of the SEG of ``series_uid``."""
        return seg_uids(self.segmenter.run, series_uid)

    def result_folder(self, series_uid: str) -> Path:
        return self.results_dir / series_uid

    def output_folder(self, series: SeriesRef) -> Path | None:
        target = self.outputs.output_dir
        return Path(target) / series.study_uid / series.series_uid if target else None

    def close(self) -> None:
        shutil.rmtree(self.segmenter.output_dir, ignore_errors=True)
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
        return with_retries(call, self.retry, f"{self.pacs.name}: {what}")

    def _retrieve_and_segment(self, task: SeriesTask, folder: Path, seconds: dict, notify: StageCallback):
        series = task.series
        shutil.rmtree(folder, ignore_errors=True)
        self._stage("retrieve", seconds, lambda: self._pacs_call(
            f"retrieve {series.series_uid}", lambda: self.pacs.retrieve_series(series, folder)))
        notify(task, STATE_RETRIEVED, {"seconds": seconds})
        shutil.rmtree(self.segmenter.output_dir, ignore_errors=True)
        # the segmenter times its own stages (decode, network, SEG encoding, other writers)
        outcome = self._stage("infer", seconds, lambda: self.segmenter.segment(folder), timed=False)
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
            target = folder / FILE_NAMES.get(kind, path.name)
            os.replace(path, target)
            kept[kind] = target
        return kept

    def _dicom_results(self, series_uid: str) -> dict[str, Path]:
        """The DICOM results of the series waiting in its result folder, by kind."""
        folder = self.result_folder(series_uid)
        return {kind: folder / FILE_NAMES[kind] for kind in DICOM_RESULTS if (folder / FILE_NAMES[kind]).is_file()}

    def _kept_kinds(self, series_uid: str) -> list[str]:
        """What the output folder keeps: the DICOM results (and the NIfTI mask when asked)."""
        return [*self._dicom_results(series_uid), *(["mask"] if self.outputs.write_nifti else [])]

    def _store(self, series: SeriesRef, seconds: dict) -> None:
        results = self._dicom_results(series.series_uid)
        if self.outputs.store_pacs:
            self._stage("store", seconds, lambda: self._pacs_call(
                f"store {', '.join(kind.upper() for kind in results)} of {series.series_uid}",
                lambda: self.pacs.store(list(results.values()))))
        target = self.output_folder(series)
        if target is not None:
            names = [FILE_NAMES[kind] for kind in self._kept_kinds(series.series_uid)]
            self._stage("store", seconds,
                        lambda: _copy_into(self.result_folder(series.series_uid), target, names))

    def _verify(self, series: SeriesRef, seg_series_uid: str, seg_sop_uid: str, seconds: dict) -> dict[str, str]:
        """Confirm every result: by a query to the PACS (each DICOM result's UIDs; the SEG's at least, which are
        derived, should its file be gone) and in the output folder."""
        expected = {kind: _instance_uids(path) for kind, path in self._dicom_results(series.series_uid).items()}
        expected["seg"] = (seg_series_uid, seg_sop_uid)
        if self.outputs.store_pacs:
            for kind, (result_series_uid, sop_uid) in expected.items():
                what = f"query back {kind.upper()} of {series.series_uid}"
                found = self._stage("verify", seconds, lambda what=what, sop=sop_uid, uid=result_series_uid:
                                    self._pacs_call(what, lambda: self.pacs.has_instance(series.study_uid, uid, sop)))
                if not found:
                    raise _StageFailed("verify", f"{self.pacs.name}: the stored {kind.upper()} {sop_uid} is not "
                                                 "found by a query")
        files = {}
        target = self.output_folder(series)
        if target is not None:
            for kind in [*expected, *(["mask"] if self.outputs.write_nifti else [])]:
                path = target / FILE_NAMES[kind]
                if not path.is_file():
                    raise _StageFailed("verify", f"{path}: missing from the output folder")
                if kind in expected and _instance_uids(path)[1] != expected[kind][1]:
                    raise _StageFailed("verify", f"{path}: SOPInstanceUID is not this job's")
                files[kind] = str(path)
        return files


def _instance_uids(path: Path) -> tuple[str, str]:
    """(SeriesInstanceUID, SOPInstanceUID) of the DICOM file ``path``."""
    header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SeriesInstanceUID", "SOPInstanceUID"])
    return str(header.SeriesInstanceUID), str(header.SOPInstanceUID)


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

"""Cases of a ``--dataset_dir`` of mixed kinds, a dataset that skips bad cases, and the run summary.

Every case ends up in ``run_summary.csv`` / ``run_summary.json`` with its outcome: ``ok`` with the files written,
or ``failed`` with the one-line reason; with the SHA-256 of its input, when it started and ended, and per segment
its voxel count, volume and the mean and standard deviation of the image intensity (:class:`MeasureSegmentsd`).
The run's fields (bundle, weights and their SHA-256, demo weights or not, package version, start and end) are in
the JSON once and in every CSV row (``run_*`` columns). No patient name or ID is read or written. Outcomes are
stored one small file per case so that DataLoader worker processes can record failures too.
"""

from __future__ import annotations

import csv
import datetime
import json
import logging
import re
import shutil
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pydicom
import torch
from monai.config import KeysCollection, PathLike
from monai.data import IterableDataset, MetaTensor
from monai.data.utils import create_file_basename
from monai.transforms import MapTransform, apply_transform
from monai.utils import MetaKeys
from torch.utils.data import get_worker_info

from custom_networks import __version__
from custom_networks.atomic_files import atomic_path
from custom_networks.clinical.errors import CaseError, find_case_error, one_line
from custom_networks.clinical.load_case import IMAGE_SUFFIXES, NIFTI_SUFFIXES, input_form
from custom_networks.clinical.meta import OUTPUTS_KEY, SOURCE_FILES_KEY, STAGE_SECONDS_KEY
from custom_networks.file_hash import file_sha256

__all__ = [
    "CASE_STARTED_KEY",
    "MEASUREMENTS_KEY",
    "STATUS_FAILED",
    "STATUS_OK",
    "Case",
    "CaseOutcome",
    "CaseOutcomeRecorder",
    "ClinicalCaseDataset",
    "MeasureSegmentsd",
    "RecordCaseOutcomed",
    "cases_datalist",
    "discover_cases",
    "input_sha256",
    "measure_segments",
]

STATUS_OK = "ok"
STATUS_FAILED = "failed"
# data dict entry ClinicalCaseDataset adds: when the case's loading began (ISO 8601 UTC)
CASE_STARTED_KEY = "case_started"
# label meta-data entry MeasureSegmentsd appends its measurements to
MEASUREMENTS_KEY = "clinical_measurements"
_SUMMARY_FIELDS = ("case", "kind", "status", "message", "outputs", "input", "input_sha256", "started", "ended")

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Case:
    """One input of a run: ``name`` is unique in the run; ``error`` says why it cannot run, if found up front."""

    name: str
    path: Path
    kind: str
    error: str = ""


def _output_stem(path: Path) -> str:
    # the name MONAI's SaveImage / FolderLayout will give the outputs of this input
    return Path(create_file_basename("", path, "", separate_folder=False, makedirs=False)).name


def _is_case_file(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith(NIFTI_SUFFIXES + IMAGE_SUFFIXES + (".dcm",)) or pydicom.misc.is_dicom(path)


def discover_cases(dataset_dir: PathLike) -> list[Case]:
    """The cases in ``dataset_dir``: each NIfTI file, PNG/JPG and DICOM file, and each folder of DICOM files; a
    ``dataset_dir`` that is itself such a file, or a folder of nothing but one DICOM series' files, is the one case.

    A folder holding NIfTI or PNG/JPG files directly (and no DICOM) is a grouping folder and is searched in turn;
    any other folder, empty or not, is one DICOM case with every series below it (several series are resolved by
    the loader's rules; a folder with no usable series fails when loaded). Other files
    (datalists, notes) are not cases. Names are the stems of the output files; an input whose outputs would
    overwrite an earlier case's (``case01/`` and ``case01.nii.gz``) is named with its kind added and carries an
    ``error``, so it is reported as failed instead of overwriting.
    """
    dataset_dir = Path(dataset_dir)
    if dataset_dir.is_file():
        if not _is_case_file(dataset_dir):
            raise CaseError(dataset_dir, "not a NIfTI, DICOM or PNG/JPG/TIFF/BMP file")
        return [Case(_output_stem(dataset_dir), dataset_dir, input_form(dataset_dir))]
    if not dataset_dir.is_dir():
        raise CaseError(dataset_dir, "dataset_dir is neither a folder nor a case file")
    if _is_one_series_folder(dataset_dir):
        return [Case(_output_stem(dataset_dir), dataset_dir, input_form(dataset_dir))]
    cases: list[Case] = []
    owners: dict[str, Path] = {}
    for path in _case_paths(dataset_dir):
        kind = input_form(path)
        stem = _output_stem(path)
        if stem in owners:
            error = f"its outputs would overwrite those of {owners[stem].name} (same name {stem!r}); rename one"
            cases.append(Case(f"{stem}_{kind}", path, kind, error))
        else:
            owners[stem] = path
            cases.append(Case(stem, path, kind))
    return cases


def _is_one_series_folder(folder: Path) -> bool:
    """Whether ``folder`` holds directly, and alone, the files of one DICOM series (two or more files): a series
    folder given as the input. A folder of radiographs (a series each) stays a folder of cases."""
    entries = [path for path in folder.iterdir() if not path.name.startswith(".")]
    if len(entries) < 2 or not all(path.is_file() and pydicom.misc.is_dicom(path) for path in entries):
        return False
    headers = [pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SeriesInstanceUID"]) for path in entries]
    uids = {header.get("SeriesInstanceUID") for header in headers}
    return len(uids) == 1 and None not in uids


def _case_paths(folder: Path) -> Iterator[Path]:
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        if path.is_file():
            if _is_case_file(path):
                yield path
        elif _is_grouping_folder(path):
            yield from _case_paths(path)
        else:
            yield path


def _is_grouping_folder(folder: Path) -> bool:
    files = [p for p in folder.iterdir() if p.is_file()]
    has_images = any(p.name.lower().endswith(NIFTI_SUFFIXES + IMAGE_SUFFIXES) for p in files)
    has_dicom = any(p.name.lower().endswith(".dcm") or pydicom.misc.is_dicom(p) for p in files)
    return has_images and not has_dicom


def cases_datalist(cases: Sequence[Case], key: str = "image") -> list[dict]:
    """MONAI data dicts ``{key: path, "case": name, "kind": kind, "error": error}``."""
    return [{key: str(case.path), "case": case.name, "kind": case.kind, "error": case.error} for case in cases]


def _utc_now() -> str:
    """The current time, ISO 8601 in UTC to the millisecond."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")


def input_sha256(meta: Mapping) -> str:
    """SHA-256 of a loaded case's input: of its file, or, for DICOM, of the files of the series used, sorted by
    path (``cat $(ls <series>/* | LC_ALL=C sort) | sha256sum`` when the folder holds that series alone)."""
    if meta.get(SOURCE_FILES_KEY):
        return file_sha256(*sorted(str(path) for path in meta[SOURCE_FILES_KEY]))
    return file_sha256(meta["filename_or_obj"])


@dataclass(frozen=True)
class CaseOutcome:
    """What happened to one case.

    ``started`` / ``ended``: ISO 8601 UTC times (loading began, outcome recorded). ``segments``: what
    :func:`measure_segments` gives per segment.
    """

    case: str
    kind: str
    status: str
    message: str = ""
    outputs: tuple[str, ...] = ()
    input: str = ""
    input_sha256: str = ""
    started: str = ""
    ended: str = ""
    segments: tuple[dict, ...] = ()
    seconds: dict[str, float] = field(default_factory=dict)


class CaseOutcomeRecorder:
    """Collect case outcomes (from any process) and write ``run_summary.csv`` and ``run_summary.json``.

    The run starts when the recorder is made and ends when the summary is written; the weights file is hashed
    then, once per run.

    Args:
        output_dir: where the summary is written; outcomes are kept in ``output_dir/.case_outcomes`` meanwhile.
        summary_name: file name of the summary without extension.
        clear: forget outcomes left by an earlier run in the same ``output_dir``.
        bundle: the bundle's name.
        bundle_version: the bundle's version.
        weights: the weights file the network runs with (checkpoint or ONNX model); ``None``: none named.
        weights_sha256: its SHA-256 when already known (the bundle config's ``weights_sha256``); otherwise the
            file is hashed when the summary is written.
        demo_weights: whether they are the demo weights.
    """

    def __init__(
        self,
        output_dir: PathLike,
        summary_name: str = "run_summary",
        clear: bool = True,
        bundle: str = "",
        bundle_version: str = "",
        weights: PathLike | None = None,
        weights_sha256: str = "",
        demo_weights: bool = False,
    ) -> None:
        self.output_dir = Path(output_dir)
        self.summary_name = summary_name
        self.outcomes_dir = self.output_dir / ".case_outcomes"
        self.weights = weights
        self.run = {
            "bundle": bundle,
            "bundle_version": str(bundle_version),
            "weights": "" if weights is None else str(Path(weights).absolute()),
            "weights_sha256": weights_sha256,
            "demo_weights": bool(demo_weights),
            "package_version": __version__,
            "started": _utc_now(),
            "ended": "",
        }
        if clear and self.outcomes_dir.exists():
            shutil.rmtree(self.outcomes_dir)

    def record(self, outcome: CaseOutcome) -> None:
        file_name = re.sub(r"[^\w.-]", "_", outcome.case) + ".json"
        with atomic_path(self.outcomes_dir / file_name) as temporary:
            temporary.write_text(json.dumps(asdict(outcome)))

    def record_failure(self, item: Mapping, error: BaseException, image_key: str = "image") -> CaseOutcome:
        """Record that the case of data dict ``item`` failed with ``error``; return the outcome."""
        case_error = find_case_error(error)
        path = item.get(image_key, "")
        message = str(case_error) if case_error else f"{path}: {type(error).__name__}: {one_line(error)}"
        outcome = CaseOutcome(
            str(item.get("case", path)),
            str(item.get("kind", "")),
            STATUS_FAILED,
            message,
            (),
            str(path),
            started=str(item.get(CASE_STARTED_KEY, "")),
            ended=_utc_now(),
        )
        self.record(outcome)
        return outcome

    def take_outcomes(self) -> list[CaseOutcome]:
        """The outcomes recorded so far, forgotten here (a service segmenting case after case with one recorder
        writes no summary: it takes each case's outcome as it comes)."""
        found = self.outcomes()
        shutil.rmtree(self.outcomes_dir, ignore_errors=True)
        return found

    def outcomes(self) -> list[CaseOutcome]:
        found = []
        for path in sorted(self.outcomes_dir.glob("*.json")):
            fields = json.loads(path.read_text())
            found.append(
                CaseOutcome(**{**fields, "outputs": tuple(fields["outputs"]), "segments": tuple(fields["segments"])})
            )
        return found

    def write_summary(self, cases: Sequence[Case] = ()) -> tuple[Path, Path]:
        """Write the summary of every recorded case, then drop the per-case records.

        ``cases`` (the run's cases, in order) with no recorded outcome are listed as failed.
        """
        recorded = {outcome.case: outcome for outcome in self.outcomes()}
        for case in cases:
            if case.name not in recorded:
                recorded[case.name] = CaseOutcome(
                    case.name,
                    case.kind,
                    STATUS_FAILED,
                    f"{case.path}: no outcome recorded (run interrupted?)",
                    (),
                    str(case.path),
                )
        order = [case.name for case in cases] + sorted(set(recorded) - {case.name for case in cases})
        rows = [asdict(recorded[name]) for name in order]
        sha256 = self.run["weights_sha256"] or (file_sha256(self.weights) if self.weights else "")
        run = {**self.run, "weights_sha256": sha256, "ended": _utc_now()}
        csv_path = self.output_dir / f"{self.summary_name}.csv"
        json_path = self.output_dir / f"{self.summary_name}.json"
        _write_csv(csv_path, rows, run)
        counts = {status: sum(row["status"] == status for row in rows) for status in (STATUS_OK, STATUS_FAILED)}
        with atomic_path(json_path) as temporary:
            temporary.write_text(json.dumps({"run": run, "counts": counts, "cases": rows}, indent=2))
        shutil.rmtree(self.outcomes_dir, ignore_errors=True)
        logger.info(
            "run summary: %d case(s) ok, %d failed: %s", counts[STATUS_OK], counts[STATUS_FAILED], csv_path.resolve()
        )
        return csv_path, json_path


def _write_csv(path: Path, rows: Sequence[dict], run: Mapping) -> None:
    """One row per case: its fields, its segments' columns (:func:`_segment_columns`), then the run's fields."""
    flat = [
        {
            **{field: row[field] for field in _SUMMARY_FIELDS},
            "outputs": ";".join(row["outputs"]),
            **_segment_columns(row["segments"]),
            **{f"run_{key}": value for key, value in run.items()},
        }
        for row in rows
    ]
    fields = list(dict.fromkeys(name for row in flat for name in row))
    with atomic_path(path) as temporary, open(temporary, "w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=fields, restval="")
        writer.writeheader()
        writer.writerows(flat)


def _segment_columns(segments: Sequence[Mapping]) -> dict[str, object]:
    """``<label>_voxels``, ``<label>_volume_ml``, ``<label>_mean_intensity`` and ``<label>_std_intensity``
    (``..._c<k>`` per channel when the image has several) of each segment; ``None`` (an empty cell) where a value
    does not apply."""
    columns: dict[str, object] = {}
    for segment in segments:
        label = segment["label"]
        columns[f"{label}_voxels"] = segment["voxels"]
        columns[f"{label}_volume_ml"] = segment["volume_ml"]
        for statistic in ("mean", "std"):
            values = segment.get(f"{statistic}_intensity", [])
            if len(values) == 1:
                columns[f"{label}_{statistic}_intensity"] = values[0]
            else:
                columns.update({f"{label}_{statistic}_intensity_c{k}": value for k, value in enumerate(values)})
    return columns


class ClinicalCaseDataset(IterableDataset):
    """A dataset over case dicts that records a failing case and goes on with the next one.

    A case whose item carries an ``error`` (see :func:`discover_cases`), or any error while ``transform``
    prepares a case (its :class:`CaseError` message, or the error type and message otherwise), is recorded as a
    failed outcome and logged, and the case is not yielded, so one bad input never stops a run. Items are shared
    among DataLoader workers as MONAI's ``IterableDataset`` does; having no length, the evaluator's epoch ends when
    the cases run out.

    Args:
        data: case dicts, e.g. from :func:`cases_datalist`.
        transform: the preprocessing, starting with ``LoadClinicalImaged``.
        recorder: where failures are recorded.
        image_key: the key holding the input path (named in messages).
    """

    def __init__(
        self,
        data: Iterable[Mapping],
        transform: Callable | None,
        recorder: CaseOutcomeRecorder,
        image_key: str = "image",
    ) -> None:
        super().__init__(data=data, transform=transform)
        self.recorder = recorder
        self.image_key = image_key

    def __iter__(self) -> Iterator:
        info = get_worker_info()
        num_workers, worker_id = (info.num_workers, info.id) if info is not None else (1, 0)
        for index, item in enumerate(self.data):
            if index % num_workers != worker_id:
                continue
            item = {**item, CASE_STARTED_KEY: _utc_now()}
            try:
                if item.get("error"):
                    raise CaseError(item[self.image_key], item["error"])
                prepared = apply_transform(self.transform, item) if self.transform is not None else item
            except Exception as error:  # noqa: BLE001 - whatever fails one case must not stop the others
                outcome = self.recorder.record_failure(item, error, self.image_key)
                logger.warning("case %s failed: %s", outcome.case, outcome.message)
                continue
            yield prepared


def measure_segments(label: torch.Tensor, image: torch.Tensor, channel_def: Mapping[str | int, str]) -> list[dict]:
    """What the run summary lists per segment of ``channel_def`` (background, value 0, excepted).

    Args:
        label: ``(1, *spatial)`` label values.
        image: ``(channels, *spatial)`` in the same voxel grid, as loaded (before the network's normalization); a
            ``MetaTensor``'s affine gives the voxel volume.
        channel_def: label value to name, as in a bundle's metadata.

    Returns:
        per segment ``{"label": name, "value": value, "voxels": count, "volume_ml": ..., "mean_intensity": [...],
        "std_intensity": [...]}``: ``voxels`` counts pixels for a 2D image; ``volume_ml`` is voxels x the voxel
        volume of the affine for a 3D image, ``None`` for a 2D one; ``mean_intensity`` and ``std_intensity`` hold
        the mean and the (population, ``ddof=0``) standard deviation of each image channel inside the segment
        (``None`` each when the segment is empty). Volumes are rounded to 6 decimals, intensities to 4.
    """
    values = label[0].detach()
    pixels = image.as_tensor() if isinstance(image, MetaTensor) else torch.as_tensor(image)
    if tuple(pixels.shape[1:]) != tuple(values.shape):
        raise ValueError(f"image {tuple(pixels.shape)} and label {tuple(label.shape)} are not in the same voxel grid")
    voxel_ml = None
    if values.ndim == 3 and isinstance(image, MetaTensor):
        voxel_ml = abs(float(np.linalg.det(image.affine[:3, :3].cpu().numpy()))) / 1000.0
    segments = []
    for value, name in sorted((int(value), str(name)) for value, name in channel_def.items() if int(value) != 0):
        inside = values == value
        count = int(inside.sum())
        inside_pixels = pixels.detach()[:, inside].double()
        means = inside_pixels.mean(dim=1).tolist() if count else [None] * pixels.shape[0]
        stds = inside_pixels.std(dim=1, correction=0).tolist() if count else [None] * pixels.shape[0]
        segments.append(
            {
                "label": name,
                "value": value,
                "voxels": count,
                "volume_ml": None if voxel_ml is None else round(count * voxel_ml, 6),
                "mean_intensity": [None if mean is None else round(mean, 4) for mean in means],
                "std_intensity": [None if std is None else round(std, 4) for std in stds],
            }
        )
    return segments


class MeasureSegmentsd(MapTransform):
    """Measure each segment of the label maps under ``keys`` (:func:`measure_segments`) for the run summary.

    The measurements are appended to the label's ``clinical_measurements`` meta-data entry, where
    :class:`RecordCaseOutcomed` reads them.

    Args:
        keys: label maps ``(1, *spatial)``, ``MetaTensor``.
        channel_def: label value to name, as in a bundle's metadata.
        image_key: the image as loaded, in the same voxel grid as the labels.
        allow_missing_keys: do not raise for absent keys.
    """

    def __init__(
        self,
        keys: KeysCollection,
        channel_def: Mapping[str | int, str],
        image_key: str = "image",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.channel_def = dict(channel_def)
        self.image_key = image_key

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            label = d[key]
            if not isinstance(label, MetaTensor):
                raise TypeError(f"{key}: MeasureSegmentsd needs a MetaTensor to keep its measurements in")
            measured = measure_segments(label, d[self.image_key], self.channel_def)
            label.meta.setdefault(MEASUREMENTS_KEY, []).extend(measured)
        return d


class RecordCaseOutcomed(MapTransform):
    """Last postprocessing step: record the case as ``ok`` with the files the writers produced.

    Outputs are read from the meta-data of ``keys``: ``saved_to`` (MONAI ``SaveImage`` with
    ``savepath_in_metadict=True``) and ``clinical_outputs`` (the clinical writers); segment measurements from
    ``clinical_measurements`` (:class:`MeasureSegmentsd`). The input's SHA-256 is taken from the image's
    meta-data (:func:`input_sha256`), the start time from ``case_started`` (set by :class:`ClinicalCaseDataset`).

    Args:
        keys: the keys whose writers' outputs are listed (e.g. ``"pred"``).
        recorder: where the outcome is recorded.
        image_key: the key whose meta-data names the input.
        allow_missing_keys: do not raise for absent keys.
    """

    def __init__(
        self,
        keys: KeysCollection,
        recorder: CaseOutcomeRecorder,
        image_key: str = "image",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.recorder = recorder
        self.image_key = image_key

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> Mapping[Hashable, torch.Tensor]:
        outputs: list[str] = []
        segments: list[dict] = []
        seconds: dict[str, float] = {}
        for key in self.key_iterator(data):
            meta = data[key].meta if isinstance(data[key], MetaTensor) else {}
            if MetaKeys.SAVED_TO in meta:
                outputs.append(str(meta[MetaKeys.SAVED_TO]))
            outputs.extend(str(p) for p in meta.get(OUTPUTS_KEY, []))
            segments.extend(meta.get(MEASUREMENTS_KEY, []))
            seconds.update(meta.get(STAGE_SECONDS_KEY, {}))
        image = data.get(self.image_key)
        image_meta = image.meta if isinstance(image, MetaTensor) else {}
        path = str(image_meta.get("filename_or_obj", ""))
        outcome = CaseOutcome(
            str(data.get("case", path)),
            str(data.get("kind", "")),
            STATUS_OK,
            "",
            tuple(outputs),
            path,
            input_sha256(image_meta) if path else "",
            str(data.get(CASE_STARTED_KEY, "")),
            _utc_now(),
            tuple(segments),
            seconds,
        )
        self.recorder.record(outcome)
        return data

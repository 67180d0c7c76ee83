"""Cases of a ``--dataset_dir`` of mixed kinds, a dataset that skips bad cases, and the run summary.

Every case ends up in ``run_summary.csv`` / ``run_summary.json`` with its outcome: ``ok`` with the files written,
or ``failed`` with the one-line reason. Outcomes are stored one small file per case so that DataLoader worker
processes can record failures too.
"""

from __future__ import annotations

import csv
import json
import logging
import re
import shutil
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import pydicom
import torch
from monai.config import KeysCollection, PathLike
from monai.data import IterableDataset, MetaTensor
from monai.data.utils import create_file_basename
from monai.transforms import MapTransform, apply_transform
from monai.utils import MetaKeys
from torch.utils.data import get_worker_info

from custom_networks.atomic_files import atomic_path
from custom_networks.clinical.errors import CaseError, find_case_error, one_line
from custom_networks.clinical.load_case import IMAGE_SUFFIXES, NIFTI_SUFFIXES, input_form
from custom_networks.clinical.meta import OUTPUTS_KEY

__all__ = [
    "STATUS_FAILED",
    "STATUS_OK",
    "Case",
    "CaseOutcome",
    "CaseOutcomeRecorder",
    "ClinicalCaseDataset",
    "RecordCaseOutcomed",
    "cases_datalist",
    "discover_cases",
]

STATUS_OK = "ok"
STATUS_FAILED = "failed"
_SUMMARY_FIELDS = ("case", "kind", "status", "message", "outputs", "input")

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
    """The cases in ``dataset_dir``: each NIfTI file, PNG/JPG and DICOM file, and each folder of DICOM files.

    A folder holding NIfTI or PNG/JPG files directly (and no DICOM) is a grouping folder and is searched in turn;
    any other folder, empty or not, is one DICOM case with every series below it (several series are resolved by
    the loader's rules; a folder with no usable series fails when loaded). Other files
    (datalists, notes) are not cases. Names are the stems of the output files; an input whose outputs would
    overwrite an earlier case's (``case01/`` and ``case01.nii.gz``) is named with its kind added and carries an
    ``error``, so it is reported as failed instead of overwriting.
    """
    dataset_dir = Path(dataset_dir)
    if not dataset_dir.is_dir():
        raise CaseError(dataset_dir, "dataset_dir is not a folder")
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


@dataclass(frozen=True)
class CaseOutcome:
    """What happened to one case."""

    case: str
    kind: str
    status: str
    message: str = ""
    outputs: tuple[str, ...] = ()
    input: str = ""


class CaseOutcomeRecorder:
    """Collect case outcomes (from any process) and write ``run_summary.csv`` and ``run_summary.json``.

    Args:
        output_dir: where the summary is written; outcomes are kept in ``output_dir/.case_outcomes`` meanwhile.
        summary_name: file name of the summary without extension.
        clear: forget outcomes left by an earlier run in the same ``output_dir``.
    """

    def __init__(self, output_dir: PathLike, summary_name: str = "run_summary", clear: bool = True) -> None:
        self.output_dir = Path(output_dir)
        self.summary_name = summary_name
        self.outcomes_dir = self.output_dir / ".case_outcomes"
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
            str(item.get("case", path)), str(item.get("kind", "")), STATUS_FAILED, message, (), str(path)
        )
        self.record(outcome)
        return outcome

    def outcomes(self) -> list[CaseOutcome]:
        found = []
        for path in sorted(self.outcomes_dir.glob("*.json")):
            fields = json.loads(path.read_text())
            found.append(CaseOutcome(**{**fields, "outputs": tuple(fields["outputs"])}))
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
        csv_path = self.output_dir / f"{self.summary_name}.csv"
        json_path = self.output_dir / f"{self.summary_name}.json"
        with atomic_path(csv_path) as temporary, open(temporary, "w", newline="") as stream:
            writer = csv.DictWriter(stream, fieldnames=_SUMMARY_FIELDS)
            writer.writeheader()
            writer.writerows({**row, "outputs": ";".join(row["outputs"])} for row in rows)
        counts = {status: sum(row["status"] == status for row in rows) for status in (STATUS_OK, STATUS_FAILED)}
        with atomic_path(json_path) as temporary:
            temporary.write_text(json.dumps({"counts": counts, "cases": rows}, indent=2))
        shutil.rmtree(self.outcomes_dir, ignore_errors=True)
        logger.info(
            "run summary: %d case(s) ok, %d failed: %s", counts[STATUS_OK], counts[STATUS_FAILED], csv_path.resolve()
        )
        return csv_path, json_path


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
            try:
                if item.get("error"):
                    raise CaseError(item[self.image_key], item["error"])
                prepared = apply_transform(self.transform, item) if self.transform is not None else item
            except Exception as error:  # noqa: BLE001 - whatever fails one case must not stop the others
                outcome = self.recorder.record_failure(item, error, self.image_key)
                logger.warning("case %s failed: %s", outcome.case, outcome.message)
                continue
            yield prepared


class RecordCaseOutcomed(MapTransform):
    """Last postprocessing step: record the case as ``ok`` with the files the writers produced.

    Outputs are read from the meta-data of ``keys``: ``saved_to`` (MONAI ``SaveImage`` with
    ``savepath_in_metadict=True``) and ``clinical_outputs`` (the clinical writers).

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
        for key in self.key_iterator(data):
            meta = data[key].meta if isinstance(data[key], MetaTensor) else {}
            if MetaKeys.SAVED_TO in meta:
                outputs.append(str(meta[MetaKeys.SAVED_TO]))
            outputs.extend(str(p) for p in meta.get(OUTPUTS_KEY, []))
        image = data.get(self.image_key)
        path = str(image.meta.get("filename_or_obj", "")) if isinstance(image, MetaTensor) else ""
        case = str(data.get("case", path))
        self.recorder.record(CaseOutcome(case, str(data.get("kind", "")), STATUS_OK, "", tuple(outputs), path))
        return data

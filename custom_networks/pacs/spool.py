"""The push listener's spool: received instances by series, ``<spool>/<study UID>/<series UID>/<SOP UID>.dcm``, and
the :class:`~custom_networks.pacs.client.PacsClient` that hands a spooled series to the batch job's
:class:`~custom_networks.pacs.processor.SeriesProcessor`.

Each instance is written under a temporary name and renamed (:func:`~custom_networks.atomic_files.atomic_path`),
so the spool holds whole instances only; a listener killed mid-write leaves a ``.partial-*`` file that the next
start removes. A series' files stay in the spool until the series reaches a final state, so a listener killed at
any moment finds every series it had received. UIDs name the folders and files only after :func:`safe_uid` has
checked them (digits and dots: no path can escape the spool).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.uid import UID

from custom_networks.atomic_files import TEMP_PREFIX, atomic_path
from custom_networks.pacs.client import PacsClient, PacsError, QueryFilters, SeriesRef
from custom_networks.pacs.connect import PacsConnection
from custom_networks.pacs.retry import RetryPolicy
from custom_networks.pacs.routing import SeriesAttributes

__all__ = [
    "SpoolClient",
    "SpoolConnection",
    "SpooledSeries",
    "read_spooled_series",
    "remove_spooled",
    "safe_uid",
    "series_folder",
    "spooled_files",
    "spooled_series",
    "write_instance",
]

_SUFFIX = ".dcm"
# the header fields a series is described and routed by: no patient attribute is read
_HEADER_TAGS = ["StudyInstanceUID", "SeriesInstanceUID", "Modality", "SeriesDescription", "SeriesNumber",
                "BodyPartExamined"]


def safe_uid(uid: object) -> str | None:
    """``uid`` as text when it is a valid DICOM UID (digits and dots, at most 64 characters), else ``None``."""
    text = str(uid or "").strip()
    return text if text and UID(text).is_valid else None


def series_folder(spool: Path, study_uid: str, series_uid: str) -> Path:
    return Path(spool) / study_uid / series_uid


def write_instance(spool: Path, study_uid: str, series_uid: str, sop_uid: str, data: bytes) -> Path:
    """Write one received instance (the encoded file, meta included) into its series folder, atomically; an
    instance received again replaces the earlier copy."""
    path = series_folder(spool, study_uid, series_uid) / f"{sop_uid}{_SUFFIX}"
    with atomic_path(path) as temporary:
        temporary.write_bytes(data)
    return path


def spooled_files(folder: Path) -> list[Path]:
    """The whole instances in a series folder (temporary files left out), sorted by name."""
    if not Path(folder).is_dir():
        return []
    return sorted(path for path in Path(folder).glob(f"*{_SUFFIX}") if not path.name.startswith(TEMP_PREFIX))


def spooled_series(spool: Path) -> list[tuple[str, str, float]]:
    """``(study UID, series UID, time of the last instance)`` of every series in the spool, after removing what a
    killed listener left (temporary files, empty folders)."""
    spool = Path(spool)
    found = []
    if not spool.is_dir():
        return found
    for partial in spool.rglob(f"{TEMP_PREFIX}*"):
        partial.unlink(missing_ok=True)
    for study in sorted(path for path in spool.iterdir() if path.is_dir()):
        for folder in sorted(path for path in study.iterdir() if path.is_dir()):
            files = spooled_files(folder)
            if files:
                found.append((study.name, folder.name, max(path.stat().st_mtime for path in files)))
            else:
                shutil.rmtree(folder, ignore_errors=True)
        _remove_if_empty(study)
    return found


def remove_spooled(folder: Path, files: Sequence[Path]) -> bool:
    """Remove ``files`` (the instances a series was processed from) and the series folder once it holds nothing
    else (an instance that arrived meanwhile is kept); returns whether the folder is gone."""
    for path in files:
        Path(path).unlink(missing_ok=True)
    folder = Path(folder)
    if spooled_files(folder):
        return False
    shutil.rmtree(folder, ignore_errors=True)
    _remove_if_empty(folder.parent)
    return True


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass  # not empty (or gone): another series of the study is still there


@dataclass(frozen=True)
class SpooledSeries:
    """A complete series in the spool: its reference (no patient data), what routing looks at and its files."""

    series: SeriesRef
    attributes: SeriesAttributes
    files: tuple[Path, ...]


def read_spooled_series(study_uid: str, series_uid: str, files: Sequence[Path]) -> SpooledSeries:
    """The series' reference and routing attributes from the header of its first readable instance.

    Raises:
        PacsError: no instance's header can be read.
    """
    problem = "no instances"
    for path in files:
        try:
            header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=_HEADER_TAGS)
        except (OSError, pydicom.errors.InvalidDicomError, ValueError, EOFError) as error:
            problem = f"{Path(path).name}: unreadable header ({type(error).__name__})"
            continue
        number = header.get("SeriesNumber")
        ref = SeriesRef(
            study_uid=study_uid,
            series_uid=series_uid,
            modality=str(header.get("Modality", "")),
            series_description=str(header.get("SeriesDescription", "")),
            series_number=int(number) if number not in (None, "") else None,
            n_instances=len(files),
        )
        attributes = SeriesAttributes(ref.modality, ref.series_description, str(header.get("BodyPartExamined", "")))
        return SpooledSeries(ref, attributes, tuple(files))
    raise PacsError(f"spool series {series_uid}: {problem}")


class SpoolClient:
    """A :class:`~custom_networks.pacs.client.PacsClient` for the listener's processor: series come from the spool,
    results go to the destination PACS (``None``: results only go to the output folder).

    Before processing a series the listener hands the client the series' files (:meth:`take`); ``retrieve_series``
    links (or, across file systems, copies) exactly those into the processor's scratch folder and leaves the spool
    as it is, so that a crash mid-series loses nothing.

    Args:
        spool: the spool folder.
        destination: where ``store`` and ``has_instance`` go.
    """

    def __init__(self, spool: Path, destination: PacsClient | None) -> None:
        self.spool = Path(spool)
        self.destination = destination
        self.name = destination.name if destination is not None else f"spool {self.spool}"
        self._files: dict[str, tuple[Path, ...]] = {}

    def take(self, spooled: SpooledSeries) -> None:
        """The files ``retrieve_series`` hands over for this series."""
        self._files[spooled.series.series_uid] = spooled.files

    def release(self, series_uid: str) -> None:
        self._files.pop(series_uid, None)

    def find_series(self, filters: QueryFilters) -> list[SeriesRef]:
        raise PacsError(f"{self.name}: series arrive by C-STORE; the listener's spool is not queried")

    def retrieve_series(self, series: SeriesRef, folder: Path) -> list[Path]:
        """Link the series' spooled instances into ``folder``, named as in the spool (``<SOP UID>.dcm``)."""
        files = self._files.get(series.series_uid) or tuple(
            spooled_files(series_folder(self.spool, series.study_uid, series.series_uid)))
        if not files:
            if not self.spool.is_dir():
                # a Ray actor on a node that does not mount the listener's spool
                raise PacsError(f"spool {self.spool}: not found on this node; with engine ray on several nodes the "
                                "spool must be a shared file system mounted at the same path on every node")
            raise PacsError(f"spool series {series.series_uid}: no instances left in the spool")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for source in files:
            target = folder / Path(source).name
            target.unlink(missing_ok=True)
            try:
                os.link(source, target)
            except FileNotFoundError:
                raise PacsError(f"spool series {series.series_uid}: {Path(source).name} left the spool") from None
            except OSError:
                shutil.copyfile(source, target)  # another file system, or no hard links there
            paths.append(target)
        return paths

    def _destination(self) -> PacsClient:
        if self.destination is None:
            raise PacsError("no destination PACS configured (send_to): results go to the output folder only")
        return self.destination

    def store(self, paths: Sequence[Path]) -> None:
        self._destination().store(paths)

    def has_instance(self, study_uid: str, series_uid: str, sop_uid: str) -> bool:
        return self._destination().has_instance(study_uid, series_uid, sop_uid)

    def close(self) -> None:
        if self.destination is not None:
            self.destination.close()


@dataclass(frozen=True)
class SpoolConnection:
    """How a process elsewhere (a Ray actor of the listener) opens its :class:`SpoolClient`: plain picklable fields,
    as :class:`~custom_networks.pacs.connect.PacsConnection` is for a PACS, and used the same way (``open()``,
    ``retry``).

    Args:
        spool: the spool folder, an absolute path that the process can read (on another Ray node: a shared file
            system mounted at the same path).
        destination: the PACS results go to (``None``: results only go to the output folder).
        retry: backoff for transient failures of the destination.
    """

    spool: str
    destination: PacsConnection | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    def open(self) -> SpoolClient:
        return SpoolClient(Path(self.spool), self.destination.open() if self.destination is not None else None)

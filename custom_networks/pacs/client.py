"""What a PACS connection offers a batch job, whichever protocol it speaks (DICOMweb or DIMSE)."""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

__all__ = [
    "PacsAuthError",
    "PacsClient",
    "PacsError",
    "QueryFilters",
    "SeriesRef",
    "TransientPacsError",
    "description_matches",
]


class PacsError(Exception):
    """A PACS request failed; the message names the server (never its credentials) and the reason."""


class TransientPacsError(PacsError):
    """A failure worth retrying: connection refused or reset, timeout, HTTP 5xx, DIMSE association rejected
    (transient)."""


class PacsAuthError(PacsError):
    """The PACS refused the credentials (HTTP 401/403, DIMSE association rejected for the calling AE)."""


@dataclass(frozen=True)
class QueryFilters:
    """Which series a batch looks at. Empty fields do not filter.

    Args:
        modality: DICOM Modality of the series, e.g. ``"MR"``.
        study_date: inclusive ``(first, last)`` StudyDate range as ``YYYYMMDD`` strings.
        series_description: shell pattern (``fnmatch``, case-insensitive) matched against SeriesDescription.
        study_uids: only these StudyInstanceUIDs.
        accession_numbers: only studies with these AccessionNumbers.
    """

    modality: str | None = None
    study_date: tuple[str, str] | None = None
    series_description: str | None = None
    study_uids: tuple[str, ...] = field(default_factory=tuple)
    accession_numbers: tuple[str, ...] = field(default_factory=tuple)


def description_matches(pattern: str | None, description: str) -> bool:
    """Whether SeriesDescription ``description`` matches the shell pattern ``pattern`` (``*``, ``?``, ``[...]``),
    case-insensitively on every platform; no pattern matches everything. Both protocols filter with this: DICOM
    wildcard matching is case-sensitive and PACS differ in what they do with it."""
    return not pattern or fnmatch.fnmatchcase(description.lower(), pattern.lower())


@dataclass(frozen=True)
class SeriesRef:
    """One series as a PACS query returns it (no patient identifiers)."""

    study_uid: str
    series_uid: str
    modality: str = ""
    series_description: str = ""
    series_number: int | None = None
    n_instances: int | None = None


class PacsClient(Protocol):
    """A connection to one PACS. Methods raise :class:`PacsError` (or a subclass) on failure, never return partial
    results silently; an empty or aborted query result is an error, not "nothing found"."""

    name: str
    """How messages name the server: URL without credentials, or ``AE@host:port``."""

    def find_series(self, filters: QueryFilters) -> list[SeriesRef]:
        """Every series matching ``filters`` (study-level filters applied on the study, then series level)."""
        ...

    def retrieve_series(self, series: SeriesRef, folder: Path) -> list[Path]:
        """Write every instance of ``series`` into ``folder`` (one file per SOP instance, named by its
        SOPInstanceUID + ``.dcm``); return the paths."""
        ...

    def store(self, paths: Sequence[Path]) -> None:
        """Store these DICOM files on the PACS (STOW-RS or C-STORE); storing the same SOP instance twice
        replaces it, never adds a second one."""
        ...

    def has_instance(self, study_uid: str, series_uid: str, sop_uid: str) -> bool:
        """Whether the PACS holds this SOP instance (query it back to confirm a store)."""
        ...

    def close(self) -> None:
        """Release connections / associations."""
        ...

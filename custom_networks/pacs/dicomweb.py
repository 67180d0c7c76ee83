"""A DICOMweb server (QIDO-RS, WADO-RS, STOW-RS) as a :class:`~custom_networks.pacs.client.PacsClient`.

``dicomweb-client`` speaks the protocol; this module adds what a batch job needs around it: credentials on the
session (basic auth or a bearer token, TLS checked against a CA file), failures sorted into transient (connection
refused, timeouts, HTTP 5xx), refused credentials (HTTP 401/403) and the rest, each a one-line message naming the
server without its credentials, and retrieved instances written under a temporary name, then renamed.
"""

from __future__ import annotations

import errno
import struct
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

import pydicom
import requests
from dicomweb_client.api import DICOMwebClient

from custom_networks.atomic_files import atomic_path
from custom_networks.pacs.client import (
    PacsAuthError,
    PacsError,
    QueryFilters,
    SeriesRef,
    TransientPacsError,
    description_matches,
)
from custom_networks.pacs.credentials import Credentials

__all__ = ["DicomWebClient", "public_url"]

T = TypeVar("T")
_SERIES_FIELDS = ("Modality", "SeriesDescription", "SeriesNumber", "NumberOfSeriesRelatedInstances")
# WADO-RS: every instance in the transfer syntax it is stored in (no transcoding by the server)
_ANY_TRANSFER_SYNTAX = (("application/dicom", "*"),)
_AUTH_STATUSES = (401, 403)


def public_url(url: str) -> str:
    """``url`` without user name, password, query or fragment: how messages name the server."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


class DicomWebClient:
    """A DICOMweb PACS at ``url`` (e.g. ``http://127.0.0.1:8042/dicom-web``).

    Args:
        url: the DICOMweb base URL (user name and password in it are refused: pass ``credentials``).
        credentials: basic auth, bearer token and CA file; ``None``: anonymous.
        timeout: seconds per HTTP request (connect and read).
    """

    def __init__(self, url: str, *, credentials: Credentials | None = None, timeout: float = 30.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise PacsError(f"{public_url(url)}: not an http(s) DICOMweb URL")
        if parts.username or parts.password:
            raise PacsError(f"{public_url(url)}: no credentials in the URL, please: use the environment or a file")
        self.name = public_url(url)
        credentials = credentials or Credentials()
        session = requests.Session()
        session.auth = credentials.basic_auth
        if credentials.token:
            session.headers["Authorization"] = f"Bearer {credentials.token}"
        if credentials.ca_file:
            session.verify = credentials.ca_file
        self._client = DICOMwebClient(self.name, session=session, timeout=timeout)
        # the job's own RetryPolicy retries transient failures (its attempts and backoff are the job's options);
        # the library's retries on top would multiply them (5 attempts, up to 30 s, for every 503)
        self._client.set_http_retry_params(retry=False)

    def find_series(self, filters: QueryFilters) -> list[SeriesRef]:
        """QIDO-RS: the studies first when the filters name studies or accession numbers, then their series."""
        modality = {"Modality": filters.modality} if filters.modality else {}
        date = {"StudyDate": "-".join(filters.study_date)} if filters.study_date else {}
        study_uids = self._filtered_studies(filters, date)
        if study_uids is None:
            found = self._call("QIDO-RS series query", lambda: self._client.search_for_series(
                fields=_SERIES_FIELDS, search_filters={**modality, **date}, get_remaining=True))
        else:
            found = []
            query = self._client.search_for_series
            for uid in study_uids:
                found += self._call(f"QIDO-RS series query of study {uid}", lambda uid=uid: query(
                    uid, fields=_SERIES_FIELDS, search_filters=modality, get_remaining=True))
        series = [_series_ref(item) for item in found]
        series = [s for s in series if description_matches(filters.series_description, s.series_description)]
        return sorted(series, key=lambda s: (s.study_uid, s.series_number or 0, s.series_uid))

    def _filtered_studies(self, filters: QueryFilters, date: dict) -> list[str] | None:
        """The StudyInstanceUIDs the study-level filters leave, or ``None`` when none is given (every study)."""
        if not filters.study_uids and not filters.accession_numbers:
            return None
        queries = [{"StudyInstanceUID": uid} for uid in filters.study_uids] or [{}]
        if filters.accession_numbers:
            numbers = filters.accession_numbers
            queries = [{**query, "AccessionNumber": number} for query in queries for number in numbers]
        uids: list[str] = []
        for query in queries:
            studies = self._call("QIDO-RS study query", lambda query=query: self._client.search_for_studies(
                fields=("StudyInstanceUID",), search_filters={**query, **date}, get_remaining=True))
            uids += [_value(study, "0020000D") for study in studies]
        return sorted(set(uids))

    def retrieve_series(self, series: SeriesRef, folder: Path) -> list[Path]:
        """WADO-RS: each instance of ``series`` as ``folder/<SOPInstanceUID>.dcm``, in its stored transfer syntax."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        what = f"WADO-RS retrieve of series {series.series_uid}"

        def retrieve() -> list[Path]:
            paths = []
            instances = self._client.iter_series(series.study_uid, series.series_uid, media_types=_ANY_TRANSFER_SYNTAX)
            for dataset in instances:
                path = folder / f"{dataset.SOPInstanceUID}.dcm"
                with atomic_path(path) as temporary:
                    dataset.save_as(temporary, enforce_file_format=True)
                paths.append(path)
            return paths

        paths = self._call(what, retrieve)
        if not paths:
            raise PacsError(f"{self.name}: {what}: no instances returned")
        if series.n_instances is not None and len(paths) != series.n_instances:
            raise PacsError(
                f"{self.name}: {what}: {len(paths)} instance(s) returned, the query listed {series.n_instances}"
            )
        return paths

    def store(self, paths: Sequence[Path]) -> None:
        """STOW-RS of ``paths`` (one request); any instance the server lists as failed fails the store."""
        datasets = [pydicom.dcmread(path) for path in paths]
        response = self._call(f"STOW-RS of {len(datasets)} instance(s)", lambda: self._client.store_instances(datasets))
        failed = response.get("FailedSOPSequence") if response is not None else None
        if failed:
            reasons = sorted({str(item.get("FailureReason", "?")) for item in failed})
            raise PacsError(
                f"{self.name}: STOW-RS refused {len(failed)} instance(s) (failure reason {', '.join(reasons)})"
            )

    def has_instance(self, study_uid: str, series_uid: str, sop_uid: str) -> bool:
        """QIDO-RS instance query for ``sop_uid`` in the series."""
        found = self._call(f"QIDO-RS query of instance {sop_uid}", lambda: self._client.search_for_instances(
            study_uid, series_uid, search_filters={"SOPInstanceUID": sop_uid}))
        return any(_value(item, "00080018") == sop_uid for item in found)

    def close(self) -> None:
        self._client._session.close()

    def _call(self, what: str, request: Callable[[], T]) -> T:
        """``request()`` with its failures as :class:`PacsError` subclasses naming this server and ``what``."""
        try:
            return request()
        except requests.HTTPError as error:
            status = error.response.status_code if error.response is not None else 0
            if status in _AUTH_STATUSES:
                raise PacsAuthError(f"{self.name}: {what}: credentials refused (HTTP {status})") from None
            kind = TransientPacsError if status >= 500 or status in (408, 429) else PacsError
            raise kind(f"{self.name}: {what}: HTTP {status}") from None
        except requests.Timeout:
            raise TransientPacsError(f"{self.name}: {what}: timed out") from None
        except requests.ConnectionError as error:
            raise TransientPacsError(f"{self.name}: {what}: {_connection_reason(error)}") from None
        except requests.RequestException as error:
            raise PacsError(f"{self.name}: {what}: {type(error).__name__}") from None
        except (pydicom.errors.InvalidDicomError, EOFError, ValueError, KeyError, struct.error) as error:
            # a PACS serving an instance pydicom cannot parse (truncated, corrupt): the series is bad, not the PACS
            reason = f"{type(error).__name__}: {_first_line(error)}"
            raise PacsError(f"{self.name}: {what}: unreadable instance ({reason})") from None


def _connection_reason(error: BaseException) -> str:
    """A short reason for a failed connection ("connection refused") from the chain of ``error``."""
    names = {errno.ECONNREFUSED: "connection refused", errno.ECONNRESET: "connection reset",
             errno.EHOSTUNREACH: "host unreachable", errno.ENETUNREACH: "network unreachable"}
    current: BaseException | None = error
    seen: set[int] = set()
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in names:
            return names[current.errno]
        nested = current.args[0] if current.args and isinstance(current.args[0], BaseException) else None
        current = nested or current.__cause__ or current.__context__ or getattr(current, "reason", None)
    text = _first_line(error).lower()
    for name in names.values():
        if name in text:
            return name
    return "connection failed"


def _first_line(error: BaseException) -> str:
    return " ".join(str(error).split())[:200]


def _value(item: dict, tag: str, default: object = "") -> object:
    values = item.get(tag, {}).get("Value") or [default]
    return values[0]


def _series_ref(item: dict) -> SeriesRef:
    number = _value(item, "00200011", None)
    count = _value(item, "00201209", None)
    return SeriesRef(
        study_uid=str(_value(item, "0020000D")),
        series_uid=str(_value(item, "0020000E")),
        modality=str(_value(item, "00080060")),
        series_description=str(_value(item, "0008103E")),
        series_number=None if number in (None, "") else int(number),
        n_instances=None if count in (None, "") else int(count),
    )



"""A DIMSE peer (``AE@host:port``) as a :class:`~custom_networks.pacs.client.PacsClient`, with pynetdicom.

C-FIND at study then series level finds the series; C-GET (storage sub-operations come back on the same
association) or C-MOVE (the PACS opens an association to this job's own storage SCP) retrieves them; C-STORE
stores results back; an IMAGE-level C-FIND confirms a store. Each call opens its own association and releases it,
so a PACS that closes idle associations never breaks a long batch.

What pynetdicom leaves to the caller, and this module adds: an empty or aborted C-FIND is an error, not "nothing
found" (an unregistered calling AE gets its request aborted, which otherwise looks like zero matches); errors are
sorted into transient ones (connection refused or closed, timeouts, transient rejection) and permanent ones
(calling/called AE not recognised); ``TCP_NODELAY`` on every socket (without it each instance costs about 40 ms
of Nagle delay); files are written under a temporary name and renamed, and only for SOP instances the
IMAGE-level query listed, so a retrieve never leaves a partial or foreign file in the series folder.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import (
    JPEG2000,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, build_context, build_role, evt
from pynetdicom.association import Association
from pynetdicom.sop_class import (
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from custom_networks.atomic_files import atomic_path
from custom_networks.errors import InputError
from custom_networks.pacs.client import (
    PacsAuthError,
    PacsError,
    QueryFilters,
    SeriesRef,
    TransientPacsError,
    description_matches,
)

__all__ = ["DimseClient"]


# pynetdicom logs every C-FIND identifier and C-STORE at INFO, which can hold patient names and IDs when a PACS
# returns more keys than asked for: keep it to warnings unless the application set its level itself
_PYNETDICOM_LOGGER = logging.getLogger("pynetdicom")
if _PYNETDICOM_LOGGER.level == logging.NOTSET:
    _PYNETDICOM_LOGGER.setLevel(logging.WARNING)

_PENDING = (0xFF00, 0xFF01)
_SUCCESS = 0x0000
# C-STORE warnings (coercion of data elements, elements discarded, data set does not match SOP class): stored
_STORE_WARNINGS = (0xB000, 0xB006, 0xB007)
# A-ASSOCIATE-RJ from the service user (source 1): 3 = calling AE title not recognised, 7 = called AE title not
_REJECT_CALLING_AE, _REJECT_CALLED_AE = 3, 7
# storage status the SCP answers for an instance nobody asked for (0xA700 family: refused, out of resources)
_REFUSED = 0xA701
# what the storage SCP accepts (C-MOVE): every syntax pynetdicom knows; the PACS's proposal order decides
_TRANSFER_SYNTAXES = [str(uid) for uid in ALL_TRANSFER_SYNTAXES]
# what a C-GET proposes, each in its own presentation context per SOP class: a C-GET SCP accepts one syntax per
# context and Orthanc 1.10 cannot transcode there, so one context listing all of them fails for compressed files
_IMAGE_TRANSFER_SYNTAXES = [
    ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian, RLELossless, JPEGBaseline8Bit,
    JPEGExtended12Bit, JPEGLossless, JPEGLosslessSV1, JPEGLSLossless, JPEGLSNearLossless, JPEG2000Lossless, JPEG2000,
]
# an association carries at most 128 presentation contexts (one is the C-GET model's)
_MAX_CONTEXTS = 127


def _set_nodelay(event: evt.Event) -> None:
    """EVT_CONN_OPEN handler: disable Nagle's algorithm on the association's socket."""
    event.assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


@dataclass
class _Destination:
    """Where the storage handler of one retrieve writes: the series folder and the instances expected there."""

    folder: Path
    series_uid: str
    expected: set[str]
    written: dict[str, Path] = field(default_factory=dict)
    refused: int = 0


class DimseClient:
    """A PACS reached over DIMSE, implementing :class:`~custom_networks.pacs.client.PacsClient`.

    Args:
        called_aet: the PACS's AE title.
        host, port: where the PACS listens.
        calling_aet: this job's AE title; the PACS must know it (for C-MOVE: with this host and ``storage_port``).
        storage_port: port of this job's storage SCP, needed for ``retrieve="move"``.
        storage_host: address the storage SCP binds (``"0.0.0.0"`` to accept a PACS on another machine).
        retrieve: ``"get"`` (C-GET) or ``"move"`` (C-MOVE to the storage SCP).
        timeout: seconds for connecting, association negotiation and each DIMSE response.
        tls: an ``ssl.SSLContext`` for the associations this job opens (the storage SCP listens without TLS).

    Raises:
        InputError: an unknown ``retrieve``, or ``"move"`` without ``storage_port``.
    """

    def __init__(
        self,
        called_aet: str,
        host: str,
        port: int,
        *,
        calling_aet: str,
        storage_port: int | None = None,
        storage_host: str = "127.0.0.1",
        retrieve: str = "get",
        timeout: float = 30.0,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        if retrieve not in ("get", "move"):
            raise InputError(f"retrieve {retrieve}: expected get (C-GET) or move (C-MOVE)", parameter="retrieve")
        if retrieve == "move" and storage_port is None:
            raise InputError("retrieve move: give storage_port=<port>, the port of this job's storage SCP that the "
                             "PACS sends the instances to", parameter="retrieve")
        self.called_aet, self.host, self.port = called_aet, host, int(port)
        self.calling_aet = calling_aet
        self.storage_port, self.storage_host = storage_port, storage_host
        self.retrieve, self.timeout, self.tls = retrieve, float(timeout), tls
        self.name = f"{called_aet}@{host}:{self.port}"
        self._ae = AE(ae_title=calling_aet)
        for attribute in ("acse_timeout", "dimse_timeout", "network_timeout", "connection_timeout"):
            setattr(self._ae, attribute, self.timeout)
        self._server = None
        self._destination: _Destination | None = None
        self._move_lock = threading.Lock()

    # ---- associations and errors ------------------------------------------------------------------------------

    @contextmanager
    def _association(
        self, contexts: list, roles: list | None = None, handlers: list | None = None, required: list | None = None
    ) -> Iterator:
        """An established association with these presentation contexts, released (or aborted) afterwards.

        Args:
            contexts: proposed presentation contexts; the first is the service's (query/retrieve model).
            roles: SCP/SCU role selection items (C-GET).
            handlers: more pynetdicom event handlers.
            required: ``(abstract syntax, transfer syntax)`` pairs the PACS must accept; default: the first
                context's abstract syntax in any transfer syntax.
        """
        connected = threading.Event()

        def on_open(event: evt.Event) -> None:
            connected.set()
            _set_nodelay(event)

        tls_args = (self.tls, self.host) if self.tls is not None else None
        assoc = self._ae.associate(
            self.host, self.port, contexts=contexts, ae_title=self.called_aet, ext_neg=roles, tls_args=tls_args,
            evt_handlers=[(evt.EVT_CONN_OPEN, on_open), *(handlers or [])],
        )
        if not assoc.is_established:
            raise self._association_error(assoc, connected.is_set(), contexts)
        try:
            self._check_accepted(assoc, required or [(contexts[0].abstract_syntax, None)])
            yield assoc
        except BaseException:
            assoc.abort()
            raise
        assoc.release()

    def _check_accepted(self, assoc: Association, required: list) -> None:
        """Raise :class:`PacsError` naming the first ``(abstract, transfer syntax)`` pair the PACS did not accept
        (a transfer syntax of ``None``: any)."""
        accepted = {(str(cx.abstract_syntax), str(cx.transfer_syntax[0])) for cx in assoc.accepted_contexts}
        for abstract, transfer in required:
            if any(a == str(abstract) and transfer in (None, t) for a, t in accepted):
                continue
            what = UID(abstract).name + (f" in {UID(transfer).name}" if transfer else "")
            hint = "; try retrieve=move (C-MOVE)" if abstract == StudyRootQueryRetrieveInformationModelGet else ""
            raise PacsError(f"{self.name}: the PACS does not accept {what}{hint}")

    def _association_error(self, assoc: Association, connected: bool, contexts: list) -> PacsError:
        if not connected:
            return TransientPacsError(f"{self.name}: connection refused or unreachable")
        answer = assoc.acceptor.primitive
        if not assoc.is_rejected and answer is not None and answer.result == 0x00:
            # accepted, but none of the proposed services (pynetdicom then aborts): retrying cannot help
            services = sorted({UID(context.abstract_syntax).name for context in contexts})
            return PacsError(f"{self.name}: the PACS supports none of the proposed services ({', '.join(services)})")
        if assoc.is_rejected:
            reason = f"association rejected ({answer.result_str}, {answer.source_str}: {answer.reason_str})"
            if answer.result_source == 1 and answer.diagnostic == _REJECT_CALLING_AE:
                return PacsAuthError(f"{self.name}: {reason}; register calling AE '{self.calling_aet}' on the PACS")
            if answer.result_source == 1 and answer.diagnostic == _REJECT_CALLED_AE:
                return PacsAuthError(f"{self.name}: {reason}; is '{self.called_aet}' the PACS's AE title?")
            if answer.result == 0x02:
                return TransientPacsError(f"{self.name}: {reason}")
            return PacsError(f"{self.name}: {reason}")
        return TransientPacsError(f"{self.name}: association aborted or timed out during negotiation")

    def _no_status_error(self, assoc: Association, operation: str, started: float, answered: bool) -> PacsError:
        """The error for a DIMSE operation that ended without a final status (aborted, closed or timed out)."""
        if time.monotonic() - started >= self.timeout:
            return TransientPacsError(f"{self.name}: {operation} got no answer in {self.timeout:g} s")
        if assoc.acse.is_aborted("a-abort") and not answered:
            # what Orthanc (and others) do with a request from an AE they do not know: abort, no status
            return PacsAuthError(
                f"{self.name}: the PACS aborted the {operation} without an answer; is calling AE "
                f"'{self.calling_aet}' registered on the PACS (AE title, host, port)?"
            )
        return TransientPacsError(f"{self.name}: association aborted or connection closed during the {operation}")

    # ---- C-FIND -----------------------------------------------------------------------------------------------

    def _find(self, assoc: Association, query: Dataset, operation: str) -> list[Dataset]:
        """All identifiers a C-FIND returns; an empty, failed or aborted answer raises."""
        matches: list[Dataset] = []
        started = time.monotonic()
        for status, identifier in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind):
            code = status.get("Status")
            if code is None:
                raise self._no_status_error(assoc, operation, started, answered=bool(matches))
            if code in _PENDING:
                if identifier is None:
                    raise PacsError(f"{self.name}: {operation} returned a match that cannot be decoded")
                matches.append(identifier)
            elif code == _SUCCESS:
                return matches
            else:
                raise PacsError(f"{self.name}: {operation} failed with status 0x{code:04X}")
        raise self._no_status_error(assoc, operation, started, answered=bool(matches))

    @staticmethod
    def _query(level: str, **keys: object) -> Dataset:
        query = Dataset()
        query.QueryRetrieveLevel = level
        for keyword, value in keys.items():
            setattr(query, keyword, value)
        return query

    def _study_queries(self, filters: QueryFilters) -> list[Dataset]:
        """Study-level queries whose union is every study matching ``filters`` (one per accession number: list
        matching is defined for UIDs only)."""
        keys = {"StudyInstanceUID": list(filters.study_uids) or "", "StudyDate": ""}
        if filters.study_date:
            keys["StudyDate"] = "-".join(filters.study_date)
        if filters.modality:
            # optional key: a PACS that ignores it returns more studies, the series-level Modality still filters
            keys["ModalitiesInStudy"] = filters.modality
        if not filters.accession_numbers:
            return [self._query("STUDY", **keys)]
        return [self._query("STUDY", AccessionNumber=number, **keys) for number in filters.accession_numbers]

    def find_series(self, filters: QueryFilters) -> list[SeriesRef]:
        """Every series matching ``filters``, in study order then series number.

        SeriesDescription is matched here with ``fnmatch`` (case-insensitive), not by the PACS: DICOM wildcard
        matching is case-sensitive and an optional key a PACS may ignore.
        """
        contexts = [build_context(StudyRootQueryRetrieveInformationModelFind)]
        found: dict[str, SeriesRef] = {}
        with self._association(contexts) as assoc:
            study_uids: list[str] = []
            for query in self._study_queries(filters):
                for study in self._find(assoc, query, "study C-FIND"):
                    if study.get("StudyInstanceUID") and study.StudyInstanceUID not in study_uids:
                        study_uids.append(str(study.StudyInstanceUID))
            for study_uid in study_uids:
                query = self._query(
                    "SERIES", StudyInstanceUID=study_uid, SeriesInstanceUID="", Modality=filters.modality or "",
                    SeriesDescription="", SeriesNumber="", NumberOfSeriesRelatedInstances="",
                )
                for series in sorted(self._find(assoc, query, "series C-FIND"), key=_series_number):
                    ref = _series_ref(study_uid, series)
                    if ref is not None and _matches(ref, filters):
                        found.setdefault(ref.series_uid, ref)
        return list(found.values())

    def _instances(self, series: SeriesRef) -> dict[str, str]:
        """``{SOPInstanceUID: SOPClassUID}`` of every instance of ``series`` (an IMAGE-level C-FIND)."""
        contexts = [build_context(StudyRootQueryRetrieveInformationModelFind)]
        query = self._query(
            "IMAGE", StudyInstanceUID=series.study_uid, SeriesInstanceUID=series.series_uid, SOPInstanceUID="",
            SOPClassUID="",
        )
        with self._association(contexts) as assoc:
            matches = self._find(assoc, query, "image C-FIND")
        instances = {str(m.get("SOPInstanceUID", "")): str(m.get("SOPClassUID", "")) for m in matches}
        if not instances or "" in instances or "" in instances.values():
            raise PacsError(f"{self.name}: series {series.series_uid} lists no instances (or no SOP class UIDs)")
        return instances

    def has_instance(self, study_uid: str, series_uid: str, sop_uid: str) -> bool:
        """Whether the PACS holds this SOP instance (an IMAGE-level C-FIND for it)."""
        contexts = [build_context(StudyRootQueryRetrieveInformationModelFind)]
        query = self._query(
            "IMAGE", StudyInstanceUID=study_uid, SeriesInstanceUID=series_uid, SOPInstanceUID=sop_uid
        )
        with self._association(contexts) as assoc:
            matches = self._find(assoc, query, "image C-FIND")
        return any(str(match.get("SOPInstanceUID", "")) == sop_uid for match in matches)

    # ---- C-GET / C-MOVE ---------------------------------------------------------------------------------------

    def _on_store(self, event: evt.Event) -> int:
        """EVT_C_STORE handler: write the instance, as received, into the current destination folder."""
        destination = self._destination
        sop_uid = str(event.request.AffectedSOPInstanceUID)
        # only instances the IMAGE-level query listed: a valid UID is also a safe file name (digits and dots)
        if destination is None or sop_uid not in destination.expected or not UID(sop_uid).is_valid:
            if destination is not None:
                destination.refused += 1
            return _REFUSED
        with atomic_path(destination.folder / f"{sop_uid}.dcm") as temporary:
            temporary.write_bytes(event.encoded_dataset())
        destination.written[sop_uid] = destination.folder / f"{sop_uid}.dcm"
        return _SUCCESS

    def _retrieve_responses(self, responses: Iterator, assoc: Association, operation: str) -> None:
        """Read a C-GET / C-MOVE answer to its final status; failure or abort raises."""
        started = time.monotonic()
        answered = False
        for status, _identifier in responses:
            code = status.get("Status")
            if code is None:
                raise self._no_status_error(assoc, operation, started, answered)
            answered = True
            if code in _PENDING:
                continue
            failed = int(status.get("NumberOfFailedSuboperations") or 0)
            if code == _SUCCESS or (code >> 12 == 0xB and not failed):
                return
            raise PacsError(
                f"{self.name}: {operation} failed with status 0x{code:04X} ({failed} sub-operations failed)"
            )
        raise self._no_status_error(assoc, operation, started, answered)

    def retrieve_series(self, series: SeriesRef, folder: Path) -> list[Path]:
        """Write every instance of ``series`` into ``folder`` as ``<SOPInstanceUID>.dcm`` (C-GET or C-MOVE).

        Raises :class:`PacsError` unless exactly the instances the IMAGE-level query lists arrived.
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        instances = self._instances(series)
        query = self._query("SERIES", StudyInstanceUID=series.study_uid, SeriesInstanceUID=series.series_uid)
        with self._move_lock:
            self._destination = destination = _Destination(folder, series.series_uid, set(instances))
            try:
                if self.retrieve == "get":
                    self._get(query, set(instances.values()))
                else:
                    self._move(query)
            finally:
                self._destination = None
        missing = destination.expected - set(destination.written)
        if missing or destination.refused:
            raise PacsError(
                f"{self.name}: series {series.series_uid}: {len(destination.written)} of {len(instances)} instances "
                f"arrived ({destination.refused} unexpected)"
            )
        return [destination.written[uid] for uid in sorted(destination.written)]

    def _get(self, query: Dataset, sop_classes: set[str]) -> None:
        # C-GET sends the instances back on this association: propose each SOP class with the SCP role
        contexts = [build_context(StudyRootQueryRetrieveInformationModelGet)]
        if len(sop_classes) * len(_IMAGE_TRANSFER_SYNTAXES) <= _MAX_CONTEXTS:
            contexts += [build_context(uid, [ts]) for uid in sorted(sop_classes) for ts in _IMAGE_TRANSFER_SYNTAXES]
        elif len(sop_classes) <= _MAX_CONTEXTS:
            contexts += [build_context(uid, _IMAGE_TRANSFER_SYNTAXES) for uid in sorted(sop_classes)]
        else:
            raise PacsError(f"{self.name}: a series of {len(sop_classes)} SOP classes does not fit one C-GET")
        roles = [build_role(uid, scp_role=True) for uid in sorted(sop_classes)]
        with self._association(contexts, roles, handlers=[(evt.EVT_C_STORE, self._on_store)]) as assoc:
            responses = assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet)
            self._retrieve_responses(responses, assoc, "C-GET")

    def _move(self, query: Dataset) -> None:
        self._start_storage_scp()
        contexts = [build_context(StudyRootQueryRetrieveInformationModelMove)]
        with self._association(contexts) as assoc:
            responses = assoc.send_c_move(query, self.calling_aet, StudyRootQueryRetrieveInformationModelMove)
            self._retrieve_responses(responses, assoc, "C-MOVE")

    def _start_storage_scp(self) -> None:
        """Start this job's storage SCP (the C-MOVE destination) once, on ``storage_host:storage_port``."""
        if self._server is not None:
            return
        scp = AE(ae_title=self.calling_aet)
        scp.network_timeout = scp.acse_timeout = scp.dimse_timeout = self.timeout
        for context in AllStoragePresentationContexts:
            scp.add_supported_context(context.abstract_syntax, _TRANSFER_SYNTAXES)
        handlers = [(evt.EVT_CONN_OPEN, _set_nodelay), (evt.EVT_C_STORE, self._on_store)]
        try:
            self._server = scp.start_server(
                (self.storage_host, int(self.storage_port)), block=False, evt_handlers=handlers
            )
        except OSError as error:
            raise PacsError(
                f"storage SCP '{self.calling_aet}' cannot listen on {self.storage_host}:{self.storage_port}: "
                f"{error.strerror or error}"
            ) from None

    # ---- C-STORE ----------------------------------------------------------------------------------------------

    def store(self, paths: Sequence[Path]) -> None:
        """C-STORE these files (sent as encoded, in their own transfer syntax); any failed instance raises."""
        if not paths:
            return
        headers = [pydicom.dcmread(path, stop_before_pixels=True) for path in paths]
        pairs = {(str(h.file_meta.MediaStorageSOPClassUID), str(h.file_meta.TransferSyntaxUID)) for h in headers}
        contexts = [build_context(sop_class, [syntax]) for sop_class, syntax in sorted(pairs)]
        with self._association(contexts, required=sorted(pairs)) as assoc:
            for path in paths:
                started = time.monotonic()
                status = assoc.send_c_store(Path(path))
                code = status.get("Status")
                if code is None:
                    raise self._no_status_error(assoc, f"C-STORE of {Path(path).name}", started, answered=False)
                if code != _SUCCESS and code not in _STORE_WARNINGS:
                    raise PacsError(f"{self.name}: C-STORE of {Path(path).name} failed with status 0x{code:04X}")

    def close(self) -> None:
        """Stop the storage SCP, if one was started (associations are closed after each call)."""
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    def __enter__(self) -> DimseClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _series_number(series: Dataset) -> tuple[int, str]:
    number = series.get("SeriesNumber")
    return (int(number) if number not in (None, "") else 0, str(series.get("SeriesInstanceUID", "")))


def _series_ref(study_uid: str, series: Dataset) -> SeriesRef | None:
    """The :class:`SeriesRef` of one series-level match (``None`` without a SeriesInstanceUID)."""
    series_uid = str(series.get("SeriesInstanceUID", ""))
    if not series_uid:
        return None
    number = series.get("SeriesNumber")
    count = series.get("NumberOfSeriesRelatedInstances")
    return SeriesRef(
        study_uid=study_uid,
        series_uid=series_uid,
        modality=str(series.get("Modality", "")),
        series_description=str(series.get("SeriesDescription", "")),
        series_number=int(number) if number not in (None, "") else None,
        n_instances=int(count) if count not in (None, "") else None,
    )


def _matches(ref: SeriesRef, filters: QueryFilters) -> bool:
    if filters.modality and ref.modality.upper() != filters.modality.upper():
        return False
    return description_matches(filters.series_description, ref.series_description)

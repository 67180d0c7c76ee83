"""Open a PACS from how a user writes it: a DICOMweb URL or a DIMSE peer ``AE@host:port``."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from custom_networks.errors import InputError
from custom_networks.pacs.client import PacsClient
from custom_networks.pacs.credentials import Credentials
from custom_networks.pacs.retry import RetryPolicy

__all__ = ["DIMSE_SPEC", "PacsConnection", "open_pacs"]

# AE titles are up to 16 characters of the default character repertoire, without backslash
DIMSE_SPEC = re.compile(r"^(?P<aet>[^@\\\s]{1,16})@(?P<host>[^:@\s]+):(?P<port>\d{1,5})$")


def open_pacs(
    spec: str,
    credentials: Credentials | None = None,
    *,
    timeout: float = 30.0,
    calling_aet: str = "ATTUNETS",
    storage_port: int | None = None,
    retrieve: str = "get",
) -> PacsClient:
    """The client for ``spec``: ``http(s)://...`` is a DICOMweb base URL, ``AE@host:port`` a DIMSE peer.

    Args:
        spec: the PACS as the user wrote it.
        credentials: for DICOMweb (basic auth, token, CA file); DIMSE peers authenticate by AE title.
        timeout: seconds per request / association step.
        calling_aet: this job's AE title (DIMSE).
        storage_port: port of this job's storage SCP for C-MOVE (DIMSE).
        retrieve: ``"get"`` (C-GET) or ``"move"`` (C-MOVE to the job's storage SCP) (DIMSE).

    Raises:
        InputError: ``spec`` is neither form.
    """
    if spec.startswith(("http://", "https://")):
        from custom_networks.pacs.dicomweb import DicomWebClient

        return DicomWebClient(spec, credentials=credentials, timeout=timeout)
    match = DIMSE_SPEC.match(spec)
    if match is None:
        raise InputError(
            f"pacs {spec}: expected a DICOMweb URL (http(s)://host:port/path) or a DIMSE peer AE@host:port",
            parameter="pacs",
        )
    port = int(match["port"])
    if not 0 < port < 65536:
        raise InputError(f"pacs {spec}: port {port} is out of range", parameter="pacs")
    # the DIMSE client is imported only when used (pynetdicom is not needed for DICOMweb)
    from custom_networks.pacs.dimse import DimseClient

    return DimseClient(match["aet"], match["host"], port, calling_aet=calling_aet, storage_port=storage_port,
                       retrieve=retrieve, timeout=timeout)


@dataclass(frozen=True)
class PacsConnection:
    """How to reach a PACS, as plain picklable fields (a Ray actor opens its own connection from them).

    Args:
        pacs: DICOMweb base URL or DIMSE peer ``AE@host:port``.
        credentials: for DICOMweb.
        timeout_s: seconds per request.
        retry: backoff for transient failures.
        calling_aet, storage_port, retrieve: DIMSE settings (see :func:`open_pacs`).
    """

    pacs: str
    credentials: Credentials | None = None
    timeout_s: float = 30.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    calling_aet: str = "ATTUNETS"
    storage_port: int | None = None
    retrieve: str = "get"

    def open(self) -> PacsClient:
        return open_pacs(self.pacs, self.credentials, timeout=self.timeout_s, calling_aet=self.calling_aet,
                         storage_port=self.storage_port, retrieve=self.retrieve)

"""Hospital PACS batch jobs: query a PACS (DICOMweb or DIMSE), segment every matching series with a bundle, store
DICOM SEGs back; resumable from a SQLite ledger, idempotent, fault tolerant, locally or on Ray (``docs/pacs.md``).

The modules, from the protocol up: ``client`` (what a PACS connection offers), ``credentials``, ``retry``,
``dicomweb`` and ``dimse`` (the two protocols), ``connect`` (``PacsConnection``, ``open_pacs``), ``processor``
(one series: retrieve, segment with the bundle runtime's ``Segmenter``, store, verify), ``selection`` (the
bundle's series rules per study), ``ledger``, ``engine`` (plan, record, the local engine), ``ray_engine``,
``report`` and ``job`` (the whole job, watch mode included); for push mode (``attention-unets pacs-listen``, an AI
node the PACS sends studies to) ``listener`` (the storage SCP, series completion, queue, workers), ``spool``,
``routing`` (which bundle for which series) and ``audit`` (the JSON-lines audit log). Only ``client`` is imported
here, so that importing the package stays cheap; torch and MONAI load when a processor builds its segmenter.
"""

from __future__ import annotations

from custom_networks.pacs.client import (
    PacsAuthError,
    PacsClient,
    PacsError,
    QueryFilters,
    SeriesRef,
    TransientPacsError,
)

__all__ = ["PacsAuthError", "PacsClient", "PacsError", "QueryFilters", "SeriesRef", "TransientPacsError"]

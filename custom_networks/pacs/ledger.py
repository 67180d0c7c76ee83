"""The job ledger: one SQLite row per (SeriesInstanceUID, bundle, bundle version, weights SHA-256).

Each row holds the series' state (queued, retrieved, inferred, stored, verified, failed), its attempts, the time of
each stage, the SEG UIDs and the last error. The database is in WAL mode and every change is one committed
transaction, so a job killed at any moment (``kill -9``) leaves a consistent ledger for the next run to resume from.
Only the process that owns the job (the local engine, or the Ray driver) writes to it. No patient identifier is
stored: UIDs, modality, series description and numbers only.
"""

from __future__ import annotations

import datetime
import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from custom_networks.pacs.client import SeriesRef

__all__ = [
    "STATES",
    "STATE_FAILED",
    "STATE_INFERRED",
    "STATE_QUEUED",
    "STATE_RETRIEVED",
    "STATE_STORED",
    "STATE_VERIFIED",
    "JobKey",
    "Ledger",
    "LedgerRow",
]

STATE_QUEUED, STATE_RETRIEVED, STATE_INFERRED = "queued", "retrieved", "inferred"
STATE_STORED, STATE_VERIFIED, STATE_FAILED = "stored", "verified", "failed"
STATES = (STATE_QUEUED, STATE_RETRIEVED, STATE_INFERRED, STATE_STORED, STATE_VERIFIED, STATE_FAILED)
_SCHEMA = """
CREATE TABLE IF NOT EXISTS series (
    series_uid TEXT NOT NULL,
    bundle TEXT NOT NULL,
    bundle_version TEXT NOT NULL,
    weights_sha256 TEXT NOT NULL,
    study_uid TEXT NOT NULL,
    modality TEXT NOT NULL DEFAULT '',
    series_description TEXT NOT NULL DEFAULT '',
    series_number INTEGER,
    n_instances INTEGER,
    state TEXT NOT NULL CHECK (state IN ('queued', 'retrieved', 'inferred', 'stored', 'verified', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT NOT NULL DEFAULT '',
    failed_stage TEXT NOT NULL DEFAULT '',
    seg_series_uid TEXT NOT NULL DEFAULT '',
    seg_sop_uid TEXT NOT NULL DEFAULT '',
    seg_path TEXT NOT NULL DEFAULT '',
    seconds TEXT NOT NULL DEFAULT '{}',
    segments TEXT NOT NULL DEFAULT '[]',
    files TEXT NOT NULL DEFAULT '{}',
    created TEXT NOT NULL,
    updated TEXT NOT NULL,
    PRIMARY KEY (series_uid, bundle, bundle_version, weights_sha256)
)
"""


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class JobKey:
    """What a result depends on besides the series: the bundle, its version and the weights' SHA-256."""

    bundle: str
    bundle_version: str
    weights_sha256: str


@dataclass(frozen=True)
class LedgerRow:
    """One series of the ledger (see the module docstring for the fields)."""

    series: SeriesRef
    state: str
    attempts: int = 0
    last_error: str = ""
    failed_stage: str = ""
    seg_series_uid: str = ""
    seg_sop_uid: str = ""
    seg_path: str = ""
    seconds: dict = field(default_factory=dict)
    segments: tuple = ()
    files: dict = field(default_factory=dict)
    created: str = ""
    updated: str = ""


class Ledger:
    """The ledger file ``path`` (created if new), seen through one job key.

    Args:
        path: the SQLite file.
        key: the bundle, version and weights the job runs with; rows of other keys are kept but not seen.
    """

    def __init__(self, path: Path, key: JobKey) -> None:
        self.path = Path(path)
        self.key = key
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # autocommit: every statement below is its own transaction, or an explicit one
        self._db = sqlite3.connect(self.path, isolation_level=None, timeout=30)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _where(self) -> tuple[str, tuple]:
        return ("bundle = ? AND bundle_version = ? AND weights_sha256 = ?",
                (self.key.bundle, self.key.bundle_version, self.key.weights_sha256))

    def get(self, series_uid: str) -> LedgerRow | None:
        where, values = self._where()
        query = f"SELECT * FROM series WHERE series_uid = ? AND {where}"
        row = self._db.execute(query, (series_uid, *values)).fetchone()
        return None if row is None else _row(row)

    def rows(self) -> Iterator[LedgerRow]:
        where, values = self._where()
        for row in self._db.execute(f"SELECT * FROM series WHERE {where} ORDER BY study_uid, series_number, series_uid",
                                    values):
            yield _row(row)

    def enqueue(self, series: SeriesRef) -> LedgerRow:
        """The row of ``series``, added as ``queued`` if new; its query fields are refreshed either way."""
        now = _now()
        self._db.execute(
            "INSERT INTO series (series_uid, bundle, bundle_version, weights_sha256, study_uid, modality, "
            "series_description, series_number, n_instances, state, created, updated) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT DO UPDATE SET study_uid = excluded.study_uid, modality = excluded.modality, "
            "series_description = excluded.series_description, series_number = excluded.series_number, "
            "n_instances = excluded.n_instances",
            (series.series_uid, *self._key_values(), series.study_uid, series.modality, series.series_description,
             series.series_number, series.n_instances, STATE_QUEUED, now, now),
        )
        return self.get(series.series_uid)

    def _key_values(self) -> tuple[str, str, str]:
        return self.key.bundle, self.key.bundle_version, self.key.weights_sha256

    def start_attempt(self, series_uid: str) -> None:
        """Count one more attempt (the error of the last one stays until this one ends)."""
        self._update(series_uid, "attempts = attempts + 1", ())

    def set_state(self, series_uid: str, state: str, **fields) -> None:
        """Move the series to ``state``, with any of ``last_error``, ``failed_stage``, ``seg_series_uid``,
        ``seg_sop_uid``, ``seg_path``, ``seconds`` (dict), ``segments`` (list) and ``files`` (dict)."""
        if state not in STATES:
            raise ValueError(f"unknown state {state!r}; states: {STATES}")
        allowed = {"last_error", "failed_stage", "seg_series_uid", "seg_sop_uid", "seg_path", "seconds", "segments",
                   "files"}
        unknown = sorted(set(fields) - allowed)
        if unknown:
            raise ValueError(f"unknown ledger fields {unknown}")
        values = {key: json.dumps(value) if key in ("seconds", "segments", "files") else str(value)
                  for key, value in fields.items()}
        assignments = ", ".join(["state = ?", *(f"{key} = ?" for key in values)])
        self._update(series_uid, assignments, (state, *values.values()))

    def _update(self, series_uid: str, assignments: str, values: tuple) -> None:
        where, key = self._where()
        changed = self._db.execute(
            f"UPDATE series SET {assignments}, updated = ? WHERE series_uid = ? AND {where}",
            (*values, _now(), series_uid, *key),
        ).rowcount
        if changed != 1:
            raise KeyError(f"{series_uid}: not in the ledger {self.path} for this bundle and weights")

    def counts(self) -> dict[str, int]:
        where, values = self._where()
        found = dict(self._db.execute(f"SELECT state, COUNT(*) FROM series WHERE {where} GROUP BY state", values))
        return {state: int(found.get(state, 0)) for state in STATES}


def _row(row: sqlite3.Row) -> LedgerRow:
    series = SeriesRef(row["study_uid"], row["series_uid"], row["modality"], row["series_description"],
                       row["series_number"], row["n_instances"])
    return LedgerRow(
        series, row["state"], row["attempts"], row["last_error"], row["failed_stage"], row["seg_series_uid"],
        row["seg_sop_uid"], row["seg_path"], json.loads(row["seconds"]), tuple(json.loads(row["segments"])),
        json.loads(row["files"]), row["created"], row["updated"],
    )

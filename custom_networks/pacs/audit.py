"""The push listener's audit log: one JSON object per line, appended, each line flushed as it is written.

Every line has ``time`` (UTC, ISO 8601 with milliseconds) and ``event``; the other fields depend on the event (the
listener's module docstring lists them). Lines carry AE titles, peer addresses, UIDs, counts, outcomes and
durations only: never a patient name, ID or birth date, never a series description (free text a site may fill
with anything), never credentials.
"""

from __future__ import annotations

import datetime
import json
import threading
from pathlib import Path

__all__ = ["AuditLog", "read_audit"]


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")


class AuditLog:
    """Appends events to the JSON-lines file ``path`` (created with its folder if new); safe to share between
    threads.

    Args:
        path: the audit file.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._stream = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - open until close()

    def record(self, event: str, **fields: object) -> None:
        """Append one line ``{"time": ..., "event": event, **fields}`` and flush it."""
        line = json.dumps({"time": _now(), "event": event, **fields}, default=str)
        with self._lock:
            if self._stream.closed:
                return
            self._stream.write(line + "\n")
            self._stream.flush()

    def close(self) -> None:
        with self._lock:
            self._stream.close()

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_audit(path: Path) -> list[dict]:
    """Every complete line of the audit file ``path`` (a line cut short by a kill is left out)."""
    events = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return events

"""The batch report: ``series.csv`` and ``series.json`` (one row per series) and ``index.html`` with thumbnails.

A row holds the study and series UIDs, modality, description and number, the state and this run's outcome (done,
already done, failed, skipped, not run), the one-line reason, attempts, each segment's volume in ml, seconds per
stage and the SEG's UIDs. Nothing patient-identifying is in a row: the batch never asks the PACS for names, IDs or
birth dates, and reasons name files by UID. Files are written under a temporary name, then renamed.
"""

from __future__ import annotations

import csv
import datetime
import html
import json
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from custom_networks.atomic_files import atomic_path
from custom_networks.pacs.client import SeriesRef

__all__ = [
    "OUTCOME_ALREADY_DONE",
    "OUTCOME_DONE",
    "OUTCOME_FAILED",
    "OUTCOME_NOT_RUN",
    "OUTCOME_SKIPPED",
    "STAGES",
    "ReportRow",
    "thumbnail_path",
    "write_report",
]

OUTCOME_DONE, OUTCOME_ALREADY_DONE, OUTCOME_FAILED = "done", "already done", "failed"
OUTCOME_SKIPPED, OUTCOME_NOT_RUN = "skipped", "not run"
STAGES = ("retrieve", "decode", "network", "seg_encoding", "postprocessing", "store", "verify")
THUMBNAILS = "thumbnails"
# the series' own fields a row shows first, then the row's
_SERIES_FIELDS = ("study_uid", "series_uid", "modality", "series_description", "series_number")
_FIELDS = (*_SERIES_FIELDS, "state", "outcome", "reason", "attempts", "seg_series_uid", "seg_sop_uid")


@dataclass(frozen=True)
class ReportRow:
    """One series in the report (see the module docstring); ``thumbnail``: path relative to the report folder."""

    series: SeriesRef
    state: str = ""
    outcome: str = ""
    reason: str = ""
    attempts: int = 0
    seg_series_uid: str = ""
    seg_sop_uid: str = ""
    segments: tuple[dict, ...] = ()
    seconds: dict[str, float] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    thumbnail: str = ""


def thumbnail_path(report_dir: Path, series_uid: str) -> Path:
    return Path(report_dir) / THUMBNAILS / f"{series_uid}.png"


def _as_dict(row: ReportRow) -> dict[str, object]:
    """The row as the JSON report holds it: the series' fields, then the row's own."""
    own = asdict(row)
    del own["series"]
    return {**{name: getattr(row.series, name) for name in _SERIES_FIELDS}, **own}


def _flat(row: ReportRow) -> dict[str, object]:
    values = _as_dict(row)
    flat: dict[str, object] = {name: values[name] for name in _FIELDS}
    for segment in row.segments:
        flat[f"{segment['label']}_volume_ml"] = segment.get("volume_ml")
    for stage in STAGES:
        flat[f"seconds_{stage}"] = row.seconds.get(stage)
    flat["files"] = ";".join(f"{kind}={path}" for kind, path in sorted(row.files.items()))
    return flat


def write_report(report_dir: Path, rows: Sequence[ReportRow], run: Mapping[str, object],
                 viewer_url: str | None = None) -> dict[str, Path]:
    """Write the CSV, JSON and HTML report of ``rows`` into ``report_dir``; ``run`` holds the job's own fields
    (bundle, PACS name, counts, start and end). With ``viewer_url`` (an OHIF viewer's ``.../viewer``), each series
    in the HTML report links to its study there (``?StudyInstanceUIDs=<study>``). Returns the paths by kind."""
    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    run = {**run, "written": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    flat = [_flat(row) for row in rows]
    columns = list(dict.fromkeys(name for item in flat for name in item)) or list(_FIELDS)
    paths = {"csv": report_dir / "series.csv", "json": report_dir / "series.json", "html": report_dir / "index.html"}
    with atomic_path(paths["csv"]) as temporary, open(temporary, "w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(flat)
    with atomic_path(paths["json"]) as temporary:
        temporary.write_text(json.dumps({"run": run, "series": [_as_dict(row) for row in rows]}, indent=2))
    with atomic_path(paths["html"]) as temporary:
        temporary.write_text(_html(rows, run, viewer_url))
    return paths


def _html(rows: Sequence[ReportRow], run: Mapping[str, object], viewer_url: str | None) -> str:
    escape = html.escape
    summary = ", ".join(f"{escape(str(key))}: {escape(str(value))}" for key, value in run.items())
    cards = []
    for row in rows:
        series = row.series
        volumes = "; ".join(f"{escape(s['label'])} {s.get('volume_ml')} ml" for s in row.segments) or "&ndash;"
        seconds = ", ".join(f"{stage} {row.seconds[stage]:.2f} s" for stage in STAGES if stage in row.seconds)
        picture = (f'<img src="{escape(row.thumbnail)}" alt="overlay of series {escape(series.series_uid)}">'
                   if row.thumbnail else '<div class="none">no overlay</div>')
        if viewer_url:
            link = f"{viewer_url}?{urllib.parse.urlencode({'StudyInstanceUIDs': series.study_uid})}"
            picture += f'<p><a href="{escape(link)}">open the study in the viewer</a></p>'
        cards.append(
            f'<div class="card {escape(row.outcome.replace(" ", "-"))}">{picture}'
            f"<p><b>{escape(series.modality)} {escape(series.series_description)}</b> (series "
            f"{escape(str(series.series_number if series.series_number is not None else '?'))})</p>"
            f"<p>{escape(row.outcome)} &middot; state {escape(row.state)} &middot; attempts {row.attempts}</p>"
            f'<p class="reason">{escape(row.reason)}</p><p>volume: {volumes}</p><p>{escape(seconds)}</p>'
            f'<p class="uid">study {escape(series.study_uid)}<br>series {escape(series.series_uid)}<br>'
            f"SEG {escape(row.seg_sop_uid or '-')}</p></div>"
        )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>PACS batch report</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; }}
.cards {{ display: flex; flex-wrap: wrap; gap: 1em; }}
.card {{ border: 1px solid #bbb; border-radius: 6px; padding: 0.6em; width: 340px; font-size: 0.85em; }}
.card img {{ max-width: 100%; }}
.failed {{ border-color: #c00; background: #fff4f4; }}
.reason {{ color: #900; }}
.uid {{ color: #666; font-family: monospace; font-size: 0.8em; word-break: break-all; }}
.none {{ height: 60px; color: #888; }}
</style></head><body>
<h1>PACS batch report</h1>
<p>{summary}</p>
<div class="cards">
{chr(10).join(cards)}
</div></body></html>
"""

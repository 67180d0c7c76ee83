"""
Segment every matching series of a PACS with a bundle and store the results back: a resumable batch job.

The PACS is a DICOMweb base URL (QIDO-RS, WADO-RS, STOW-RS) or a DIMSE peer AE@host:port (C-FIND, C-GET or C-MOVE,
C-STORE). Per series: retrieve, run the bundle's own inference pipeline (model loaded once), write the DICOM SEG,
the DICOM SR measurement report (segment volumes, intensity mean and standard deviation, referencing the SEG) and,
with --secondary-capture, the overlay as a Secondary Capture, all with UIDs derived from the series, bundle,
version and weights (so a re-run never adds a second copy), store them, confirm each by querying it back. A
SQLite ledger (--ledger) records each series' state: a re-run skips finished series, resumes interrupted ones
and, with --retry-failed, retries failures. The report folder gets series.csv,
series.json and index.html (overlay thumbnails). Credentials come from PACS_USERNAME/PACS_PASSWORD or PACS_TOKEN,
or --credentials FILE (JSON), and are never printed. Exit status: 0 all done, 1 some failed, 2 bad options or
credentials, 130 stopped early (SIGINT/SIGTERM: the series in flight is finished first; a second signal abandons it).

examples:
  attention-unets pacs-batch --pacs http://127.0.0.1:8042/dicom-web --bundle brain_tumor_mri_gsconv_eca_unet --demo \\
      --modality MR --study-date 20260101-20261130 --series-description "T1*" --ledger jobs.sqlite --report report/
  attention-unets pacs-batch --pacs ORTHANC@127.0.0.1:4242 --calling-aet ATTUNETS --bundle ... --ledger ... \\
      --report ... --store pacs,folder --output segs/ --nifti
  attention-unets pacs-batch ... --watch --poll-interval 60         (until SIGINT/SIGTERM)
  attention-unets pacs-batch ... --engine ray --address auto --workers 4
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from pathlib import Path

from custom_networks.cli import parse_assignments
from custom_networks.cli.engine_options import add_engine_arguments, check_engine_arguments
from custom_networks.errors import InputError
from custom_networks.runtime.bundle_run import MODEL_CHOICES

__all__ = ["add_arguments", "run"]

_DATE = re.compile(r"^(\d{8})?(-)?(\d{8})?$")
_STORES = ("pacs", "folder")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_argument_group("PACS and query")
    source.add_argument("--pacs", required=True, help="DICOMweb base URL, or DIMSE peer AE@host:port")
    source.add_argument("--modality", help="Modality of the series, e.g. MR")
    source.add_argument("--study-date", help="StudyDate YYYYMMDD or range YYYYMMDD-YYYYMMDD (either end open)")
    source.add_argument("--series-description", help='SeriesDescription pattern, * and ? wildcards, e.g. "T1*"')
    source.add_argument("--study-uid", action="append", default=[], help="StudyInstanceUID(s), comma-separated; "
                        "repeatable")
    source.add_argument("--accession", action="append", default=[], help="AccessionNumber(s), comma-separated; "
                        "repeatable")
    source.add_argument("--credentials", type=Path, help="JSON file with username/password or token (and ca_file)")
    source.add_argument("--ca-file", type=Path, help="CA bundle to check the server's TLS certificate against")
    source.add_argument("--timeout", type=float, default=30.0, help="seconds per PACS request (default 30)")
    source.add_argument("--retries", type=int, default=4, help="attempts per PACS request for transient failures "
                        "(default 4)")
    source.add_argument("--backoff", type=float, default=1.0, help="first wait between attempts in seconds, doubled "
                        "each time (default 1)")
    source.add_argument("--calling-aet", default="ATTUNETS", help="DIMSE: this job's AE title (default ATTUNETS)")
    source.add_argument("--retrieve", choices=("get", "move"), default="get", help="DIMSE: C-GET or C-MOVE")
    source.add_argument("--storage-port", type=int, help="DIMSE C-MOVE: port of this job's storage SCP")

    model = parser.add_argument_group("bundle")
    model.add_argument("--bundle", required=True, help="bundle folder, or the name of a shipped bundle")
    model.add_argument("--model", choices=MODEL_CHOICES, default="auto",
                       help="torch checkpoint, fp32 ONNX or static int8 ONNX (the file this CPU runs exactly); auto "
                            "(default): int8 on the CPU when the export verified it for models/model.pt, else torch")
    model.add_argument("--weights", type=Path, help="model file instead of the one in <bundle>/models/")
    model.add_argument("--demo", action="store_true", help="the bundle's demo weights (a pipeline check only)")
    model.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    model.add_argument("--set", action="append", default=[], metavar="ID=VALUE",
                       help="override a bundle config id (JSON value); repeatable")
    model.add_argument("--secondary-capture", action="store_true",
                       help="also store the overlay as a DICOM Secondary Capture (PACS viewers without SEG support)")

    job = parser.add_argument_group("job")
    job.add_argument("--ledger", required=True, type=Path, help="SQLite job ledger (created if new)")
    job.add_argument("--report", required=True, type=Path, help="report folder (series.csv/json, index.html)")
    job.add_argument("--store", default="pacs", help="where SEGs go: pacs, folder or pacs,folder (default pacs)")
    job.add_argument("--output", type=Path, help="folder for --store folder: <study>/<series>/seg.dcm")
    job.add_argument("--nifti", action="store_true", help="with --output, also keep the NIfTI mask")
    job.add_argument("--work-dir", type=Path, help="scratch folder (default: <ledger>.work beside the ledger)")
    job.add_argument("--retry-failed", action="store_true", help="process series that failed before again")
    add_engine_arguments(job, 2, "Ray actors, each with the model loaded once (default 2)")
    job.add_argument("--watch", action="store_true", help="keep polling the PACS for new series until stopped")
    job.add_argument("--poll-interval", type=float, default=30.0, help="seconds between polls (default 30)")
    job.add_argument("--max-polls", type=int, help="with --watch: stop after this many polls")
    job.add_argument("--viewer-url", help="OHIF viewer URL (e.g. http://pacs:3000/viewer): the HTML report links "
                     "each study to it")


def _date_range(text: str | None) -> tuple[str, str] | None:
    if not text:
        return None
    match = _DATE.match(text)
    if match is None or not (match[1] or match[3]) or (match[1] and match[3] and not match[2]):
        raise InputError(f"--study-date {text}: expected YYYYMMDD or YYYYMMDD-YYYYMMDD")
    if not match[2]:
        return match[1], match[1]
    return match[1] or "", match[3] or ""


def _listed(values: list[str]) -> tuple[str, ...]:
    return tuple(item.strip() for value in values for item in value.split(",") if item.strip())


def _stores(text: str) -> set[str]:
    stores = {item.strip() for item in text.split(",") if item.strip()}
    unknown = sorted(stores - set(_STORES))
    if unknown or not stores:
        raise InputError(f"--store {text}: expected pacs, folder or pacs,folder")
    return stores


def run(args: argparse.Namespace) -> int:
    stores = _stores(args.store)
    if "folder" in stores and args.output is None:
        raise InputError("--store folder: give the folder with --output")
    if args.nifti and args.output is None:
        raise InputError("--nifti: the NIfTI masks go to --output; give it (and --store pacs,folder or folder)")
    if args.retries < 1:
        raise InputError(f"--retries {args.retries}: at least 1 (one attempt, no retry)")
    check_engine_arguments(args)

    from custom_networks.pacs.client import PacsError, QueryFilters
    from custom_networks.pacs.connect import PacsConnection
    from custom_networks.pacs.credentials import load_credentials
    from custom_networks.pacs.job import JobOptions, run_job
    from custom_networks.pacs.processor import OutputOptions
    from custom_networks.pacs.retry import RetryPolicy
    from custom_networks.runtime import BundleRequest

    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s")
    ledger = args.ledger.resolve()
    work_dir = (args.work_dir or ledger.with_name(ledger.name + ".work")).resolve()
    connection = PacsConnection(
        pacs=args.pacs,
        credentials=load_credentials(args.credentials, args.ca_file),
        timeout_s=args.timeout,
        retry=RetryPolicy(attempts=args.retries, initial_delay_s=args.backoff, max_delay_s=max(30.0, args.backoff)),
        calling_aet=args.calling_aet,
        storage_port=args.storage_port,
        retrieve=args.retrieve,
    )
    request = BundleRequest(
        bundle=args.bundle,
        model=args.model,
        weights=str(args.weights.resolve()) if args.weights else None,
        demo=args.demo,
        device=args.device,
        overrides={**parse_assignments(args.set), **({"save_secondary_capture": True} if args.secondary_capture
                                                      else {})},
    )
    outputs = OutputOptions(
        results_dir=str(work_dir / "results"),
        store_pacs="pacs" in stores,
        output_dir=str(args.output.resolve()) if "folder" in stores else None,
        write_nifti=args.nifti,
    )
    filters = QueryFilters(
        modality=args.modality,
        study_date=_date_range(args.study_date),
        series_description=args.series_description,
        study_uids=_listed(args.study_uid),
        accession_numbers=_listed(args.accession),
    )
    options = JobOptions(connection, request, outputs, filters, ledger, args.report.resolve(), work_dir,
                         retry_failed=args.retry_failed, engine=args.engine, address=args.address,
                         workers=args.workers, threads_per_worker=args.threads_per_worker, watch=args.watch,
                         poll_interval_s=args.poll_interval,
                         max_polls=args.max_polls, viewer_url=args.viewer_url)
    try:
        return run_job(options)
    except PacsError as error:
        # a PACS refusing the job as a whole (bad URL, credentials): one line naming the server, never a secret
        raise InputError(str(error)) from None

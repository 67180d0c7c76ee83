"""
An AI node the PACS pushes studies to: a DICOM storage SCP that segments each series once it is complete.

The PACS sends (C-STORE) to --ae-title at --host:--port, from a calling AE title given with --allow-aet (others are
rejected at association). Each instance is spooled (--spool, <study>/<series>/<SOP>.dcm, written under a temporary
name and renamed); a series is complete when no instance of it arrived for --complete-after seconds. The routing
rules (--rules, YAML or JSON, see custom_networks/pacs/routing.py) pick the bundle for each series, or skip it; a
series runs through the same processor and SQLite ledger (--ledger) as pacs-batch: deterministic SEG and SR UIDs,
so nothing is ever stored twice. Results go back by C-STORE to --send-to AE@host:port or by STOW-RS to a DICOMweb
URL, and/or into --output. Every association and series is recorded in the audit log (--audit, JSON lines, UIDs
only). Killed and started again, the node finishes every series it had received. Credentials for a DICOMweb
destination come from PACS_USERNAME/PACS_PASSWORD or PACS_TOKEN, or --credentials FILE, and are never printed.
Runs until SIGINT/SIGTERM (the series in flight are finished first; a second signal abandons them): exit status 0,
130 when abandoned, 2 bad options.

examples:
  attention-unets pacs-listen --ae-title AINODE --port 11112 --allow-aet ORTHANC --rules routing.yaml \\
      --spool /var/spool/ainode --ledger node.sqlite --audit audit.jsonl --send-to ORTHANC@127.0.0.1:4242
  attention-unets pacs-listen ... --send-to https://pacs.example.org/dicom-web --credentials pacs.json
  attention-unets pacs-listen ... --output segs/ --nifti --workers 2 --complete-after 30
  attention-unets pacs-listen ... --engine ray --address auto --workers 8    (series on a Ray cluster's actors)
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from custom_networks.cli.engine_options import add_engine_arguments, check_engine_arguments
from custom_networks.errors import InputError

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    node = parser.add_argument_group("DICOM node")
    node.add_argument("--ae-title", default="ATTUNETS", help="this node's AE title (default ATTUNETS)")
    node.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; a PACS on "
                      "another machine needs the node's address on the network the PACS reaches)")
    node.add_argument("--port", type=int, default=11112, help="port to listen on (default 11112)")
    node.add_argument("--allow-aet", action="append", required=True, metavar="AET",
                      help="calling AE title allowed to send (the PACS's own); repeatable")
    node.add_argument("--complete-after", type=float, default=60.0,
                      help="seconds without a new instance after which a series is complete (default 60)")

    routing = parser.add_argument_group("routing and processing")
    routing.add_argument("--rules", required=True, type=Path, help="routing rules file (YAML or JSON)")
    routing.add_argument("--device", default="auto", help="device of rules that name none: auto, cpu, cuda, cuda:N")
    add_engine_arguments(routing, 1, "series processed at once: threads of this process (--engine local) or Ray "
                         "actors (--engine ray), each loading a bundle's model once (default 1)")
    routing.add_argument("--queue-size", type=int, help="complete series waiting for a worker, at most (default "
                         "twice --workers)")

    files = parser.add_argument_group("spool, ledger, audit")
    files.add_argument("--spool", required=True, type=Path, help="folder for received instances")
    files.add_argument("--ledger", required=True, type=Path, help="SQLite ledger (created if new)")
    files.add_argument("--audit", type=Path, help="audit log, JSON lines (default: <ledger>.audit.jsonl)")
    files.add_argument("--report", type=Path, help="also write the pacs-batch report (series.csv/json, index.html)")
    files.add_argument("--work-dir", type=Path, help="scratch folder (default: <ledger>.work beside the ledger)")

    results = parser.add_argument_group("where results go")
    results.add_argument("--send-to", help="destination: DIMSE peer AE@host:port (C-STORE) or DICOMweb base URL "
                         "(STOW-RS)")
    results.add_argument("--output", type=Path, help="also (or only) keep results in this folder: "
                         "<study>/<series>/seg.dcm")
    results.add_argument("--nifti", action="store_true", help="with --output, also keep the NIfTI mask")
    results.add_argument("--credentials", type=Path, help="JSON file with username/password or token (and "
                         "ca_file), for a DICOMweb destination")
    results.add_argument("--ca-file", type=Path, help="CA bundle to check the destination's TLS certificate against")
    results.add_argument("--timeout", type=float, default=30.0, help="seconds per network step (default 30)")
    results.add_argument("--retries", type=int, default=4, help="attempts per destination request for transient "
                         "failures (default 4)")
    results.add_argument("--backoff", type=float, default=1.0, help="first wait between attempts in seconds, "
                         "doubled each time (default 1)")


def run(args: argparse.Namespace) -> int:
    if args.send_to is None and args.output is None:
        raise InputError("give --send-to (a PACS) and/or --output (a folder) for the results")
    if args.nifti and args.output is None:
        raise InputError("--nifti: the NIfTI masks go to --output; give it")
    if args.retries < 1:
        raise InputError(f"--retries {args.retries}: at least 1 (one attempt, no retry)")
    check_engine_arguments(args)

    from custom_networks.pacs.credentials import load_credentials
    from custom_networks.pacs.listener import Listener, ListenerOptions, check_ae_title
    from custom_networks.pacs.retry import RetryPolicy
    from custom_networks.pacs.routing import load_rules

    allowed = tuple(check_ae_title(title, "allow_aet") for title in args.allow_aet)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s")
    ledger = args.ledger.resolve()
    options = ListenerOptions(
        ae_title=args.ae_title,
        port=args.port,
        allowed_aets=allowed,
        rules=load_rules(args.rules, device=args.device),
        spool=args.spool.resolve(),
        ledger=ledger,
        audit=(args.audit or ledger.with_name(ledger.name + ".audit.jsonl")).resolve(),
        host=args.host,
        complete_after=args.complete_after,
        send_to=args.send_to,
        credentials=load_credentials(args.credentials, args.ca_file) if args.send_to else None,
        output_dir=args.output.resolve() if args.output else None,
        write_nifti=args.nifti,
        workers=args.workers,
        engine=args.engine,
        address=args.address,
        threads_per_worker=args.threads_per_worker,
        queue_size=args.queue_size,
        work_dir=args.work_dir.resolve() if args.work_dir else None,
        report_dir=args.report.resolve() if args.report else None,
        timeout_s=args.timeout,
        retry=RetryPolicy(attempts=args.retries, initial_delay_s=args.backoff, max_delay_s=max(30.0, args.backoff)),
    )

    def ready(listener: Listener) -> None:
        print(f"listening as {listener.address}, accepting {', '.join(allowed)}; audit log {options.audit}",
              flush=True)

    return Listener(options).serve(on_ready=ready)

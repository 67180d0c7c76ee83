"""Talk to a running server with MONAI Label's own client: ``python -m monailabel_app.client --url URL ACTION``.

Run with the MONAI Label environment's Python (``monailabel.client`` lives in the monailabel package). Each
action prints one JSON object, so scripts and the tests (which run in the main environment) can use it:

    info                               -> the server's /info
    datastore                          -> the datastore listing (a DICOMweb store: the series fetched so far)
    next-sample [--strategy NAME]      -> the next image to label, as 3D Slicer asks for it ({"id": ...})
    upload IMAGE_FILE [--id ID]        -> {"image": id}
    infer MODEL IMAGE_ID --output FILE -> {"label": FILE, "params": ...}: the returned label written to FILE
    save-label IMAGE_ID LABEL_FILE [--label NAME ...] [--model NAME]
                                       -> MONAI Label's answer (tag ``final``: a DICOMweb store gets a DICOM SEG
                                          whose segments are named NAME, for label values 1, 2, ...)
    train MODEL [--max-epochs N] [--val-split F] [--timeout S]: start training and wait for it to finish
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence

from monailabel.client import MONAILabelClient
from monailabel.client.client import MONAILabelClientException

__all__ = ["main", "wait_for_training"]

# task states of MONAI Label's async task runner (monailabel.utils.async_tasks) before a task ends
_UNFINISHED = {"SUBMITTED", "PENDING", "RUNNING"}


def wait_for_training(client: MONAILabelClient, timeout: float, poll: float = 1.0) -> dict:
    """Poll ``/train`` until the last task has ended; its status (``status``: ``DONE`` on success). The last task's
    own status is polled, not "is anything running": just after ``train_start`` the server may not count the new
    task as running yet (seen under load: the wait returned with the task still ``RUNNING``)."""
    deadline = time.monotonic() + timeout
    while True:
        status = client.train_status()
        if not isinstance(status, dict) or status.get("status") not in _UNFINISHED:
            return status
        if time.monotonic() > deadline:
            client.train_stop()
            raise TimeoutError(f"training still running after {timeout:.0f} s (stopped)")
        time.sleep(poll)


def _run(client: MONAILabelClient, args: argparse.Namespace) -> dict:
    if args.action == "info":
        return client.info()
    if args.action == "datastore":
        return client.datastore()
    if args.action == "next-sample":
        return client.next_sample(args.strategy, {})
    if args.action == "upload":
        return client.upload_image(args.image_file, image_id=args.id)
    if args.action == "infer":
        label, params = client.infer(args.model, args.image_id, {"device": args.device})
        if label is None:
            raise MONAILabelClientException(None, f"{args.model} returned no label for {args.image_id}: {params}")
        shutil.move(label, args.output)
        return {"label": args.output, "params": params}
    if args.action == "save-label":
        # the label_info 3D Slicer's MONAI Label module sends: segment names by label value, the model's name
        info = [{"name": name, "idx": value, "model_name": args.model} for value, name in enumerate(args.label, 1)]
        return client.save_label(args.image_id, args.label_file, tag=args.tag, params={"label_info": info})
    params = {"max_epochs": args.max_epochs, "val_split": args.val_split, "device": args.device}
    started = client.train_start(args.model, params)
    return {"started": started, "status": wait_for_training(client, args.timeout)}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m monailabel_app.client", description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="server URL (default: %(default)s)")
    parser.add_argument("--device", default="cpu", help="device for infer and train (default: %(default)s)")
    actions = parser.add_subparsers(dest="action", required=True)
    actions.add_parser("info")
    actions.add_parser("datastore")
    actions.add_parser("next-sample").add_argument("--strategy", default="random")
    upload = actions.add_parser("upload")
    upload.add_argument("image_file")
    upload.add_argument("--id", default=None)
    infer = actions.add_parser("infer")
    infer.add_argument("model")
    infer.add_argument("image_id")
    infer.add_argument("--output", required=True)
    save = actions.add_parser("save-label")
    save.add_argument("image_id")
    save.add_argument("label_file")
    save.add_argument("--tag", default="final")
    save.add_argument("--label", action="append", default=[], help="segment name of label value 1, 2, ...")
    save.add_argument("--model", default="monailabel_app", help="model name recorded in the label info")
    train = actions.add_parser("train")
    train.add_argument("model")
    train.add_argument("--max-epochs", type=int, default=1)
    train.add_argument("--val-split", type=float, default=0.2)
    train.add_argument("--timeout", type=float, default=600)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        client = MONAILabelClient(args.url, tmpdir=scratch)
        try:
            result = _run(client, args)
        except (MONAILabelClientException, OSError, TimeoutError) as error:
            print(json.dumps({"error": f"{type(error).__name__}: {getattr(error, 'msg', error)}"}))
            return 1
    print(json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())

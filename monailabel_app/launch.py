"""Start the MONAI Label server on this project's bundles: ``python -m monailabel_app.launch --studies ...``.

Run with the MONAI Label environment's Python (``scripts/start_monailabel.sh`` does). It prepares a work
folder outside the repository (the app folder MONAI Label writes its ``model``, ``logs`` and ``bin`` folders
into, its sessions and its DICOMweb cache), then runs ``python -m monailabel.main start_server`` on 127.0.0.1.
Nothing is fetched from the network: the app contacts no model zoo, and dcmqi comes from the environment.
DICOMweb credentials come from the environment (``MONAI_LABEL_DICOMWEB_USERNAME``/``_PASSWORD``), never the
command line.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from monailabel_app.bundles import bundle_names, read_overrides

__all__ = ["DEFAULT_WORK_DIR", "main", "parse_weights", "prepare_work_dir", "server_command", "server_env"]

REPO = Path(__file__).resolve().parents[1]
COMPAT = Path(__file__).resolve().parent / "compat"
DEFAULT_WORK_DIR = Path.home() / ".cache" / "attention-unets" / "monailabel"
MAIN_PY = '"""MONAI Label entry point, written by monailabel_app.launch: the app lives in the repository."""\n\n' \
    "from monailabel_app.app import AttentionUNetsApp  # noqa: F401\n"


def parse_weights(items: Sequence[str]) -> dict[str, Path]:
    """``NAME=FILE`` pairs (``--weights``) as ``{bundle name: weights file}``."""
    weights = {}
    for item in items:
        name, sep, file = item.partition("=")
        if not sep or not name or not file:
            raise ValueError(f"--weights {item}: expected BUNDLE=FILE")
        if not Path(file).is_file():
            raise ValueError(f"--weights {item}: no such file {file}")
        weights[name] = Path(file)
    return weights


def prepare_work_dir(work: Path, weights: dict[str, Path]) -> Path:
    """Create ``work/app`` with its ``main.py`` and copy each bundle's initial weights to
    ``work/app/model/<bundle>/models/model.pt`` unless weights are there already (e.g. from training).

    Returns the app folder."""
    app = work / "app"
    app.mkdir(parents=True, exist_ok=True)
    main_py = app / "main.py"
    if not main_py.is_file() or main_py.read_text() != MAIN_PY:
        temporary = app / f".main.py.{os.getpid()}"
        temporary.write_text(MAIN_PY)
        temporary.replace(main_py)
    for name, file in weights.items():
        model = app / "model" / name / "models" / "model.pt"
        if not model.exists():
            model.parent.mkdir(parents=True, exist_ok=True)
            temporary = model.with_name(f".model.pt.{os.getpid()}")
            shutil.copyfile(file, temporary)
            temporary.replace(model)
    return app


def server_env(work: Path, dicomweb_modality: str | None) -> dict[str, str]:
    """The server's environment: the app and the torchvision stand-in importable, the environment's ``bin``
    (dcmqi's ``itkimage2segimage``) on PATH, sessions and the DICOMweb cache in the work folder."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), str(COMPAT), env.get("PYTHONPATH", "")) if p)
    env["PATH"] = os.pathsep.join((str(Path(sys.executable).parent), env.get("PATH", "")))
    env.setdefault("MONAI_LABEL_SESSION_PATH", str(work / "sessions"))
    env.setdefault("MONAI_LABEL_DICOMWEB_CACHE_PATH", str(work / "dicom-cache"))
    if dicomweb_modality:
        env["MONAI_LABEL_DICOMWEB_SEARCH_FILTER"] = json.dumps({"Modality": dicomweb_modality})
    return env


def server_command(app: Path, args: argparse.Namespace) -> list[str]:
    """``python -m monailabel.main start_server`` with the app's ``--conf`` pairs."""
    command = [sys.executable, "-m", "monailabel.main", "start_server", "--app", str(app), "--studies",
               args.studies, "--host", args.host, "--port", str(args.port)]
    conf = {"models": args.models, "overrides": str(Path(args.overrides).resolve()) if args.overrides else "",
            "bundles_dir": str(Path(args.bundles_dir).resolve()) if args.bundles_dir else ""}
    for key, value in conf.items():
        if value:
            command += ["--conf", key, value]
    return command


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m monailabel_app.launch", description=__doc__.splitlines()[0])
    parser.add_argument("--studies", required=True,
                        help="studies folder (images, labels in labels/final) or DICOMweb URL (http://.../dicom-web)")
    parser.add_argument("--work", default=str(DEFAULT_WORK_DIR), help="work folder (default: %(default)s)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8000, help="port (default: %(default)s)")
    parser.add_argument("--models", default="", help="comma-separated bundle names (default: all)")
    parser.add_argument("--weights", action="append", default=[], metavar="BUNDLE=FILE",
                        help="initial weights of a bundle (copied once into the work folder); repeatable")
    parser.add_argument("--overrides", default="", help="JSON file {bundle: {config id: value}}")
    parser.add_argument("--bundles-dir", default="", help="bundles folder (default: the repository's)")
    parser.add_argument("--dicomweb-modality", default=None,
                        help="Modality of the DICOMweb series to list (MONAI Label's default lists only CT)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        weights = parse_weights(args.weights)
        bundles_dir = Path(args.bundles_dir) if args.bundles_dir else None
        served = bundle_names(bundles_dir, args.models)
        unserved = sorted(set(weights) - set(served))
        if unserved:
            raise ValueError(f"--weights: {unserved} not among the served bundles {served}")
        read_overrides(args.overrides, bundles_dir)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if not args.studies.startswith(("http://", "https://")):
        # the server runs in the work folder
        args.studies = str(Path(args.studies).resolve())
    work = Path(args.work).resolve()
    app = prepare_work_dir(work, weights)
    command = server_command(app, args)
    os.chdir(work)
    os.execve(command[0], command, server_env(work, args.dicomweb_modality))


if __name__ == "__main__":
    sys.exit(main())

"""
Segment a file or a folder of cases with a bundle: the bundle's own configs/inference.json (plus
inference_onnx.json for --model onnx/int8, plus demo.json for --demo) run as `python -m monai.bundle run` runs it.

On the CPU the default model (--model auto) is the static int8 ONNX model when scripts/export_bundle_models.py
verified one for the bundle's models/model.pt (same SHA-256; int8_verification.json), picking the file whose
integer products this CPU computes exactly; otherwise, and on CUDA, the torch checkpoint. --model torch goes back.

Each NIfTI file, DICOM series folder, DICOM radiograph and PNG/JPG/TIFF image is one case. Per case the output
folder gets the mask with the input's geometry, a DICOM SEG for DICOM input and, with --overlays, an overlay PNG;
run_summary.csv / .json list every case with its outcome. A bad case is reported and the others go on.

examples:
  attention-unets infer --bundle brain_tumor_mri_gsconv_eca_unet --demo --input study/ --output masks/
  attention-unets infer --bundle bundles/lgg_mri_cbam_unet --input case.nii.gz --output out/ --model int8
  attention-unets infer --bundle lgg_mri_cbam_unet --input slices/ --output out/ --set network_def#features=[8,16,32]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from custom_networks.cli import closest
from custom_networks.errors import InputError

__all__ = ["MODEL_FILES", "add_arguments", "bundle_folder", "config_ids", "run"]

# --model -> the model file in <bundle>/models/ and the config override that points at it (int8: the file is
# chosen for this CPU, see custom_networks.deploy.int8_models)
MODEL_FILES = {
    "torch": ("model.pt", "ckpt_path"),
    "onnx": ("model.onnx", "onnx_model"),
    "int8": ("model_int8_static.onnx", "onnx_model"),
}
CHECKPOINT = MODEL_FILES["torch"][0]
DEMO_WEIGHTS = "demo_model.pt"
REPOSITORY_BUNDLES = Path(__file__).resolve().parents[2] / "bundles"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bundle", required=True, help="bundle folder, or the name of one in bundles/")
    parser.add_argument("--input", required=True, type=Path, help="a case file, or a folder of cases")
    parser.add_argument("--output", required=True, type=Path, help="folder for masks, SEGs, overlays, summary")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="where the network runs (default: cuda when available, else cpu)")
    parser.add_argument("--model", choices=("auto", *MODEL_FILES), default="auto",
                        help="torch checkpoint, fp32 ONNX or static int8 ONNX (from scripts/export_bundle_models.py);"
                             " auto (default): int8 on the CPU when the export verified it for models/model.pt, "
                             "else torch")
    parser.add_argument("--weights", type=Path, help="model file to use instead of the one in <bundle>/models/")
    parser.add_argument("--demo", action="store_true",
                        help="the bundle's shipped demo weights (configs/demo.json): a pipeline check, not for "
                             "clinical use")
    parser.add_argument("--overlays", action="store_true", help="write an overlay PNG per case")
    parser.add_argument("--set", action="append", default=[], metavar="ID=VALUE",
                        help="override a config id (JSON value), e.g. network_def#features=[8,16,32]; repeatable")


def bundle_folder(name_or_path: str) -> Path:
    """The bundle folder ``name_or_path`` names: a path, or a bundle name under the repository's ``bundles/``."""
    candidates = [Path(name_or_path), REPOSITORY_BUNDLES / name_or_path]
    for folder in candidates:
        if (folder / "configs" / "inference.json").is_file():
            return folder.resolve()
    known = sorted(p.parent.parent.name for p in REPOSITORY_BUNDLES.glob("*/configs/inference.json"))
    hint = closest(Path(name_or_path).name, known)
    hint_text = f"did you mean {hint}?" if hint else f"bundles: {', '.join(known)}"
    raise InputError(f"--bundle {name_or_path}: no bundle there (a folder with configs/inference.json); {hint_text}")


def config_ids(configs: list[Path]) -> set[str]:
    """Every id (``a#b#c``) the config files define, for checking ``--set`` ids."""
    ids: set[str] = set()

    def walk(node, prefix: str) -> None:
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for key, value in items:
            name = f"{prefix}#{key}" if prefix else str(key)
            ids.add(name)
            walk(value, name)

    for path in configs:
        for key, value in json.loads(path.read_text()).items():
            # an override file's "a#b" keys name ids of the files before it
            ids.add(key)
            walk(value, key)
    return ids


def _overrides_from_set(pairs: list[str], known: set[str]) -> dict:
    overrides = {}
    for pair in pairs:
        if "=" not in pair:
            raise InputError(f"--set {pair}: expected ID=VALUE")
        key, text = pair.split("=", 1)
        if key not in known:
            hint = closest(key, sorted(known))
            raise InputError(f"--set {key}: the bundle has no config id {key!r}" + (f"; did you mean {hint}?"
                                                                                      if hint else ""))
        try:
            overrides[key] = json.loads(text)
        except json.JSONDecodeError:
            overrides[key] = text
    return overrides


def _resolve_model(args: argparse.Namespace, bundle: Path, on_cuda: bool) -> str:
    """What ``--model auto`` means here: int8 on the CPU for a checkpoint the export verified it for."""
    if args.model != "auto":
        return args.model
    if on_cuda or args.demo or args.weights is not None:
        return "torch"
    from custom_networks.deploy.int8_models import verified_int8_model

    checkpoint = bundle / "models" / CHECKPOINT
    return "int8" if checkpoint.is_file() and verified_int8_model(bundle / "models", checkpoint) else "torch"


def _model_file(args: argparse.Namespace, bundle: Path) -> tuple[str, Path]:
    name, config_id = MODEL_FILES[args.model]
    if args.demo and args.model == "torch":
        name = DEMO_WEIGHTS
    path = args.weights or bundle / "models" / name
    if args.model == "int8" and args.weights is None:
        from custom_networks.deploy.int8_models import int8_model_for_this_cpu

        path = Path(int8_model_for_this_cpu(bundle / "models"))
    if not path.is_file():
        ways = ("train the bundle (configs/train.json writes models/model.pt), use --demo where the bundle ships "
                "demo weights, or pass --weights")
        if args.model != "torch":
            ways = "export it with scripts/export_bundle_models.py, or pass --weights"
        raise InputError(f"{path}: model file not found; {ways}")
    return config_id, path.resolve()


def _print_table(summary: Path, model: str, model_file: Path) -> int:
    cases = json.loads(summary.read_text())["cases"]
    failed = [case for case in cases if case["status"] != "ok"]
    width = max([len(case["case"]) for case in cases] + [4])
    print(f"\n{'case'.ljust(width)}  status  written / reason")
    for case in cases:
        detail = ", ".join(case["outputs"]) if case["status"] == "ok" else case["message"]
        print(f"{case['case'].ljust(width)}  {case['status'].ljust(6)}  {detail}")
    print(f"\n{len(cases) - len(failed)} case(s) ok, {len(failed)} failed; model: {model} ({model_file}); "
          f"summary: {summary}")
    return 1 if failed else 0


def run(args: argparse.Namespace) -> int:
    bundle = bundle_folder(args.bundle)
    if not args.input.exists():
        raise InputError(f"--input {args.input}: no such file or folder")
    configs = [bundle / "configs" / "inference.json"]
    if args.demo:
        configs.append(bundle / "configs" / "demo.json")
        if not configs[-1].is_file():
            raise InputError(f"--demo: {bundle.name} ships no demo weights (no configs/demo.json)")
    import torch  # the heavy imports wait until the options are known to be good

    if args.device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda: this torch build or machine has no CUDA device; use --device cpu")
    on_cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    args.model = _resolve_model(args, bundle, on_cuda)
    if args.model != "torch":
        configs.append(bundle / "configs" / "inference_onnx.json")
    config_id, model = _model_file(args, bundle)
    overrides = {
        **_overrides_from_set(args.set, config_ids(configs)),
        "bundle_root": str(bundle),
        "dataset_dir": str(args.input.resolve()),
        "output_dir": str(args.output.resolve()),
        "save_overlays": args.overlays,
        config_id: str(model),
    }

    from ignite.engine import Events
    from monai.bundle import ConfigWorkflow

    if args.device != "auto":
        overrides["device"] = f"$torch.device('{args.device}')"
    print(f"{bundle.name}: {args.model} model {model} on {args.input}", flush=True)
    workflow = ConfigWorkflow(
        config_file=[str(path) for path in configs],
        meta_file=str(bundle / "configs" / "metadata.json"),
        logging_file=False,
        workflow_type="infer",
        **overrides,
    )
    workflow.initialize()
    total = len(workflow.parser.get_parsed_content("cases"))
    evaluator = workflow.parser.get_parsed_content("evaluator")
    start = time.perf_counter()

    @evaluator.on(Events.ITERATION_COMPLETED)
    def progress(engine) -> None:
        case = engine.state.batch[0]["case"]  # the decollated batch of one case
        print(f"[{engine.state.iteration}/{total}] {case} segmented, {time.perf_counter() - start:.1f} s", flush=True)

    workflow.run()
    workflow.finalize()
    return _print_table(args.output.resolve() / "run_summary.json", args.model, model)

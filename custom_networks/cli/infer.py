"""
Segment a file or a folder of cases with a bundle: the bundle's own configs/inference.json (plus
inference_onnx.json for --model onnx/int8, plus demo.json for --demo) run as `python -m monai.bundle run` runs it,
through the Python API (custom_networks.segment).

On the CPU the default model (--model auto) is the static int8 ONNX model when scripts/export_bundle_models.py
verified one for the bundle's models/model.pt (same SHA-256; int8_verification.json), picking the file whose
integer products this CPU computes exactly; otherwise, and on CUDA, the torch checkpoint. --model torch goes back.

Each NIfTI file, DICOM series folder, DICOM radiograph and PNG/JPG/TIFF image is one case. Per case the output
folder gets the mask with the input's geometry; for DICOM input a DICOM SEG and a DICOM SR measurement report
(segment volumes, intensity mean and standard deviation) and, with --secondary-capture, the overlay as a DICOM
Secondary Capture; with --overlays, an overlay PNG;
run_summary.csv / .json list every case with its outcome. A bad case is reported and the others go on.

examples:
  attention-unets infer --bundle brain_tumor_mri_gsconv_eca_unet --demo --input study/ --output masks/
  attention-unets infer --bundle bundles/lgg_mri_cbam_unet --input case.nii.gz --output out/ --model int8
  attention-unets infer --bundle lgg_mri_cbam_unet --input slices/ --output out/ --set network_def#features=[8,16,32]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from custom_networks.cli import parse_assignments
from custom_networks.runtime.bundle_run import MODEL_CHOICES

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bundle", required=True, help="bundle folder, or the name of a shipped bundle")
    parser.add_argument("--input", required=True, type=Path, help="a case file, or a folder of cases")
    parser.add_argument("--output", required=True, type=Path, help="folder for masks, SEGs, overlays, summary")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="where the network runs (default: cuda when available, else cpu)")
    parser.add_argument("--model", choices=MODEL_CHOICES, default="auto",
                        help="torch checkpoint, fp32 ONNX or static int8 ONNX (from scripts/export_bundle_models.py);"
                             " auto (default): int8 on the CPU when the export verified it for models/model.pt, "
                             "else torch")
    parser.add_argument("--weights", type=Path, help="model file to use instead of the one in <bundle>/models/")
    parser.add_argument("--demo", action="store_true",
                        help="the bundle's shipped demo weights (configs/demo.json): a pipeline check, not for "
                             "clinical use")
    parser.add_argument("--overlays", action="store_true", help="write an overlay PNG per case")
    parser.add_argument("--secondary-capture", action="store_true",
                        help="for DICOM input, also write the overlay as a DICOM Secondary Capture (for PACS viewers "
                             "without SEG support)")
    parser.add_argument("--set", action="append", default=[], metavar="ID=VALUE",
                        help="override a config id (JSON value), e.g. network_def#features=[8,16,32]; repeatable")


def run(args: argparse.Namespace) -> int:
    from custom_networks.python_api import segment

    start = time.perf_counter()

    def progress(done: int, total: int, case: str) -> None:
        print(f"[{done}/{total}] {case} segmented, {time.perf_counter() - start:.1f} s", flush=True)

    result = segment(args.input, args.output, bundle=args.bundle, model=args.model, weights=args.weights,
                     device=args.device, demo=args.demo, overrides=parse_assignments(args.set),
                     overlays=args.overlays, secondary_capture=args.secondary_capture, progress=progress)
    width = max([len(case.case) for case in result.cases] + [4])
    print(f"\n{'case'.ljust(width)}  status  written / reason")
    for case in result.cases:
        detail = ", ".join(str(path) for path in case.files.values()) if case.ok else case.message
        print(f"{case.case.ljust(width)}  {('ok' if case.ok else 'failed').ljust(6)}  {detail}")
    demo = " (demo weights: not for clinical use)" if result.demo else ""
    print(f"\n{len(result.cases) - len(result.failed)} case(s) ok, {len(result.failed)} failed; model: "
          f"{result.model} ({result.model_file}){demo}; summary: {result.summary}")
    return 1 if result.failed else 0

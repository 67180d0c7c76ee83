"""Export a trained bundle to TorchScript, fp32 ONNX and int8 ONNX (dynamic and static) in its models/ folder.

    python scripts/export_bundle_models.py bundles/lgg_mri_cbam_unet --dataset_dir /data/lgg

Reads models/model.pt under --bundle_root (default: the bundle folder) and writes model.ts, model.onnx,
model_int8_dynamic.onnx and two static int8 models beside it, calibrated on the training datalist under
--dataset_dir: model_int8_static.onnx (int8 weights: x86 with VNNI, ARM) and
model_int8_static_uint8_weights.onnx (x86 without VNNI); inference picks the one this CPU computes exactly. Each
int8 model is compared with fp32 on the validation images and written only if their labels agree on at least
--min_int8_agreement of the voxels; int8_verification.json records the checks and the checkpoint's SHA-256.

Further ``--<config id> <value>`` pairs override the bundle configs as on the bundle CLI (values are read as JSON
when they parse), e.g. ``--network_def#features "[16, 32, 64, 128]"`` for a network trained at other widths.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from custom_networks.deploy.bundle_export import export_bundle
from custom_networks.deploy.onnx_export import OnnxMismatchError


def config_overrides(extra: list[str]) -> dict[str, Any]:
    """``["--id", "value", ...]`` to ``{"id": value}``, each value parsed as JSON when possible."""
    if len(extra) % 2 or not all(key.startswith("--") for key in extra[::2]):
        raise SystemExit(f"error: overrides must be '--<config id> <value>' pairs, got {' '.join(extra)}")
    overrides = {}
    for key, value in zip(extra[::2], extra[1::2], strict=True):
        try:
            overrides[key[2:]] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key[2:]] = value
    return overrides


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle", type=Path, help="bundle folder (its configs/ are read)")
    parser.add_argument("--bundle_root", type=Path, default=None,
                        help="folder whose models/ holds model.pt and receives the exports (default: the bundle)")
    parser.add_argument("--dataset_dir", default=None, help="dataset of the training datalist (calibration images)")
    parser.add_argument("--calibration_samples", type=int, default=32, help="calibration images (default 32)")
    parser.add_argument("--min_int8_agreement", type=float, default=0.99,
                        help="share of held-out voxels whose int8 label must equal fp32's, else no int8 file "
                             "(default 0.99)")
    args, extra = parser.parse_known_args(argv)
    try:
        result = export_bundle(
            args.bundle_root or args.bundle,
            calibration_samples=args.calibration_samples,
            dataset_dir=args.dataset_dir,
            config_dir=args.bundle / "configs",
            overrides=config_overrides(extra),
            min_int8_agreement=args.min_int8_agreement,
        )
    except (FileNotFoundError, ValueError, OnnxMismatchError) as error:
        raise SystemExit(f"error: {error}") from None
    for name, path in result.files().items():
        print(f"wrote {path} ({path.stat().st_size / 2**20:.2f} MB, {name})")
    print(f"fp32 ONNX vs torch: max |diff| {result.onnx_max_abs_diff:.2e}; "
          f"static int8 calibrated on {result.calibration_samples} training images")
    for name, check in result.int8_checks.items():
        verdict = "written" if check.written else f"NOT written (below {args.min_int8_agreement:.1%})"
        print(f"{name}: labels equal fp32's on {check.agreement:.2%} of the voxels of {check.images} held-out "
              f"images (foreground Dice {check.dice:.3f}): {verdict}")


if __name__ == "__main__":
    main()

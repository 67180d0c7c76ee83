#!/usr/bin/env bash
# The main job: segment the sample study shipped with the brain tumour bundle (a DICOM MR series and the same
# volume as NIfTI, in bundles/brain_tumor_mri_gsconv_eca_unet/sample_data/) with the demo weights shipped beside
# it, and write the NIfTI masks, the DICOM SEG, overlay PNGs and the run summary.
#
# Usage: bash scripts/run_demo.sh [output_dir]       (default: ./demo_output; PYTHON=... picks the interpreter)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUNDLE="$REPO/bundles/brain_tumor_mri_gsconv_eca_unet"
PYTHON="${PYTHON:-python}"

# install only what is missing: torch first, pinned to the CPU build (an unpinned torch pulls a multi-GB CUDA
# build), then this package with its dependencies
if ! "$PYTHON" -c "import torch" 2>/dev/null; then
    echo "installing torch (CPU build) ..."
    "$PYTHON" -m pip install --quiet --disable-pip-version-check -r "$REPO/requirements/torch-cpu.txt"
fi
if ! "$PYTHON" -c "import monai, highdicom, custom_networks.clinical" 2>/dev/null; then
    echo "installing custom_networks and its dependencies ..."
    "$PYTHON" -m pip install --quiet --disable-pip-version-check -e "$REPO"
fi

OUTPUT="$("$PYTHON" -c 'import os, sys; print(os.path.abspath(sys.argv[1]))' "${1:-demo_output}")"
CONFIGS="[\"$BUNDLE/configs/inference.json\", \"$BUNDLE/configs/demo.json\"]"

echo "segmenting $BUNDLE/sample_data into $OUTPUT ..."
"$PYTHON" -m monai.bundle run \
    --config_file "$CONFIGS" \
    --bundle_root "$BUNDLE" \
    --dataset_dir "$BUNDLE/sample_data" \
    --output_dir "$OUTPUT" \
    --summary_dir "$OUTPUT" \
    --save_overlays true

"$PYTHON" - "$OUTPUT/run_summary.json" <<'EOF'
import json
import sys

summary = json.load(open(sys.argv[1]))
print(f"\nrun summary: {sys.argv[1]} (also .csv): {summary['counts']['ok']} ok, {summary['counts']['failed']} failed")
for case in summary["cases"]:
    print(f"  {case['case']} ({case['kind']}): {case['status']} {case['message']}")
    for path in case["outputs"]:
        kind = "DICOM SEG" if path.endswith(".dcm") else "overlay" if "_overlay" in path else "mask"
        print(f"    {kind:9s} {path}")
sys.exit(1 if summary["counts"]["failed"] else 0)
EOF

#!/usr/bin/env bash
# The main job: segment the sample study shipped with the brain tumour bundle (a DICOM MR series and the same
# volume as NIfTI, in bundles/brain_tumor_mri_gsconv_eca_unet/sample_data/) with the demo weights shipped beside
# it, and write the NIfTI masks, the DICOM SEG, overlay PNGs and the run summary.
#
# Usage: bash scripts/run_demo.sh [output_dir]       (default: ./demo_output)
#
# Environment:
#   PYTHON=...           the interpreter (default: python)
#   TORCH_INDEX_URL=...  where to get torch when it is missing, e.g. https://download.pytorch.org/whl/cpu for the
#                        CPU build. Unset, pip's own index is used: on Linux x86_64 PyPI serves the CUDA build
#                        (a 526 MB wheel plus about 20 nvidia-* packages). Either build works (cuda is used when
#                        available). An installed torch is kept as it is.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUNDLE="$REPO/bundles/brain_tumor_mri_gsconv_eca_unet"
PYTHON="${PYTHON:-python}"
TORCH_INDEX_URL="${TORCH_INDEX_URL:-}"
CPU_INDEX_URL="https://download.pytorch.org/whl/cpu"

pip_install() {
    "$PYTHON" -m pip install --quiet --disable-pip-version-check "$@"
}

# Install only what is missing: torch first (requirements/torch-cpu.txt pins the version; the index chooses the
# build), then this package with its dependencies, which keeps the torch already there.
install_missing() {
    if ! "$PYTHON" -c "import torch" 2>/dev/null; then
        local pin
        pin="$(grep -E '^torch' "$REPO/requirements/torch-cpu.txt")"
        if [[ -n "$TORCH_INDEX_URL" ]]; then
            echo "installing $pin from $TORCH_INDEX_URL ..."
            pip_install -r "$REPO/requirements/torch-cpu.txt" --index-url "$TORCH_INDEX_URL"
        else
            echo "installing $pin from pip's configured index: from PyPI on Linux x86_64 that is the CUDA build"
            echo "  (526 MB plus about 20 nvidia-* packages); for the CPU build instead, interrupt (Ctrl-C) and run"
            echo "  TORCH_INDEX_URL=$CPU_INDEX_URL bash scripts/run_demo.sh ..."
            pip_install -r "$REPO/requirements/torch-cpu.txt"
        fi
        "$PYTHON" -c "import torch; print('installed torch', torch.__version__, f'(CUDA {torch.version.cuda} build)' if torch.version.cuda else '(CPU build)')"
    fi
    if ! "$PYTHON" -c "import monai, highdicom, custom_networks.clinical" 2>/dev/null; then
        echo "installing custom_networks and its dependencies ..."
        pip_install -e "$REPO"
    fi
}

# tests source this file to call install_missing alone: stop here when sourced
[[ "${BASH_SOURCE[0]}" == "$0" ]] || return 0

install_missing

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

#!/usr/bin/env bash
# Start the MONAI Label server on this project's bundles, on 127.0.0.1 (docs/monailabel.md). For example:
#
#   bash scripts/start_monailabel.sh --studies ~/studies --weights lgg_mri_cbam_unet=/path/to/model.pt
#   MONAI_LABEL_DICOMWEB_USERNAME=... MONAI_LABEL_DICOMWEB_PASSWORD=... \
#       bash scripts/start_monailabel.sh --studies http://127.0.0.1:8042/dicom-web --dicomweb-modality MR
#
# Options: python -m monailabel_app.launch --help. Needs the environment of scripts/setup_monailabel.sh.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
env_dir="${ATTUNETS_MONAILABEL_ENV:-$HOME/.cache/attention-unets/monailabel-env}"
if [ ! -x "$env_dir/bin/python" ]; then
    echo "error: no MONAI Label environment at $env_dir: run bash scripts/setup_monailabel.sh first" >&2
    exit 2
fi
PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}" exec "$env_dir/bin/python" -m monailabel_app.launch "$@"

#!/usr/bin/env bash
# Create the separate MONAI Label environment and install this project's package into it (docs/monailabel.md).
#
#   bash scripts/setup_monailabel.sh        # prints the environment's python when done
#
# Location: $ATTUNETS_MONAILABEL_ENV, default ~/.cache/attention-unets/monailabel-env (outside the repository).
# Packages: requirements/torch-cpu.txt first (same torch as the main environment), then every package of
# requirements/monailabel-constraints.txt pinned, with --no-deps (pip resolves nothing; the file says why some of
# monailabel's own requirements are left out), then this package, editable and --no-deps: its pyproject pins
# (numpy 2, pydicom 3, highdicom) are the main environment's, and the MONAI Label environment keeps numpy 1 and
# pydicom 2, under which the package imports (SEG writing, the only highdicom user, loads on first use).
# Idempotent: an environment built from the same files is checked and kept (a few seconds); otherwise rebuilt.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
env_dir="${ATTUNETS_MONAILABEL_ENV:-$HOME/.cache/attention-unets/monailabel-env}"
python="${PYTHON:-python}"
stamp="$env_dir/.attention-unets-stamp"
want="$(cat "$repo/requirements/torch-cpu.txt" "$repo/requirements/monailabel-constraints.txt" | sha256sum | cut -d' ' -f1) $repo"
pip=(-m pip --disable-pip-version-check --quiet)

smoke_test() {
    # the server's imports, with the app's torchvision stand-in, and the package's, under numpy 1 / pydicom 2
    PYTHONPATH="$repo:$repo/monailabel_app/compat" "$env_dir/bin/python" -c \
        "import monailabel.main, monailabel.client, monailabel_app.app, custom_networks.clinical" \
        && PATH="$env_dir/bin:$PATH" command -v itkimage2segimage >/dev/null
}

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && smoke_test; then
    echo "$env_dir/bin/python"
    exit 0
fi
if [ -e "$env_dir" ]; then
    if [ ! -f "$env_dir/pyvenv.cfg" ]; then
        echo "error: $env_dir exists and is not a Python environment; set ATTUNETS_MONAILABEL_ENV elsewhere" >&2
        exit 2
    fi
    rm -rf "$env_dir"
fi
mkdir -p "$(dirname "$env_dir")"
# no stamp until every step passed: an interrupted build is rebuilt by the next run
"$python" -m venv "$env_dir"
"$env_dir/bin/python" "${pip[@]}" install -r "$repo/requirements/torch-cpu.txt"
"$env_dir/bin/python" "${pip[@]}" install --no-deps -r "$repo/requirements/monailabel-constraints.txt"
"$env_dir/bin/python" "${pip[@]}" install --no-deps -e "$repo"
smoke_test
echo "$want" > "$stamp"
echo "$env_dir/bin/python"

#!/usr/bin/env bash
# Fetch the OHIF viewer v3 the browser test serves (tests/test_ohif_viewer.py): npm's @ohif/app ships its built
# dist/, unpacked here into a cache outside the repository (50 MB download, 204 MB unpacked, seconds).
#
#   bash scripts/setup_ohif.sh        # prints the dist/ folder when done
#
# Location: $ATTUNETS_OHIF_DIR, default ~/.cache/attention-unets/ohif-3.12.10. Version pinned, with the tarball's
# npm integrity: 3.12.10 renders in headless Chromium; 3.13.2 draws the MR as a black/white mask there.
# Nothing in the cache is modified afterwards (the test serves its own app-config.js). Idempotent: a complete
# copy of the same version is kept; an interrupted download is fetched again. Needs npm (Node 18+).
set -euo pipefail
version="3.12.10"
integrity="sha512-0kuF66Mq9c9dMD++bUsTjMrJpXJwaZhz9B4uS244DawAjSkTwIYFU93pxPuRUQixaRi7QAHlF3Fe1qudBlZrmA=="
dir="${ATTUNETS_OHIF_DIR:-$HOME/.cache/attention-unets/ohif-$version}"
stamp="$dir/.attention-unets-stamp"
want="@ohif/app@$version $integrity"

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -f "$dir/dist/index.html" ] \
        && [ -f "$dir/dist/app-config.js" ]; then
    echo "$dir/dist"
    exit 0
fi
if [ -e "$dir" ] && ! grep -qs '"name": "@ohif/app"' "$dir/package.json"; then
    echo "error: $dir exists and is not an @ohif/app copy; set ATTUNETS_OHIF_DIR elsewhere" >&2
    exit 2
fi
command -v npm >/dev/null || { echo "error: npm is missing (Node.js 18+ with npm)" >&2; exit 2; }
mkdir -p "$(dirname "$dir")"
# unpack beside the target (same file system), move into place only when complete
work="$(mktemp -d "$(dirname "$dir")/.ohif-download.XXXXXX")"
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent --json "@ohif/app@$version" > pack.json)
got="$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))[0]["integrity"])' "$work/pack.json")"
if [ "$got" != "$integrity" ]; then
    echo "error: @ohif/app@$version integrity $got, expected $integrity" >&2
    exit 1
fi
tar -xzf "$work/ohif-app-$version.tgz" -C "$work"
test -f "$work/package/dist/index.html" && test -f "$work/package/dist/app-config.js"
rm -rf "$dir"
mv "$work/package" "$dir"
echo "$want" > "$stamp"
echo "$dir/dist"

"""Write every bundle's configs/*.json from bundles/config_sources, or check that they are up to date.

    python scripts/generate_bundle_configs.py            # after editing a file in bundles/config_sources
    python scripts/generate_bundle_configs.py --check    # exit 1, naming the stale files, if any differ
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from custom_networks.bundle_configs import BundleSourceError, stale_bundle_configs, write_bundle_configs
from custom_networks.runtime.locate import bundles_dir

BUNDLES_DIR = bundles_dir()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundles-dir", type=Path, default=BUNDLES_DIR, help="folder holding config_sources/")
    parser.add_argument("--check", action="store_true", help="write nothing; fail if a generated file is stale")
    args = parser.parse_args(argv)
    try:
        if args.check:
            stale = stale_bundle_configs(args.bundles_dir)
            for path in stale:
                print(f"stale: {path} (run python scripts/generate_bundle_configs.py)", file=sys.stderr)
            return 1 if stale else 0
        for path in write_bundle_configs(args.bundles_dir):
            print(f"wrote {path}")
    except BundleSourceError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The bundles a server serves, and the folders MONAI Label serves them from (no monailabel import here, so the
launcher checks its options before the server starts)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["DEFAULT_BUNDLES_DIR", "bundle_names", "link_bundle", "read_overrides"]

DEFAULT_BUNDLES_DIR = Path(__file__).resolve().parents[1] / "bundles"


def bundle_names(bundles_dir: Path, requested: str = "") -> list[str]:
    """The bundles to serve: ``requested`` (comma-separated) or every folder with ``configs/inference.json``."""
    available = sorted(p.parent.parent.name for p in bundles_dir.glob("*/configs/inference.json"))
    names = [n.strip() for n in requested.split(",") if n.strip()] or available
    unknown = sorted(set(names) - set(available))
    if unknown:
        raise ValueError(f"models: no bundle {unknown} in {bundles_dir} (available: {available})")
    return names


def link_bundle(bundle: Path, served: Path) -> Path:
    """Make ``served`` the folder MONAI Label serves for ``bundle``: ``configs/`` holds a link to each of the
    bundle's config files, ``models/`` is a folder of its own. Returns ``served``.

    ``configs/`` is a folder rather than one link because MONAI Label's multi-GPU training writes
    ``configs/monailabel_train.json`` there, which must not land in the repository.
    """
    configs = served / "configs"
    configs.mkdir(parents=True, exist_ok=True)
    (served / "models").mkdir(exist_ok=True)
    sources = {f.name: f.resolve() for f in (bundle / "configs").iterdir() if f.is_file()}
    for link in configs.iterdir():
        if link.is_symlink() and link.name not in sources:
            link.unlink()
    for name, source in sources.items():
        link = configs / name
        if link.is_symlink() and link.resolve() == source:
            continue
        if link.exists() and not link.is_symlink():
            raise ValueError(f"{link}: exists and is not a link to {source}; remove it or use another work folder")
        temporary = configs / f".{name}.{os.getpid()}"
        temporary.symlink_to(source)
        temporary.replace(link)
    return served


def read_overrides(path: str) -> dict[str, dict[str, Any]]:
    """``{bundle: {config id: value}}`` from the JSON file ``path`` (empty when no file is given)."""
    if not path:
        return {}
    try:
        overrides = json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"overrides {path}: {error}") from None
    if not isinstance(overrides, dict) or not all(isinstance(v, dict) for v in overrides.values()):
        raise ValueError(f"overrides {path}: expected a JSON object {{bundle: {{config id: value}}}}")
    return overrides

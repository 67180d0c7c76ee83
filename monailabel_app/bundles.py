"""The bundles a server serves, and the folders MONAI Label serves them from (no monailabel import here, so the
launcher checks its options before the server starts). Where the bundles are is the bundle runtime's to say
(:mod:`custom_networks.runtime.locate`); overrides are checked against each bundle's configs there too."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from custom_networks.runtime.locate import bundle_names as runtime_bundle_names
from custom_networks.runtime.locate import bundles_dir as shipped_bundles_dir
from custom_networks.runtime.overrides import check_overrides

__all__ = ["bundle_names", "link_bundle", "read_overrides"]


def bundle_names(bundles_dir: Path | None, requested: str = "") -> list[str]:
    """The bundles to serve: ``requested`` (comma-separated) or every bundle in ``bundles_dir`` (``None``: the
    shipped bundles)."""
    bundles_dir = bundles_dir or shipped_bundles_dir()
    available = runtime_bundle_names(bundles_dir)
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


def read_overrides(path: str, bundles_dir: Path | None = None) -> dict[str, dict[str, Any]]:
    """``{bundle: {config id: value}}`` from the JSON file ``path`` (empty when no file is given), every id checked
    against the bundle's inference and train configs."""
    if not path:
        return {}
    try:
        overrides = json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"overrides {path}: {error}") from None
    if not isinstance(overrides, dict) or not all(isinstance(v, dict) for v in overrides.values()):
        raise ValueError(f"overrides {path}: expected a JSON object {{bundle: {{config id: value}}}}")
    bundles_dir = bundles_dir or shipped_bundles_dir()
    for bundle, values in overrides.items():
        configs = bundles_dir / bundle / "configs"
        if not (configs / "inference.json").is_file():
            raise ValueError(f"overrides {path}: no bundle {bundle!r} in {bundles_dir}")
        check_overrides(values, [configs / "inference.json", configs / "train.json"])
    return overrides

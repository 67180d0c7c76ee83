"""
The bundles' ``configs/*`` from one source.

``bundles/config_sources/`` holds what every bundle does the same way (``shared/``: one template per config
file), what each dataset needs (``datasets/<name>.yaml``) and, per bundle, only what its paper specifies
(``<bundle>.yaml``). :func:`render_bundle` turns them into the complete, self-contained ``configs/*.json`` that
``python -m monai.bundle run``, MONAI Label and Model Zoo tooling read as they are; ``scripts/
generate_bundle_configs.py`` writes them and, with ``--check``, fails when a written file and its source disagree.

MONAI merges several config files at run time (``evaluate.json`` over ``train.json``), but MONAI Label and the
zoo read ``train.json`` and ``inference.json`` alone, so the shared parts cannot stay in a file of their own at
run time: they are rendered into every bundle instead.

Templates mark the places where bundles differ with slots, ``<name>``:

- a string that is exactly ``"<name>"`` becomes the slot's value; inside a list a list value is spliced in;
- a mapping key ``"<name>"`` (with an empty value) merges the slot's mapping in at that place;
- ``<name>`` inside a longer string is replaced by the value's text.

Slot values come from ``shared/defaults.yaml``, then the dataset file the bundle names (``dataset: <name>``),
then the bundle file, later ones winning. A slot that a template uses and no file sets, and a value in the
dataset or bundle file that no template uses, are errors: a misspelled slot cannot pass silently.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from custom_networks.atomic_files import atomic_path

__all__ = [
    "BundleSourceError",
    "GENERATED_FILES",
    "bundle_names",
    "render_bundle",
    "write_bundle_configs",
    "stale_bundle_configs",
    "zoo_json",
]

# configs/<name> rendered from config_sources/shared/<template>; JSON from YAML, logging.conf copied as it is
GENERATED_FILES = {
    "train.json": "train.yaml",
    "evaluate.json": "evaluate.yaml",
    "multi_gpu_train.json": "multi_gpu_train.yaml",
    "multi_gpu_evaluate.json": "multi_gpu_evaluate.yaml",
    "inference.json": "inference.yaml",
    "inference_onnx.json": "inference_onnx.yaml",
    "metadata.json": "metadata.yaml",
    "logging.conf": "logging.conf",
}
SOURCES_FOLDER = "config_sources"
SLOT = re.compile(r"<([a-z][a-z0-9_]*)>")


class BundleSourceError(ValueError):
    """A bundle's config source is inconsistent (unknown or unset slot, missing dataset file)."""


def zoo_json(config: Any) -> str:
    """JSON text in the Model Zoo's format (its ``pretty-format-json --indent=4 --no-sort-keys`` hook)."""
    return json.dumps(config, indent=4) + "\n"


def bundle_names(bundles_dir: Path) -> list[str]:
    """Names of the bundles that have a source file in ``bundles_dir/config_sources``."""
    return sorted(path.stem for path in (Path(bundles_dir) / SOURCES_FOLDER).glob("*.yaml"))


def _read_yaml(path: Path) -> Any:
    with open(path) as stream:
        return yaml.safe_load(stream)


def _slot_values(sources: Path, bundle: str) -> tuple[dict[str, Any], set[str]]:
    """All slot values of ``bundle`` and the names its dataset and bundle files set (defaults may go unused)."""
    bundle_file = sources / f"{bundle}.yaml"
    values = _read_yaml(bundle_file)
    dataset = values.pop("dataset", None)
    if dataset is None:
        raise BundleSourceError(f"{bundle_file}: names no dataset (a 'dataset: <name>' line)")
    dataset_file = sources / "datasets" / f"{dataset}.yaml"
    if not dataset_file.is_file():
        raise BundleSourceError(f"{bundle_file}: dataset {dataset!r} has no file {dataset_file}")
    dataset_values = _read_yaml(dataset_file)
    defaults = _read_yaml(sources / "shared" / "defaults.yaml")
    return {**defaults, **dataset_values, **values, "bundle_name": bundle}, set(dataset_values) | set(values)


class _Filler:
    """Fills the slots of templates from one bundle's values and remembers which slots were used."""

    def __init__(self, values: dict[str, Any], where: str) -> None:
        self.values = values
        self.where = where
        self.used: set[str] = set()

    def value(self, name: str) -> Any:
        if name not in self.values:
            raise BundleSourceError(f"{self.where}: slot <{name}> is used by a template but set by no source file")
        self.used.add(name)
        return self.values[name]

    def fill(self, node: Any) -> Any:
        if isinstance(node, dict):
            filled: dict[str, Any] = {}
            for key, item in node.items():
                whole = SLOT.fullmatch(key)
                if whole and item is None:
                    merged = self.value(whole.group(1))
                    if not isinstance(merged, dict):
                        raise BundleSourceError(f"{self.where}: slot <{whole.group(1)}> is a key and needs a mapping")
                    filled.update(self.fill(merged))
                else:
                    filled[key] = self.fill(item)
            return filled
        if isinstance(node, list):
            filled_list: list[Any] = []
            for item in node:
                whole = SLOT.fullmatch(item) if isinstance(item, str) else None
                value = self.fill(item)
                if whole and isinstance(value, list):
                    filled_list.extend(value)
                else:
                    filled_list.append(value)
            return filled_list
        if isinstance(node, str):
            whole = SLOT.fullmatch(node)
            if whole:
                return self.fill(self.value(whole.group(1)))
            return SLOT.sub(lambda match: str(self.value(match.group(1))), node)
        return node


def render_bundle(bundles_dir: Path, bundle: str) -> dict[str, str]:
    """Text of every generated ``configs/`` file of ``bundle``, by file name.

    Raises:
        BundleSourceError: a slot is used but not set, a set value is used by no template, or the dataset
            file is missing.
    """
    sources = Path(bundles_dir) / SOURCES_FOLDER
    values, own = _slot_values(sources, bundle)
    filler = _Filler(values, str(sources / f"{bundle}.yaml"))
    rendered = {}
    for name, template in GENERATED_FILES.items():
        path = sources / "shared" / template
        if name.endswith(".json"):
            rendered[name] = zoo_json(filler.fill(_read_yaml(path)))
        else:
            rendered[name] = path.read_text()
    unused = sorted(own - filler.used)
    if unused:
        raise BundleSourceError(f"{filler.where}: no template uses {', '.join(unused)}")
    return rendered


def _generated_files(bundles_dir: Path) -> Iterator[tuple[Path, str, bool]]:
    """Every generated file of every bundle: its path, the text its sources give, and whether it holds that."""
    for bundle in bundle_names(bundles_dir):
        for name, text in render_bundle(bundles_dir, bundle).items():
            path = Path(bundles_dir) / bundle / "configs" / name
            yield path, text, path.is_file() and path.read_text() == text


def stale_bundle_configs(bundles_dir: Path) -> list[Path]:
    """Generated files that are missing or differ from what their sources give now."""
    return [path for path, _, current in _generated_files(bundles_dir) if not current]


def write_bundle_configs(bundles_dir: Path) -> list[Path]:
    """Write every bundle's stale generated configs (temporary name, then rename); returns the files written."""
    written = []
    for path, text, current in _generated_files(bundles_dir):
        if not current:
            with atomic_path(path) as temporary:
                temporary.write_text(text)
            written.append(path)
    return written

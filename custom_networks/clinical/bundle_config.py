"""Small helpers the bundles' ``inference.json`` calls: the bundle's metadata and command-line switches."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from monai.config import PathLike

from custom_networks.errors import InputError

__all__ = ["bundle_metadata", "is_on", "segment_codes", "segment_colours", "segment_labels"]

_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off", "none", "")


def bundle_metadata(meta: Mapping, bundle_root: PathLike) -> dict:
    """The bundle's ``metadata.json`` content.

    ``python -m monai.bundle run`` loads it into the config as ``_meta_``; MONAI Label and plain ``ConfigParser``
    users do not (``_meta_`` is then empty), but they set ``bundle_root`` to the bundle folder, where
    ``configs/metadata.json`` is read instead.

    Raises:
        FileNotFoundError: ``meta`` is empty and ``bundle_root`` holds no ``configs/metadata.json``.
    """
    if meta:
        return dict(meta)
    path = Path(bundle_root) / "configs" / "metadata.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: bundle metadata not found; run through `python -m monai.bundle run` (which loads "
            "configs/metadata.json) or set bundle_root to the bundle folder"
        )
    return json.loads(path.read_text())


def segment_labels(metadata: Mapping, output: str = "pred") -> dict[str, str]:
    """``channel_def`` of output ``output`` in ``network_data_format``: label value to name, background included."""
    return dict(metadata["network_data_format"]["outputs"][output]["channel_def"])


def segment_codes(metadata: Mapping, output: str = "pred") -> dict[str, dict]:
    """``dicom_segments`` of output ``output``: per label value, its DICOM SEG codes and display colour.

    Returns:
        ``{"1": {"category": {"scheme", "value", "meaning"}, "type": {...}, "color_rgb": [r, g, b]}}``, the
        ``segment_codes`` argument of ``SaveDicomSegd``.

    Raises:
        KeyError: the output's metadata has no ``dicom_segments``.
    """
    formats = metadata["network_data_format"]["outputs"][output]
    if "dicom_segments" not in formats:
        raise KeyError(f"network_data_format.outputs.{output} of the bundle metadata has no dicom_segments")
    return {str(value): dict(entry) for value, entry in formats["dicom_segments"].items()}


def segment_colours(metadata: Mapping, output: str = "pred") -> dict[str, list[int]]:
    """The display colour ``[r, g, b]`` (0-255) of each label value of output ``output`` that names one."""
    codes = segment_codes(metadata, output)
    return {value: list(entry["color_rgb"]) for value, entry in codes.items() if "color_rgb" in entry}


def is_on(value: bool | int | str | None, name: str = "switch") -> bool:
    """A switch given in a config or on the command line (``true``/``false``, ``1``/``0``, ``yes``/``no``).

    Raises:
        InputError: ``value`` is none of those; the message names the option ``name``.
    """
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise InputError(f"{name}: {value!r} is not a switch value (use true or false)")

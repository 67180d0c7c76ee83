"""Where the bundles are: shipped inside the installed package, or the repository's ``bundles/`` in a checkout.

This is the one place that knows the folder layout. A wheel carries every bundle as package data under
``custom_networks/bundles/`` (``pyproject.toml`` maps the repository's ``bundles/`` there); an editable install or a
checkout on ``PYTHONPATH`` reads the repository folder itself, so a bundle trained in the checkout is the one that
runs. Nothing heavy is imported here: the command line and the MONAI Label launcher check names before torch loads.
"""

from __future__ import annotations

import os
from pathlib import Path

from custom_networks.errors import InputError

__all__ = ["BUNDLES_DIR_ENV", "bundle_folder", "bundle_names", "bundles_dir"]

# a folder of bundles to use instead of the shipped ones (a site's own bundles, the MONAI Label app's copies)
BUNDLES_DIR_ENV = "ATTENTION_UNETS_BUNDLES"
_PACKAGE = Path(__file__).resolve().parents[1]
_SHIPPED = _PACKAGE / "bundles"
_CHECKOUT = _PACKAGE.parent / "bundles"
_INFERENCE_CONFIG = Path("configs") / "inference.json"


def bundles_dir() -> Path:
    """The folder holding the bundles: ``$ATTENTION_UNETS_BUNDLES``, else the package's own, else the checkout's."""
    if os.environ.get(BUNDLES_DIR_ENV):
        return Path(os.environ[BUNDLES_DIR_ENV]).resolve()
    return _SHIPPED if _SHIPPED.is_dir() else _CHECKOUT


def bundle_names(folder: Path | None = None) -> list[str]:
    """The bundles in ``folder`` (default :func:`bundles_dir`): every subfolder with ``configs/inference.json``."""
    folder = bundles_dir() if folder is None else Path(folder)
    return sorted(path.parent.parent.name for path in folder.glob(f"*/{_INFERENCE_CONFIG}"))


def bundle_folder(name_or_path: str | os.PathLike) -> Path:
    """The bundle folder ``name_or_path`` names: a bundle folder, or the name of one in :func:`bundles_dir`.

    Raises:
        InputError: no bundle there; the message names the closest bundle name.
    """
    from custom_networks.errors import closest

    text = str(name_or_path)
    for folder in (Path(text), bundles_dir() / text):
        if (folder / _INFERENCE_CONFIG).is_file():
            return folder.resolve()
    known = bundle_names()
    hint = closest(Path(text).name, known)
    hint_text = f"did you mean {hint}?" if hint else f"bundles: {', '.join(known)}"
    raise InputError(f"bundle {text}: no bundle there (a folder with {_INFERENCE_CONFIG}); {hint_text}",
                     parameter="bundle")

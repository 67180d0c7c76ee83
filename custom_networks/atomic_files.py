"""Write-to-temporary-then-rename, so that no partial output file is ever left under its final name.

Used by every writer of the package: clinical outputs, exported and quantized models, demo weights.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from monai.config import PathLike

__all__ = ["TEMP_PREFIX", "atomic_path"]

TEMP_PREFIX = ".partial-"


@contextmanager
def atomic_path(final_path: PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``final_path``; rename it to ``final_path`` only if the block succeeds.

    The temporary name keeps the final name's extensions (writers such as nibabel choose the format from them)
    and starts with a dot so that a crashed run leaves nothing that looks like a result. On error it is removed.
    """
    final_path = Path(final_path)
    final_path.parent.mkdir(parents=True, exist_ok=True)
    temporary = final_path.with_name(f"{TEMP_PREFIX}{os.getpid()}-{final_path.name}")
    try:
        yield temporary
        os.replace(temporary, final_path)
    finally:
        temporary.unlink(missing_ok=True)


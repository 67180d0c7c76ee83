"""SHA-256 of files, read in chunks: the run summary's input and weights hashes, the SEG UIDs of PACS jobs and the
int8 export's record of the checkpoint it verified all use this one helper."""

from __future__ import annotations

import hashlib
import os

__all__ = ["file_sha256"]

_CHUNK = 1 << 20


def file_sha256(*paths: str | os.PathLike) -> str:
    """SHA-256 (hex) of the bytes of ``paths``, one file after the other."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as stream:
            while chunk := stream.read(_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()

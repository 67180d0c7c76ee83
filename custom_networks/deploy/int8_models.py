"""Which int8 model a CPU runs exactly, decided where it runs, and whether an export verified it for a checkpoint.

The export (``bundle_export.export_bundle``) writes two static int8 models that differ only in the integer
product onnxruntime computes (``quantize.quantize_static_int8``): int8 weights, fast and exact on x86 CPUs with
VNNI and on ARM; uint8 weights, exact on x86 CPUs without VNNI, where int8 weights saturate. A model exported on
one machine often runs on another, so the choice is made here, at run time, from the CPU's own flags.
The export also records, in ``int8_verification.json``, the SHA-256 of the checkpoint it quantized and how
each int8 model's labels agreed with fp32 on held-out images; the command line runs int8 by default on the CPU
only when that record matches the checkpoint in use.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

from custom_networks.file_hash import file_sha256

__all__ = [
    "INT8_MODEL_FILES",
    "VERIFICATION_FILE",
    "cpu_flags",
    "int8_model_for_this_cpu",
    "int8_weights_are_exact",
    "verified_int8_model",
]

# weight type -> file name in <bundle>/models/
INT8_MODEL_FILES = {"int8": "model_int8_static.onnx", "uint8": "model_int8_static_uint8_weights.onnx"}
VERIFICATION_FILE = "int8_verification.json"
# CPU flags (Linux /proc/cpuinfo names) with which onnxruntime's uint8 x int8 products are exact
_EXACT_UINT8_INT8_FLAGS = {"avx512_vnni", "avx_vnni", "amx_int8"}
_X86_MACHINES = {"x86_64", "amd64", "i386", "i686", "x86"}


def cpu_flags() -> set[str]:
    """The CPU's feature flags from ``/proc/cpuinfo`` (empty where there is none, e.g. not Linux)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return set(line.split(":", 1)[1].split())
    return set()


def int8_weights_are_exact(machine: str | None = None, flags: set[str] | None = None) -> bool:
    """Whether onnxruntime's uint8 x int8 products are exact on this CPU: not x86, or x86 with VNNI. An x86 CPU
    whose flags cannot be read counts as one without VNNI (the uint8-weights model is exact everywhere)."""
    machine = (machine or platform.machine()).lower()
    if machine not in _X86_MACHINES:
        return True
    return bool((cpu_flags() if flags is None else flags) & _EXACT_UINT8_INT8_FLAGS)


def int8_model_for_this_cpu(models_dir: str | os.PathLike, machine: str | None = None,
                            flags: set[str] | None = None) -> str:
    """The path of the static int8 model in ``models_dir`` that is exact on this CPU (see the module docstring),
    whether or not it exists yet (the bundle configs check the file with ``check_model_file``)."""
    weights = "int8" if int8_weights_are_exact(machine, flags) else "uint8"
    return str(Path(models_dir) / INT8_MODEL_FILES[weights])


def verified_int8_model(models_dir: str | os.PathLike, checkpoint: str | os.PathLike) -> Path | None:
    """The int8 model for this CPU if the export verified it for ``checkpoint`` (same SHA-256), else None."""
    models_dir = Path(models_dir)
    record_file = models_dir / VERIFICATION_FILE
    path = Path(int8_model_for_this_cpu(models_dir))
    try:
        record = json.loads(record_file.read_text())
    except (OSError, ValueError):
        return None
    verified = record.get("models", {}).get(path.name, {}).get("written", False)
    if not (verified and path.is_file() and record.get("checkpoint_sha256") == file_sha256(checkpoint)):
        return None
    return path

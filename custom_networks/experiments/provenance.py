"""Where and with what a run ran: library versions and the machine (CPU model and flags, GPU), for result.json."""

from __future__ import annotations

import os
import platform
from pathlib import Path

__all__ = ["machine", "versions"]


def versions() -> dict[str, str]:
    """Versions of Python, torch, MONAI, NumPy and this package."""
    import monai
    import numpy
    import torch

    import custom_networks

    return {"python": platform.python_version(), "torch": torch.__version__, "monai": monai.__version__,
            "numpy": numpy.__version__, "custom_networks": custom_networks.__version__}


def _cpuinfo(cpuinfo: Path) -> dict[str, str]:
    """First processor's ``model name`` and ``flags`` of a /proc/cpuinfo file (empty where it has none)."""
    fields: dict[str, str] = {}
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key in ("model name", "flags") and key not in fields:
                fields[key] = value.strip()
    return fields


def machine(device: str = "cpu", cpuinfo: Path = Path("/proc/cpuinfo")) -> dict:
    """The machine of a run: OS, CPU model and flags, logical CPUs, torch threads and, on CUDA, the GPU."""
    import torch

    fields = _cpuinfo(cpuinfo)
    info = {
        "system": f"{platform.system()} {platform.release()}",
        "cpu_model": fields.get("model name") or platform.processor() or "unknown",
        "cpu_flags": fields.get("flags", ""),
        "logical_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": device,
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info

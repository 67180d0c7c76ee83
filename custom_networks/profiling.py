"""Size and speed measurements reported in ``docs/benchmarks.md`` (see ``scripts/profile_networks.py``)."""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from custom_networks.atomic_files import atomic_path

__all__ = ["count_parameters", "count_macs", "median_latency", "cpu_description", "replace_section"]


def count_parameters(net: torch.nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in net.parameters() if p.requires_grad)


def count_macs(net: torch.nn.Module, input_shape: Sequence[int]) -> int:
    """
    Multiply-accumulates of one forward pass, counted like the papers: convolutions and matrix products
    only (``FlopCounterMode``), MACs = FLOPs / 2.
    """
    net.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(torch.zeros(*input_shape))
    return counter.get_total_flops() // 2


def median_latency(
    net: torch.nn.Module, input_shape: Sequence[int], threads: int = 2, warmup: int = 3, repeats: int = 10
) -> float:
    """Median wall time in seconds of one forward pass in eval mode, after ``warmup`` passes."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        net.eval()
        x = torch.randn(*input_shape)
        times = []
        with torch.inference_mode():
            for i in range(warmup + repeats):
                start = time.perf_counter()
                net(x)
                if i >= warmup:
                    times.append(time.perf_counter() - start)
        return statistics.median(times)
    finally:
        torch.set_num_threads(previous)


def cpu_description() -> str:
    """CPU model, core count and the SIMD flags that decide conv and int8 speed (from /proc/cpuinfo)."""
    model, flags = platform.processor() or "unknown CPU", set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    simd = [f for f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8") if f in flags]
    return f"{model}, {torch.get_num_threads()} threads available, flags: {' '.join(simd) or 'none of avx2/avx512'}"


def replace_section(path: str | Path, name: str, text: str) -> None:
    """
    Put ``text`` between ``<!-- name:start -->`` and ``<!-- name:end -->`` in the Markdown file ``path``
    (appended when the markers are absent), so several benchmark scripts can share one document.
    The file is written to a temporary name and renamed, never left half-written.
    """
    path = Path(path)
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{text.rstrip()}\n{end}"
    old = path.read_text() if path.exists() else ""
    if start in old and end in old:
        new = old[: old.index(start)] + block + old[old.index(end) + len(end) :]
    else:
        new = (old.rstrip() + "\n\n" if old.strip() else "") + block + "\n"
    with atomic_path(path) as temporary:
        temporary.write_text(new)

"""The engine options ``pacs-batch`` and ``pacs-listen`` share: where series are segmented (this process or a Ray
cluster), how many at once, and the threads of each Ray worker."""

from __future__ import annotations

import argparse

from custom_networks.errors import InputError

__all__ = ["add_engine_arguments", "check_engine_arguments"]


def add_engine_arguments(group: argparse._ArgumentGroup, workers_default: int, workers_help: str) -> None:
    """``--engine``, ``--address``, ``--workers`` (its default and help are the command's) and
    ``--threads-per-worker`` in the command's ``group``."""
    group.add_argument("--engine", choices=("local", "ray"), default="local", help="local process or a Ray cluster")
    group.add_argument("--address", help="Ray cluster address (e.g. auto, ray://head:10001); default: start one")
    group.add_argument("--workers", type=int, default=workers_default, help=workers_help)
    group.add_argument("--threads-per-worker", type=int, help="CPUs each Ray actor reserves and the torch/onnxruntime "
                       "threads it runs with (default 1; a node with N cores runs N workers at 1 thread best)")


def check_engine_arguments(args: argparse.Namespace) -> None:
    """Refuse ``--address`` without ``--engine ray``."""
    if args.engine == "local" and args.address:
        raise InputError("--address: only for --engine ray")

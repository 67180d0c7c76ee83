"""Config overrides checked against the ids the bundle's config stack defines, before anything is built.

MONAI's ``ConfigParser`` accepts any id as an override and fails later (or never) on a misspelled one; a run that
trains for an hour with ``network_def#feature`` ignored is worse than a refusal. Every way in (Python API, command
line, PACS jobs, MONAI Label, the ablation runner) checks its overrides here.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path

from custom_networks.errors import InputError, closest

__all__ = ["bundle_cli_value", "check_overrides", "config_ids"]


def config_ids(configs: Iterable[Path]) -> set[str]:
    """Every id (``a#b#c``) the config files define, an override file's ``a#b`` keys included."""
    ids: set[str] = set()

    def walk(node, prefix: str) -> None:
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for key, value in items:
            name = f"{prefix}#{key}"
            ids.add(name)
            walk(value, name)

    for path in configs:
        for key, value in json.loads(Path(path).read_text()).items():
            ids.add(key)
            walk(value, key)
    return ids


def check_overrides(overrides: Mapping[str, object] | None, configs: Iterable[Path]) -> dict[str, object]:
    """``overrides`` as a dict, if every id is one the ``configs`` define.

    Raises:
        InputError: an unknown id (parameter ``overrides``), naming the closest valid one.
    """
    overrides = dict(overrides or {})
    known = config_ids(configs)
    for key in overrides:
        if key not in known:
            hint = closest(key, sorted(known))
            raise InputError(f"overrides {key}: the bundle has no config id {key!r}"
                             + (f"; did you mean {hint}?" if hint else ""), parameter="overrides")
    return overrides


def bundle_cli_value(value: object) -> str:
    """``value`` written for ``python -m monai.bundle run --id VALUE``, which parses it with Fire as a Python literal.

    JSON would not do: Fire keeps ``false`` and ``null`` as the strings ``"false"`` and ``"null"``, and a network
    reads the string ``"false"`` as true. Strings pass unchanged (expressions such as ``$@bundle_root + '/x'``).

    Example::

        >>> bundle_cli_value(False)
        'False'
    """
    return value if isinstance(value, str) else repr(value)

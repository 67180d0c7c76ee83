"""Errors whose message alone tells a person what to fix, and their one-line form on the command line.

Library code raises :class:`InputError` (a ``ValueError``, so a host process such as a MONAI Label server catches
it with ``except Exception``); the command lines print its message as one line instead of a traceback. The
bundles' configs call :func:`print_input_errors_in_one_line` in ``initialize`` so that ``python -m monai.bundle
run`` does the same: MONAI's config parser wraps an error raised in a config expression in a ``RuntimeError``,
so the hook looks for an ``InputError`` along the whole cause chain.
"""

from __future__ import annotations

import difflib
import sys
from collections.abc import Sequence
from types import TracebackType
from typing import TypeVar

__all__ = ["InputError", "closest", "find_error", "find_input_error", "print_input_errors_in_one_line"]


E = TypeVar("E", bound=BaseException)


class InputError(ValueError):
    """A bad input file, folder or option; the message is one line naming it and the reason.

    Args:
        message: the line.
        parameter: the parameter (of a library function) the message starts with, e.g. ``"bundle"``, so that a
            command line can name its own option instead (``--bundle``); ``None`` when the message names a file.
    """

    def __init__(self, message: str, parameter: str | None = None) -> None:
        super().__init__(message)
        self.parameter = parameter


def closest(word: str, choices: Sequence[str]) -> str | None:
    """The choice most like ``word``, if any is reasonably close (for "did you mean ...?" in a message)."""
    found = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.5)
    return found[0] if found else None


def find_error(error: BaseException, kind: type[E]) -> E | None:
    """The first exception of type ``kind`` along ``error``'s cause/context chain (MONAI wraps errors), if any."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, kind):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def find_input_error(error: BaseException) -> InputError | None:
    """The :class:`InputError` in ``error``'s cause/context chain, if any."""
    return find_error(error, InputError)


def print_input_errors_in_one_line() -> None:
    """Let an uncaught :class:`InputError`, wrapped or not, end the process with its message alone (exit status 1);
    every other error keeps its traceback. Installing it twice changes nothing."""
    previous = sys.excepthook
    if getattr(previous, "prints_input_errors_in_one_line", False):
        return

    def hook(kind: type[BaseException], error: BaseException, traceback: TracebackType | None) -> None:
        found = find_input_error(error)
        if found is None:
            previous(kind, error, traceback)
        else:
            print(str(found), file=sys.stderr)

    hook.prints_input_errors_in_one_line = True  # type: ignore[attr-defined]
    sys.excepthook = hook

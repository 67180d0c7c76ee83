"""The one exception type raised for unusable clinical input."""

from __future__ import annotations

from monai.config import PathLike

from custom_networks.errors import InputError, find_error

__all__ = ["CaseError", "find_case_error", "one_line"]


def one_line(text: object) -> str:
    """``text`` with every run of whitespace, newlines included, collapsed to one space."""
    return " ".join(str(text).split())


class CaseError(InputError):
    """A case cannot be processed; the message is one line, ``"<path>: <reason>"``.

    Args:
        path: the file or folder at fault (for a DICOM series, the slice file when one file is to blame).
        reason: what is wrong, in words a person can act on.
    """

    def __init__(self, path: PathLike, reason: str) -> None:
        self.path = str(path)
        self.reason = one_line(reason)
        super().__init__(f"{self.path}: {self.reason}")

    def __reduce__(self):
        # the default pickling re-calls __init__ with the formatted message only; DataLoader workers pickle errors
        return type(self), (self.path, self.reason)


def find_case_error(error: BaseException) -> CaseError | None:
    """The :class:`CaseError` in ``error``'s cause/context chain (MONAI wraps transform errors), if any."""
    return find_error(error, CaseError)

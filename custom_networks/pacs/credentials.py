"""PACS credentials from the environment or a file; they never appear in a repr, a log line or a report."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from custom_networks.errors import InputError

__all__ = ["ENV_PASSWORD", "ENV_TOKEN", "ENV_USERNAME", "Credentials", "load_credentials"]

ENV_USERNAME = "PACS_USERNAME"
ENV_PASSWORD = "PACS_PASSWORD"
ENV_TOKEN = "PACS_TOKEN"
_FILE_FIELDS = ("username", "password", "token", "ca_file")


@dataclass(frozen=True)
class Credentials:
    """How to authenticate to a PACS: HTTP basic auth (``username`` + ``password``) or a bearer ``token``, and a CA
    bundle to check the server's TLS certificate against. Secrets are left out of ``repr`` (and so of logs).

    Plain fields only, so the same object reaches worker processes (Ray actors) by pickling.
    """

    username: str | None = None
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    ca_file: str | None = None

    @property
    def basic_auth(self) -> tuple[str, str] | None:
        return (self.username, self.password or "") if self.username else None

    @property
    def secrets(self) -> tuple[str, ...]:
        """The secret strings, for tests that check no output carries them."""
        return tuple(value for value in (self.password, self.token) if value)


def load_credentials(
    file: Path | None = None, ca_file: Path | None = None, env: Mapping[str, str] | None = None
) -> Credentials:
    """Credentials from ``file`` (JSON with ``username``/``password`` or ``token``, optionally ``ca_file``), else
    from the environment (``PACS_USERNAME``/``PACS_PASSWORD`` or ``PACS_TOKEN``); none at all is allowed.

    Args:
        file: the credentials file (``--credentials``); keep it readable by the job's user alone.
        ca_file: CA bundle for TLS (``--ca-file``), overriding the file's ``ca_file``.
        env: the environment (default ``os.environ``).

    Raises:
        InputError: the file is missing, not JSON, has unknown fields or gives both a password and a token.
    """
    env = os.environ if env is None else env
    if file is not None:
        values = _read_file(Path(file))
    else:
        values = {"username": env.get(ENV_USERNAME), "password": env.get(ENV_PASSWORD), "token": env.get(ENV_TOKEN)}
    values = {key: value or None for key, value in values.items()}
    if ca_file is not None:
        values["ca_file"] = str(ca_file)
    where = f"credentials {file}" if file is not None else f"{ENV_USERNAME}/{ENV_PASSWORD}/{ENV_TOKEN}"
    parameter = "credentials" if file is not None else None
    if values.get("token") and values.get("username"):
        raise InputError(f"{where}: give a username and password or a token, not both", parameter=parameter)
    if values.get("password") and not values.get("username"):
        raise InputError(f"{where}: a password without a username", parameter=parameter)
    if values.get("ca_file") and not Path(values["ca_file"]).is_file():
        raise InputError(f"CA file {values['ca_file']}: no such file")
    return Credentials(**values)


def _read_file(path: Path) -> dict:
    if not path.is_file():
        raise InputError(f"credentials {path}: no such file", parameter="credentials")
    try:
        values = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        # the message of a JSON error quotes the file's text, which may hold the secret: only say where
        raise InputError(f"credentials {path}: not a JSON object (line {getattr(error, 'lineno', '?')})",
                         parameter="credentials") from None
    if not isinstance(values, dict):
        raise InputError(f"credentials {path}: not a JSON object", parameter="credentials")
    unknown = sorted(set(values) - set(_FILE_FIELDS))
    if unknown:
        raise InputError(f"credentials {path}: unknown field(s) {unknown}; known: {list(_FILE_FIELDS)}",
                         parameter="credentials")
    return {key: None if values.get(key) is None else str(values[key]) for key in _FILE_FIELDS}

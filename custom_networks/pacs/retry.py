"""Retrying transient PACS failures with exponential backoff."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from custom_networks.pacs.client import TransientPacsError

__all__ = ["RetryPolicy", "with_retries"]

T = TypeVar("T")
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a transient failure is retried.

    Args:
        attempts: tries in all (1: no retry).
        initial_delay_s: wait after the first failure; doubled after each further one.
        max_delay_s: the longest single wait.
    """

    attempts: int = 4
    initial_delay_s: float = 1.0
    max_delay_s: float = 30.0

    def delays(self) -> list[float]:
        """The waits between the tries, ``attempts - 1`` of them."""
        return [min(self.initial_delay_s * 2**k, self.max_delay_s) for k in range(max(self.attempts - 1, 0))]


def with_retries(
    call: Callable[[], T], policy: RetryPolicy, what: str, sleep: Callable[[float], None] = time.sleep
) -> T:
    """``call()``, retried after a :class:`TransientPacsError` as ``policy`` says; other errors pass at once.

    Args:
        call: the PACS request.
        policy: attempts and backoff.
        what: the request in words, for the log (``"retrieve series 1.2.3"``).
        sleep: how to wait (tests pass a recorder).

    Raises:
        TransientPacsError: still failing after the last attempt; the message says how many were made.
    """
    delays = policy.delays()
    for attempt, delay in enumerate([*delays, None], start=1):
        try:
            return call()
        except TransientPacsError as error:
            if delay is None:
                raise TransientPacsError(f"{error} (gave up after {attempt} attempt(s))") from error
            logger.warning("%s failed (%s); retry %d in %.1f s", what, error, attempt, delay)
            sleep(delay)

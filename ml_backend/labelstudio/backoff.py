"""Retrying transient trouble with exponential backoff.

Label Studio restarting, a reset connection, a 502 from a proxy: these go away by themselves, so a
job waits for them instead of failing. An error is transient when it has ``transient = True``
(:class:`~ml_backend.exceptions.Unavailable`), is an ``httpx`` transport error, or is a
label-studio-sdk ``ApiError`` with a 5xx (but 501, Not Implemented, which no retry changes), 408 or 429
status. Everything else (a 4xx, a 501) is a permanent answer and is raised at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

import httpx

from ml_backend.exceptions import Unavailable
from ml_backend.stopping import sleep

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Retried HTTP statuses besides 5xx: request time-out and too many requests.
RETRIED_STATUSES = (408, 429)

#: 5xx statuses that are permanent answers: 501 Not Implemented.
PERMANENT_5XX = (501,)


def is_transient(exc: BaseException) -> bool:
    """True for errors that a later attempt may not meet (see the module docstring)."""
    if getattr(exc, "transient", False):
        return True
    status = getattr(exc, "status_code", None)
    if isinstance(status, int) and status in PERMANENT_5XX:
        return False
    if isinstance(status, int) and (status >= 500 or status in RETRIED_STATUSES):
        return True
    return isinstance(exc, httpx.TransportError)


def _sleep(seconds: float) -> None:

    sleep(seconds)  # a worker's stop request cuts the pause short in a stoppable job


def with_backoff(
    call: Callable[[], T],
    *,
    seconds: float,
    what: str,
    first_wait: float = 0.5,
    max_wait: float = 15.0,
    sleep: Callable[[float], Any] = _sleep,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """``call()``, retried while it raises a transient error, for at most ``seconds``.

    Waits ``first_wait`` seconds, doubling up to ``max_wait``. When the time is up, raises
    :class:`Unavailable` with a sentence naming ``what`` (e.g. "Label Studio at http://...") and
    the last error's first line; non-transient errors propagate unchanged.
    """
    deadline = clock() + seconds
    wait = first_wait
    attempt = 0
    while True:
        attempt += 1
        try:
            return call()
        except Exception as exc:
            if not is_transient(exc):
                raise
            left = deadline - clock()
            if left <= 0:
                reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
                raise Unavailable(
                    f"{what} was still unavailable after {attempt} attempts over {seconds:g} s ({reason}); "
                    "the job will be retried"
                ) from None
            pause = min(wait, max_wait, left)
            log.warning("%s unavailable (%s); retrying in %.1f s", what, type(exc).__name__, pause)
            sleep(pause)
            wait *= 2

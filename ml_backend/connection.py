"""The Redis connection every part of the product uses, with retries that ride out a restart.

``REDIS_URL`` may carry a password and TLS: ``redis://:PASSWORD@host:6379/0`` or
``rediss://:PASSWORD@host:6380/0`` (redis-py parses both; ``?ssl_cert_reqs=required`` and the
other redis-py URL options work too).

Every command (also inside RQ: dequeueing, heartbeats, saving results) is retried on a
connection error or time-out, with exponential backoff capped at 2 s, for about
``retry_seconds`` in all; only then does the error reach the caller. A Redis restart of a few
seconds is therefore invisible to a running job and to the worker loop.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

from redis import Redis
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError, TimeoutError
from redis.retry import Retry

from ml_backend import defaults

#: Longest wait between two attempts, seconds.
BACKOFF_CAP = 2.0
#: First wait, seconds; doubled after each failed attempt.
BACKOFF_BASE = 0.05


def attempts_for(seconds: float, base: float = BACKOFF_BASE, cap: float = BACKOFF_CAP) -> int:
    """How many retries of a doubling backoff (``base``, ``2·base``, …, capped at ``cap``) add up
    to at least ``seconds`` of waiting."""
    total, wait, n = 0.0, base, 0
    while total < seconds:
        total += min(wait, cap)
        wait *= 2
        n += 1
    return n


def redis_connection(url: str, *, retry_seconds: float = defaults.REDIS_RETRY_SECONDS, **kwargs: Any) -> Any:
    """A ``redis.Redis`` for ``url`` whose commands retry for ``retry_seconds`` while Redis is away."""

    retry = Retry(ExponentialBackoff(cap=BACKOFF_CAP, base=BACKOFF_BASE), attempts_for(retry_seconds))
    return Redis.from_url(
        url,
        retry=retry,
        retry_on_error=[ConnectionError, TimeoutError],
        health_check_interval=30,
        **kwargs,
    )


def redis_for(settings: Any) -> Any:
    """:func:`redis_connection` for ``settings.redis_url`` and ``settings.redis_retry_seconds``."""
    return redis_connection(settings.redis_url, retry_seconds=settings.redis_retry_seconds)


def redacted(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for messages and logs)."""

    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        user = parts.username or ""
        host = parts.hostname or ""
        netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=netloc))
    except ValueError:
        return "(an unparsable REDIS_URL)"

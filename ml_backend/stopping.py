"""Graceful stops: a stop request meets the running job at its next frame and cuts long waits short."""

from __future__ import annotations

import threading
import time

from ml_backend.exceptions import WorkerStopping

_stop = threading.Event()


_state = threading.local()


# -- graceful stop ------------------------------------------------------------------------------
def job_started() -> None:
    """Called by the worker in the job's thread when a job starts: it is stoppable."""
    _state.job = True
    _state.stoppable = True


def job_ended() -> None:
    _state.job = False
    _state.stoppable = False


def stoppable(value: bool) -> None:
    """Whether the running job may stop now (False once it publishes)."""
    _state.stoppable = value


def request_stop() -> None:
    """Ask the running job to stop at its next frame (the worker got SIGINT/SIGTERM)."""
    _stop.set()


def stop_requested() -> bool:
    return _stop.is_set()


def reset() -> None:
    """Forget a stop request (tests run several workers in one process)."""
    _stop.clear()


def check_stop() -> None:
    """Raise :class:`WorkerStopping` in a stoppable job's thread once a stop was requested."""
    if _stop.is_set() and getattr(_state, "job", False) and getattr(_state, "stoppable", False):
        raise WorkerStopping("the worker was asked to stop")


def sleep(seconds: float) -> None:
    """``time.sleep`` that a stop request cuts short in a stoppable job's thread."""
    if getattr(_state, "job", False) and getattr(_state, "stoppable", False):
        check_stop()
        _stop.wait(seconds)
        check_stop()
    else:
        time.sleep(seconds)

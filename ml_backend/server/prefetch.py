"""Embedding a task's frames before the first click.

Three things queue a task's pages, and a :class:`Prefetcher` embeds them on one background
thread into the same cache the clicks use, so that the first click on a page costs only the mask
decoder:

- **opening a task**: Label Studio calls ``/predict`` without clicks when a task without
  predictions is opened; the backend answers at once and queues the task's annotation frames;
- **the first click in a task**: a task that already has a prediction (the review-and-correct
  path) is opened without that call, so its first click queues all its other pages;
- **a job that published**: the worker pushes the task's pages (flagged frames appended) onto
  the Redis list :data:`REQUESTS_KEY`, which :class:`RequestListener` reads in the backend. These
  go to a background queue behind every opened or clicked task (:meth:`Prefetcher.queue_task`).

Policy:

- **Order:** the first page of each image, then the other pages in page order (page 1 of every
  image, then page 2, …).
- **Clicks first:** before each frame the prefetcher waits while a click is being answered, so
  a click waits at most for the one encoder pass already running. A click on a frame that is
  being embedded waits for that embedding instead of starting a second one (the segmenter
  encodes each key once).
- **Newest task first:** opening (or clicking in) a task puts it in front. Up to
  ``PREFETCH_TASKS`` recent tasks are kept, newest first; older ones are dropped. With N
  annotators opening N tasks, the most recently opened tasks are embedded first, one frame at a
  time on the one model, and any click preempts all of them.
- **Cache bounds:** prefetching never grows the cache past its bounds. It never evicts an
  embedding of a recent task to make room: when the cache holds only those, prefetching stops
  until room frees up.
- **Jobs' tasks last:** pages pushed by the worker are embedded only when no opened task has
  pages pending, newest job first, at most :data:`MAX_BACKGROUND_TASKS` tasks (older requests
  are dropped), and never by evicting an embedding of a recently opened or clicked task. Other
  embeddings go by least recent use, as always.
- **Off switch:** ``PREFETCH_EMBEDDINGS=0`` turns it off.

Clicks on cached embeddings never wait for an encoder run at all: the segmenter decodes under
its own lock (:mod:`.segmenter`).
"""

from __future__ import annotations

import json
import logging
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable
from typing import Any

from redis.exceptions import RedisError

from ml_backend.worker.pagerequests import REQUESTS_KEY

log = logging.getLogger(__name__)


#: Most tasks pushed by jobs waiting to be embedded (the oldest is dropped first).
MAX_BACKGROUND_TASKS = 16


class RequestListener:
    """Reads :data:`REQUESTS_KEY` on a daemon thread and hands each request to ``handle``.

    ``BRPOP`` with a short timeout, so :meth:`close` ends it; a Redis outage is logged once and
    retried every few seconds; a request that is not JSON is skipped.
    """

    def __init__(self, connection: Any, handle: Callable[[Any], Any], *, block: float = 1.0, retry: float = 3.0):
        self.connection = connection
        self.handle = handle
        self.block = block
        self.retry = retry
        self.handled = 0
        self.failures = 0  # Redis errors seen
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="prefetch-requests", daemon=True)

    def start(self) -> RequestListener:
        self._thread.start()
        return self

    def close(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _run(self) -> None:

        failing = False
        while not self._stop.is_set():
            try:
                item = self.connection.brpop([REQUESTS_KEY], timeout=self.block)
                failing = False
            except RedisError as exc:
                self.failures += 1
                if not failing:
                    log.warning("prefetch requests: Redis unavailable (%s); retrying", type(exc).__name__)
                failing = True
                self._stop.wait(self.retry)
                continue
            if item is None:
                continue
            try:
                self.handle(json.loads(item[1]))
            except ValueError:
                log.info("prefetch requests: skipped a request that is not JSON")
            except Exception:
                log.exception("prefetch requests: a request failed")
            self.handled += 1


class Prefetcher:
    """Embeds opened tasks' frames on one daemon thread (see the module docstring).

    ``embed(ref, protected)`` embeds one frame reference, evicting no key in ``protected``, and
    returns its cache key, or None when it was not cached. ``busy()`` is True while a click is
    being answered.
    """

    def __init__(
        self,
        embed: Callable[[str, set[Hashable]], Hashable | None],
        busy: Callable[[], bool],
        *,
        max_tasks: int = 4,
        idle_wait: float = 0.05,
    ) -> None:
        self._embed = embed
        self._busy = busy
        self.max_tasks = max(1, max_tasks)
        self._idle_wait = idle_wait
        self._cond = threading.Condition()
        self._pending: OrderedDict[Hashable, deque[str]] = OrderedDict()  # newest task first
        self._keys: OrderedDict[Hashable, set[Hashable]] = OrderedDict()  # cache keys of recent tasks
        self._background: OrderedDict[Hashable, deque[str]] = OrderedDict()  # jobs' tasks, newest last
        self._thread: threading.Thread | None = None
        self._closed = False
        self.embedded = 0

    def open_task(self, task: Hashable, refs: list[str]) -> None:
        """Queue ``refs`` of ``task`` in front of every other task's."""
        with self._cond:
            self._pending.pop(task, None)
            self._pending[task] = deque(refs)
            self._pending.move_to_end(task, last=False)
            self._touch(task)
            while len(self._pending) > self.max_tasks:
                self._pending.popitem(last=True)
            self._cond.notify_all()
        self._start()

    def queue_task(self, task: Hashable, refs: list[str]) -> None:
        """Queue ``refs`` of ``task`` behind every opened task (a job published its pages)."""
        with self._cond:
            self._background.pop(task, None)
            self._background[task] = deque(refs)
            while len(self._background) > MAX_BACKGROUND_TASKS:
                self._background.popitem(last=False)
            self._cond.notify_all()
        self._start()

    def first_click(self, task: Hashable) -> bool:
        """True (once) when ``task`` was neither opened nor clicked recently: the caller queues
        its pages. Marks it recent."""
        with self._cond:
            new = task not in self._keys
            self._touch(task)
            return new

    def touch(self, task: Hashable, key: Hashable | None = None) -> None:
        """``task`` is being worked on (a click); ``key`` is an embedding of it to keep."""
        with self._cond:
            self._touch(task)
            if key is not None:
                self._keys[task].add(key)
            if task in self._pending:
                self._pending.move_to_end(task, last=False)

    def _touch(self, task: Hashable) -> None:
        self._keys.setdefault(task, set())
        self._keys.move_to_end(task, last=False)
        while len(self._keys) > self.max_tasks:
            self._keys.popitem(last=True)

    def pending(self) -> int:
        with self._cond:
            return sum(len(refs) for refs in (*self._pending.values(), *self._background.values()))

    def wait_idle(self, timeout: float) -> bool:
        """Wait until nothing is pending (tests and benchmarks); True when idle."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._has_work() and not self._working, timeout)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._pending.clear()
            self._background.clear()
            self._cond.notify_all()

    _working = False

    def _start(self) -> None:
        with self._cond:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="embedding-prefetch", daemon=True)
                self._thread.start()

    def _has_work(self) -> bool:
        return any(self._pending.values()) or any(self._background.values())

    def _next(self) -> tuple[Hashable, str, set[Hashable], bool] | None:
        protected = set().union(*self._keys.values()) if self._keys else set()
        for task, refs in self._pending.items():
            if refs:
                return task, refs.popleft(), protected, False
        for task in reversed(self._background):  # the newest job first
            refs = self._background[task]
            if refs:
                return task, refs.popleft(), protected, True
        return None

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._closed or self._has_work())
                if self._closed:
                    return
            while self._busy():  # clicks first: start no encoder pass while one is answered
                with self._cond:
                    self._cond.wait(self._idle_wait)
            with self._cond:
                item = self._next()
                if item is None:
                    continue
                self._working = True
            task, ref, protected, background = item
            try:
                key = self._embed(ref, protected)
                with self._cond:
                    if key is None:  # no room without evicting a recent task's frame: stop here
                        (self._background if background else self._pending).pop(task, None)
                    else:
                        self.embedded += 1
                        if task in self._keys:
                            self._keys[task].add(key)
            except Exception as exc:  # a missing or broken frame: the click will say what is wrong
                log.info("prefetch of %s skipped: %s", ref, exc)
            finally:
                with self._cond:
                    self._working = False
                    self._cond.notify_all()

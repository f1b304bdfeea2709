"""Embedding a task's frames before the first click.

Label Studio calls ``/predict`` without clicks when a task is opened. The backend answers at once
and hands the task's annotation frames to a :class:`Prefetcher`, which embeds them on one
background thread into the same cache the clicks use. The first click on a page then costs only
the mask decoder.

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
- **Off switch:** ``PREFETCH_EMBEDDINGS=0`` turns it off.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable

log = logging.getLogger(__name__)


def page_order(lists: list[list[str]]) -> list[str]:
    """Refs of several images' pages: every image's page 0, then every page 1, and so on; each
    ref once, and only strings."""
    out: list[str] = []
    for page in range(max((len(refs) for refs in lists), default=0)):
        for refs in lists:
            if page < len(refs) and isinstance(refs[page], str) and refs[page] not in out:
                out.append(refs[page])
    return out


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
            return sum(len(refs) for refs in self._pending.values())

    def wait_idle(self, timeout: float) -> bool:
        """Wait until nothing is pending (tests and benchmarks); True when idle."""
        with self._cond:
            return self._cond.wait_for(lambda: not any(self._pending.values()) and not self._working, timeout)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._pending.clear()
            self._cond.notify_all()

    _working = False

    def _start(self) -> None:
        with self._cond:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="embedding-prefetch", daemon=True)
                self._thread.start()

    def _next(self) -> tuple[Hashable, str, set[Hashable]] | None:
        for task, refs in self._pending.items():
            if refs:
                protected = set().union(*self._keys.values()) if self._keys else set()
                return task, refs.popleft(), protected
        return None

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._closed or any(self._pending.values()))
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
            task, ref, protected = item
            try:
                key = self._embed(ref, protected)
                with self._cond:
                    if key is None:  # no room without evicting a recent task's frame: stop here
                        self._pending.pop(task, None)
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

"""Server-side memory of the clicks on one object in one image.

Why: with "Auto accept suggestions" on, Label Studio deletes the smart keypoints when a
suggestion is accepted, so the next click arrives alone. To refine the same object with several
clicks, the backend remembers the points it has seen.

A session is keyed by ``(project, task, user, to_name, label, item_index)``: two annotators,
two tasks, two objects (one label per object) or two pages never share points.

Merge rule for a new context group (the clicks of one label on one image, newest last):

- the group holds two or more points, or only points already seen: the frontend is holding the
  points itself (auto-accept off), so the group replaces the session;
- the group holds one new point and the session has points: the earlier ones were accepted and
  deleted by the frontend, so the new point is added to them.

Sessions live in memory (the model and its caches are per process too) and expire after
``ttl`` seconds without a click. A session holds at most :data:`MAX_SESSION_POINTS` points: a
group, or a lone click, that would take it past that raises :class:`TooManyPoints` (HTTP 422)
and leaves the session as it was.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence

from ml_backend import defaults
from ml_backend.exceptions import TooManyPoints
from ml_backend.server.context import Click

SessionKey = tuple[Hashable, ...]

#: Most points kept for one object (SAM 2 needs a handful; a long list only costs time).
MAX_SESSION_POINTS = defaults.MAX_SESSION_POINTS


class SessionStore:
    """Thread-safe TTL store of click lists; at most ``max_sessions`` (oldest dropped first)."""

    def __init__(
        self,
        ttl: float,
        max_sessions: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
        max_points: int = MAX_SESSION_POINTS,
    ) -> None:
        self.ttl = ttl
        self.max_sessions = max_sessions
        self.max_points = max_points
        self._clock = clock
        self._lock = threading.Lock()
        self._data: OrderedDict[SessionKey, tuple[float, list[Click]]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._data)

    def merge(self, key: SessionKey, group: Sequence[Click]) -> list[Click]:
        """Combine ``group`` with the session's points (rule above); store and return them."""
        now = self._clock()
        with self._lock:
            self._expire(now)
            _, stored = self._data.get(key, (now, []))
            known = {c.id for c in stored}
            if len(group) == 1 and group[0].id not in known and stored:
                points = [*stored, group[0]]
            else:
                points = list(group)
            if len(points) > self.max_points:
                raise TooManyPoints(
                    f"too many points: this object would have {len(points)}, over the {self.max_points} "
                    "kept per object; remove some points, or start a new object with another label"
                )
            self._data.pop(key, None)
            self._data[key] = (now, points)
            while len(self._data) > self.max_sessions:
                self._data.popitem(last=False)
            return list(points)

    def get(self, key: SessionKey) -> list[Click]:
        with self._lock:
            self._expire(self._clock())
            entry = self._data.get(key)
            return list(entry[1]) if entry else []

    def clear(self, key: SessionKey) -> None:
        with self._lock:
            self._data.pop(key, None)

    def _expire(self, now: float) -> None:
        while self._data:
            key, (stamp, _) = next(iter(self._data.items()))
            if now - stamp <= self.ttl:
                break
            del self._data[key]

"""The sign of every keypoint (click = positive, Alt+click = negative), kept by the backend.

Why: Label Studio 1.23.2 writes ``is_positive`` only for keypoints drawn in the open editor
session (the frontend's "dynamic" regions). A reopened annotation loads its keypoints as plain
ones, so **Update** saves every earlier keypoint without ``is_positive``, and the next smart click
sends them in its context without it too (verified in Chromium; ids and positions survive, the
flag does not). Read as "positive", an earlier Alt+click would silently turn into a click.

The rule (:func:`apply_signs`), the same for interactive clicks, webhooks and jobs:

- a keypoint that carries ``is_positive`` (``true``/``false``) keeps it, and the sign is
  **recorded** under its region id and under its position (image, page, label, x, y);
- a keypoint without the flag takes the recorded sign of its region id, else of a recorded
  keypoint at the same position (a copied annotation gets new ids);
- a keypoint with neither is **unknown**: it counts as positive (what Label Studio means by a
  keypoint without the flag: a plain keypoint), and is reported (log line, job summary).

Records live in one Redis hash per task, ``sam2:signs:{project}:{task}``, field ``id:<region
id>`` or ``pos:<to_name>:<page>:<label>:<x>:<y>`` (x, y in percent, 3 decimals) → ``"1"``/``"0"``.
Region ids are random per region, so the hash serves every annotation of the task. A
:class:`MemorySigns` stands in when the backend runs without Redis (no job queue).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

KEY = "sam2:signs:{project}:{task}"


@dataclass
class SignReport:
    """What :func:`apply_signs` did: counts of keypoints whose sign was given (flag present),
    taken from a record, or unknown (counted as positive), and the ids of the unknown ones."""

    given: int = 0
    recorded: int = 0
    unknown: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"given": self.given, "recorded": self.recorded, "unknown": len(self.unknown),
                "unknown_regions": self.unknown[:50]}  # fmt: skip


def project_id(value: Any) -> str:
    """The project id as a key part: ``"3"`` for ``3``, ``"3"`` and ``"3.1733300000"`` (the
    ``<id>.<created timestamp>`` that Label Studio sends to ``/predict``), ``{"id": 3}``."""
    if isinstance(value, dict):
        value = value.get("id")
    return str(value).split(".", 1)[0]


def _position(region: dict[str, Any]) -> str | None:
    value = region.get("value")
    if not isinstance(value, dict):
        return None
    x, y, labels = value.get("x"), value.get("y"), value.get("keypointlabels")
    if isinstance(x, bool) or isinstance(y, bool) or not isinstance(x, (int, float)) or not isinstance(y, (int, float)):
        return None
    label = labels[0] if isinstance(labels, list) and labels and isinstance(labels[0], str) else ""
    page = region.get("item_index")
    page = 0 if page is None else page
    try:
        return f"pos:{region.get('to_name')}:{page}:{label}:{x:.3f}:{y:.3f}"
    except (OverflowError, ValueError):  # an integer too large for a float
        return None


def _is_keypoint(region: Any) -> bool:
    return isinstance(region, dict) and region.get("type") == "keypointlabels"


class RedisSigns:
    """Sign records in Redis (module docstring); every call is one round trip."""

    def __init__(self, connection: Any) -> None:
        self.connection = connection

    def load(self, project: str, task: str) -> dict[str, str]:
        raw = self.connection.hgetall(KEY.format(project=project, task=task))
        return {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
                for k, v in raw.items()}  # fmt: skip

    def save(self, project: str, task: str, fields: dict[str, str]) -> None:
        if fields:
            self.connection.hset(KEY.format(project=project, task=task), mapping=fields)


class MemorySigns:
    """The same records in this process's memory (a backend without Redis); at most
    ``max_tasks`` tasks, the oldest forgotten first."""

    def __init__(self, max_tasks: int = 10_000) -> None:
        self.max_tasks = max_tasks
        self._data: dict[tuple[str, str], dict[str, str]] = {}
        self._lock = threading.Lock()

    def load(self, project: str, task: str) -> dict[str, str]:
        with self._lock:
            return dict(self._data.get((project, task), {}))

    def save(self, project: str, task: str, fields: dict[str, str]) -> None:
        with self._lock:
            self._data.setdefault((project, task), {}).update(fields)
            while len(self._data) > self.max_tasks:
                self._data.pop(next(iter(self._data)))


def apply_signs(
    store: Any, project: Any, task: Any, regions: Any, *, where: str = "annotation"
) -> tuple[Any, SignReport]:
    """``(regions, report)``: ``regions`` with ``is_positive`` filled in from the records where
    it is missing (copies; the input is not changed), after recording the given signs.

    Anything that is not a list of regions comes back unchanged (the callers' parsers reject it
    with their own message). A store error (Redis down) is logged and leaves the regions as they
    are: their signs are then reported unknown, nothing fails here.
    """
    report = SignReport()
    if not isinstance(regions, list):
        return regions, report
    keypoints = [r for r in regions if _is_keypoint(r)]
    if not keypoints:
        return regions, report
    project, task = project_id(project), str(task)
    new: dict[str, str] = {}
    for region in keypoints:
        sign = region.get("is_positive")
        if isinstance(sign, bool):
            flag = "1" if sign else "0"
            if region.get("id") is not None:
                new[f"id:{region['id']}"] = flag
            pos = _position(region)
            if pos:
                new[pos] = flag
    try:
        known = store.load(project, task) if store is not None else {}
        if store is not None:
            store.save(project, task, new)
    except Exception as exc:  # Redis unavailable: signs of unflagged points stay unknown
        log.warning("keypoint signs of task %s could not be read or recorded (%s)", task, type(exc).__name__)
        known = {}
    known = {**known, **new}
    out = []
    for region in regions:
        if not _is_keypoint(region):
            out.append(region)
            continue
        if isinstance(region.get("is_positive"), bool):
            report.given += 1
            out.append(region)
            continue
        flag = known.get(f"id:{region.get('id')}") if region.get("id") is not None else None
        if flag is None:
            pos = _position(region)
            flag = known.get(pos) if pos else None
        if flag is None:
            report.unknown.append(str(region.get("id")))
            out.append(region)
            continue
        report.recorded += 1
        out.append({**region, "is_positive": flag == "1"})
    if report.unknown:
        log.warning(
            "%s of task %s: %d keypoint(s) without is_positive and without a recorded sign (%s) count as positive",
            where, task, len(report.unknown), ", ".join(report.unknown[:10]),
        )  # fmt: skip
    return out, report


def sign_webhook(store: Any, payload: dict[str, Any]) -> dict[str, Any]:
    """A webhook ``payload`` (ids checked by :func:`ml_backend.labelstudio.webhook.clean_webhook`) whose
    annotation's keypoints carry their signs (:func:`apply_signs`, which records the given ones).
    A payload without an annotation, task or project comes back as it is."""
    annotation = payload.get("annotation")
    if not isinstance(annotation, dict):
        return payload
    project = payload.get("project")
    project = project if project is not None else annotation.get("project")
    task = annotation.get("task") if annotation.get("task") is not None else payload.get("task")
    if isinstance(task, dict):
        task = task.get("id")
    if project is None or task is None:
        return payload
    where = f"annotation {annotation.get('id')}"
    regions, _ = apply_signs(store, project, task, annotation.get("result"), where=where)
    return {**payload, "annotation": {**annotation, "result": regions}}


def store_for(connection: Any) -> Any:
    """The sign store for a Redis ``connection`` (None: one in memory)."""
    return RedisSigns(connection) if connection is not None else MemorySigns()

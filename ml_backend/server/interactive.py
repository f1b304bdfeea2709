"""Answering Label Studio's interactive ``/predict``: clicks in, a brush mask out.

One call of :meth:`InteractivePredictor.predict` does, in order:

1. read ``params.context`` (``None`` → a batch call → no prediction for any task, see
   :meth:`InteractivePredictor.predict`);
2. fill in the signs of earlier keypoints that Label Studio sends without ``is_positive``
   (:mod:`~ml_backend.labelstudio.signs`), take the newest click and the other clicks of its label on its image
   (:mod:`.context`; a context without keypoints → an empty suggestion), merged with the
   server-side session (:mod:`.sessions`);
3. find the brush tag and the image from the project's config (:mod:`~ml_backend.labelstudio.config`), and the
   image URL from the task data (``item_index`` picks from a ``valueList``);
4. fetch the file (:mod:`~ml_backend.labelstudio.fetch`), embed it once (:mod:`.segmenter`), decode the points;
5. answer a ``brushlabels`` result at the same ``item_index`` (:mod:`~ml_backend.labelstudio.brush`), followed (with
   ``SUGGEST_PAGE_OBJECTS``) by the latest masks of the other objects that have points on that
   page in this user's sessions, so that Label Studio shows every object of the page at once.

Each step's time goes into a :class:`Timings` that the app sends as a ``Server-Timing`` header.
The first click in a task queues all its pages for prefetching (:mod:`.prefetch`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from contextvars import ContextVar
from typing import Any

import numpy as np

from ml_backend.exceptions import BadPayload, ItemIndexOutOfRange
from ml_backend.labelstudio import brush
from ml_backend.labelstudio.config import parse_label_config
from ml_backend.labelstudio.fetch import FileFetcher, decode_image
from ml_backend.labelstudio.signs import MemorySigns, apply_signs
from ml_backend.models import model_version
from ml_backend.server.context import NoKeypoints, parse_clicks
from ml_backend.server.prefetch import Prefetcher
from ml_backend.server.sessions import SessionStore
from ml_backend.settings import Settings
from ml_backend.worker.pagerequests import page_order

log = logging.getLogger(__name__)

#: Most project configs remembered from ``/setup`` (the oldest is forgotten first).
MAX_PROJECT_CONFIGS = 1000

#: Most pages whose objects' latest masks are remembered for ``SUGGEST_PAGE_OBJECTS``.
MAX_PAGE_OBJECTS = 500


class Timings:
    """Milliseconds spent in the parts of one request, for the ``Server-Timing`` header."""

    def __init__(self) -> None:
        self.parts: list[tuple[str, float, str]] = []
        self._started = time.perf_counter()

    def add(self, name: str, seconds: float, desc: str = "") -> None:
        self.parts.append((name, seconds * 1000.0, desc))

    def header(self) -> str:
        """``name;dur=ms[;desc="..."]`` entries, then ``total``: the whole request so far."""
        total = (time.perf_counter() - self._started) * 1000.0
        items = [f"{n};dur={ms:.1f}" + (f';desc="{d}"' if d else "") for n, ms, d in self.parts]
        return ", ".join([*items, f"total;dur={total:.1f}"])


#: The :class:`Timings` of the request being answered (the app sets it for ``/predict``).
REQUEST_TIMINGS: ContextVar[Timings | None] = ContextVar("REQUEST_TIMINGS", default=None)


def task_key(project: Any, task: Any) -> tuple[str, Any]:
    """The prefetcher's key of a task: the project id without Label Studio's ``.<created>``."""
    return (str(project).split(".", 1)[0], task)


class InteractivePredictor:
    """Holds the (lazily built) segmenter, the file fetcher, sessions and known project configs.

    ``segmenter_factory`` builds the :class:`~ml_backend.server.segmenter.ImageSegmenter` on first use;
    tests pass one that builds a small random-weight model, or a deterministic stand-in.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        fetcher: FileFetcher,
        segmenter_factory: Callable[[], Any],
        sessions: SessionStore | None = None,
    ) -> None:
        self.settings = settings
        self.fetcher = fetcher
        self.sessions = sessions or SessionStore(settings.session_ttl, max_points=settings.max_session_points)
        self.model_version = model_version(settings)
        self._factory = segmenter_factory
        self._segmenter: Any = None
        self._build_lock = threading.Lock()
        self.project_configs: dict[str, str] = {}
        self.signs: Any = MemorySigns()  # the app sets the Redis store when it has a job queue
        self._clicks = 0  # clicks being answered; the prefetcher waits while there are any
        self._clicks_lock = threading.Lock()
        self.prefetcher = None
        self._page_objects: OrderedDict[Hashable, dict[str, dict[str, Any]]] = OrderedDict()
        self._page_objects_lock = threading.Lock()
        if settings.prefetch_embeddings:
            self.prefetcher = Prefetcher(
                self._prefetch_one, lambda: self._clicks > 0, max_tasks=settings.prefetch_tasks
            )

    @property
    def segmenter(self) -> Any:
        """The segmenter, built on first use (once per process, thread-safe)."""
        if self._segmenter is None:
            with self._build_lock:
                if self._segmenter is None:
                    self._segmenter = self._factory()
        return self._segmenter

    @property
    def ready(self) -> bool:
        return self._segmenter is not None

    def remember_config(self, project: Any, label_config: Any) -> None:
        """Keep ``label_config`` for ``project`` (``/setup``) once Label Studio's parser accepts it.

        Raises :class:`BadPayload` for a project or config of the wrong type and
        :class:`~ml_backend.labelstudio.config.InvalidLabelConfig` (422) for a config that does not parse.
        A missing or empty config is nothing to remember.
        """
        if project is not None and (isinstance(project, bool) or not isinstance(project, (str, int))):
            raise BadPayload(f"'project' must be the project id (a string or an integer), got {type(project).__name__}")
        if label_config is None or (isinstance(label_config, str) and not label_config.strip()):
            return
        parse_label_config(label_config, what="schema")
        if project is not None:
            self.project_configs.pop(str(project), None)
            self.project_configs[str(project)] = label_config
            while len(self.project_configs) > MAX_PROJECT_CONFIGS:
                self.project_configs.pop(next(iter(self.project_configs)))

    # -- /predict ---------------------------------------------------------------------------------
    def predict(self, payload: Any, timings: Timings | None = None) -> dict[str, Any]:
        if not isinstance(payload, dict):
            raise BadPayload("the body must be a JSON object with 'tasks'")
        tasks = payload.get("tasks")
        if not isinstance(tasks, list) or not tasks or not all(isinstance(t, dict) for t in tasks):
            raise BadPayload("'tasks' must be a non-empty list of task objects")
        params = payload.get("params") or {}
        if not isinstance(params, dict):
            raise BadPayload("'params' must be an object")
        context = params.get("context", payload.get("context"))
        if context is None:
            # Batch call: Label Studio makes one when a task without predictions is opened (and
            # after Submit/Update, while the task has none), and for "Retrieve predictions".
            # Propagated masks reach the task from the worker, so there is nothing to add: one
            # empty list of predictions per task, which Label Studio 1.23.2 accepts and stores
            # nothing for (``{"results": []}`` is logged as an incorrect response; an empty
            # ``result`` would be stored as an empty prediction tab). The annotator is about to
            # click: embed the task's frames meanwhile.
            if self.prefetcher is not None and len(tasks) == 1 and isinstance(tasks[0].get("id"), (int, str)):
                self._open_task(payload, tasks[0])
            return {"results": [[] for _ in tasks]}
        with self._clicks_lock:
            self._clicks += 1
        try:
            timings = timings or REQUEST_TIMINGS.get() or Timings()
            return self._click(payload, tasks, params, context, timings)
        finally:
            with self._clicks_lock:
                self._clicks -= 1

    def _click(
        self, payload: dict[str, Any], tasks: list[Any], params: dict[str, Any], context: Any, timings: Timings
    ) -> dict[str, Any]:
        if len(tasks) != 1:
            raise BadPayload(f"an interactive call carries one task, got {len(tasks)}")
        task = tasks[0]
        if isinstance(task.get("id"), bool) or not isinstance(task.get("id"), (int, str, type(None))):
            raise BadPayload(f"the task 'id' must be an integer, got {type(task.get('id')).__name__}")
        if isinstance(context, dict) and isinstance(context.get("result"), list):
            store = self.signs if task.get("id") is not None else None
            regions, _ = apply_signs(store, payload.get("project"), task.get("id"), context["result"], where="clicks")
            context = {**context, "result": regions}
        try:
            newest, group = parse_clicks(context)
        except NoKeypoints:
            # Label Studio asks after a smart keypoint was deleted, or another smart region
            # edited: no point to segment, so an empty suggestion (it clears the old one)
            return {"results": [{"result": [], "score": 0.0, "model_version": self.model_version}]}
        xml = payload.get("label_config")
        if xml is None or xml == "":
            xml = self.project_configs.get(str(payload.get("project")))
        config = parse_label_config(xml)
        target = config.brush_for(newest.from_name, newest.to_name, newest.label)
        ref = self._image_ref(task, target.image, newest.item_index)
        user = self._user(params, task)
        key = (str(payload.get("project")), task.get("id"), str(user), newest.to_name, newest.label, newest.item_index)
        clicks = self.sessions.merge(key, group)

        if self.prefetcher is not None:
            tkey = task_key(payload.get("project"), task.get("id"))
            if self.prefetcher.first_click(tkey):  # this task's other pages, after this click
                self._open_task(payload, task)
        embed_key, embedding = self._embedding(ref, timings=timings)
        if self.prefetcher is not None:
            self.prefetcher.touch(tkey, embed_key)
        height, width = embedding.orig_hw
        points = np.array([c.pixel(width, height) for c in clicks], dtype=np.float32)
        labels = np.array([1 if c.positive else 0 for c in clicks], dtype=np.int32)
        started = time.perf_counter()
        mask, score = self.segmenter.predict(embedding, points, labels)
        timings.add("decoder", time.perf_counter() - started)
        started = time.perf_counter()
        result = brush.mask_to_result(
            mask,
            from_name=target.brush,
            to_name=newest.to_name,
            label=target.label,
            item_index=newest.item_index,
            score=score,
        )
        timings.add("rle", time.perf_counter() - started)
        accepted = self._accepted_labels(task, newest.to_name, newest.item_index)
        results = [result, *self._other_objects(key, target.label, result, accepted)]
        return {"results": [{"result": results, "score": score, "model_version": self.model_version}]}

    @staticmethod
    def _accepted_labels(task: dict[str, Any], to_name: str, item_index: int | None) -> set[str]:
        """Labels that already have a brush region on this page in the clicking user's draft or
        in the task's annotations as sent: accepted suggestions, not to be suggested again."""
        labels: set[str] = set()
        for item in [*(task.get("drafts") or []), *(task.get("annotations") or [])]:
            regions = item.get("result") if isinstance(item, dict) else None
            for region in regions if isinstance(regions, list) else []:
                if not isinstance(region, dict) or region.get("type") != "brushlabels":
                    continue
                if region.get("to_name") != to_name or (region.get("item_index") or 0) != (item_index or 0):
                    continue
                value = region.get("value")
                names = value.get("brushlabels") if isinstance(value, dict) else None
                labels.update(n for n in names or [] if isinstance(n, str))
        return labels

    def _other_objects(
        self, key: tuple[Any, ...], label: str, result: dict[str, Any], accepted: set[str] = frozenset()
    ) -> list[dict[str, Any]]:
        """Remember ``result`` as the latest mask of object ``label`` on its page; return the
        latest masks of the page's other objects that still have points in a session and no
        accepted region (``accepted``), in the order they were last clicked
        (``SUGGEST_PAGE_OBJECTS``)."""
        if not self.settings.suggest_page_objects:
            return []
        project, task_id, user, to_name, session_label, item_index = key
        page = (project, task_id, user, to_name, item_index)
        # Label Studio's first clicks in a task come before its first draft, so without a user
        # (see _user); the same annotator's later clicks carry one. Their objects are one page.
        pages = [page] if user == "anonymous" else [page, (project, task_id, "anonymous", to_name, item_index)]
        others: dict[str, dict[str, Any]] = {}
        with self._page_objects_lock:
            for where in reversed(pages):
                objects = self._page_objects.get(where, {})
                objects.pop(label, None)
                others.update(objects)
            objects = self._page_objects.pop(page, {})
            objects[label] = {"result": result, "session": key}
            self._page_objects[page] = objects
            while len(self._page_objects) > MAX_PAGE_OBJECTS:
                self._page_objects.popitem(last=False)
        kept = []
        for other_label, entry in others.items():
            if other_label in accepted:
                continue
            if self.sessions.get(entry["session"]):  # points left (not expired or cleared)
                kept.append(entry["result"])
            else:
                with self._page_objects_lock:
                    for where in pages:
                        if self._page_objects.get(where, {}).get(other_label) is entry:
                            del self._page_objects[where][other_label]
        return kept

    def _embedding(
        self, ref: str, protected: set[Any] | None = None, timings: Timings | None = None
    ) -> tuple[Any, Any]:
        """``(cache key, embedding)`` of the image ``ref`` names (embedding None: see
        :meth:`~ml_backend.server.segmenter.ImageSegmenter.embed`)."""
        started = time.perf_counter()
        path = self.fetcher.path(ref, folder_ok=False)
        stat = path.stat()
        embed_key = (str(path), stat.st_mtime_ns, stat.st_size)
        fetched = time.perf_counter()
        decoded: list[float] = []  # the decode's seconds, when this call encoded the image

        def image() -> Any:
            t0 = time.perf_counter()
            try:
                return decode_image(path.read_bytes(), max_pixels=self.settings.max_image_pixels, name=ref)
            finally:
                decoded.append(time.perf_counter() - t0)

        embedding = self.segmenter.embed(embed_key, image, protected=protected)
        if timings is not None:
            timings.add("fetch", fetched - started)
            timings.add("decode", sum(decoded))
            how = "encoder" if decoded else "cache hit"
            timings.add("embed", time.perf_counter() - fetched - sum(decoded), how)
        return embed_key, embedding

    def _prefetch_one(self, ref: str, protected: set[Any]) -> Any:
        key, embedding = self._embedding(ref, protected)
        return key if embedding is not None else None

    def _open_task(self, payload: dict[str, Any], task: dict[str, Any]) -> None:
        """Queue the opened task's click targets for prefetching (see :mod:`.prefetch`)."""

        xml = payload.get("label_config") or self.project_configs.get(str(payload.get("project")))
        data = task.get("data")
        if not isinstance(xml, str) or not isinstance(data, dict):
            return
        try:
            config = parse_label_config(xml)
        except Exception:  # the batch call is not the place to complain about the config
            return
        images = {image for image, _ in config.keypoints.values() if image in config.images}
        lists = []
        for name in sorted(images, key=list(config.images).index):
            value = data.get(config.images[name].data_key)
            lists.append(value if isinstance(value, list) else [value])
        refs = page_order(lists)
        if refs:
            self.prefetcher.open_task(task_key(payload.get("project"), task.get("id")), refs)

    def prefetch_request(self, request: Any) -> bool:
        """Queue a task's pages pushed by the worker (see :mod:`.prefetch`); False when the
        request is not ``{"project", "task", "refs": [str, ...]}`` or prefetching is off."""
        if self.prefetcher is None or not isinstance(request, dict):
            return False
        refs = request.get("refs")
        if not isinstance(refs, list) or not all(isinstance(r, str) for r in refs) or not refs:
            return False
        self.prefetcher.queue_task(task_key(request.get("project"), request.get("task")), refs)
        log.info("prefetch requested by a job: task %s, %d pages", request.get("task"), len(refs))
        return True

    @staticmethod
    def _user(params: dict[str, Any], task: dict[str, Any]) -> str:
        """Who is clicking, as far as the request tells.

        Label Studio sends no user id with interactive calls; ``tasks[0].drafts`` is filtered to
        the clicking user, so a draft's ``user`` identifies them when there is one. Otherwise the
        session is shared by everyone clicking that label on that page of that task.
        """
        if params.get("login"):
            return str(params["login"])
        drafts = task.get("drafts") or []
        if not isinstance(drafts, list):
            raise BadPayload(f"the task's 'drafts' must be a list, got {type(drafts).__name__}")
        for draft in drafts:
            if isinstance(draft, dict) and (draft.get("user") or draft.get("completed_by")):
                return f"user-{draft.get('user') or draft.get('completed_by')}"
        return "anonymous"

    @staticmethod
    def _image_ref(task: dict[str, Any], image: Any, item_index: int | None) -> str:
        data = task.get("data")
        if not isinstance(data, dict) or image.data_key not in data:
            raise BadPayload(f"task {task.get('id')} has no data field '{image.data_key}' for image '{image.name}'")
        value = data[image.data_key]
        if image.is_list:
            if not isinstance(value, list):
                raise BadPayload(f"task data '{image.data_key}' must be a list of image URLs")
            index = 0 if item_index is None else item_index
            if not 0 <= index < len(value):
                raise ItemIndexOutOfRange(
                    f"item_index {index} is out of range: '{image.data_key}' has {len(value)} images"
                )
            value = value[index]
        elif item_index not in (None, 0):
            raise ItemIndexOutOfRange(f"item_index {item_index} given for the single image '{image.name}'")
        if not isinstance(value, str):
            raise BadPayload(f"task data '{image.data_key}' must hold image URLs, got {type(value).__name__}")
        return value

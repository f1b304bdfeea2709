"""The first-frame preview of a submitted annotation, for the Data Manager's grid view.

When an annotation is submitted (``ANNOTATION_CREATED`` / ``ANNOTATION_UPDATED``, with
``WEBHOOK_MODE=auto`` or ``batch``), the backend renders page 0 of the task's image list (a
green-screen segment's first frame) with one mask per object blended over it, and sets that image
as the task's ``preview``. The grid then shows every segment's mask at once, before any job ran.

One object's mask on page 0 is the union of

- the mask the segmenter decodes from that object's keypoints on page 0 (positive and
  Alt/negative points, as one prompt, exactly as a click would), and
- every brush region of that object on page 0 (accepted suggestions, painted masks).

Conventions (as in :mod:`ml_backend.labelstudio.annotations`): pages are 0-based (a region's ``item_index``;
absent = 0); objects are labels ending in a number (``"Subject 1"`` → object 1, coloured like the
review outputs, :func:`ml_backend.exporters.overlays.color`); keypoints are in **percent** of the page (x
right, y down) and become pixels of the page image as decoded (``x / 100 * W``); brush masks are
decoded at ``original_height × original_width`` and resized (nearest) to the page's ``H × W`` when
they differ. The page image is ``H×W×3`` uint8 RGB; masks are ``H×W`` bool.

The embedding is asked for with the same key a click on that page uses
(:meth:`ml_backend.server.interactive.InteractivePredictor._embedding`), from the app's own segmenter,
so the embedding cache and the model lock are shared with clicks: a page already clicked is not
encoded again, and the page embedded here is ready for the next click.

Files: ``<task folder>/review/<label>_first-<fingerprint>.png`` under the local-files root
(:func:`ml_backend.labelstudio.taskdata.task_folder`), ``<label>`` = ``segment_XXX`` (task data
``segment_index``) or ``pair`` for a two-video task (one row per video), ``<fingerprint>`` =
:func:`ml_backend.labelstudio.annotations.fingerprint` of the annotation, so a browser never shows a stale copy;
older ``<label>_first-*.png`` are removed. Nothing is rendered when the task's frames are not
local-files files, or the annotation has no points or masks on page 0 (a log line says so).

**Never over a job's preview.** A finished job sets ``preview`` to its strip
(:mod:`ml_backend.labelstudio.review`); a first-frame preview is only set while ``preview`` is empty or is
itself a first-frame preview, checked on the current task data under the per-task lock of
:func:`ml_backend.labelstudio.taskdata.update_task_data`, and the PNG is written only then.

:class:`FirstFramePreviews` is the app's side: webhooks queue renders on **one** background
thread (only the newest pending webhook of each task is kept), so ``/webhook`` answers at once.
Every error is logged, never raised into the webhook.
"""

from __future__ import annotations

import logging
import re
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import numpy as np

from ml_backend.exceptions import MLBackendError, PromptError
from ml_backend.exporters.masks import resize_nearest
from ml_backend.exporters.staging import atomic_write_bytes
from ml_backend.labelstudio import client as labelstudio
from ml_backend.labelstudio.annotations import fingerprint
from ml_backend.labelstudio.config import parse_label_config
from ml_backend.labelstudio.fetch import decode_image
from ml_backend.labelstudio.regions import prompt_region, video_images
from ml_backend.labelstudio.taskdata import local_url, task_folder, update_task_data
from ml_backend.labelstudio.webhook import Webhook
from ml_backend.video.previews import png, stack, tile

log = logging.getLogger(__name__)

#: A first-frame preview's file name at the end of its URL (the ``d=`` path).
FIRST_NAME = re.compile(r"_first-[0-9a-f]+\.png$")

ACTIONS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED")


@dataclass
class PageZero:
    """The prompts of one ``<Image valueList>`` on its page 0."""

    info: Any  # ml_backend.labelstudio.annotations.VideoImage
    ref: str  # the page-0 image URL
    points: dict[int, list[tuple[float, float, bool]]] = field(default_factory=dict)  # obj → (x %, y %, positive)
    masks: dict[int, list[np.ndarray]] = field(default_factory=dict)  # obj → brush masks

    @property
    def objects(self) -> list[int]:
        return sorted(set(self.points) | set(self.masks))


def is_first_frame_preview(url: Any) -> bool:
    """Whether ``url`` (a ``preview`` value) is a first-frame preview this module wrote."""
    return isinstance(url, str) and bool(FIRST_NAME.search(unquote(url)))


def page_zero_prompts(config_xml: str, data: dict[str, Any], annotation: dict[str, Any]) -> list[PageZero]:
    """Keypoints and brush masks of every object on page 0 of each ``<Image valueList>`` (config
    order). A region that is not a valid prompt is skipped with a log line (the job reports it);
    raises :class:`~ml_backend.exceptions.PromptError` when the config or task data do not fit."""

    images = video_images(config_xml, data)
    config = parse_label_config(config_xml)
    pages = []
    for info in images:
        frames = data.get(info.data_key) or []
        if not frames or not isinstance(frames[0], str):
            raise PromptError(f"task data '{info.data_key}' has no first image")
        pages.append(PageZero(info, frames[0]))
    by_image = {page.info.image: page for page in pages}
    results = annotation.get("result") or []
    if not isinstance(results, list):
        raise PromptError("the annotation's 'result' must be a list of regions")
    for i, region in enumerate(results):
        if not isinstance(region, dict) or region.get("type") not in ("keypointlabels", "brushlabels"):
            continue
        page = by_image.get(region.get("to_name"))
        if page is None or (region.get("item_index") or 0) != 0:
            continue  # another image, or a later page
        try:
            click = prompt_region(region, page.info, config, f"annotation region {i}")
        except PromptError as exc:
            log.info("first-frame preview: skipping a region: %s", exc)
            continue
        if click is None or click.page != 0:
            continue
        if click.point is not None:
            page.points.setdefault(click.obj_id, []).append((*click.point, click.positive))
        else:
            page.masks.setdefault(click.obj_id, []).append(click.mask)
    return pages


def first_frame_masks(settings: Any, page: PageZero, fetcher: Any, segmenter: Any) -> tuple[np.ndarray, dict]:
    """``(page-0 image, {obj_id: H×W bool})`` for :class:`PageZero` ``page``; objects whose mask
    is empty are left out. Only an object with a positive point asks the segmenter."""

    path = fetcher.path(page.ref, folder_ok=False)
    frame = decode_image(path.read_bytes(), max_pixels=settings.max_image_pixels, name=page.ref)
    h, w = frame.shape[:2]
    embedding = None
    masks: dict[int, np.ndarray] = {}
    for obj_id in page.objects:
        mask = np.zeros((h, w), bool)
        points = page.points.get(obj_id, [])
        if any(positive for _, _, positive in points):
            if embedding is None:
                stat = path.stat()  # the key a click on this page uses (InteractivePredictor._embedding)
                embedding = segmenter.embed((str(path), stat.st_mtime_ns, stat.st_size), frame)
            xy = np.array([[x / 100.0 * w, y / 100.0 * h] for x, y, _ in points], np.float32)
            labels = np.array([1 if positive else 0 for _, _, positive in points], np.int32)
            decoded, _ = segmenter.predict(embedding, xy, labels)
            mask |= np.asarray(decoded, bool)
        for brush in page.masks.get(obj_id, []):
            mask |= resize_nearest(brush, h, w)
        if mask.any():
            masks[obj_id] = mask
    return frame, masks


def preview_label(data: dict[str, Any], videos: int) -> str:
    """``segment_XXX`` for a segment (task data ``segment_index``, 0 when absent), ``pair`` for two videos."""
    if videos > 1:
        return "pair"
    index = data.get("segment_index")
    index = index if isinstance(index, int) and not isinstance(index, bool) and index >= 0 else 0
    return f"segment_{index:03d}"


def write_first_frame_preview(
    settings: Any,
    connection: Any,
    config_xml: str,
    task: dict[str, Any],
    annotation: dict[str, Any],
    fetcher: Any,
    segmenter: Any,
) -> str | None:
    """Render the first-frame preview of ``annotation`` on ``task`` and set it as the task's
    ``preview`` (module docstring); returns its local-files URL, or None when nothing was set.
    ``connection`` (Redis, or None) holds the per-task lock of the task-data update. Never
    raises: every error is logged."""
    task_id = task.get("id") if isinstance(task, dict) else None
    try:
        return _write(settings, connection, config_xml, task, annotation, fetcher, segmenter)
    except MLBackendError as exc:
        log.warning("task %s: no first-frame preview: %s", task_id, exc)
    except Exception:
        log.exception("task %s: the first-frame preview failed", task_id)
    return None


def _write(
    settings: Any,
    connection: Any,
    config_xml: str,
    task: dict[str, Any],
    annotation: dict[str, Any],
    fetcher: Any,
    segmenter: Any,
) -> str | None:

    task_id = task.get("id")
    data = task.get("data")
    if not isinstance(data, dict):
        raise PromptError("the task has no data object")
    pages = page_zero_prompts(config_xml, data, annotation)
    if not any(page.objects for page in pages):
        log.info("task %s: no points or masks on the first frame: no first-frame preview", task_id)
        return None
    folder = task_folder(settings, data.get(pages[0].info.data_key) or [])
    if folder is None:
        log.info(
            "task %s: frames are not local-files files under LOCAL_FILES_DOCUMENT_ROOT: no first-frame preview", task_id
        )
        return None

    single = len(pages) == 1
    rows = []
    for page in pages:
        frame, masks = first_frame_masks(settings, page, fetcher, segmenter)
        rows.append(tile(frame, masks, caption="first frame" if single else f"{page.info.key} first frame"))
    image = png(rows[0] if single else stack(rows))

    label = preview_label(data, len(pages))
    review = folder / "review"
    target = review / f"{label}_first-{fingerprint(annotation)}.png"
    url = local_url(settings.local_files_root, target)
    written: list[Path] = []

    def change(current: dict[str, Any]) -> dict[str, Any] | None:
        shown = current.get("preview") or ""
        if shown and not is_first_frame_preview(shown):
            log.info("task %s shows a job's preview; the first-frame preview does not replace it", task_id)
            return None
        atomic_write_bytes(target, image)
        written.append(target)
        return {"preview": url}

    update_task_data(settings, connection, task_id, change, seconds=min(30.0, settings.label_studio_retry_seconds))
    if not written:
        return None
    for old in review.glob(f"{label}_first-*.png"):
        if old != target:
            old.unlink(missing_ok=True)
    log.info("task %s: first-frame preview %s", task_id, target.name)
    return url


class FirstFramePreviews:
    """The app's first-frame previews: :meth:`submit` a webhook, the render runs on one background
    thread with ``predictor``'s fetcher and segmenter (an
    :class:`~ml_backend.server.interactive.InteractivePredictor`). ``connection`` is the job queue's
    Redis (the per-task lock shared with the worker), or None."""

    def __init__(self, settings: Any, predictor: Any, connection: Any = None) -> None:
        self.settings = settings
        self.predictor = predictor
        self.connection = connection
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="first-frame")
        self._lock = threading.Lock()
        self._pending: dict[int, dict[str, Any]] = {}  # task id → newest webhook not rendered yet
        self._futures: list[Future] = []

    def submit(self, hook: Webhook | dict[str, Any]) -> bool:
        """Queue the render for a webhook (:class:`~ml_backend.labelstudio.webhook.Webhook`, or a
        body whose ids are checked); True when queued. Other actions, cancelled (skipped) annotations and a
        backend without ``LABEL_STUDIO_API_KEY`` queue nothing. Never raises."""
        try:
            hook = hook if isinstance(hook, Webhook) else Webhook.of(hook)
            if hook.action not in ACTIONS:
                return False
            annotation = hook.annotation
            if annotation is None or annotation.get("was_cancelled"):
                return False
            if not self.settings.label_studio_api_key:
                log.info("no LABEL_STUDIO_API_KEY: no first-frame preview")
                return False
            task_id = hook.task_id
            if not isinstance(task_id, int):
                log.info("a %s webhook without a task id: no first-frame preview", hook.action)
                return False
            with self._lock:
                fresh = task_id not in self._pending
                self._pending[task_id] = hook
                if fresh:
                    self._futures = [f for f in self._futures if not f.done()]
                    self._futures.append(self._executor.submit(self._run, task_id))
            return True
        except Exception:
            log.exception("could not queue a first-frame preview")
            return False

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until every queued render is done; True if they are (tests, shutdown)."""
        with self._lock:
            futures = list(self._futures)
        _, not_done = wait_futures(futures, timeout=timeout)
        return not not_done

    def _run(self, task_id: int) -> str | None:
        with self._lock:
            hook = self._pending.pop(task_id, None)
        if hook is None:
            return None
        try:
            return self.render(hook, task_id)
        except MLBackendError as exc:
            log.warning("task %s: no first-frame preview: %s", task_id, exc)
        except Exception:
            log.exception("task %s: the first-frame preview failed", task_id)
        return None

    def render(self, hook: Webhook, task_id: int) -> str | None:
        """Gather config, task and annotation (from the payload, else with the SDK), then
        :func:`write_first_frame_preview` for a single-video task."""

        fetcher = getattr(self.predictor, "fetcher", None)
        if fetcher is None:
            log.info("the backend has no file fetcher: no first-frame preview")
            return None
        seconds = min(10.0, self.settings.label_studio_retry_seconds)

        def get(kind: str, ident: Any) -> dict[str, Any]:
            return labelstudio.as_dict(labelstudio.get(self.settings, kind, ident, seconds=seconds))

        project = hook.project
        config_xml = project.get("label_config") if isinstance(project, dict) else None
        if not isinstance(config_xml, str) or not config_xml.strip():
            project_id = hook.project_id
            if project_id is None:
                log.info("task %s: the webhook names no project: no first-frame preview", task_id)
                return None
            config_xml = get("projects", project_id).get("label_config") or ""

        config = parse_label_config(config_xml)
        used = {img for img, _ in config.keypoints.values()} | {img for img, _ in config.brushes.values()}
        lists = [name for name, image in config.images.items() if name in used and image.is_list]
        if len(lists) != 1:
            log.debug("task %s is not a single-video task: no first-frame preview", task_id)
            return None

        task = hook.task
        if not (isinstance(task, dict) and task.get("id") == task_id and isinstance(task.get("data"), dict)):
            task = get("tasks", task_id)
        annotation = hook.annotation
        if not isinstance(annotation.get("result"), list) and annotation.get("id") is not None:
            annotation = get("annotations", annotation["id"])
        return write_first_frame_preview(
            self.settings, self.connection, config_xml, task, annotation, fetcher, self.predictor.segmenter
        )

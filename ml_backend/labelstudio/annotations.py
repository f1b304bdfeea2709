"""From a Label Studio task and annotation to a propagation job, and from its masks back to a
prediction on the task.

Conventions (the labeling configs in ``label_config/`` follow them):

- Every ``<Image valueList="$framesN">`` that a ``KeyPointLabels`` or ``BrushLabels`` tag points
  at shows annotation frames of one video, in config order video 1, video 2. Its task data sits
  beside the list: ``$framesN`` → ``videoN`` (the original video, a Label Studio URL) and
  ``frame_indicesN`` (the 0-based frame index in that video of each image), e.g. ``frames1`` /
  ``video1`` / ``frame_indices1``, or ``frames`` / ``video`` / ``frame_indices``.
- One label per object: ``"Object K"`` (any text ending in the number K) is object ``K``; the
  same label in both videos is the same object. Optional per-object controls ``objK_name``
  (TextArea), ``objK_number`` (Number), ``objK_presence`` (Choices ``in_video1``/``in_video2``),
  ``objK_deformability`` (Choices ``rigid``/``deformable``); per-task ``scene_type`` and
  ``comments`` (TextArea).
- Two videos make a SceneDiff pair; one video is a green-screen segment, whose task data also
  holds ``segment_index`` and ``segment_frames`` (frame count of every segment, in order) and
  optionally ``start_frame``, ``take`` (the source video's name: it keys the export folder,
  :func:`ml_backend.worker.jobs.job_out_dir`) and ``fps`` (the source's frame rate). A segment's
  ``frame_indices`` count within the segment (its frame 0 is original frame ``first_frame``).

Prompts: a keypoint on page ``i`` becomes a point on frame ``frame_indicesN[i]``, its percent
coordinates scaled to the video's pixels; an accepted brush region becomes a mask prompt there.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ml_backend.exceptions import FetchError, JobError, PromptError, VideoError
from ml_backend.exporters.masks import resize_nearest, rle_decode
from ml_backend.labelstudio import client as labelstudio
from ml_backend.labelstudio.backoff import is_transient, with_backoff
from ml_backend.labelstudio.brush import mask_to_result
from ml_backend.labelstudio.config import parse_label_config
from ml_backend.labelstudio.fetch import default_fetcher
from ml_backend.labelstudio.regions import (
    Click,
    VideoImage,
    _text,
    label_for,
    object_attribute,
    prompt_region,
    video_images,
)
from ml_backend.labelstudio.signs import RedisSigns, apply_signs
from ml_backend.labelstudio.taskdata import shown_ref
from ml_backend.video.frames import open_frames
from ml_backend.video.prompts import (
    GreenScreenSpec,
    ObjectSpec,
    PromptSpec,
    merge_same_frame,
    parse_exports,
    parse_greenscreen,
)
from ml_backend.video.propagation import FramePrompt

log = logging.getLogger(__name__)


@dataclass
class TaskJob:
    spec: PromptSpec
    videos: dict[str, str]
    images: dict[str, VideoImage]
    signs: dict[str, Any] = field(default_factory=dict)  # SignReport.as_dict() of the keypoints
    annotation_fp: str = ""  # fingerprint of the annotation as Label Studio gave it (jobs.fingerprint)

    def prediction(self, result: Any, version: str) -> list[dict[str, Any]]:
        """Brush regions of the propagated masks on every annotation frame of the task."""

        regions = []
        for key, info in self.images.items():
            store = result.masks.get(key, {})
            for page, frame in enumerate(info.frame_indices):
                h, w = info.page_sizes.get(page) or info.size
                for obj_id, per_frame in store.items():
                    rle = per_frame.get(str(frame))
                    if rle is None:
                        continue
                    mask = resize_nearest(rle_decode(rle), h, w)
                    label = label_for(info.labels, obj_id)
                    if label is None:
                        continue
                    regions.append(
                        mask_to_result(mask, from_name=info.brush, to_name=info.image, label=label, item_index=page)
                    )
        return regions


def build_task_job(
    config_xml: str, task: dict[str, Any], annotation: dict[str, Any], fetch_video: Any, *, background=(0, 255, 0)
) -> TaskJob:
    """Turn ``task`` + ``annotation`` into a :class:`TaskJob`.

    Every region and the task data are checked first (one readable :class:`PromptError`, no
    retry); only then is ``fetch_video(ref) -> local path`` asked for the videos (downloading).
    """

    data = task.get("data")
    if not isinstance(data, dict):
        raise PromptError("the task has no data object")
    images = video_images(config_xml, data)
    regions = _read_regions(config_xml, annotation, images)
    gs = None
    if len(images) == 1:
        gs = parse_greenscreen(
            {k: data.get(k) for k in ("segment_index", "segment_frames", "start_frame", "take", "fps") if k in data}
            | {"background": list(background)},
            where="task data ",
        )
    if not regions.clicks:
        raise PromptError("the annotation has no keypoints or masks: nothing to propagate")
    videos = _fetch_videos(images, fetch_video)
    objects = _objects(_frame_prompts(regions.clicks), regions.attrs, images)
    if len(images) == 2:
        spec = PromptSpec("scenediff", objects, scene_type=regions.scene_type, comments=regions.comments)
    else:
        if gs is None or not gs.segment_frames:  # one whole video, no segment list
            with open_frames(videos["video1"], cache_frames=2) as source:
                start = gs.start_frame if gs else 0
                gs = GreenScreenSpec(
                    0, [source.num_frames], start, tuple(background), gs.take if gs else "", gs.fps if gs else 0.0
                )
        spec = PromptSpec("greenscreen", objects, comments=regions.comments, greenscreen=gs)
    return TaskJob(spec, videos, {info.key: info for info in images})


@dataclass
class _Regions:
    """What an annotation's regions say, checked: the prompts and the objects' attributes."""

    clicks: list[Click] = field(default_factory=list)
    attrs: dict[int, dict[str, Any]] = field(default_factory=dict)
    scene_type: str = ""
    comments: dict[str, Any] = field(default_factory=dict)


def _read_regions(config_xml: str, annotation: dict[str, Any], images: list[VideoImage]) -> _Regions:
    by_image = {info.image: info for info in images}
    config = parse_label_config(config_xml)
    results = annotation.get("result")
    if results is None:
        results = []
    if not isinstance(results, list):
        raise PromptError("the annotation's 'result' must be a list of regions")
    out = _Regions()
    for i, region in enumerate(results):
        if not isinstance(region, dict):
            raise PromptError(f"annotation region {i} must be an object, got {type(region).__name__}")
        rtype, value = region.get("type"), region.get("value")
        from_name = region.get("from_name")
        where = f"annotation region {i} ({str(from_name)[:40]})"
        if not isinstance(from_name, str):
            raise PromptError(f"annotation region {i} has no 'from_name'")
        if rtype in ("keypointlabels", "brushlabels") and region.get("to_name") in by_image:
            click = prompt_region(region, by_image[region["to_name"]], config, where)
            if click is not None:
                out.clicks.append(click)
            continue
        if not isinstance(value, dict):
            continue
        match = re.fullmatch(r"obj(\d+)_(name|number|presence|deformability)", from_name)
        if match:
            object_attribute(out.attrs, int(match.group(1)), match.group(2), value, where)
        elif from_name == "scene_type":
            out.scene_type = _text(value)
        elif from_name == "comments":
            text = _text(value)
            if text:
                out.comments = {"text": text}
    return out


def _fetch_videos(images: list[VideoImage], fetch_video: Any) -> dict[str, str]:
    """Each image's video as a local path; its size noted, its frame indices checked."""
    videos: dict[str, str] = {}
    for info in images:
        path = str(fetch_video(info.video_ref))
        try:
            with open_frames(path, cache_frames=2) as source:
                info.size = (source.height, source.width)
                num_frames = source.num_frames
        except VideoError as exc:  # name the video as the task gives it, never the server's path
            why = str(exc).replace(f"video {path}", "").replace(path, "").strip() or "cannot be opened"
            raise VideoError(f"{info.key} {shown_ref(info.video_ref)} {why}") from None
        bad = [i for i in info.frame_indices if i >= num_frames]
        if bad:
            raise PromptError(
                f"{info.key}: frame index {bad[0]} is beyond the last frame {num_frames - 1} of {info.video_ref}"
            )
        videos[info.key] = path
    return videos


def _frame_prompts(clicks: list[Click]) -> dict[int, dict[str, list[FramePrompt]]]:
    """The clicks as SAM 2 prompts in video pixels: ``{obj_id: {video: [FramePrompt, ...]}}``."""
    prompts: dict[int, dict[str, list[FramePrompt]]] = {}
    for click in clicks:
        info = click.info
        frame = info.frame_indices[click.page]
        h, w = info.size
        if click.point is not None:
            point = np.array([[click.point[0] / 100 * w, click.point[1] / 100 * h]], np.float32)
            prompt = FramePrompt(frame, point, np.array([1 if click.positive else 0], np.int32))
        else:
            prompt = FramePrompt(frame, mask=resize_nearest(click.mask, h, w))
        prompts.setdefault(click.obj_id, {}).setdefault(info.key, []).append(prompt)
    return prompts


def _objects(
    prompts: dict[int, dict[str, list[FramePrompt]]], attrs: dict[int, dict[str, Any]], images: list[VideoImage]
) -> list[ObjectSpec]:
    """One :class:`ObjectSpec` per object with prompts or a presence; presence and prompts agree."""
    objects = []
    for obj_id in sorted(set(prompts) | {k for k, a in attrs.items() if a.get("presence")}):
        a = attrs.get(obj_id, {})
        per_video = {v: merge_same_frame(ps) for v, ps in prompts.get(obj_id, {}).items()}
        presence = a.get("presence")
        in_video = {
            info.key: (f"in_{info.key}" in presence) if presence else bool(per_video.get(info.key)) for info in images
        }
        missing = [v for v, present in in_video.items() if present and not per_video.get(v)]
        if missing:
            raise PromptError(f"object {obj_id} is marked present in {missing[0]} but has no points or mask there")
        stray = [v for v, present in in_video.items() if not present and per_video.get(v)]
        if stray:
            raise PromptError(
                f"object {obj_id} has points or a mask in {stray[0]} but is not marked present there: "
                f"remove them, or tick in_{stray[0]} in obj{obj_id}_presence"
            )
        objects.append(
            ObjectSpec(
                id=obj_id,
                name=a.get("name") or f"object{obj_id}",
                number=a.get("number", 1),
                in_video=in_video,
                deformability=a.get("deformability", "rigid"),
                prompts=per_video,
            )
        )
    if not objects:
        raise PromptError("the annotation has no keypoints or masks: nothing to propagate")
    return objects


def load_task_job(
    settings: Any, project_id: int, task_id: int, annotation_id: int, *, connection: Any = None
) -> TaskJob:
    """Fetch project, task and annotation with the SDK and build the job.

    Keypoints that Label Studio saved without ``is_positive`` (every earlier one after an
    Update) take the sign recorded in Redis (``connection``) when the backend first saw them
    (:mod:`ml_backend.labelstudio.signs`); ``TaskJob.signs`` says how many were given, recorded or unknown.
    Label Studio unreachable or answering 5xx is retried with backoff for
    ``settings.label_studio_retry_seconds`` (a restart); a 4xx is an input error.
    """
    from label_studio_sdk.core.api_error import ApiError

    what = f"Label Studio at {settings.label_studio_url}"

    def get(kind: str, ident: int) -> Any:
        try:
            return labelstudio.get(settings, kind, ident)
        except ApiError as exc:
            if exc.status_code in (401, 403):
                raise JobError(f"{what} refused the token ({exc.status_code}): check LABEL_STUDIO_API_KEY") from None
            raise JobError(f"{what} has no {kind[:-1]} {ident} ({exc.status_code})") from None

    project = get("projects", project_id)
    task = get("tasks", task_id)
    annotation = get("annotations", annotation_id)
    fetcher = default_fetcher(settings, max_bytes=64 * 1024**3)  # videos may be large

    def fetch_video(ref: str) -> str:
        try:
            return str(with_backoff(lambda: fetcher.path(ref), seconds=settings.label_studio_retry_seconds, what=what))
        except FetchError as exc:
            if is_transient(exc):
                raise
            why = str(exc).replace(repr(ref), "").replace(ref, "").strip(" :") or "cannot be fetched"
            raise JobError(f"video {shown_ref(ref)}: {why}") from None

    task_dict = task.dict() if hasattr(task, "dict") else dict(task)
    ann_dict = annotation.dict() if hasattr(annotation, "dict") else dict(annotation)

    loaded_fp = fingerprint(ann_dict)  # before the recorded signs are filled in
    store = RedisSigns(connection) if connection is not None else None
    ann_dict["result"], report = apply_signs(
        store, project_id, task_id, ann_dict.get("result"), where=f"annotation {annotation_id}"
    )
    job = build_task_job(project.label_config, task_dict, ann_dict, fetch_video, background=settings.background_color)
    job.signs = report.as_dict()
    job.annotation_fp = loaded_fp
    job.spec.exports = [*job.spec.exports, *project_exports(settings, project_id)]
    return job


def project_exports(settings: Any, project_id: int) -> list[str]:
    """The export formats a project asks for: ``"exports"`` (a list, or a comma-separated string)
    in the **extra params** of the project's ML backend connection in Label Studio (Settings →
    Model → Extra params, e.g. ``{"exports": ["davis", "mots"]}``)."""
    from label_studio_sdk.core.api_error import ApiError

    def call() -> Any:
        return labelstudio.client(settings.label_studio_url, settings.label_studio_api_key).ml.list(project=project_id)

    try:
        backends = with_backoff(call, seconds=settings.label_studio_retry_seconds, what="Label Studio")
    except ApiError as exc:  # e.g. no permission to list ML backends: the project asks for nothing
        log.warning("cannot read project %s's ML backends (%s); no extra exports", project_id, exc.status_code)
        return []
    names: list[str] = []
    for backend in backends:
        extra = getattr(backend, "extra_params", None)
        if isinstance(extra, dict) and extra.get("exports"):
            where = f"project {project_id}'s ML backend extra params 'exports'"
            names.extend(n for n in parse_exports(extra["exports"], where) if n not in names)
    return names


def fingerprint(annotation: dict[str, Any]) -> str:
    """A short hash of an annotation's result: part of its job id and of its preview's file name."""
    body = json.dumps(annotation.get("result") or [], sort_keys=True, default=str)
    return hashlib.sha1(body.encode()).hexdigest()[:10]

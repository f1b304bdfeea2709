"""What an annotation's regions mean: the images that carry prompts, clicks and masks, object attributes."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ml_backend.exceptions import PromptError
from ml_backend.labelstudio.brush import result_to_mask
from ml_backend.labelstudio.config import parse_label_config
from ml_backend.video.prompts import DEFORMABILITIES


@dataclass
class VideoImage:
    """One ``<Image valueList>`` showing annotation frames of one video."""

    key: str  # video1 / video2
    image: str  # Image tag name
    brush: str  # BrushLabels tag on it
    labels: tuple[str, ...]
    frame_indices: list[int]
    video_ref: str
    data_key: str = "frames"  # task data key of the image list
    indices_key: str = "frame_indices"  # task data key of the frame-index list
    size: tuple[int, int] = (0, 0)  # video (height, width)
    page_sizes: dict[int, tuple[int, int]] = field(default_factory=dict)  # item_index -> (h, w)


def object_number(label: str) -> int | None:
    match = re.search(r"(\d+)\s*$", label)
    return int(match.group(1)) if match else None


def label_for(labels: tuple[str, ...], obj_id: int) -> str | None:
    return next((label for label in labels if object_number(label) == obj_id), None)


def video_images(config_xml: str, data: dict[str, Any]) -> list[VideoImage]:
    config = parse_label_config(config_xml)
    used = {img for img, _ in config.keypoints.values()} | {img for img, _ in config.brushes.values()}
    out = []
    for name, image in config.images.items():
        if name not in used or not image.is_list:
            continue
        suffix = image.data_key[len("frames") :] if image.data_key.startswith("frames") else image.data_key
        video_key, indices_key = f"video{suffix}", f"frame_indices{suffix}"
        frames = data.get(image.data_key)
        if not isinstance(frames, list):
            raise PromptError(f"task data '{image.data_key}' must be the list of annotation frames")
        video_ref = data.get(video_key)
        if not isinstance(video_ref, str) or not video_ref:
            raise PromptError(f"task data has no '{video_key}' (the original video of '{image.data_key}')")
        indices = data.get(indices_key)
        if (
            not isinstance(indices, list)
            or len(indices) != len(frames)
            or not all(isinstance(i, int) and i >= 0 for i in indices)
        ):
            raise PromptError(
                f"task data '{indices_key}' must give the frame index of each of the {len(frames)} images"
            )
        brushes = [b for b, (img, _) in config.brushes.items() if img == name]
        if not brushes:
            raise PromptError(f"the config has no BrushLabels on '{name}'")
        labels = config.brushes[brushes[0]][1]
        out.append(
            VideoImage(
                f"video{len(out) + 1}", name, brushes[0], labels, list(indices), video_ref, image.data_key, indices_key
            )
        )
    if not out:
        raise PromptError("the config has no <Image valueList> with keypoints or brushes: nothing to propagate")
    if len(out) > 2:
        raise PromptError("at most two videos per task (a SceneDiff pair)")
    return out


def _text(value: dict[str, Any]) -> str:
    text = value.get("text") or []
    return str(text[0] if isinstance(text, list) and text else text or "").strip()


def _percent(value: Any, name: str, where: str) -> float:
    number = value.get(name) if isinstance(value, dict) else None
    if isinstance(number, bool) or not isinstance(number, (int, float)) or not math.isfinite(number):
        raise PromptError(f"{where}: '{name}' must be a number in percent (0–100), got {number!r:.40}")
    if not 0 <= number <= 100:
        raise PromptError(f"{where}: '{name}' = {number:g} % lies outside the image (0–100 %)")
    return float(number)


@dataclass
class Click:
    """A validated prompt region, before the video is known: a point in percent or a mask."""

    obj_id: int
    info: VideoImage
    page: int
    point: tuple[float, float] | None = None  # percent of the page (x, y)
    positive: bool = True
    mask: np.ndarray | None = None


def prompt_region(region: dict[str, Any], info: VideoImage, config: Any, where: str) -> Click | None:
    """Validate one keypoint or brush region; None for regions that are not prompts."""

    rtype = region.get("type")
    value = region.get("value")
    if not isinstance(value, dict):
        raise PromptError(f"{where}: 'value' must be an object")
    labels = value.get(rtype)
    if not isinstance(labels, list) or not labels or not isinstance(labels[0], str):
        raise PromptError(f"{where}: '{rtype}' must name the object's label, e.g. ['Object 1']")
    obj_id = object_number(labels[0])
    if obj_id is None or obj_id < 1:
        raise PromptError(
            f"{where}: label {labels[0]!r:.60} does not end in an object number (one label per object: 'Object 1', ...)"
        )
    page = region.get("item_index")
    page = 0 if page is None else page
    if isinstance(page, bool) or not isinstance(page, int):
        raise PromptError(f"{where}: 'item_index' must be a page number (0-based integer), got {page!r:.40}")
    if not 0 <= page < len(info.frame_indices):
        raise PromptError(f"{where} is on page {page} of '{info.image}', which has {len(info.frame_indices)} pages")
    for key in ("original_width", "original_height"):
        size = region.get(key)
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or not 0 < size <= 100_000):
            raise PromptError(f"{where}: '{key}' must be a positive number of pixels, got {size!r:.40}")
    if region.get("original_height") and region.get("original_width"):
        info.page_sizes[page] = (region["original_height"], region["original_width"])
    if rtype == "keypointlabels":
        if region.get("from_name") not in config.keypoints:
            return None
        x, y = _percent(value, "x", where), _percent(value, "y", where)
        # no is_positive: a plain keypoint (load_task_job filled in the recorded signs first)
        return Click(obj_id, info, page, point=(x, y), positive=region.get("is_positive") is not False)
    if not (region.get("original_height") and region.get("original_width")):
        raise PromptError(f"{where}: a brush region needs 'original_width' and 'original_height'")
    try:
        mask = result_to_mask(region)
    except Exception:  # the SDK's decoder raises anything on garbage
        raise PromptError(f"{where}: the brush 'rle' is not a Label Studio brush mask of its image size") from None
    return Click(obj_id, info, page, mask=mask) if mask.any() else None


def object_attribute(
    attrs: dict[int, dict[str, Any]], k: int, field_name: str, value: dict[str, Any], where: str
) -> None:
    if field_name == "name":
        attrs.setdefault(k, {})["name"] = _text(value)
    elif field_name == "number":
        number = value.get("number")
        if number in (None, ""):
            number = 1
        if isinstance(number, bool) or not isinstance(number, (int, float)) or number != int(number) or number < 1:
            raise PromptError(f"{where}: obj{k}_number must be a positive whole number, got {number!r:.40}")
        attrs.setdefault(k, {})["number"] = int(number)
    elif field_name == "presence":
        choices = value.get("choices") or []
        if not isinstance(choices, list) or not all(isinstance(c, str) for c in choices):
            raise PromptError(f"{where}: obj{k}_presence must be a list of choices")
        attrs.setdefault(k, {})["presence"] = set(choices)
    else:
        choice = (value.get("choices") or ["rigid"])[0]
        if choice not in DEFORMABILITIES:
            raise PromptError(f"{where}: obj{k}_deformability must be 'rigid' or 'deformable', got {choice!r:.40}")
        attrs.setdefault(k, {})["deformability"] = choice

"""Reading the keypoint ``context`` Label Studio sends with an interactive ``/predict``.

Label Studio's smart keypoints arrive as ``params.context.result``: a list of regions shaped like
``{id, from_name, to_name, type: "keypointlabels", original_width, original_height, item_index,
is_positive, value: {x, y, width, keypointlabels: [label]}}`` with ``x``/``y`` in **percent** of
the image (0–100, origin top-left) and ``item_index`` the **0-based** page of a multi-image list
(absent for a single image). The newest click is the last element. The frontend groups smart
keypoints by type, label and ``to_name`` — not by page — so the context may hold points of other
pages; :func:`parse_clicks` keeps those that belong to the newest click's image.

The context may also hold no keypoint at all: Label Studio sends ``result: []`` when the last
smart keypoint of a label is deleted, and other regions of a "smart" control (a ``number``,
``choices`` or ``textarea`` result, a brush stroke) when they are edited. That is nothing to
segment (:class:`NoKeypoints`), not a malformed call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ml_backend.exceptions import BadPayload, BadPoint


class NoKeypoints(BadPayload):
    """The context is well formed but holds no keypoint: nothing to segment (answered with an
    empty suggestion, not an error, when it comes from Label Studio)."""


@dataclass(frozen=True)
class Click:
    """One keypoint.

    ``x``/``y`` are percent of the image width/height (0–100, origin top-left); ``positive`` is
    False for Alt-clicks (negative points); ``item_index`` is the 0-based page of a multi-image
    list, ``None`` for a single image.
    """

    id: str
    from_name: str
    to_name: str
    label: str
    x: float
    y: float
    positive: bool
    item_index: int | None

    def pixel(self, width: int, height: int) -> tuple[float, float]:
        """The point in pixel coordinates ``(x, y)`` of an image of ``width`` × ``height``."""
        return self.x / 100.0 * width, self.y / 100.0 * height


def _percent(value: dict[str, Any], key: str, where: str) -> float:
    """``value[key]`` as a float; :class:`BadPayload` unless it is a number (NaN/inf pass, then
    fail the 0–100 check)."""
    number = value.get(key)
    if isinstance(number, bool) or not isinstance(number, (int, float, str)):
        raise BadPayload(f"{where}.value needs numeric x and y (percent, 0–100), got {key}={_brief(number)}")
    try:
        return float(number)
    except (ValueError, OverflowError):
        raise BadPayload(f"{where}.value needs numeric x and y (percent, 0–100), got {key}={_brief(number)}") from None


def _brief(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut short, for an error message."""
    text = repr(value) if not isinstance(value, (dict, list)) else type(value).__name__
    return text if len(text) <= limit else text[:limit] + "…"


def _click(region: Any, position: int) -> Click:
    where = f"context.result[{position}]"
    if not isinstance(region, dict):
        raise BadPayload(f"{where} must be an object, got {type(region).__name__}")
    if region.get("type") != "keypointlabels":
        raise BadPayload(f"{where} has type {_brief(region.get('type'))}; only keypointlabels clicks are understood")
    value = region.get("value")
    if not isinstance(value, dict):
        raise BadPayload(f"{where}.value must be an object with x, y and keypointlabels")
    labels = value.get("keypointlabels")
    if not isinstance(labels, list) or not labels or not isinstance(labels[0], str):
        raise BadPayload(f"{where}.value.keypointlabels must name the label of the object clicked")
    x, y = _percent(value, "x", where), _percent(value, "y", where)
    if not (0.0 <= x <= 100.0 and 0.0 <= y <= 100.0):
        raise BadPoint(f"{where} at x={x:g}%, y={y:g}% lies outside the image (0–100 %)")
    for key in ("from_name", "to_name"):
        if not isinstance(region.get(key), str) or not region[key]:
            raise BadPayload(f"{where}.{key} is missing")
    item_index = region.get("item_index")
    if item_index is not None and (not isinstance(item_index, int) or isinstance(item_index, bool)):
        raise BadPayload(f"{where}.item_index must be an integer (the 0-based page), got {_brief(item_index)}")
    return Click(
        id=str(region.get("id") or f"anon-{position}"),
        from_name=region["from_name"],
        to_name=region["to_name"],
        label=labels[0],
        x=x,
        y=y,
        positive=region.get("is_positive", True) is not False,
        item_index=item_index,
    )


def parse_clicks(context: Any) -> tuple[Click, list[Click]]:
    """``(newest, group)``: the newest click and every click of the same label on the same image.

    ``group`` is in click order and ends with ``newest``; results of other types are left out.
    Raises :class:`NoKeypoints` when the context holds no keypoint, :class:`BadPayload` for a
    malformed one and :class:`BadPoint` for a point outside the image.
    """
    if not isinstance(context, dict):
        raise BadPayload("params.context must be an object with a 'result' list of keypoints")
    result = context.get("result")
    if result is None:
        raise BadPayload("params.context has no 'result': nothing was clicked")
    if not isinstance(result, list):
        raise BadPayload("params.context.result must be a list of keypoint regions")
    for i, region in enumerate(result):
        if not isinstance(region, dict):
            raise BadPayload(f"context.result[{i}] must be an object, got {type(region).__name__}")
        if not isinstance(region.get("type"), str):
            raise BadPayload(f"context.result[{i}] has no 'type' (a Label Studio result type, e.g. keypointlabels)")
    clicks = [_click(region, i) for i, region in enumerate(result) if region["type"] == "keypointlabels"]
    if not clicks:
        raise NoKeypoints("params.context.result holds no keypoint: click a point with a smart keypoint label")
    newest = clicks[-1]
    group = [
        c
        for c in clicks
        if c.to_name == newest.to_name and c.label == newest.label and c.item_index == newest.item_index
    ]
    return newest, group

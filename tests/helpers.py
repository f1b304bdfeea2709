"""Builders for Label Studio-shaped payloads used across tests."""

from __future__ import annotations

import itertools
from typing import Any

CONFIG = """<View>
  <Image name="image1" valueList="$frames1"/>
  <KeyPointLabels name="kp1" toName="image1" smart="true">
    <Label value="Object 1"/><Label value="Object 2"/>
  </KeyPointLabels>
  <BrushLabels name="brush1" toName="image1">
    <Label value="Object 1"/><Label value="Object 2"/>
  </BrushLabels>
  <Image name="single" value="$still"/>
  <KeyPointLabels name="kp_single" toName="single" smart="true"><Label value="Object 1"/></KeyPointLabels>
  <BrushLabels name="brush_single" toName="single"><Label value="Object 1"/></BrushLabels>
</View>"""

_ids = itertools.count()


def keypoint(
    x: float,
    y: float,
    *,
    positive: bool = True,
    item_index: int | None = 0,
    label: str = "Object 1",
    from_name: str = "kp1",
    to_name: str = "image1",
    width: int = 160,
    height: int = 120,
) -> dict[str, Any]:
    region: dict[str, Any] = {
        "id": f"kp{next(_ids)}",
        "from_name": from_name,
        "to_name": to_name,
        "type": "keypointlabels",
        "original_width": width,
        "original_height": height,
        "image_rotation": 0,
        "origin": "manual",
        "is_positive": positive,
        "value": {"x": x, "y": y, "width": 0.6, "keypointlabels": [label]},
    }
    if item_index is not None:
        region["item_index"] = item_index
    return region


def predict_payload(
    clicks: list[dict[str, Any]] | None,
    *,
    task_id: int = 1,
    frames: list[str] | None = None,
    login: str | None = None,
    config: str = CONFIG,
) -> dict[str, Any]:
    frames = frames if frames is not None else [f"/data/local-files/?d=pair/f{i}.png" for i in range(4)]
    context = None if clicks is None else {"result": clicks}
    return {
        "tasks": [
            {"id": task_id, "data": {"frames1": frames, "still": frames[0]}, "annotations": [], "predictions": []}
        ],
        "project": "1.1700000000",
        "label_config": config,
        "params": {"login": login, "password": None, "context": context},
    }

"""What the project's labeling config says, read with label-studio-sdk's ``LabelInterface``.

The backend never hard-codes tag names. From the config it learns:

- each ``KeyPointLabels`` control (where clicks come from) and the ``Image`` it points to;
- the ``BrushLabels`` control on the same image (where masks go), matched by ``toName``;
- whether that image is a single ``value="$key"`` or a multi-image ``valueList="$key"``, and
  the task-data key holding its URL(s).

A keypoint label maps to the brush label of the same name; one label per object keeps
objects apart.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from ml_backend.exceptions import BadPayload, InvalidLabelConfig, UnknownTag

#: Longest labeling config accepted, in characters (parsed configs are cached by their text).
MAX_LABEL_CONFIG_CHARS = 1024**2


@dataclass(frozen=True)
class ImageTarget:
    """An ``<Image>`` tag: ``name``, the task-data key it reads, and whether that is a list."""

    name: str
    data_key: str
    is_list: bool


@dataclass(frozen=True)
class BrushTarget:
    """Where a click's mask goes: the brush control, its image and the brush label."""

    brush: str
    image: ImageTarget
    label: str


@dataclass(frozen=True)
class LabelConfig:
    """The parts of a labeling config the backend uses. Build with :func:`parse_label_config`."""

    images: dict[str, ImageTarget]
    keypoints: dict[str, tuple[str, tuple[str, ...]]]  # control name → (image name, labels)
    brushes: dict[str, tuple[str, tuple[str, ...]]]  # control name → (image name, labels)

    def brush_for(self, keypoint_control: str, to_name: str, label: str) -> BrushTarget:
        """The brush target for a click of ``label`` from ``keypoint_control`` on ``to_name``."""
        if keypoint_control not in self.keypoints:
            raise UnknownTag(
                f"'{keypoint_control}' is not a KeyPointLabels tag of this project's config "
                f"(known: {', '.join(sorted(self.keypoints)) or 'none'})"
            )
        image_name, kp_labels = self.keypoints[keypoint_control]
        if to_name != image_name or to_name not in self.images:
            raise UnknownTag(f"'{keypoint_control}' points to '{image_name}', not to '{to_name}'")
        if label not in kp_labels:
            raise UnknownTag(f"'{label}' is not a label of '{keypoint_control}'")
        candidates = [name for name, (img, _) in self.brushes.items() if img == to_name]
        if not candidates:
            raise UnknownTag(f"the config has no BrushLabels tag with toName='{to_name}' for the masks")
        for name in candidates:
            if label in self.brushes[name][1]:
                return BrushTarget(name, self.images[to_name], label)
        raise UnknownTag(
            f"no BrushLabels tag on '{to_name}' has the label '{label}'; give the brush the same "
            "labels as the keypoints"
        )


def parse_label_config(xml: Any, *, what: str = "label_config") -> LabelConfig:
    """Parse a labeling config (cached by its text); ``what`` names the field in error messages.

    Raises :class:`BadPayload` when ``xml`` is missing or not a string, and
    :class:`InvalidLabelConfig` when Label Studio's parser rejects it.
    """
    if xml is None or (isinstance(xml, str) and not xml.strip()):
        raise BadPayload(f"the request carries no {what}: send the project's labeling config (XML)")
    if not isinstance(xml, str):
        raise BadPayload(f"{what} must be the project's labeling config as an XML string, got {type(xml).__name__}")
    if len(xml) > MAX_LABEL_CONFIG_CHARS:
        raise InvalidLabelConfig(
            f"{what} is {len(xml)} characters long, over the {MAX_LABEL_CONFIG_CHARS} a labeling config may have"
        )
    return _parse(xml, what)


@functools.lru_cache(maxsize=64)
def _parse(xml: str, what: str) -> LabelConfig:
    from label_studio_sdk.label_interface import LabelInterface

    try:
        interface = LabelInterface(xml)
    except Exception as exc:
        raise InvalidLabelConfig(f"{what} is not a valid Label Studio config: {exc}") from None
    images: dict[str, ImageTarget] = {}
    for obj in interface.objects:
        if obj.tag.lower() != "image":
            continue
        attrs = obj.attr or {}
        is_list = "valueList" in attrs
        raw = attrs.get("valueList") or attrs.get("value") or ""
        images[obj.name] = ImageTarget(obj.name, raw.lstrip("$"), is_list)
    keypoints: dict[str, tuple[str, tuple[str, ...]]] = {}
    brushes: dict[str, tuple[str, tuple[str, ...]]] = {}
    for control in interface.controls:
        to_names = control.to_name or []
        if not to_names:
            continue
        entry = (to_names[0], tuple(getattr(control, "labels", None) or ()))
        if control.tag == "KeyPointLabels":
            keypoints[control.name] = entry
        elif control.tag == "BrushLabels":
            brushes[control.name] = entry
    return LabelConfig(images=images, keypoints=keypoints, brushes=brushes)

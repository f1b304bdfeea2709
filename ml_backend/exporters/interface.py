"""The exporter interface: what a format implements to be fed from one propagation.

Each format is a class in its own module (``scenediff``, ``greenscreen``, ``review``, ``davis``,
``ytvis``, ``mots``), registered by name in :data:`REGISTRY`. :func:`ml_backend.video.pipeline.run_job`
drives every exporter of a job through the same lifecycle::

    exporter = exporter_class(name)(job)            # job: ExportJob (spec, staging folder, options)
    for each video of the job, in order:
        exporter.start_video(video, source)         # before the video's first frame
        exporter.add(video, frame_idx, masks, frame, scores)
                                                    # each propagated frame, in propagation order
                                                    # (forward from the first prompt, then back);
                                                    # only when ``per_frame`` is True
    exporter.finish(masks)                          # every video done
    ...the job publishes its staging folder...
    exporter.published()                            # work on the published files (an mp4)
    exporter.abort()                                # instead, when the job fails

Types: ``video`` is ``"video1"``/``"video2"``; ``source`` a :class:`~ml_backend.video.frames.FrameSource`;
``frame_idx`` 0-based in decode order; ``masks`` in :meth:`Exporter.add` ``{obj_id: H×W bool}``
(CPU numpy, every object of the video, empty masks included); ``frame`` ``H×W×3`` uint8 RGB, or
None unless ``needs_frames``; ``scores`` ``{obj_id: (object score, predicted IoU)}``, each a float
in 0–1 or None where the predictor keeps none (:func:`ml_backend.video.propagation.object_scores`). In :meth:`Exporter.finish`, ``masks[video][obj_id][str(frame)]``
is a COCO RLE ``{'size': [h, w], 'counts': str}`` for every non-empty mask, read lazily from the
job's spool on disk (so a long video never sits in memory).

Exporters write only under ``job.staging`` (:class:`~ml_backend.exporters.staging.Staging`): nothing is
visible until the job publishes, and a failed job leaves the previous export as it was.
``add`` runs on the job's export thread, never on the model's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ml_backend.exceptions import PromptError


@dataclass
class ExportJob:
    """What every exporter of one job shares."""

    spec: Any  # ml_backend.video.prompts.PromptSpec
    staging: Any  # ml_backend.exporters.staging.Staging
    image_size: int = 1024
    greenscreen_mp4: bool = False
    greenscreen_fps: float = 0.0  # GREENSCREEN_FPS: an override of a green-screen job's frame rate; 0 = none
    quality_rule: Any = None  # ml_backend.video.quality.QualityRule; None = the defaults

    def fps_of(self, source: Any) -> float:
        """Frames per second of a video of this job in every output (mp4, ``quality.json``, flag
        times): for a green-screen segment ``GREENSCREEN_FPS`` when set, else the source video's
        rate recorded at import (``greenscreen.fps``); else what the decoder reports (a folder
        of frames reports 30)."""
        gs = self.spec.greenscreen if self.spec.format == "greenscreen" else None
        if gs is not None and self.greenscreen_fps > 0:
            return float(self.greenscreen_fps)
        if gs is not None and gs.fps > 0:
            return float(gs.fps)
        return float(getattr(source, "fps", 0.0) or 30.0)

    def first_frame(self) -> int:
        """The original frame number of frame 0 of the job's video: a green-screen segment's
        offset in its take (:meth:`~ml_backend.video.prompts.GreenScreenSpec.first_frame`), else 0."""
        gs = self.spec.greenscreen
        return gs.first_frame() if gs is not None and self.spec.format == "greenscreen" else 0

    def video_label(self, video: str) -> str:
        """The name of ``video`` in file names: ``video1``/``video2``, or ``segment_XXX``."""
        gs = self.spec.greenscreen
        return f"segment_{gs.segment_index if gs else 0:03d}" if self.spec.format == "greenscreen" else video

    def categories(self) -> dict[str, int]:
        """Object name → category id (1-based, in order of first appearance)."""
        out: dict[str, int] = {}
        for obj in self.spec.objects:
            out.setdefault(obj.name, len(out) + 1)
        return out


class Exporter:
    """Base class: every hook does nothing. See the module docstring for the lifecycle."""

    #: The name in :data:`REGISTRY`, in ``"exports"`` lists and in ``--export``.
    name: ClassVar[str] = ""
    #: True: :meth:`add` receives every frame's masks.
    per_frame: ClassVar[bool] = False
    #: True: :meth:`add` also receives the RGB frame.
    needs_frames: ClassVar[bool] = False

    def __init__(self, job: ExportJob) -> None:
        self.job = job

    def start_video(self, video: str, source: Any) -> None:
        """Called before ``video``'s first frame."""

    def add(
        self,
        video: str,
        frame_idx: int,
        masks: dict[int, np.ndarray],
        frame: np.ndarray | None,
        scores: Mapping[int, tuple[float | None, float | None]] | None = None,
    ) -> None:
        """Called for each propagated frame when ``per_frame``."""

    def finish(self, masks: Mapping[str, Mapping[int, Mapping[str, dict[str, Any]]]]) -> None:
        """Called once every video is propagated: write what is left into the staging folder."""

    def published(self) -> list[Path]:
        """Called after the job's files are published; returns files it made from them."""
        return []

    def abort(self) -> None:
        """Called instead of :meth:`finish`/:meth:`published` when the job fails."""


def label_map(masks: Mapping[int, np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """One ``H×W`` uint8 image of object ids (0 = background). Where masks overlap, the
    **smaller object id wins**, in every format that needs one label per pixel (DAVIS, MOTS)."""
    out = np.zeros(shape, np.uint8)
    for obj_id in sorted(masks, reverse=True):
        out[masks[obj_id]] = obj_id
    return out


def check_ids_fit_a_byte(spec: Any, fmt: str) -> None:
    """Formats that store object ids as pixel values (DAVIS) hold ids 1–255 only."""
    big = [o.id for o in spec.objects if o.id > 255]
    if big:
        raise PromptError(f"the {fmt} export stores object ids as pixel values 1–255; object id {big[0]} is too big")

"""MOTS text export: ``mots/<video>.txt``, one line per object per frame, as the MOTS tools read it.

Each line is ``time_frame id class_id img_height img_width rle``: ``time_frame`` the 0-based
frame index (as in KITTI MOTS), ``id = class_id × 1000 + object id``, ``class_id`` the object's
category (1-based, one per distinct object name, in order of first appearance; the same ids as
the YouTube-VIS export), ``rle`` the COCO compressed RLE string of the mask. MOTS masks must not
overlap: where they do, the smaller object id keeps the pixel
(:func:`~ml_backend.exporters.interface.label_map`). Lines are sorted by frame, then id; frames where an
object is empty have no line for it. Object ids must be below 1000.

Reading it back::

    from pycocotools import mask as rletools
    for line in open("mots/video1.txt"):
        t, obj, cls, h, w, rle = line.split(" "); m = rletools.decode({"size": [int(h), int(w)], "counts": rle.strip().encode()})
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ml_backend.exceptions import PromptError
from ml_backend.exporters.interface import Exporter, ExportJob, label_map
from ml_backend.exporters.masks import rle_encode
from ml_backend.exporters.staging import MaskSpool, atomic_write


class MOTSExport(Exporter):
    """Overlaps are found frame by frame on the export thread (masks that overlap are made
    exclusive there and kept in a private spool); the text is written at the end, in frame
    order, from the job's spool for every frame without overlaps."""

    name = "mots"
    per_frame = True

    def __init__(self, job: ExportJob) -> None:
        super().__init__(job)
        big = [o.id for o in job.spec.objects if o.id >= 1000]
        if big:
            raise PromptError(f"the MOTS export encodes ids as class × 1000 + object id; object id {big[0]} is ≥ 1000")
        categories = job.categories()
        self.class_of = {o.id: categories[o.name] for o in job.spec.objects}
        self.sizes: dict[str, tuple[int, int, int]] = {}
        self.exclusive = MaskSpool(job.staging.private("mots.spool"))  # overlapping frames only
        self.overlapping: set[tuple[str, int]] = set()

    def start_video(self, video: str, source: Any) -> None:
        self.sizes[video] = (source.num_frames, source.height, source.width)

    def add(
        self,
        video: str,
        frame_idx: int,
        masks: dict[int, np.ndarray],
        frame: np.ndarray | None,
        scores: Any = None,
    ) -> None:
        present = {obj: mask for obj, mask in masks.items() if mask.any()}
        if len(present) < 2:
            return
        union = np.logical_or.reduce(list(present.values()))
        if int(union.sum()) == sum(int(mask.sum()) for mask in present.values()):
            return  # no pixel in two masks
        labels = label_map(present, union.shape)
        self.overlapping.add((video, frame_idx))
        for obj in present:
            mask = labels == obj
            if mask.any():
                self.exclusive.add(video, obj, frame_idx, rle_encode(mask))

    def finish(self, masks: Mapping[str, Mapping[int, Mapping[str, dict[str, Any]]]]) -> None:
        for video, (num_frames, height, width) in self.sizes.items():
            per_object, exclusive = masks[video], self.exclusive.view(video)

            def write(f, per_object=per_object, exclusive=exclusive, video=video, n=num_frames, h=height, w=width):
                for t in range(n):
                    frames = exclusive if (video, t) in self.overlapping else per_object
                    key = str(t)
                    for obj in sorted((o for o in frames if key in frames[o]), key=self._code):
                        cls = self.class_of[obj]
                        f.write(f"{t} {self._code(obj)} {cls} {h} {w} {frames[obj][key]['counts']}\n".encode())

            atomic_write(self.job.staging.path("mots") / f"{self.job.video_label(video)}.txt", write)
        self.abort()

    def _code(self, obj: int) -> int:
        return self.class_of[obj] * 1000 + obj

    def abort(self) -> None:
        self.exclusive.close()

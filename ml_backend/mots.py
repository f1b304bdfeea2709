"""MOTS text export: ``mots/<video>.txt``, one line per object per frame, as the MOTS tools read it.

Each line is ``time_frame id class_id img_height img_width rle``: ``time_frame`` the 0-based
frame index (as in KITTI MOTS), ``id = class_id × 1000 + object id``, ``class_id`` the object's
category (1-based, one per distinct object name, in order of first appearance; the same ids as
the YouTube-VIS export), ``rle`` the COCO compressed RLE string of the mask. MOTS masks must not
overlap: where they do, the smaller object id keeps the pixel
(:func:`~ml_backend.exporter.label_map`). Lines are sorted by frame, then id; frames where an
object is empty have no line for it. Object ids must be below 1000.

Reading it back::

    from pycocotools import mask as rletools
    for line in open("mots/video1.txt"):
        t, obj, cls, h, w, rle = line.split(" "); m = rletools.decode({"size": [int(h), int(w)], "counts": rle.strip().encode()})
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .exceptions import PromptError
from .exporter import Exporter, ExportJob, label_map
from .exports import atomic_write, rle_decode, rle_encode


class MOTSExport(Exporter):
    """Written at the end from the spool, frame by frame in order."""

    name = "mots"

    def __init__(self, job: ExportJob) -> None:
        super().__init__(job)
        big = [o.id for o in job.spec.objects if o.id >= 1000]
        if big:
            raise PromptError(f"the MOTS export encodes ids as class × 1000 + object id; object id {big[0]} is ≥ 1000")
        categories = job.categories()
        self.class_of = {o.id: categories[o.name] for o in job.spec.objects}
        self.sizes: dict[str, tuple[int, int, int]] = {}

    def start_video(self, video: str, source: Any) -> None:
        self.sizes[video] = (source.num_frames, source.height, source.width)

    def finish(self, masks: Mapping[str, Mapping[int, Mapping[str, dict[str, Any]]]]) -> None:
        for video, (num_frames, height, width) in self.sizes.items():
            per_object = masks[video]

            def write(f, per_object=per_object, num_frames=num_frames, h=height, w=width) -> None:
                for t in range(num_frames):
                    present = {
                        obj: rle_decode(frames[str(t)]) for obj, frames in per_object.items() if str(t) in frames
                    }
                    if not present:
                        continue
                    labels = label_map(present, (h, w))
                    for obj in sorted(present, key=lambda o: self.class_of[o] * 1000 + o):
                        mask = labels == obj
                        if not mask.any():
                            continue
                        cls = self.class_of[obj]
                        counts = rle_encode(mask)["counts"]
                        f.write(f"{t} {cls * 1000 + obj} {cls} {h} {w} {counts}\n".encode())

            atomic_write(self.job.staging.path("mots") / f"{self.job.video_label(video)}.txt", write)

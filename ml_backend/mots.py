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

    def _order(self, item: tuple[int, str]) -> int:
        return self.class_of[item[0]] * 1000 + item[0]

    @staticmethod
    def _exclusive(rles: dict[int, dict[str, Any]], shape: tuple[int, int]) -> dict[int, str]:
        """``{obj_id: RLE counts}`` without overlaps. When no two masks overlap (measured on the
        RLEs, no decoding), each keeps its RLE as it is; otherwise the frame is decoded and the
        smaller object id keeps the shared pixels."""
        from pycocotools import mask as mask_utils

        coco = {obj: {"size": r["size"], "counts": r["counts"].encode()} for obj, r in rles.items()}
        if len(coco) > 1:
            union = int(mask_utils.area(mask_utils.merge(list(coco.values()), intersect=False)))
            if union != sum(int(mask_utils.area(r)) for r in coco.values()):
                labels = label_map({obj: rle_decode(r) for obj, r in rles.items()}, shape)
                return {obj: rle_encode(labels == obj)["counts"] for obj in rles if (labels == obj).any()}
        return {obj: r["counts"] for obj, r in rles.items()}

    def finish(self, masks: Mapping[str, Mapping[int, Mapping[str, dict[str, Any]]]]) -> None:
        for video, (num_frames, height, width) in self.sizes.items():
            per_object = masks[video]

            def write(f, per_object=per_object, num_frames=num_frames, h=height, w=width) -> None:
                for t in range(num_frames):
                    rles = {obj: frames[str(t)] for obj, frames in per_object.items() if str(t) in frames}
                    for obj, counts in sorted(self._exclusive(rles, (h, w)).items(), key=self._order):
                        cls = self.class_of[obj]
                        f.write(f"{t} {cls * 1000 + obj} {cls} {h} {w} {counts}\n".encode())

            atomic_write(self.job.staging.path("mots") / f"{self.job.video_label(video)}.txt", write)

"""YouTube-VIS export: ``ytvis.json`` in the 2019/2021 layout, one annotation per object and video.

::

    {"info": {...}, "licenses": [],
     "videos": [{"id", "name", "width", "height", "length", "file_names": ["<video>/00000.jpg", ...]}],
     "categories": [{"id", "name", "supercategory": "object"}],       # one per distinct object name
     "annotations": [{"id", "video_id", "category_id", "iscrowd": 0, "height", "width",
                      "object_id",                                     # the prompt file's object id
                      "segmentations": [{"size": [h, w], "counts": str} | null, ...],  # one per frame
                      "areas": [int | null, ...], "bboxes": [[x, y, w, h] | null, ...]}]}

``videos[].name`` is ``video1``/``video2`` (or ``segment_XXX``); ``file_names`` are the input
frames' names for a folder of frames, else ``<video>/<index:05d>.jpg`` for frames you extract
from the video file in decode order. ``segmentations`` are COCO RLE (pycocotools), null where the
object is absent; ``category_id`` comes from the object's name, so several objects of one name
(``mug_1``, ``mug_2``) share a category. The file is written as a stream: a long video never sits
in memory.

Reading it back::

    import json; from pycocotools import mask as mask_utils
    data = json.load(open("ytvis.json")); ann = data["annotations"][0]
    mask = mask_utils.decode({**ann["segmentations"][5], "counts": ann["segmentations"][5]["counts"].encode()})
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pycocotools import mask as mask_utils

from ml_backend.exporters.interface import Exporter, ExportJob
from ml_backend.exporters.staging import atomic_write


class YouTubeVISExport(Exporter):
    """Written at the end from the spool."""

    name = "ytvis"

    def __init__(self, job: ExportJob) -> None:
        super().__init__(job)
        self.videos: list[dict[str, Any]] = []

    def start_video(self, video: str, source: Any) -> None:
        label = self.job.video_label(video)
        files = getattr(source, "files", None)
        names = (
            [f"{label}/{f.name}" for f in files]
            if files
            else [f"{label}/{i:05d}.jpg" for i in range(source.num_frames)]
        )
        self.videos.append(
            {"id": len(self.videos) + 1, "key": video, "name": label, "width": source.width, "height": source.height,
             "length": source.num_frames, "file_names": names}
        )  # fmt: skip

    def finish(self, masks: Mapping[str, Mapping[int, Mapping[str, dict[str, Any]]]]) -> None:
        categories = self.job.categories()

        def write(f) -> None:
            def put(text: str) -> None:
                f.write(text.encode())

            put('{"info": {"description": "SAM 2 video propagation", "version": "2021"}, "licenses": [], "videos": ')
            put(json.dumps([{k: v for k, v in video.items() if k != "key"} for video in self.videos]))
            put(', "categories": ')
            put(json.dumps([{"id": i, "name": name, "supercategory": "object"} for name, i in categories.items()]))
            put(', "annotations": [')
            ann_id = 0
            for video in self.videos:
                for obj in self.job.spec.objects:
                    if obj.id not in masks[video["key"]]:
                        continue  # absent from this video
                    ann_id += 1
                    put(", " if ann_id > 1 else "")
                    self._annotation(put, ann_id, video, obj, categories[obj.name], masks[video["key"]][obj.id])
            put("]}\n")

        atomic_write(self.job.staging.path("ytvis.json"), write)

    @staticmethod
    def _annotation(put: Any, ann_id: int, video: dict[str, Any], obj: Any, category: int, frames: Any) -> None:
        head = {"id": ann_id, "video_id": video["id"], "category_id": category, "iscrowd": 0,
                "height": video["height"], "width": video["width"], "object_id": obj.id}  # fmt: skip
        put(json.dumps(head)[:-1] + ', "segmentations": [')
        areas, boxes = [], []
        for t in range(video["length"]):
            rle = frames.get(str(t))
            if rle is None:
                put("null" if t == 0 else ", null")
                areas.append(None)
                boxes.append(None)
                continue
            put((", " if t else "") + json.dumps(rle))
            coco = {"size": rle["size"], "counts": rle["counts"].encode()}
            areas.append(int(mask_utils.area(coco)))
            boxes.append([float(v) for v in mask_utils.toBbox(coco)])
        put('], "areas": ' + json.dumps(areas) + ', "bboxes": ' + json.dumps(boxes) + "}")

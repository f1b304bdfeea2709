"""SceneDiff export: ``segments.pkl`` + ``inference_data.pkl``, published as one unit.

Files ``segments.pkl`` and ``inference_data.pkl``::

    {'scene_type': str,
     'video1_objects': {obj_idx: {str(frame_idx): {'size': [h, w], 'counts': str}}},
     'video2_objects': {...},            # only non-empty frames; objects absent from a video: no key
     'objects': [{'label': f'{name}_{number}', 'name', 'number', 'in_video1', 'in_video2',
                  'video1_frame_idx': [prompted frames], 'video2_frame_idx': [...],
                  'original_obj_idx': int, 'deformability': 'rigid' | 'deformable'}],
     'comments': dict}

``inference_data.pkl`` holds, per video, ``obj_idx_to_id`` (``{obj_idx: object id}``: ``obj_idx``
is the object's 0-based index in SAM 2's state for that video, in prompt-file order of the
objects present there), ``point_inputs_per_obj`` ``{obj_idx: {frame_idx: {'point_coords': float32
[1, N, 2], 'point_labels': int32 [1, N]}}}`` as numpy arrays (CPU), ``mask_inputs_per_obj``
(``{obj_idx: {frame_idx: H×W bool}}``) for mask prompts, ``frames_dir`` + ``frame_names`` for a
folder of frames (None for a video file, whose path is in ``video_path``), ``num_frames``, plus
``objects``, ``scene_type``, ``comments``. ``point_coords`` are in **SAM 2's input space**, as the
original tool stored them: pixel x × S / width, y × S / height with S = ``image_size`` (1024 for
released checkpoints); ``video_size`` ``(h, w)`` and ``image_size`` are stored beside them.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from typing import Any

import numpy as np

from ml_backend.exporters.interface import Exporter, ExportJob
from ml_backend.exporters.staging import atomic_write_bytes, write_pickle_streaming


class SceneDiffExport(Exporter):
    """Writes ``segments.pkl`` + ``inference_data.pkl`` from the spool at the end, into a
    :meth:`~ml_backend.exporters.staging.Staging.unit`, so the two are published as one."""

    name = "scenediff"
    FILES = ("segments.pkl", "inference_data.pkl")

    def __init__(self, job: ExportJob) -> None:
        super().__init__(job)
        self.spec = job.spec
        self.image_size = job.image_size
        self.out_dir = job.staging.unit("scenediff", self.FILES)
        self.videos: dict[str, dict[str, Any]] = {}

    def start_video(self, video: str, source: Any) -> None:
        """Remember where ``video``'s frames are, and its size.

        A folder of frames gives ``frames_dir`` + ``frame_names`` (joined, they name each frame's
        image, as SceneDiff tools read them). A video file has no frame files: ``frames_dir`` and
        ``frame_names`` are None and ``video_path`` names the file (frame ``i`` = the ``i``-th
        decoded frame), so a tool that joins them fails loudly instead of opening a wrong path.
        """
        files = getattr(source, "files", None)
        self.videos[video] = {
            "frames_dir": str(source.path) if files else None,
            "frame_names": [f.name for f in files] if files else None,
            "video_path": None if files else str(source.path),
            "num_frames": source.num_frames,
            "video_size": (source.height, source.width),
        }

    def _objects(self) -> list[dict[str, Any]]:
        out = []
        for o in self.spec.objects:
            entry: dict[str, Any] = {
                "label": o.label,
                "name": o.name,
                "number": o.number,
                "original_obj_idx": o.id,
                "deformability": o.deformability,
            }
            for v in ("video1", "video2"):
                entry[f"in_{v}"] = bool(o.in_video.get(v))
                entry[f"{v}_frame_idx"] = [p.frame for p in o.prompts.get(v, [])]
            out.append(entry)
        return out

    def _inference_data(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "objects": self._objects(),
            "scene_type": self.spec.scene_type,
            "comments": self.spec.comments,
            "image_size": self.image_size,
            "coordinate_space": "sam2_input: x * image_size / width, y * image_size / height",
        }
        for video, info in self.videos.items():
            h, w = info["video_size"]
            points: dict[int, dict[int, dict[str, np.ndarray]]] = {}
            masks: dict[int, dict[int, np.ndarray]] = {}
            present = [o for o in self.spec.objects if o.in_video.get(video)]
            for idx, o in enumerate(present):  # obj_idx: the object's index in SAM 2's state
                for p in o.prompts.get(video, []):
                    if p.mask is not None:
                        masks.setdefault(idx, {})[p.frame] = p.mask.copy()
                        continue
                    scale = np.array([self.image_size / w, self.image_size / h], np.float32)
                    points.setdefault(idx, {})[p.frame] = {
                        "point_coords": (np.asarray(p.points, np.float32) * scale)[None],
                        "point_labels": np.asarray(p.labels, np.int32)[None],
                    }
            data[video] = {
                "obj_idx_to_id": {idx: o.id for idx, o in enumerate(present)},
                "point_inputs_per_obj": points,
                "mask_inputs_per_obj": masks,
                **info,
                "image_size": self.image_size,
            }
        return data

    def segments(self, masks: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "scene_type": self.spec.scene_type,
            "video1_objects": masks.get("video1", {}),
            "video2_objects": masks.get("video2", {}),
            "objects": self._objects(),
            "comments": self.spec.comments,
        }

    def finish(self, masks: Mapping[str, Any]) -> None:
        atomic_write_bytes(self.out_dir / "inference_data.pkl", pickle.dumps(self._inference_data(), protocol=4))
        write_pickle_streaming(self.out_dir / "segments.pkl", self.segments(masks))

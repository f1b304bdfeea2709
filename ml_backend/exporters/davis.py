"""DAVIS-style export: one indexed (palette) PNG per frame and video.

``davis/<video>/<frame>.png`` (``<video>`` = ``video1``/``video2``, or ``segment_XXX`` for a
green-screen segment; ``<frame>`` = the input frame's file stem for a folder of frames, else the
0-based index as ``00000``). Pixel value = object id (1–255), 0 = background; the palette is the
standard DAVIS / PASCAL VOC one (1 dark red, 2 green, 3 olive, …). Where masks overlap, the
smaller object id wins (:func:`~ml_backend.exporters.interface.label_map`). Every frame gets a PNG, empty
ones too, as DAVIS evaluation expects.

Reading it back::

    from PIL import Image; import numpy as np
    labels = np.array(Image.open("davis/video1/00000.png"))   # mode "P": H×W uint8 object ids
    mask_of_object_3 = labels == 3
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from ml_backend.exporters.interface import Exporter, ExportJob, check_ids_fit_a_byte, label_map


def davis_palette() -> bytes:
    """The 256-colour DAVIS / PASCAL VOC palette: the bits of the index spread over R, G, B."""
    out = bytearray()
    for index in range(256):
        r = g = b = 0
        c = index
        for shift in range(7, -1, -1):
            r |= (c & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        out += bytes((r, g, b))
    return bytes(out)


PALETTE = davis_palette()


class DavisExport(Exporter):
    """Writes each frame's label PNG from the export thread as the frame comes."""

    name = "davis"
    per_frame = True

    def __init__(self, job: ExportJob) -> None:
        super().__init__(job)
        check_ids_fit_a_byte(job.spec, "DAVIS")
        self.folders: dict[str, Any] = {}
        self.names: dict[str, list[str] | None] = {}
        self.shapes: dict[str, tuple[int, int]] = {}

    def start_video(self, video: str, source: Any) -> None:
        folder = self.job.staging.path("davis") / self.job.video_label(video)
        folder.mkdir(parents=True, exist_ok=True)
        self.folders[video] = folder
        files = getattr(source, "files", None)
        self.names[video] = [f.stem for f in files] if files else None
        self.shapes[video] = (source.height, source.width)

    def add(
        self,
        video: str,
        frame_idx: int,
        masks: dict[int, np.ndarray],
        frame: np.ndarray | None,
        scores: Any = None,
    ) -> None:

        names = self.names[video]
        image = Image.fromarray(label_map(masks, self.shapes[video]), mode="P")
        image.putpalette(PALETTE)
        image.save(self.folders[video] / f"{names[frame_idx] if names else f'{frame_idx:05d}'}.png", optimize=False)

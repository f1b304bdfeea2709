"""Export formats, written incrementally and published atomically.

Every writer takes frames as they come from propagation (any order), through ``add(frame_idx,
frame, masks)`` with ``frame`` the ``H×W×3`` uint8 RGB original and ``masks`` ``{obj_id: H×W
bool}``, and publishes its files in ``finish()``: files are written under a hidden staging folder
and renamed into place only when complete, so an interrupted job never leaves a partial file.

**SceneDiff** (:class:`SceneDiffExport`), files ``segments.pkl`` and ``inference_data.pkl``::

    {'scene_type': str,
     'video1_objects': {obj_idx: {str(frame_idx): {'size': [h, w], 'counts': str}}},
     'video2_objects': {...},            # only non-empty frames; objects absent from a video: no key
     'objects': [{'label': f'{name}_{number}', 'name', 'number', 'in_video1', 'in_video2',
                  'video1_frame_idx': [prompted frames], 'video2_frame_idx': [...],
                  'original_obj_idx': int, 'deformability': 'rigid' | 'deformable'}],
     'comments': dict}

``inference_data.pkl`` holds, per video, ``obj_idx_to_id``, ``point_inputs_per_obj`` ``{obj_idx:
{frame_idx: {'point_coords': float32 [1, N, 2], 'point_labels': int32 [1, N]}}}`` as numpy arrays
(CPU), ``mask_inputs_per_obj`` for mask prompts, ``frames_dir``, ``frame_names``, plus
``objects``, ``scene_type``, ``comments``. ``point_coords`` are in **SAM 2's input space**, as the
original tool stored them: pixel x × S / width, y × S / height with S = ``image_size`` (1024 for
released checkpoints); ``video_size`` ``(h, w)`` and ``image_size`` are stored beside them.

**Green-screen** (:class:`GreenScreenExport`): ``frame_{offset + i:06d}_masked.png`` for frame
``i`` of the segment, the background colour everywhere outside the union of the object masks.
Consecutive segments share one boundary frame, so a segment exports all its frames but the last
(the last segment exports all). The offset is derived from the segment list, never remembered:
``offset(k) = start_frame + Σ_{j<k} (frames_j − 1)`` (:func:`greenscreen_offset`). Re-running a
segment rewrites exactly its own files.
"""

from __future__ import annotations

import os
import pickle
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np


def rle_encode(mask: np.ndarray) -> dict[str, Any]:
    """COCO RLE of an ``H×W`` bool mask: ``{'size': [h, w], 'counts': str}``."""
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")}


def rle_encode_tensor(masks: Any) -> list[dict[str, Any]]:
    """Uncompressed COCO RLEs (``{'size': [h, w], 'counts': [int, ...]}``) of an ``N×H×W`` bool
    tensor, computed where the tensor lives: on a GPU the pixel scan runs there and only the run
    lengths come back to the CPU. :func:`rle_compress` turns each into what :func:`rle_encode`
    gives for the same mask. An all-empty mask has one count (``H·W``)."""
    from sam2.utils.amg import mask_to_rle_pytorch

    return mask_to_rle_pytorch(masks)


def rle_compress(uncompressed: dict[str, Any]) -> dict[str, Any]:
    """The compressed COCO RLE of an uncompressed one, byte-identical to :func:`rle_encode`."""
    from sam2.utils.amg import coco_encode_rle

    rle = coco_encode_rle(uncompressed)
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"]}


def rle_decode(rle: dict[str, Any]) -> np.ndarray:
    from pycocotools import mask as mask_utils

    counts = rle["counts"]
    return mask_utils.decode(
        {"size": rle["size"], "counts": counts.encode() if isinstance(counts, str) else counts}
    ).astype(bool)


def _umask() -> int:
    """The process's umask, read without changing it (Linux ``/proc``; 022 elsewhere)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    return 0o022


#: Mode of every published file and folder: what ``open()`` and ``mkdir()`` would give, so the
#: pickles, PNGs and videos of one export all have the same permissions.
FILE_MODE = 0o666 & ~_umask()
DIR_MODE = 0o777 & ~_umask()


def atomic_write(path: Path, write: Callable[[BinaryIO], Any]) -> None:
    """Call ``write(file)`` on a temporary file in ``path``'s folder, fsync it, rename it to
    ``path``: readers see the old file or the whole new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through :func:`atomic_write`."""
    atomic_write(path, lambda f: f.write(data))


def greenscreen_offset(segment_frames: list[int], index: int, start_frame: int = 0) -> tuple[int, int]:
    """``(offset, count)``: the first output number of segment ``index`` and how many frames it exports."""
    if not 0 <= index < len(segment_frames):
        raise ValueError(f"segment {index} is not in a list of {len(segment_frames)} segments")
    offset = start_frame + sum(n - 1 for n in segment_frames[:index])
    last = index == len(segment_frames) - 1
    count = segment_frames[index] if last else segment_frames[index] - 1
    return offset, count


class MaskSpool:
    """Per-frame RLE masks of a job, appended to a file instead of kept in memory.

    A long video with many objects produces hundreds of MB of RLE; the spool keeps only an index
    (file offsets) in memory. ``spool.view(video)`` is a read-only mapping ``{obj_id: {str(frame):
    rle}}`` over the file, used by the exporters, the review outputs and the prediction.
    """

    def __init__(self, path: Path) -> None:
        import threading

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "w+b")  # noqa: SIM115 - closed in close()
        self._index: dict[str, dict[int, dict[str, int]]] = {}
        self._lock = threading.Lock()

    def declare(self, video: str, obj_ids: list[int]) -> None:
        """Objects present in ``video`` (present objects appear even with no non-empty frame)."""
        per_video = self._index.setdefault(video, {})
        for obj_id in obj_ids:
            per_video.setdefault(obj_id, {})

    def add(self, video: str, obj_id: int, frame_idx: int, rle: dict[str, Any]) -> None:
        data = pickle.dumps(rle, protocol=4)
        with self._lock:
            self._file.seek(0, os.SEEK_END)
            offset = self._file.tell()
            self._file.write(data)
            self._index.setdefault(video, {}).setdefault(obj_id, {})[str(frame_idx)] = offset

    def read(self, offset: int) -> dict[str, Any]:
        with self._lock:
            self._file.flush()
            self._file.seek(offset)
            return pickle.load(self._file)

    def view(self, video: str) -> dict[int, _SpoolFrames]:
        return {obj_id: _SpoolFrames(self, frames) for obj_id, frames in self._index.get(video, {}).items()}

    def videos(self) -> list[str]:
        return list(self._index)

    def close(self) -> None:
        self._file.close()
        self.path.unlink(missing_ok=True)


class _SpoolFrames(Mapping):
    """``{str(frame): rle}`` for one object, read from a :class:`MaskSpool` on access."""

    def __init__(self, spool: MaskSpool, offsets: dict[str, int]) -> None:
        self._spool = spool
        self._offsets = offsets

    def __getitem__(self, key: str) -> dict[str, Any]:
        return self._spool.read(self._offsets[key])

    def __contains__(self, key: object) -> bool:
        return key in self._offsets

    def __iter__(self):
        return iter(self._offsets)

    def __len__(self) -> int:
        return len(self._offsets)


class _StreamingPickler(pickle._Pickler):  # type: ignore[name-defined]
    """Pickles :class:`_SpoolFrames` (and other read-only mappings) as plain dicts, item by item,
    so a large ``segments.pkl`` is written without holding all of it in memory. The file loads
    with plain :func:`pickle.load`."""

    dispatch = pickle._Pickler.dispatch.copy()  # type: ignore[attr-defined]

    def save_mapping(self, obj: Any) -> None:
        self.write(pickle.EMPTY_DICT)
        self._batch_setitems(iter(obj.items()))

    dispatch[_SpoolFrames] = save_mapping


def write_pickle_streaming(path: Path, obj: Any) -> None:
    """``pickle.dump`` that streams :class:`_SpoolFrames` values, through :func:`atomic_write`."""
    atomic_write(path, lambda f: _StreamingPickler(f, protocol=4).dump(obj))


class Staging:
    """Where a job writes its files before they are published, and the publishing.

    Files go to a hidden folder ``out_dir/.staging-<host>-<pid>-<random>/`` (same file system,
    so publishing is renaming). Nothing there is visible as an export until :meth:`publish`:

    - a **unit** (:meth:`unit`, e.g. the SceneDiff pair) is published as one: its folder is
      renamed to ``out_dir/.<unit>-<random>/`` and the link ``out_dir/.<unit>`` is switched to it
      in one atomic rename; each of its files appears as ``out_dir/<file>`` →
      ``.<unit>/<file>``, so at every instant all of them come from the same job;
    - every other file is renamed into place on its own (``os.replace``), except private files
      (:meth:`private`, e.g. the job's mask spool), which stay until :meth:`abort`.

    A failed job calls :meth:`abort` and leaves the previous export as it was. Staging folders of
    killed processes of this host are removed when the next job in ``out_dir`` starts.
    """

    def __init__(self, out_dir: Path) -> None:
        import secrets
        import socket

        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        host = "".join(c if c.isalnum() else "_" for c in socket.gethostname())[:40]
        self._prefix = f".staging-{host}-"
        self._remove_dead_stagings()
        self.dir = self.out_dir / f"{self._prefix}{os.getpid()}-{secrets.token_hex(4)}"
        self.dir.mkdir(mode=DIR_MODE)
        self.token = secrets.token_hex(6)
        self._units: dict[str, tuple[str, ...]] = {}

    def _remove_dead_stagings(self) -> None:
        for stale in self.out_dir.glob(f"{self._prefix}*"):
            try:
                pid = int(stale.name[len(self._prefix) :].split("-")[0])
                os.kill(pid, 0)
            except ProcessLookupError:
                shutil.rmtree(stale, ignore_errors=True)
            except (ValueError, PermissionError, IndexError):
                continue

    def path(self, relpath: str | Path) -> Path:
        """Where to write the file that will be published as ``out_dir/relpath``."""
        return self.dir / relpath

    def private(self, name: str) -> Path:
        """A file of the job's own that is never published (removed with the staging folder)."""
        folder = self.dir / ".private"
        folder.mkdir(mode=0o700, exist_ok=True)
        return folder / name

    def unit(self, name: str, order: tuple[str, ...] = ()) -> Path:
        """A folder whose files are published together (see the class docstring); ``order``
        names the files listed first, in that order."""
        folder = self.dir / f".unit-{name}"
        folder.mkdir(mode=DIR_MODE, exist_ok=True)
        self._units[name] = order
        return folder

    def _unit_files(self, name: str) -> list[str]:
        order = self._units[name]
        names = [p.name for p in (self.dir / f".unit-{name}").iterdir() if p.is_file()]
        return sorted(names, key=lambda f: (order.index(f) if f in order else len(order), f))

    def staged(self) -> list[Path]:
        """Every staged file, as the path it will have once published."""
        out = [self.out_dir / f for name in self._units for f in self._unit_files(name)]
        for path in sorted(self.dir.rglob("*")):
            rel = path.relative_to(self.dir)
            if path.is_file() and not rel.parts[0].startswith("."):
                out.append(self.out_dir / rel)
        return out

    def publish(self) -> list[Path]:
        """Move every staged file into ``out_dir``; returns the published paths."""
        published = []
        for name in self._units:
            published.extend(self._publish_unit(name))
        for path in sorted(self.dir.rglob("*")):
            rel = path.relative_to(self.dir)
            if rel.parts[0].startswith(".") or not path.is_file():  # units (above) and private files
                continue
            target = self.out_dir / rel
            target.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
            os.chmod(path, FILE_MODE)
            os.replace(path, target)
            published.append(target)
        return published

    def _publish_unit(self, name: str) -> list[Path]:
        source = self.dir / f".unit-{name}"
        files = self._unit_files(name)
        for f in files:
            os.chmod(source / f, FILE_MODE)
        version = f".{name}-{self.token}"
        os.replace(source, self.out_dir / version)
        link = self.out_dir / f".{name}"
        _replace_with_symlink(link, version)
        for f in files:
            target = self.out_dir / f
            wanted = f"{link.name}/{f}"
            if not (target.is_symlink() and os.readlink(target) == wanted):
                _replace_with_symlink(target, wanted)
        for old in self.out_dir.glob(f".{name}-*"):
            if old.name != version:  # the version just replaced, and any left by a crash
                shutil.rmtree(old, ignore_errors=True)
        return [self.out_dir / f for f in files]

    def abort(self) -> None:
        """Drop everything staged; the published export stays as it was."""
        shutil.rmtree(self.dir, ignore_errors=True)


def _replace_with_symlink(path: Path, target: str) -> None:
    """Make ``path`` a symlink to ``target`` in one atomic rename (whatever ``path`` was)."""
    import secrets

    tmp = path.parent / f".{path.name}.link-{secrets.token_hex(4)}"
    os.symlink(target, tmp)
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class SceneDiffExport:
    """Collects RLE masks per video and object; writes ``segments.pkl`` + ``inference_data.pkl``
    into ``out_dir`` (a :meth:`Staging.unit`, so the two are published as one)."""

    needs_frames = False
    FILES = ("segments.pkl", "inference_data.pkl")

    def __init__(self, spec: Any, out_dir: Path, image_size: int, spool: MaskSpool) -> None:
        self.spec = spec
        self.out_dir = Path(out_dir)
        self.image_size = image_size
        self.spool = spool
        self.videos: dict[str, dict[str, Any]] = {}

    def start_video(self, video: str, source: Any) -> None:
        """Register ``video`` (``video1``/``video2``) and its frame source before its frames arrive."""
        present = [o.id for o in self.spec.objects if o.in_video.get(video)]
        self.spool.declare(video, present)
        files = getattr(source, "files", None)
        self.videos[video] = {
            "frames_dir": str(source.path),
            "frame_names": [f.name for f in files] if files else [f"{i:05d}" for i in range(source.num_frames)],
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
            for o in present:
                for p in o.prompts.get(video, []):
                    if p.mask is not None:
                        masks.setdefault(o.id, {})[p.frame] = p.mask.copy()
                        continue
                    scale = np.array([self.image_size / w, self.image_size / h], np.float32)
                    points.setdefault(o.id, {})[p.frame] = {
                        "point_coords": (np.asarray(p.points, np.float32) * scale)[None],
                        "point_labels": np.asarray(p.labels, np.int32)[None],
                    }
            data[video] = {
                "obj_idx_to_id": {o.id: o.id for o in present},
                "point_inputs_per_obj": points,
                "mask_inputs_per_obj": masks,
                "frames_dir": info["frames_dir"],
                "frame_names": info["frame_names"],
                "video_size": info["video_size"],
                "image_size": self.image_size,
            }
        return data

    def segments(self) -> dict[str, Any]:
        return {
            "scene_type": self.spec.scene_type,
            "video1_objects": self.spool.view("video1"),
            "video2_objects": self.spool.view("video2"),
            "objects": self._objects(),
            "comments": self.spec.comments,
        }

    def finish(self) -> list[Path]:
        seg = self.out_dir / "segments.pkl"
        inf = self.out_dir / "inference_data.pkl"
        atomic_write_bytes(inf, pickle.dumps(self._inference_data(), protocol=4))
        write_pickle_streaming(seg, self.segments())
        return [seg, inf]


class GreenScreenExport:
    """Writes ``frame_XXXXXX_masked.png`` for one segment (see the module docstring) into
    ``out_dir``, a job's staging folder (:class:`Staging`): files become visible when published."""

    needs_frames = True

    def __init__(self, out_dir: Path, *, offset: int, count: int, background: tuple[int, int, int]) -> None:
        if offset < 0 or count < 1:
            raise ValueError(f"a segment exports frames from a non-negative offset, got {offset} (+{count})")
        self.out_dir = Path(out_dir)
        self.offset = offset
        self.count = count
        self.background = np.array(background, np.uint8)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.written: list[int] = []

    def name(self, frame_idx: int) -> str:
        return f"frame_{self.offset + frame_idx:06d}_masked.png"

    def add(self, frame_idx: int, frame: np.ndarray, masks: dict[int, np.ndarray]) -> None:
        import cv2

        if frame_idx >= self.count:
            return  # the boundary frame belongs to the next segment
        keep = np.zeros(frame.shape[:2], bool)
        for mask in masks.values():
            keep |= mask
        out = np.empty_like(frame)
        out[:] = self.background
        out[keep] = frame[keep]
        ok, png = cv2.imencode(".png", cv2.cvtColor(out, cv2.COLOR_RGB2BGR))
        if not ok:
            raise RuntimeError("PNG encoding failed")
        (self.out_dir / self.name(frame_idx)).write_bytes(png.tobytes())
        self.written.append(frame_idx)

    def finish(self) -> list[Path]:
        return [self.out_dir / self.name(i) for i in sorted(self.written)]

    def abort(self) -> None:
        """Nothing to do: the staging folder is dropped as a whole."""


def video_frame_count(path: Path) -> int:
    """Frames in a video file as OpenCV reports them (0 when it cannot be read)."""
    import cv2

    capture = cv2.VideoCapture(str(path))
    try:
        return max(0, int(capture.get(cv2.CAP_PROP_FRAME_COUNT))) if capture.isOpened() else 0
    finally:
        capture.release()


def assemble_greenscreen_mp4(
    out_dir: Path, segment_frames: list[int], start_frame: int = 0, fps: float = 30.0
) -> Path | None:
    """Encode ``greenscreen.mp4`` from the exported frames once every segment's files exist.

    Returns the mp4's path, or None when frames are still missing, ffmpeg is not installed, or
    the existing mp4 is longer than this segment list makes (a longer, complete video is never
    replaced by a shorter one; delete it to rebuild). Whichever segment finishes last assembles
    the video; two assemblies at once each write their own temporary file.
    """
    import logging
    import subprocess

    if not segment_frames or shutil.which("ffmpeg") is None:
        return None
    total = sum(n - 1 for n in segment_frames) + 1
    names = [Path(out_dir) / f"frame_{start_frame + i:06d}_masked.png" for i in range(total)]
    if not all(p.is_file() for p in names):
        return None
    target = Path(out_dir) / "greenscreen.mp4"
    existing = video_frame_count(target) if target.is_file() else 0
    if existing > total:
        logging.getLogger(__name__).warning(
            "kept %s: it has %d frames, the segment list gives only %d", target, existing, total
        )
        return None
    fd, tmp_name = tempfile.mkstemp(dir=out_dir, prefix=".greenscreen.", suffix=".part.mp4")
    os.close(fd)
    tmp = Path(tmp_name)
    cmd = [
        "ffmpeg", "-loglevel", "error", "-y", "-framerate", f"{fps:g}", "-start_number", str(start_frame),
        "-i", str(Path(out_dir) / "frame_%06d_masked.png"), "-frames:v", str(total),
        "-c:v", "libx264", "-pix_fmt", "yuv420p", "-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2", "-crf", "20", str(tmp),
    ]  # fmt: skip
    try:
        subprocess.run(cmd, check=True)
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target

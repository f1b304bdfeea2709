"""What every export format shares: atomic writes, the staging folder and publishing, the mask spool.

Formats themselves are plug-ins (:mod:`ml_backend.exporters.interface`); they write under a hidden staging
folder (:class:`Staging`) and the job renames their files into place only when complete, so an
interrupted job never leaves a partial file.
"""

from __future__ import annotations

import os
import pickle
import secrets
import shutil
import socket
import tempfile
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, BinaryIO


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


class MaskSpool:
    """Per-frame RLE masks of a job, appended to a file instead of kept in memory.

    A long video with many objects produces hundreds of MB of RLE; the spool keeps only an index
    (file offsets) in memory. ``spool.view(video)`` is a read-only mapping ``{obj_id: {str(frame):
    rle}}`` over the file, used by the exporters, the review outputs and the prediction.
    """

    def __init__(self, path: Path) -> None:

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

    tmp = path.parent / f".{path.name}.link-{secrets.token_hex(4)}"
    os.symlink(target, tmp)
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise

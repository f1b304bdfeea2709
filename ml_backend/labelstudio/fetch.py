"""Fetching task files (frames, videos) from Label Studio, safely, with a disk cache.

Only two kinds of reference are fetched:

- a URL on the Label Studio host (``LABEL_STUDIO_URL``), absolute or starting with ``/``, such as
  ``/data/upload/3/abc.png`` or ``/data/local-files/?d=frames/pair1/v1_000000.jpg``;
- with ``LOCAL_FILES_DOCUMENT_ROOT`` set, ``/data/local-files/?d=<path>`` is read straight from
  that folder (no HTTP round trip).

Anything else — another host, another scheme (``file:``, ``s3:``), a ``..`` segment, a path that
leaves the local root — raises :class:`~ml_backend.exceptions.ForbiddenURL`. Downloads are cached
under ``<DATA_DIR>/downloads`` by URL (written to a temporary name, then renamed) and the cache is
trimmed to ``DOWNLOAD_CACHE_BYTES``, oldest first.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

import httpx
import numpy as np
from PIL import Image, UnidentifiedImageError

from ml_backend.exceptions import FetchError, ForbiddenURL, NotAFile, NotAnImage, SourceNotFound, TooLarge, Unavailable
from ml_backend.labelstudio.client import auth_headers

log = logging.getLogger(__name__)

LOCAL_FILES_PATH = "/data/local-files/"
_PATH_SAFE = "/:@!$&'()*+,;=-._~"


#: Longest task file reference accepted, in characters.
MAX_URL_CHARS = 64 * 1024


def _show(ref: str, limit: int = 120) -> str:
    """``ref`` for an error message: quoted, and cut short when long."""
    return repr(ref if len(ref) <= limit else ref[:limit] + "…")


def _decoded_forms(text: str) -> list[str]:
    """``text`` and its percent-decodings until stable (catches ``%252e%252e``), at most 4."""
    forms = [text]
    while len(forms) < 4 and (decoded := unquote(forms[-1])) != forms[-1]:
        forms.append(decoded)
    return forms


def _has_traversal(path: str) -> bool:
    return any(part == ".." for form in _decoded_forms(path) for part in form.replace("\\", "/").split("/"))


def _check_text(ref: Any) -> str:
    """``ref`` stripped, or :class:`ForbiddenURL` / :class:`TooLarge` when it cannot be a URL."""
    if not isinstance(ref, str) or not ref.strip():
        raise ForbiddenURL(f"task file reference {ref!r} is not a URL")
    if len(ref) > MAX_URL_CHARS:
        raise TooLarge(
            f"the task file URL is {len(ref)} characters long, over the {MAX_URL_CHARS} allowed; "
            "point to the file with a short /data/... URL"
        )
    if any("\x00" in form for form in _decoded_forms(ref)):
        raise ForbiddenURL(f"{_show(ref)}: a NUL character (\\x00 or %00) is not allowed in a file URL")
    return ref.strip()


def _normal_path(path: str, ref: str) -> str:
    """``path`` percent-decoded, with ``\\`` as ``/``, ``.`` and empty segments dropped; no ``..``."""
    if _has_traversal(path):
        raise ForbiddenURL(f"{_show(ref)}: '..' is not allowed in a file path")
    parts = [part for part in unquote(path).replace("\\", "/").split("/") if part not in ("", ".")]
    trailing = "/" if path.endswith(("/", "\\")) or path.endswith("/.") else ""
    return "/" + "/".join(parts) + (trailing if parts else "")


def _normal_rel(rel: str, ref: str) -> str:
    """A local-files ``d=`` path made plain (``pair/./f.png`` → ``pair/f.png``); relative, no ``..``.

    A path naming a folder (``pair/``, ``pair/.``) keeps one trailing ``/``.
    """
    if not rel or rel.startswith(("/", "\\")) or _has_traversal(rel):
        raise ForbiddenURL(f"{_show(ref)}: local-files path {_show(rel)} must be relative, without '..'")
    plain = rel.replace("\\", "/")
    parts = [part for part in plain.split("/") if part not in ("", ".")]
    if not parts:
        raise ForbiddenURL(f"{_show(ref)}: local-files path {_show(rel)} names no file")
    folder = plain.endswith("/") or plain.split("/")[-1] == "."
    return "/".join(parts) + ("/" if folder else "")


def _names_folder(url: str | Path) -> bool:
    """True when a Label Studio URL ends with ``/`` or its ``d=`` does (a folder, not a file)."""
    if isinstance(url, Path):
        return False
    parts = urlsplit(url)
    return (
        parts.path.endswith("/")
        and not parts.query
        or any(key == "d" and value.endswith("/") for key, value in parse_qsl(parts.query))
    )


class FileFetcher:
    """Resolve and fetch Label Studio task file references.

    ``headers`` is a zero-argument callable returning the auth headers (called per download, so
    refreshed access tokens are picked up); tests may pass ``lambda: {}``.
    """

    def __init__(
        self,
        label_studio_url: str,
        cache_dir: Path,
        *,
        headers: Callable[[], dict[str, str]] | None = None,
        local_root: str | Path | None = None,
        max_bytes: int = 200 * 1024**2,
        cache_bytes: int = 2 * 1024**3,
        timeout: float = 30.0,
    ) -> None:
        self.base = label_studio_url.rstrip("/") + "/"
        base = urlsplit(self.base)
        if base.scheme not in ("http", "https") or not base.netloc:
            raise ValueError(f"LABEL_STUDIO_URL={label_studio_url!r} must be an http(s) URL")
        self._origin = (base.scheme, base.netloc.lower())
        self.cache_dir = Path(cache_dir)
        self._headers = headers or (lambda: {})
        self.local_root = Path(local_root).resolve() if local_root else None
        self.max_bytes = max_bytes
        self.cache_bytes = cache_bytes
        self.timeout = timeout
        self._trim_lock = threading.Lock()
        self.downloads = 0

    # -- resolving ------------------------------------------------------------------------------
    def resolve(self, ref: str) -> str | Path:
        """The absolute URL on Label Studio, or the local :class:`Path`, that ``ref`` names.

        The path is normalised first (percent-decoding, ``\\`` → ``/``, ``.`` and ``//`` dropped),
        then checked, and the URL returned is built from exactly what was checked.
        """
        ref = _check_text(ref)
        parts = urlsplit(ref)
        if parts.scheme or parts.netloc:
            if parts.scheme not in ("http", "https"):
                raise ForbiddenURL(f"{_show(ref)}: only files served by Label Studio can be fetched")
            if (parts.scheme, parts.netloc.lower()) != self._origin:
                raise ForbiddenURL(f"{_show(ref)} is on another host; only {self.base} (LABEL_STUDIO_URL) is fetched")
        elif not parts.path.startswith(("/", "\\")):
            raise ForbiddenURL(f"{_show(ref)}: expected a Label Studio URL such as /data/upload/...")
        path = _normal_path(parts.path, ref)
        query = parse_qsl(parts.query, keep_blank_values=True)
        for key, value in query:
            if key == "d" and _has_traversal(value):
                raise ForbiddenURL(f"{_show(ref)}: local-files path {_show(value)} must be relative, without '..'")
        if path.rstrip("/") + "/" == LOCAL_FILES_PATH:
            path = LOCAL_FILES_PATH
            rel = _normal_rel(next((value for key, value in query if key == "d"), ""), ref)
            query = [("d", rel), *((key, value) for key, value in query if key != "d")]
            if self.local_root is not None:
                local = (self.local_root / rel).resolve()
                if not local.is_relative_to(self.local_root):
                    raise ForbiddenURL(f"{_show(ref)} leaves LOCAL_FILES_DOCUMENT_ROOT")
                return local
        scheme, netloc = self._origin
        url = f"{scheme}://{netloc}{quote(path, safe=_PATH_SAFE)}"
        return url + ("?" + urlencode(query, quote_via=quote, safe="/") if query else "")

    # -- fetching -------------------------------------------------------------------------------
    def path(self, ref: str, *, folder_ok: bool = True) -> Path:
        """A local file holding ``ref``'s bytes (downloaded once, then served from the cache).

        A local-files folder is returned as is (a folder of frames, ``video_part_XXX``, read by
        the worker in place) unless ``folder_ok`` is False (an image for a click), when it raises
        :class:`NotAFile`.
        """
        target = self.resolve(ref)
        if not folder_ok and (isinstance(target, Path) and target.is_dir() or _names_folder(target)):
            raise NotAFile(f"{_show(ref)} names a folder; a click needs the URL of one image file")
        if isinstance(target, Path):
            if target.is_dir():
                return target
            if not target.is_file():
                raise SourceNotFound(f"{ref!r}: no such file under LOCAL_FILES_DOCUMENT_ROOT")
            if target.stat().st_size > self.max_bytes:
                raise TooLarge(f"{ref!r} is larger than MAX_DOWNLOAD_BYTES={self.max_bytes}")
            return target
        cached = self.cache_dir / hashlib.sha256(target.encode()).hexdigest()
        if cached.is_file():
            os.utime(cached)
            return cached
        self._download(target, cached)
        return cached

    def read(self, ref: str) -> bytes:
        return self.path(ref).read_bytes()

    def _download(self, url: str, dest: Path) -> None:

        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            with httpx.stream(
                "GET", url, headers=self._headers(), timeout=self.timeout, follow_redirects=False
            ) as response:
                if response.status_code == 404:
                    raise SourceNotFound(f"Label Studio has no file at {url} (404)")
                if response.status_code in (401, 403):
                    raise FetchError(f"Label Studio refused {url} ({response.status_code}): check LABEL_STUDIO_API_KEY")
                if response.status_code >= 500 or response.status_code in (408, 429):
                    raise Unavailable(f"Label Studio answered {response.status_code} for {url}; try again")
                if response.status_code != 200:
                    raise FetchError(f"Label Studio answered {response.status_code} for {url}")
                declared = int(response.headers.get("content-length") or 0)
                if declared > self.max_bytes:
                    raise TooLarge(f"{url} is {declared} bytes, over MAX_DOWNLOAD_BYTES={self.max_bytes}")
                fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".part-")
                try:
                    size = 0
                    with os.fdopen(fd, "wb") as out:
                        for chunk in response.iter_bytes(1 << 20):
                            size += len(chunk)
                            if size > self.max_bytes:
                                raise TooLarge(f"{url} is over MAX_DOWNLOAD_BYTES={self.max_bytes}")
                            out.write(chunk)
                    os.replace(tmp, dest)
                except BaseException:
                    Path(tmp).unlink(missing_ok=True)
                    raise
        except httpx.HTTPError as exc:
            raise Unavailable(f"cannot reach Label Studio for {url}: {exc}") from None
        self.downloads += 1
        self._trim()

    def _trim(self) -> None:
        with self._trim_lock:
            files = [p for p in self.cache_dir.iterdir() if p.is_file() and not p.name.startswith(".")]
            stats = sorted(((p.stat(), p) for p in files), key=lambda sp: sp[0].st_mtime)
            total = sum(s.st_size for s, _ in stats)
            for stat, path in stats:
                if total <= self.cache_bytes:
                    break
                path.unlink(missing_ok=True)
                total -= stat.st_size


def decode_image(data: bytes, *, max_pixels: int, name: str = "image") -> np.ndarray:
    """Decode image bytes to an ``H×W×3`` uint8 RGB array, checking the size before decoding."""

    try:
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
            if width * height > max_pixels:
                raise TooLarge(
                    f"{name} is {width}×{height} = {width * height} pixels, over MAX_IMAGE_PIXELS={max_pixels}"
                )
            return np.array(img.convert("RGB"))
    except TooLarge:
        raise
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError, ValueError) as exc:
        raise NotAnImage(f"{name} is not a readable image: {exc}") from None


def default_fetcher(settings: Any, *, max_bytes: int | None = None):
    """The :class:`~ml_backend.labelstudio.fetch.FileFetcher` for ``settings`` (``max_bytes`` overrides the limit)."""

    def headers() -> dict[str, str]:
        if not settings.label_studio_api_key:
            return {}
        return auth_headers(settings.label_studio_url, settings.label_studio_api_key)

    return FileFetcher(
        settings.label_studio_url,
        settings.data_dir / "downloads",
        headers=headers,
        local_root=settings.local_files_root or None,
        max_bytes=max_bytes or settings.max_download_bytes,
        cache_bytes=settings.download_cache_bytes,
        timeout=settings.download_timeout,
    )

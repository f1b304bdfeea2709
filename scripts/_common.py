"""Shared bits of the scripts: repo on sys.path, the SDK client, and errors for people.

Every script runs its ``main`` through :func:`run`: whatever goes wrong ends as one sentence,
``error: ...`` on stderr, and a non-zero exit status; never a traceback, and never a secret
(tokens, passwords and cookies are neither printed nor passed on from exceptions).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

API_KEY_VAR = "LABEL_STUDIO_API_KEY"

# FFmpeg inside OpenCV prints its own complaints ("moov atom not found") before ours: the
# scripts say what is wrong with a video in one error line instead.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")


class Fail(Exception):
    """A problem the user can fix; the message is one sentence, printed after ``error:``."""


# What the running script talks to, for the messages; secrets are masked in every message.
_target = {"service": "Label Studio", "url": ""}
_secrets: set[str] = set()


def secret(value: str | None) -> str | None:
    """Remember ``value`` as a secret, to be masked in any message; returns it."""
    if value and len(value) >= 4:
        _secrets.add(value)
    return value


def talking_to(service: str, url: str) -> None:
    """Name the server the script talks to, for connection and HTTP error messages."""
    _target.update(service=service, url=url)


def redact(text: str) -> str:
    for value in sorted(_secrets, key=len, reverse=True):
        text = text.replace(value, "***")
    return text


class Parser(argparse.ArgumentParser):
    """argparse, with its usage errors as one ``error:`` line like every other error."""

    def error(self, message: str) -> NoReturn:
        print(f"error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def add_label_studio_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url",
        default=os.environ.get("LABEL_STUDIO_URL", "http://localhost:8080"),
        help="Label Studio URL (env LABEL_STUDIO_URL)",
    )
    parser.add_argument(
        "--api-key",
        default=os.environ.get(API_KEY_VAR, ""),
        help=f"legacy token or personal access token (env {API_KEY_VAR})",
    )


def positive(kind: type = int) -> Callable[[str], Any]:
    """An argparse type: a number above 0."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"{text} must be above 0")
        return value

    parse.__name__ = f"positive {kind.__name__}"
    return parse


def not_negative(text: str) -> int:
    """An argparse type: a whole number, 0 or more."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} must not be negative")
    return value


def user_password(text: str) -> tuple[str, str]:
    """An argparse type for ``--basic-auth USER:PASS``."""
    user, colon, password = text.partition(":")
    if not (user and colon):
        raise argparse.ArgumentTypeError("give it as USER:PASS")
    secret(password)
    return user, password


def client_from(args: argparse.Namespace):
    """A label-studio-sdk client for ``args.url``/``args.api_key``, checked with one request."""
    from ml_backend.labelstudio import client as labelstudio

    talking_to("Label Studio", args.url)
    if not args.api_key:
        raise Fail(f"no Label Studio token: set {API_KEY_VAR} or pass --api-key (Account & Settings in Label Studio)")
    secret(args.api_key)
    client = labelstudio.client(args.url, args.api_key)
    # a wrong URL or token fails here, before any work (and at once: no retries)
    client.projects.list(page_size=1, request_options={"max_retries": 0})
    return client


def get_project(client: Any, project_id: int) -> Any:
    """The project, or :class:`Fail` saying that it does not exist."""
    try:
        return client.projects.get(id=project_id)
    except Exception as exc:
        if getattr(exc, "status_code", None) == 404:
            raise Fail(f"project {project_id} does not exist in Label Studio at {_target['url']}") from None
        raise


def stack_redis_url(url: str | None = None) -> str | None:
    """The Redis URL (with its password) of the stack ``scripts/stack.py up`` (``make run``) runs
    from ``.stack/`` in the current folder or the repository, read from its ``stack.json`` (0600);
    with ``url``, only if that stack's Redis is at the same host and port. None otherwise."""
    import json
    from urllib.parse import urlsplit

    for state in (Path.cwd() / ".stack", ROOT / ".stack"):
        try:
            found = json.loads((state / "stack.json").read_text())["redis_url"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if url is None:
            return found
        a, b = urlsplit(url), urlsplit(found)
        hosts = {"localhost", "127.0.0.1", "::1"}
        same_host = a.hostname == b.hostname or {a.hostname, b.hostname} <= hosts
        if same_host and (a.port or 6379) == (b.port or 6379):
            return found
    return None


KINDS = {
    "greenscreen": ("a green-screen project (one video per task)", "scripts/import_segments.py"),
    "scenediff": ("a SceneDiff project (two videos per task)", "scripts/import_pairs.py"),
}


def check_project_config(project: Any, kind: str, data: dict[str, Any]) -> None:
    """:class:`Fail` unless ``project``'s labeling config is of ``kind`` (``greenscreen`` or
    ``scenediff``) and asks for no task-data key that ``data`` (a task this import makes) lacks:
    checked before any frame is extracted, since Label Studio would refuse the tasks after."""
    from ml_backend.labelstudio.automation import project_kind, required_data_keys

    config = getattr(project, "label_config", None) or ""
    try:
        found = project_kind(config)
        needed = required_data_keys(config)
    except Exception:
        raise Fail(f"project {project.id}'s labeling config cannot be read; create the project with "
                   "scripts/create_project.py and a config from label_config/") from None  # fmt: skip
    if found != kind:
        if found is None:
            raise Fail(
                f"project {project.id} has no labeling config for video annotation (no <Image valueList> with "
                f"KeyPointLabels or BrushLabels); create it with scripts/create_project.py --config "
                f"label_config/{'greenscreen_segment' if kind == 'greenscreen' else 'scenediff_pair'}.xml"
            )
        what, script = KINDS[found]
        raise Fail(f"project {project.id} is {what}; use {script}")
    missing = [key for key in needed if key not in data]
    if missing:
        raise Fail(
            f"project {project.id}'s labeling config shows task data {', '.join(repr(k) for k in missing)} that "
            f"this import does not make; use a config from label_config/ or add those keys to it"
        )


def undo_storage(client: Any, storage: Any) -> None:
    """Delete a local-files storage this run created (best effort: a warning if it cannot)."""
    try:
        client.import_storage.local.delete(id=storage.id)
    except Exception:
        print(f"warning: could not delete the local-files storage {storage.id} this run created; "
              "delete it in Label Studio (Settings → Cloud Storage)", file=sys.stderr)  # fmt: skip


def redis_queue(env: dict[str, str] | None = None) -> Any:
    """The worker's job queue (settings from the environment, plus ``env``), Redis checked with a ping.

    Without ``REDIS_URL``, the Redis of the running ``make run`` stack (``.stack/stack.json``),
    password included; with a ``REDIS_URL`` that lacks the stack's password, the same. The URL
    found is put in ``REDIS_URL`` for the rest of the script."""
    from redis import Redis
    from redis.exceptions import AuthenticationError, ResponseError

    from ml_backend.settings import Settings
    from ml_backend.worker.queue import JobQueue

    merged = {**os.environ, **(env or {})}
    if not merged.get("REDIS_URL") and stack_redis_url():
        merged["REDIS_URL"] = stack_redis_url()
    settings = Settings.from_env(merged)
    url = _public_url(settings.redis_url)

    def ping(redis_url: str) -> None:  # once, without the queue's retries: a wrong URL reports at once
        Redis.from_url(redis_url, socket_connect_timeout=5, socket_timeout=5).ping()

    try:
        ping(settings.redis_url)
    except (AuthenticationError, ResponseError):
        stack = stack_redis_url(settings.redis_url)
        if stack is None or stack == settings.redis_url:
            raise Fail(
                f"Redis at {url} refused the connection: check the password in REDIS_URL (the stack of "
                "`make run` keeps it in .stack/redis/password: REDIS_URL=redis://:$(cat .stack/redis/password)"
                "@127.0.0.1:6380/0)"
            ) from None
        try:
            ping(stack)
        except Exception:
            raise Fail(f"Redis at {url} refused the connection: check the password in REDIS_URL") from None
        _public_url(stack)
        settings = settings.replace(redis_url=stack)
    except Exception:
        raise Fail(f"cannot reach Redis at {url} (set REDIS_URL, or start the stack: make run)") from None
    os.environ["REDIS_URL"] = settings.redis_url
    return JobQueue.from_settings(settings)


def writable_folder(path: Path) -> None:
    """:class:`Fail` unless ``path`` is (or, from its nearest existing parent, can be) a writable folder."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise Fail(f"{existing} is not a folder, so {path} cannot be written")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise Fail(f"cannot write in {existing} (permission denied)")


def check_video(path: Path) -> None:
    """:class:`Fail` unless ``path`` is a video file (or a folder of frames) whose first frame decodes."""
    from ml_backend.exceptions import VideoError
    from ml_backend.video.frames import open_frames

    if not path.exists():
        raise Fail(f"video {path} does not exist")
    try:
        with open_frames(path, cache_frames=1):
            pass
    except VideoError as exc:
        raise Fail(str(exc)) from None


class NewFiles:
    """Undo for files a run writes under some folders: :meth:`remove` deletes what was not there
    before (files, then emptied folders), never what already existed."""

    def __init__(self, *folders: Path) -> None:
        self.before = {}
        for folder in map(Path, folders):
            while not folder.parent.exists() and folder.parent != folder:
                folder = folder.parent  # a missing folder's missing parents are new as well
            self.before[folder] = self._contents(folder)

    @staticmethod
    def _contents(folder: Path) -> set[Path] | None:
        return set(folder.rglob("*")) if folder.exists() else None

    def remove(self) -> None:
        for folder, before in self.before.items():
            if before is None:
                shutil.rmtree(folder, ignore_errors=True)
                continue
            for path in sorted(self._contents(folder) - before, key=lambda p: len(p.parts), reverse=True):
                try:
                    path.rmdir() if path.is_dir() and not path.is_symlink() else path.unlink()
                except OSError:
                    pass

    @contextmanager
    def removed_on_failure(self) -> Iterator[None]:
        try:
            yield
        except BaseException:
            self.remove()
            raise


def explain(exc: BaseException) -> str:
    """One sentence for the user about ``exc``; the exception's own text only where it holds no secrets."""
    import httpx

    from ml_backend.exceptions import MLBackendError

    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    service, url = _target["service"], _target["url"]
    cause = exc.__cause__ or exc.__context__
    status = getattr(exc, "status_code", None)
    if isinstance(status, int):  # label_studio_sdk's ApiError and its subclasses
        return _http_status(status, getattr(exc, "body", None))
    if isinstance(exc, httpx.HTTPStatusError):
        return _http_status(exc.response.status_code, _json_or_text(exc.response))
    if isinstance(exc, (httpx.UnsupportedProtocol, httpx.InvalidURL)):
        return f"{url!r} is not a usable {service} URL (it needs http:// or https:// and a host)"
    if isinstance(exc, httpx.TimeoutException):
        return f"{service} at {url} did not answer in time; try again"
    if isinstance(exc, httpx.TransportError):
        return f"cannot reach {service} at {url} ({_reason(exc)}); check the URL and that it is running"
    if type(exc).__module__.startswith("redis") and "Connection" in type(exc).__name__:
        return "lost the connection to Redis (REDIS_URL); try again"
    if isinstance(exc, MLBackendError):
        if cause is not None and isinstance(getattr(cause, "status_code", None), int):
            return explain(cause)  # e.g. the SDK refused an expired token while building the client
        return str(exc)
    if isinstance(exc, OSError) and exc.filename:
        return f"{exc.filename}: {exc.strerror}"
    return f"unexpected {type(exc).__name__}: {exc}"


def _http_status(status: int, body: Any) -> str:
    service, url = _target["service"], _target["url"]
    detail = _detail(body)
    said = f": {detail}" if detail else ""
    if status < 300:  # an answer, but not one of Label Studio's API (a wrong URL)
        return f"{url} does not answer like {service}; check the URL"
    if status in (401, 403):
        if service == "Label Studio":
            return f"Label Studio at {url} refused the token (HTTP {status}{said}); set {API_KEY_VAR} or --api-key to a valid one"
        return f"{service} at {url} refused the request (HTTP {status}{said}); check --basic-auth"
    if status == 404:
        return f"{service} at {url} has no such object (HTTP 404); check the URL and the ids you gave"
    if status >= 500:
        return f"{service} at {url} failed (HTTP {status}); try again, and see its log if it keeps failing"
    return f"{service} at {url} refused the request (HTTP {status}{said})"


def _detail(body: Any, limit: int = 300) -> str:
    """A short, single-line reading of an error body: Label Studio's validation messages as it
    wrote them (``validation_errors``, ahead of its generic ``detail: Validation error``), else
    ``detail``, ``error`` or ``message``; a bare ``{field: [messages]}`` names the field."""
    if isinstance(body, dict):
        for key in ("validation_errors", "detail", "error", "message"):
            if body.get(key):
                return _detail(body[key], limit)
        parts = []
        for key, value in body.items():
            text = _detail(value, limit)
            if text:
                parts.append(text if key in ("non_field_errors", "__all__") else f"{key}: {text}")
        return _short("; ".join(parts), limit)
    if isinstance(body, list):
        return _short("; ".join(filter(None, (_detail(b, limit) for b in body))), limit)
    if isinstance(body, str) and not body.lstrip().startswith("<"):  # not an HTML error page
        return _short(body, limit)
    return ""


def _short(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _json_or_text(response: Any) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text


def _reason(exc: BaseException) -> str:
    text = str(exc)
    for known in ("Connection refused", "Name or service not known", "No route to host", "Temporary failure"):
        if known in text:
            return known[0].lower() + known[1:]
    return text.split("] ", 1)[-1] or type(exc).__name__


def _public_url(url: str) -> str:
    """``url`` without a password."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.password:
        secret(parts.password)
        return url.replace(f":{parts.password}@", ":***@")
    return url


def run(main: Callable[[], int | None]) -> NoReturn:
    """Run a script's ``main`` and exit: its status, or 1 with one ``error:`` line on any error."""
    try:
        status = main()
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
    except Fail as exc:
        print(f"error: {redact(str(exc))}", file=sys.stderr)
        sys.exit(1)
    except Exception as exc:
        print(f"error: {redact(explain(exc))}", file=sys.stderr)
        sys.exit(1)
    sys.exit(status or 0)


def progress_bar(desc: str, unit: str = "frame"):
    """A tqdm bar driven by ``update(done, total)`` callbacks, counting ``unit``s."""
    from tqdm import tqdm

    bar = tqdm(desc=desc, unit=f" {unit}")

    def update(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()
        if done >= total:
            bar.close()

    return update

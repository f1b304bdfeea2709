"""The backend's routes as a Flask blueprint: health, setup, predict, webhook, job status, exports.

The app (:func:`ml_backend.server.app.create_app`) keeps what the routes share in
``app.extensions`` (``sam2_predictor``, ``sam2_jobs``, ``sam2_first_frames``, ``sam2_signs``)
and the settings in ``app.config["SETTINGS"]``. Basic auth and the NUL check run before every
request of the app.
"""

from __future__ import annotations

import hmac
import logging
import re
import time
from itertools import compress, repeat
from pathlib import Path
from typing import Any

from flask import Blueprint, current_app, jsonify, request, send_file

from ml_backend.exceptions import BadPayload
from ml_backend.labelstudio.signs import sign_webhook
from ml_backend.labelstudio.webhook import Webhook
from ml_backend.server.interactive import REQUEST_TIMINGS, Timings
from ml_backend.settings import Settings

log = logging.getLogger(__name__)

bp = Blueprint("sam2", __name__)

#: Deepest JSON nesting accepted in a body (Label Studio's payloads nest less than 10 deep).
MAX_JSON_DEPTH = 100

TOO_DEEP = f"the request body is JSON nested deeper than {MAX_JSON_DEPTH} levels; send a flatter document"

#: What a job id may look like (the ids this package and RQ make).
JOB_ID = re.compile(r"[A-Za-z0-9_.:-]{1,200}")


def json_depth(data: Any) -> int:
    """How deeply ``data`` nests lists and objects (``1`` for a flat list), without recursion.

    Only containers are visited: the scalars of a list are skipped by C-level iteration
    (``compress`` over their types), so a body holding megabytes of brush RLE (Label Studio
    sends a task's predictions with every click) costs milliseconds, not a tuple per number.
    """
    if type(data) not in _CONTAINERS:
        return 0
    deepest, stack = 0, [(data, 1)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth > MAX_JSON_DEPTH:
            break
        children = item.values() if type(item) is dict else item
        inner = list(compress(children, map(_CONTAINERS.__contains__, map(type, children))))
        stack.extend(zip(inner, repeat(depth + 1)))
    return deepest


#: What a decoded JSON document nests: exactly these types (``json.loads`` makes no subclasses).
_CONTAINERS = frozenset((dict, list))


def _settings() -> Settings:
    return current_app.config["SETTINGS"]


def _predictor() -> Any:
    return current_app.extensions["sam2_predictor"]


def _jobs() -> Any:
    return current_app.extensions["sam2_jobs"]


@bp.before_app_request
def _auth() -> Any:
    settings = _settings()
    if not settings.basic_auth_user or request.path == "/health":
        return None
    if _credentials_match(request.authorization, settings):
        return None
    response = jsonify(error="HTTP basic auth required (BASIC_AUTH_USER / BASIC_AUTH_PASS)")
    response.status_code = 401
    response.headers["WWW-Authenticate"] = 'Basic realm="sam2-ml-backend"'
    return response


@bp.before_app_request
def _no_nul() -> Any:
    if "\x00" in request.path:
        raise BadPayload("a NUL character (%00) is not allowed in a URL path")
    return None


def body() -> Any:
    raw = request.get_data(cache=True)
    try:
        data = current_app.json.loads(raw)
    except RecursionError:
        raise BadPayload(TOO_DEEP) from None
    except ValueError:
        raise BadPayload("the request body is not valid JSON") from None
    if json_depth(data) > MAX_JSON_DEPTH:
        raise BadPayload(TOO_DEEP)
    return data


@bp.get("/")
@bp.get("/health")
def health() -> Any:
    return jsonify(status="UP", model_class="SAM2", model_loaded=_predictor().ready)


@bp.get("/versions")
def versions() -> Any:
    return jsonify(versions=[_predictor().model_version])


@bp.post("/setup")
def setup() -> Any:
    data = body()
    if not isinstance(data, dict):
        raise BadPayload("the body must be a JSON object with 'project' and 'schema' (the labeling config)")
    _predictor().remember_config(data.get("project"), data.get("schema"))
    return jsonify(model_version=_predictor().model_version)


@bp.post("/predict")
def predict() -> Any:

    timings = Timings()
    started = time.perf_counter()
    payload = body()  # Label Studio sends the task with its drafts, annotations and predictions
    timings.add("parse", time.perf_counter() - started)
    token = REQUEST_TIMINGS.set(timings)  # the predictor adds its parts
    try:
        answer = _predictor().predict(payload)
    finally:
        REQUEST_TIMINGS.reset(token)
    started = time.perf_counter()
    response = jsonify(answer)
    timings.add("json", time.perf_counter() - started)
    response.headers["Server-Timing"] = timings.header()
    if len(timings.parts) > 2:  # a click (Label Studio does not pass the header on to the browser)
        log.info("click answered; Server-Timing: %s", response.headers["Server-Timing"])
    return response


@bp.post("/webhook")
def webhook() -> Any:
    hook = Webhook.parse(body())  # a malformed webhook is a 400 with or without a queue
    shown = hook
    if hook.action in ("ANNOTATION_CREATED", "ANNOTATION_UPDATED"):
        # record the signs the annotation carries
        shown = Webhook.of(sign_webhook(current_app.extensions["sam2_signs"], hook.payload))
    jobs = _jobs()
    answer = jobs.on_webhook(hook) if jobs is not None else {"status": "ignored", "reason": "no job queue configured"}
    current_app.extensions["sam2_first_frames"].submit(
        shown
    )  # the first-frame preview, in the background, in either WEBHOOK_MODE
    return jsonify(answer)


@bp.get("/jobs/<job_id>")
def job_status(job_id: str) -> Any:
    if not JOB_ID.fullmatch(job_id):
        raise BadPayload(
            f"{job_id[:60]!r} is not a job id: job ids are 1 to 200 letters, digits and _ . : - "
            "(as /webhook answers them)"
        )
    jobs = _jobs()
    if jobs is None:
        return jsonify(error="no job queue configured"), 404
    status = jobs.status(job_id)
    if status is None:
        return jsonify(error=f"no job {job_id!r}"), 404
    return jsonify(status)


@bp.get("/exports/<int:project>")
def exports_list(project: int) -> Any:
    root = _settings().results_root / f"project_{project}"
    if not root.is_dir():
        return jsonify(files=[])
    files = [
        {"path": p.relative_to(root).as_posix(), "bytes": p.stat().st_size}
        for p in sorted(root.rglob("*"))
        if _servable(root, p.relative_to(root).as_posix()) is not None
    ]
    return jsonify(files=files)


@bp.get("/exports/<int:project>/<path:relpath>")
def exports_file(project: int, relpath: str) -> Any:

    if any(part.startswith(".") for part in relpath.split("/")):
        raise BadPayload("hidden files are not served")
    path = _servable(_settings().results_root / f"project_{project}", relpath)
    if path is None:
        return jsonify(error=f"project {project} has no export file {relpath[:200]!r}"), 404
    return send_file(path, as_attachment=True)


def _credentials_match(auth: Any, settings: Settings) -> bool:
    """True when ``auth`` is basic auth with the configured user and password (any characters)."""
    if auth is None or auth.type != "basic":
        return False
    user = (auth.username or "").encode("utf-8", "surrogatepass")
    password = (auth.password or "").encode("utf-8", "surrogatepass")
    user_ok = hmac.compare_digest(user, settings.basic_auth_user.encode())
    return hmac.compare_digest(password, settings.basic_auth_pass.encode()) and user_ok


def _servable(root: Path, relpath: str) -> Path | None:
    """The file ``relpath`` names inside ``root``, or None: hidden names, links or folders leading
    out of ``root``, anything not a regular file."""
    parts = relpath.split("/")
    if not relpath or any(part.startswith(".") or part in ("", "..") for part in parts):
        return None
    try:
        base = root.resolve()
        path = (base / relpath).resolve()
    except (OSError, ValueError, RuntimeError):
        return None
    if not path.is_relative_to(base) or not path.is_file():
        return None
    return path

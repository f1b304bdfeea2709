"""The HTTP server Label Studio talks to: an app factory, nothing heavy at import.

Routes (the Label Studio ML-backend protocol, payloads in the README):

- ``GET /health`` → ``{"status": "UP", "model_loaded": bool}``, never waits for the model;
- ``POST /setup`` → ``{"model_version": ...}``, remembers the project's config;
- ``POST /predict`` → ``{"results": [...]}``, interactive clicks → brush masks; a call without
  clicks → an empty list of predictions per task; a ``Server-Timing`` header gives the
  server's share (parse, fetch, decode, embed, decoder, rle, json, total, in ms);
- ``POST /webhook`` → enqueue propagation for submitted annotations / "Start training", and render
  a submitted annotation's first-frame preview in the background (:mod:`.firstframe`);
- ``GET /versions`` → ``{"versions": [...]}``;
- ``GET /jobs/<id>`` → a propagation job's status and progress;
- ``GET /exports/<project>`` → the project's export files; ``GET /exports/<project>/<path>`` → one file.

Errors are JSON ``{"error": message}`` with a 4xx status for bad input; the server stays up.
Bodies over ``MAX_REQUEST_BYTES`` get a 413 before they are read; JSON nested deeper than
:data:`MAX_JSON_DEPTH` a 400. An unexpected error is logged with an id and answered with a 500
that carries only that id (the exception's text can hold secrets).
With ``BASIC_AUTH_USER``/``BASIC_AUTH_PASS`` set, every route but ``/health`` needs HTTP basic auth.
"""

from __future__ import annotations

import hmac
import logging
import re
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from flask import Flask, jsonify, request, send_file
from redis.exceptions import RedisError
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from ml_backend.exceptions import BadPayload, MLBackendError, RequestError
from ml_backend.labelstudio.fetch import default_fetcher
from ml_backend.labelstudio.signs import sign_webhook, store_for
from ml_backend.labelstudio.webhook import Webhook
from ml_backend.models import build_image_model, check_checkpoint
from ml_backend.server.firstframe import FirstFramePreviews
from ml_backend.server.interactive import REQUEST_TIMINGS, InteractivePredictor, Timings
from ml_backend.server.prefetch import RequestListener
from ml_backend.server.segmenter import ImageSegmenter
from ml_backend.settings import Settings
from ml_backend.video.speed import log_backend_speed

log = logging.getLogger(__name__)


#: Deepest JSON nesting accepted in a body (Label Studio's payloads nest less than 10 deep).
MAX_JSON_DEPTH = 100

TOO_DEEP = f"the request body is JSON nested deeper than {MAX_JSON_DEPTH} levels; send a flatter document"

#: What a job id may look like (the ids this package and RQ make).
JOB_ID = re.compile(r"[A-Za-z0-9_.:-]{1,200}")


def json_depth(data: Any) -> int:
    """How deeply ``data`` nests lists and objects (``1`` for a flat list), without recursion."""
    deepest, stack = 0, [(data, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, depth)
            if depth > MAX_JSON_DEPTH:
                break
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return deepest


def default_segmenter_factory(settings: Settings):
    """Build the real SAM 2 image segmenter for ``settings`` (called lazily, once)."""

    def factory() -> Any:

        return ImageSegmenter(build_image_model(settings), settings)

    return factory


def create_app(
    settings: Settings | None = None,
    *,
    predictor: Any = None,
    jobs: Any = None,
    warmup: bool = False,
    prefetch_requests: bool = False,
) -> Flask:
    """Create the Flask app.

    ``predictor`` is an :class:`~ml_backend.server.interactive.InteractivePredictor` (default: the real
    one for ``settings``); ``jobs`` is a :class:`~ml_backend.worker.jobs.JobQueue` or None (webhooks are
    then acknowledged but not queued). ``warmup`` builds the model in a background thread so the
    first click does not pay for it. ``prefetch_requests`` reads the worker's prefetch requests
    from the job queue's Redis on a background thread (:class:`~ml_backend.server.prefetch.RequestListener`,
    in ``app.extensions["sam2_prefetch_requests"]``; the server turns it on). Raises :class:`~ml_backend.exceptions.CheckpointMissing`
    when there is no checkpoint and random weights were not asked for.
    """

    settings = settings or Settings.from_env()
    if predictor is None:
        check_checkpoint(settings)
        predictor = InteractivePredictor(
            settings, fetcher=default_fetcher(settings), segmenter_factory=default_segmenter_factory(settings)
        )
    app = Flask(__name__)
    app.config["SETTINGS"] = settings
    app.extensions["sam2_predictor"] = predictor
    app.extensions["sam2_jobs"] = jobs

    first_frames = FirstFramePreviews(settings, predictor, connection=getattr(jobs, "connection", None))
    app.extensions["sam2_first_frames"] = first_frames

    signs = store_for(getattr(jobs, "connection", None))  # keypoint signs, shared with the worker
    predictor.signs = signs
    connection = getattr(jobs, "connection", None)
    if prefetch_requests and connection is not None and getattr(predictor, "prefetcher", None) is not None:
        app.extensions["sam2_prefetch_requests"] = RequestListener(connection, predictor.prefetch_request).start()

    if warmup:

        def warm() -> None:  # build the model, then say how long a click takes on this machine

            try:
                log_backend_speed(predictor, settings)
            except Exception:
                log.exception("warming up the model failed")

        threading.Thread(target=warm, name="sam2-warmup", daemon=True).start()

    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes

    @app.before_request
    def _auth() -> Any:
        if not settings.basic_auth_user or request.path == "/health":
            return None
        if _credentials_match(request.authorization, settings):
            return None
        response = jsonify(error="HTTP basic auth required (BASIC_AUTH_USER / BASIC_AUTH_PASS)")
        response.status_code = 401
        response.headers["WWW-Authenticate"] = 'Basic realm="sam2-ml-backend"'
        return response

    @app.before_request
    def _no_nul() -> Any:
        if "\x00" in request.path:
            raise BadPayload("a NUL character (%00) is not allowed in a URL path")
        return None

    def body() -> Any:
        raw = request.get_data(cache=True)
        try:
            data = app.json.loads(raw)
        except RecursionError:
            raise BadPayload(TOO_DEEP) from None
        except ValueError:
            raise BadPayload("the request body is not valid JSON") from None
        if json_depth(data) > MAX_JSON_DEPTH:
            raise BadPayload(TOO_DEEP)
        return data

    @app.get("/")
    @app.get("/health")
    def health() -> Any:
        return jsonify(status="UP", model_class="SAM2", model_loaded=predictor.ready)

    @app.get("/versions")
    def versions() -> Any:
        return jsonify(versions=[predictor.model_version])

    @app.post("/setup")
    def setup() -> Any:
        data = body()
        if not isinstance(data, dict):
            raise BadPayload("the body must be a JSON object with 'project' and 'schema' (the labeling config)")
        predictor.remember_config(data.get("project"), data.get("schema"))
        return jsonify(model_version=predictor.model_version)

    @app.post("/predict")
    def predict() -> Any:

        timings = Timings()
        started = time.perf_counter()
        payload = body()  # Label Studio sends the task with its drafts, annotations and predictions
        timings.add("parse", time.perf_counter() - started)
        token = REQUEST_TIMINGS.set(timings)  # the predictor adds its parts
        try:
            answer = predictor.predict(payload)
        finally:
            REQUEST_TIMINGS.reset(token)
        started = time.perf_counter()
        response = jsonify(answer)
        timings.add("json", time.perf_counter() - started)
        response.headers["Server-Timing"] = timings.header()
        if len(timings.parts) > 2:  # a click (Label Studio does not pass the header on to the browser)
            log.info("click answered; Server-Timing: %s", response.headers["Server-Timing"])
        return response

    @app.post("/webhook")
    def webhook() -> Any:
        hook = Webhook.parse(body())  # a malformed webhook is a 400 with or without a queue
        shown = hook
        if hook.action in ("ANNOTATION_CREATED", "ANNOTATION_UPDATED"):
            shown = Webhook.of(sign_webhook(signs, hook.payload))  # record the signs the annotation carries
        answer = (
            jobs.on_webhook(hook) if jobs is not None else {"status": "ignored", "reason": "no job queue configured"}
        )
        first_frames.submit(shown)  # the first-frame preview, in the background, in either WEBHOOK_MODE
        return jsonify(answer)

    @app.get("/jobs/<job_id>")
    def job_status(job_id: str) -> Any:
        if not JOB_ID.fullmatch(job_id):
            raise BadPayload(
                f"{job_id[:60]!r} is not a job id: job ids are 1 to 200 letters, digits and _ . : - "
                "(as /webhook answers them)"
            )
        if jobs is None:
            return jsonify(error="no job queue configured"), 404
        status = jobs.status(job_id)
        if status is None:
            return jsonify(error=f"no job {job_id!r}"), 404
        return jsonify(status)

    @app.get("/exports/<int:project>")
    def exports_list(project: int) -> Any:
        root = settings.results_root / f"project_{project}"
        if not root.is_dir():
            return jsonify(files=[])
        files = [
            {"path": p.relative_to(root).as_posix(), "bytes": p.stat().st_size}
            for p in sorted(root.rglob("*"))
            if _servable(root, p.relative_to(root).as_posix()) is not None
        ]
        return jsonify(files=files)

    @app.get("/exports/<int:project>/<path:relpath>")
    def exports_file(project: int, relpath: str) -> Any:

        if any(part.startswith(".") for part in relpath.split("/")):
            raise BadPayload("hidden files are not served")
        path = _servable(settings.results_root / f"project_{project}", relpath)
        if path is None:
            return jsonify(error=f"project {project} has no export file {relpath[:200]!r}"), 404
        return send_file(path, as_attachment=True)

    @app.errorhandler(RequestError)
    def request_error(exc: RequestError) -> Any:
        log.info("rejected %s %s: %s", request.method, request.path, exc)
        return jsonify(error=str(exc), kind=type(exc).__name__), exc.status

    @app.errorhandler(MLBackendError)
    def backend_error(exc: MLBackendError) -> Any:
        log.warning("failed %s %s: %s", request.method, request.path, exc)
        return jsonify(error=str(exc), kind=type(exc).__name__), 503

    @app.errorhandler(RedisError)
    def redis_error(exc: RedisError) -> Any:
        log.warning("Redis unavailable on %s %s: %s", request.method, request.path, type(exc).__name__)
        message = "the job queue (Redis) is unavailable right now; try again in a minute"
        return jsonify(error=message, kind="QueueUnavailable"), 503

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Any:
        if isinstance(exc, RequestEntityTooLarge):
            message = (
                f"the request body is over {settings.max_request_bytes / 1024**2:g} MiB (MAX_REQUEST_BYTES); "
                "send task files by URL, not inline"
            )
            return jsonify(error=message, kind="RequestEntityTooLarge"), 413
        return jsonify(error=exc.description, kind=type(exc).__name__), exc.code or 500

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Any:
        error_id = uuid.uuid4().hex[:12]
        log.exception("unexpected error %s on %s %s", error_id, request.method, request.path)
        message = f"internal error {error_id}: the server logged the details under this id"
        return jsonify(error=message, error_id=error_id, kind="InternalError"), 500

    return app


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

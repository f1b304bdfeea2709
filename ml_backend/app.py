"""The HTTP server Label Studio talks to: an app factory, nothing heavy at import.

Routes (the Label Studio ML-backend protocol, payloads in the README):

- ``GET /health`` → ``{"status": "UP", "model_loaded": bool}``, never waits for the model;
- ``POST /setup`` → ``{"model_version": ...}``, remembers the project's config;
- ``POST /predict`` → ``{"results": [...]}``, interactive clicks → brush masks;
- ``POST /webhook`` → enqueue propagation for submitted annotations / "Start training";
- ``GET /versions`` → ``{"versions": [...]}``;
- ``GET /jobs/<id>`` → a propagation job's status and progress;
- ``GET /exports/<project>`` → the project's export files; ``GET /exports/<project>/<path>`` → one file.

Errors are JSON ``{"error": message}`` with a 4xx status for bad input; the server stays up.
With ``BASIC_AUTH_USER``/``BASIC_AUTH_PASS`` set, every route but ``/health`` needs HTTP basic auth.
"""

from __future__ import annotations

import hmac
import logging
import threading
from typing import Any

from flask import Flask, jsonify, request
from werkzeug.exceptions import HTTPException

from .exceptions import BadPayload, MLBackendError, RequestError
from .settings import Settings

log = logging.getLogger(__name__)


def default_segmenter_factory(settings: Settings):
    """Build the real SAM 2 image segmenter for ``settings`` (called lazily, once)."""

    def factory() -> Any:
        from .models import build_image_model
        from .segmenter import ImageSegmenter

        return ImageSegmenter(build_image_model(settings), settings)

    return factory


def default_fetcher(settings: Settings, *, max_bytes: int | None = None):
    """The :class:`~ml_backend.fetch.FileFetcher` for ``settings`` (``max_bytes`` overrides the limit)."""
    from . import labelstudio
    from .fetch import FileFetcher

    def headers() -> dict[str, str]:
        if not settings.label_studio_api_key:
            return {}
        return labelstudio.auth_headers(settings.label_studio_url, settings.label_studio_api_key)

    return FileFetcher(
        settings.label_studio_url,
        settings.data_dir / "downloads",
        headers=headers,
        local_root=settings.local_files_root or None,
        max_bytes=max_bytes or settings.max_download_bytes,
        cache_bytes=settings.download_cache_bytes,
        timeout=settings.download_timeout,
    )


def create_app(
    settings: Settings | None = None,
    *,
    predictor: Any = None,
    jobs: Any = None,
    warmup: bool = False,
) -> Flask:
    """Create the Flask app.

    ``predictor`` is an :class:`~ml_backend.interactive.InteractivePredictor` (default: the real
    one for ``settings``); ``jobs`` is a :class:`~ml_backend.jobs.JobQueue` or None (webhooks are
    then acknowledged but not queued). ``warmup`` builds the model in a background thread so the
    first click does not pay for it. Raises :class:`~ml_backend.exceptions.CheckpointMissing`
    when there is no checkpoint and random weights were not asked for.
    """
    from .interactive import InteractivePredictor
    from .models import check_checkpoint

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

    if warmup:
        threading.Thread(target=lambda: predictor.segmenter, name="sam2-warmup", daemon=True).start()

    @app.before_request
    def _auth() -> Any:
        if not settings.basic_auth_user or request.path == "/health":
            return None
        auth = request.authorization
        ok = (
            auth is not None
            and auth.type == "basic"
            and hmac.compare_digest(auth.username or "", settings.basic_auth_user)
            and hmac.compare_digest(auth.password or "", settings.basic_auth_pass)
        )
        if ok:
            return None
        response = jsonify(error="HTTP basic auth required (BASIC_AUTH_USER / BASIC_AUTH_PASS)")
        response.status_code = 401
        response.headers["WWW-Authenticate"] = 'Basic realm="sam2-ml-backend"'
        return response

    def body() -> Any:
        data = request.get_json(silent=True, force=True)
        if data is None:
            raise BadPayload("the request body is not valid JSON")
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
            raise BadPayload("the body must be a JSON object")
        predictor.remember_config(data.get("project"), data.get("schema"))
        return jsonify(model_version=predictor.model_version)

    @app.post("/predict")
    def predict() -> Any:
        return jsonify(predictor.predict(body()))

    @app.post("/webhook")
    def webhook() -> Any:
        data = body()
        if not isinstance(data, dict) or not isinstance(data.get("action"), str):
            raise BadPayload("a webhook body is a JSON object with an 'action'")
        if jobs is None:
            return jsonify(status="ignored", reason="no job queue configured"), 200
        return jsonify(jobs.on_webhook(data))

    @app.get("/jobs/<job_id>")
    def job_status(job_id: str) -> Any:
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
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
        ]
        return jsonify(files=files)

    @app.get("/exports/<int:project>/<path:relpath>")
    def exports_file(project: int, relpath: str) -> Any:
        from flask import send_from_directory

        if any(part.startswith(".") for part in relpath.split("/")):
            raise BadPayload("hidden files are not served")
        return send_from_directory(settings.results_root.resolve() / f"project_{project}", relpath, as_attachment=True)

    @app.errorhandler(RequestError)
    def request_error(exc: RequestError) -> Any:
        log.info("rejected %s %s: %s", request.method, request.path, exc)
        return jsonify(error=str(exc), kind=type(exc).__name__), exc.status

    @app.errorhandler(MLBackendError)
    def backend_error(exc: MLBackendError) -> Any:
        log.warning("failed %s %s: %s", request.method, request.path, exc)
        return jsonify(error=str(exc), kind=type(exc).__name__), 503

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Any:
        return jsonify(error=exc.description, kind=type(exc).__name__), exc.code or 500

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Any:
        log.exception("unexpected error on %s %s", request.method, request.path)
        return jsonify(error=f"internal error: {type(exc).__name__}: {exc}", kind="InternalError"), 500

    return app

"""The backend's errors as JSON: 4xx for bad input, 503 while a dependency is away, 500 with an id."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from flask import Flask, current_app, jsonify, request
from redis.exceptions import RedisError
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from ml_backend.exceptions import MLBackendError, RequestError

log = logging.getLogger(__name__)


def register_error_handlers(app: Flask) -> None:
    """Answer every error of ``app`` as ``{"error": message, "kind": ...}``; an unexpected one is
    logged under an id and answered with only that id (its text can hold secrets)."""

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
                f"the request body is over {current_app.config['SETTINGS'].max_request_bytes / 1024**2:g} MiB (MAX_REQUEST_BYTES); "
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

"""The backend's Flask app factory: the predictor, the queue, previews and signs wired to the routes.

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

import logging
import threading
from typing import Any

from flask import Flask

from ml_backend.labelstudio.fetch import default_fetcher
from ml_backend.labelstudio.signs import store_for
from ml_backend.models import build_image_model, check_checkpoint
from ml_backend.server.errors import register_error_handlers
from ml_backend.server.firstframe import FirstFramePreviews
from ml_backend.server.interactive import InteractivePredictor
from ml_backend.server.prefetch import RequestListener
from ml_backend.server.routes import bp
from ml_backend.server.segmenter import ImageSegmenter
from ml_backend.settings import Settings
from ml_backend.video.speed import log_backend_speed

log = logging.getLogger(__name__)


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
    app.extensions["sam2_signs"] = signs
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

    app.register_blueprint(bp)
    register_error_handlers(app)
    return app

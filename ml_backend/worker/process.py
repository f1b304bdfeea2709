"""What one worker process holds: its settings, its SAM 2 predictor, and the execution each thread runs."""

from __future__ import annotations

import threading
from typing import Any

from rq.serializers import JSONSerializer

from ml_backend import models
from ml_backend.settings import Settings

#: Redis key holding the id of the execution that owns a job (the one allowed to publish it).
OWNER_KEY = "sam2:job-owner:{job_id}"


#: Serializer of the propagation queue: JSON, so reading a job never unpickles anything.
SERIALIZER = JSONSerializer


_predictor: Any = None


_predictor_key: Any = None


_settings: Settings | None = None


_lock = threading.Lock()


_local = threading.local()


def configure(settings: Settings) -> None:
    """Set the settings jobs in this process use (default: read from the environment)."""
    global _settings
    _settings = settings


def current_settings() -> Settings:
    global _settings
    if _settings is None:
        _settings = Settings.from_env()
    return _settings


def current_execution() -> str | None:
    """The id of the execution running in this thread (None outside a worker's job)."""
    return getattr(_local, "execution", None)


def current_rerun() -> bool:
    """Whether the job running in this thread runs its run again (after a stop or a lost worker)."""
    return bool(getattr(_local, "rerun", False))


def get_predictor(settings: Settings) -> Any:
    """The process's SAM 2 video predictor for ``settings``, built on first use."""
    global _predictor, _predictor_key
    key = (
        settings.model_size,
        settings.checkpoint,
        str(settings.checkpoint_path),
        settings.image_size,
        settings.device,
        settings.compile,
    )
    with _lock:
        if _predictor is None or _predictor_key != key:
            _predictor = models.build_video_predictor(settings)
            _predictor_key = key
        return _predictor

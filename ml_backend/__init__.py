"""SAM 2 for video annotation in Label Studio: an ML backend and an RQ propagation worker.

Importing this package is cheap: torch, sam2 and the model load only when first needed.
"""

from ml_backend.exceptions import (
    AlreadyPublished,
    BadPayload,
    BadPoint,
    CheckpointMissing,
    ConfigurationError,
    FetchError,
    ForbiddenURL,
    InvalidLabelConfig,
    ItemIndexOutOfRange,
    JobError,
    JobRefused,
    MLBackendError,
    NotAFile,
    NotAnImage,
    PromptError,
    RequestError,
    SourceNotFound,
    Superseded,
    TooLarge,
    TooManyPoints,
    Unavailable,
    UnknownTag,
    VideoError,
)
from ml_backend.settings import Settings

__version__ = "0.1.0"

__all__ = [
    "AlreadyPublished",
    "BadPayload",
    "BadPoint",
    "CheckpointMissing",
    "ConfigurationError",
    "FetchError",
    "ForbiddenURL",
    "InvalidLabelConfig",
    "ItemIndexOutOfRange",
    "JobError",
    "JobRefused",
    "MLBackendError",
    "NotAFile",
    "NotAnImage",
    "PromptError",
    "RequestError",
    "Settings",
    "SourceNotFound",
    "Superseded",
    "TooLarge",
    "TooManyPoints",
    "Unavailable",
    "UnknownTag",
    "VideoError",
    "__version__",
    "create_app",
]


def create_app(*args, **kwargs):
    """The backend's Flask app; see :func:`ml_backend.server.app.create_app`."""
    from ml_backend.server.app import create_app as _create_app

    return _create_app(*args, **kwargs)

"""Every exception the package raises on purpose, in one flat module.

The tree::

    MLBackendError
    ├── ConfigurationError          settings that cannot work; the process refuses to start
    │   └── CheckpointMissing       no SAM 2 checkpoint and no explicit ``random`` opt-in
    ├── RequestError                a request that cannot be answered; HTTP 4xx (``status``)
    │   ├── BadPayload              malformed JSON, missing fields, wrong types        (400)
    │   ├── UnknownTag              a tag name that the label config does not have      (422)
    │   ├── InvalidLabelConfig      a label config Label Studio's parser rejects        (422)
    │   ├── BadPoint                a keypoint outside the image                        (422)
    │   ├── TooManyPoints           more clicks on one object than a session keeps      (422)
    │   ├── ItemIndexOutOfRange     ``item_index`` past the end of a multi-image list   (422)
    │   └── FetchError              a task file that cannot be used                     (4xx)
    │       ├── ForbiddenURL        another host, a ``../`` path, an unknown scheme     (403)
    │       ├── SourceNotFound      404 or unreachable                                  (424)
    │       │   └── Unavailable     Label Studio unreachable or failing (5xx): transient (424)
    │       ├── NotAnImage          bytes that do not decode as an image                (415)
    │       ├── NotAFile            a folder where one image file is needed             (422)
    │       └── TooLarge            over the byte or pixel limit                        (413)
    ├── JobError                    a propagation job that cannot run; the job FAILS with the message
    │   ├── VideoError              missing, corrupt or empty video
    │   ├── PromptError             prompts that do not fit the video or the objects
    │   └── JobRefused              a queued job that is not one of ours (the worker never runs it)
    └── Superseded                  a job that must not publish (a newer annotation, a deleted
        │                           one, another execution owns it): it publishes nothing and
        │                           ends quietly
        └── AlreadyPublished        this run of the job was published by an earlier execution

    WorkerStopping (a BaseException, not an error): the worker was asked to stop (SIGINT/SIGTERM);
    the job stops at its next frame and goes back to the front of the queue without using a retry

Errors with ``transient = True`` (Label Studio or Redis briefly away) are retried with backoff
(``LABEL_STUDIO_RETRY_SECONDS``, ``REDIS_RETRY_SECONDS``); every other error fails at once.

Every message is written for the person who sent the input: say what was wrong and what
would be right.
"""


class MLBackendError(Exception):
    """Base class of every error raised on purpose by this package."""

    #: True for trouble that goes away by itself (a service restarting): worth retrying.
    transient = False


class ConfigurationError(MLBackendError):
    """The settings cannot work (bad value, missing file)."""


class CheckpointMissing(ConfigurationError):
    """No SAM 2 checkpoint was found and random weights were not asked for."""


class RequestError(MLBackendError):
    """A request that cannot be answered. ``status`` is the HTTP status to reply with."""

    status = 400


class BadPayload(RequestError):
    status = 400


class UnknownTag(RequestError):
    status = 422


class InvalidLabelConfig(RequestError):
    """A labeling config that Label Studio's parser rejects."""

    status = 422


class BadPoint(RequestError):
    status = 422


class TooManyPoints(RequestError):
    """More points on one object than a click session keeps (``MAX_SESSION_POINTS``)."""

    status = 422


class ItemIndexOutOfRange(RequestError):
    status = 422


class FetchError(RequestError):
    status = 424


class ForbiddenURL(FetchError):
    status = 403


class SourceNotFound(FetchError):
    status = 424


class Unavailable(SourceNotFound):
    """Label Studio did not answer, or answered 5xx: retried with backoff by jobs."""

    transient = True


class NotAnImage(FetchError):
    status = 415


class NotAFile(FetchError):
    """A task file reference that names a folder where one file is needed."""

    status = 422


class TooLarge(FetchError):
    status = 413


class JobError(MLBackendError):
    """A propagation job that cannot run; the message is the job's failure reason."""


class VideoError(JobError):
    """A video that is missing, unreadable or has no frames."""


class PromptError(JobError):
    """Prompts that do not fit the video (frame out of range) or an object without prompts."""


class JobRefused(JobError):
    """A queued job that names a function this worker does not run (see :mod:`ml_backend.worker.runner`)."""


class Superseded(MLBackendError):
    """The job's annotation is no longer the task's latest: a newer job publishes instead."""


class AlreadyPublished(Superseded):
    """This run of the job has been published already (an execution that was presumed dead
    finished after all, and the job had been requeued meanwhile): nothing is published twice."""


class WorkerStopping(BaseException):
    """The worker was asked to stop: the running job stops at its next frame and is put back at
    the front of the queue, without using a retry (:mod:`ml_backend.worker.liveness`). A BaseException so
    that no ``except Exception`` in job code swallows it."""

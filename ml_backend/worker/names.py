"""The job functions by dotted name: today's, and those of earlier releases that queued jobs may still carry."""

from __future__ import annotations

#: The job functions, by name: the queue never imports them (they run in the worker).
TASK_JOB = "ml_backend.worker.jobs.propagate_task"


PROMPTS_JOB = "ml_backend.worker.jobs.propagate_prompts"


#: The preparation of a video uploaded in Label Studio (:mod:`ml_backend.worker.uploadjob`).
UPLOAD_JOB = "ml_backend.worker.uploadjob.prepare_upload"


#: Their names before the package was split into subpackages: jobs queued then still run.
OLD_NAMES = {
    "ml_backend.jobs.propagate_task": TASK_JOB,
    "ml_backend.jobs.propagate_prompts": PROMPTS_JOB,
}

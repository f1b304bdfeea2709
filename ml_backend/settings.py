"""Settings, read once from environment variables into a frozen, typed object.

>>> settings = Settings.from_env({"SAM2_MODEL_SIZE": "small"})
>>> settings.model_size
'small'

Every field names its environment variable and a one-line description in its metadata;
``python -m ml_backend settings`` prints them as the README's table.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ml_backend import defaults
from ml_backend.exceptions import ConfigurationError
from ml_backend.exporters.registry import REGISTRY

MODEL_SIZES = ("tiny", "small", "base_plus", "large")


def checkpoint_name(model_size: str) -> str:
    """File name of the official checkpoint, e.g. ``sam2.1_hiera_tiny.pt``."""
    if model_size not in MODEL_SIZES:
        raise ConfigurationError(f"unknown model size {model_size!r}")
    return f"sam2.1_hiera_{model_size}.pt"


DEVICES = ("auto", "cuda", "mps", "cpu")
WEBHOOK_MODES = ("auto", "batch")


def _env(name: str, doc: str) -> dict[str, str]:
    return {"env": name, "doc": doc}


def setting(default: Any, env: str, doc: str) -> Any:
    """A field of :class:`Settings`: its default, the environment variable that sets it, and what it does."""
    return field(default=default, metadata=_env(env, doc))


@dataclass(frozen=True)
class QualityRule:
    """Thresholds of the flag rule (see the module docstring); defaults in :mod:`.defaults`."""

    min_score: float = defaults.QUALITY_MIN_SCORE
    area_ratio: float = defaults.QUALITY_AREA_RATIO
    jump: float = defaults.QUALITY_JUMP
    max_pages: int = defaults.REVIEW_MAX_PAGES


@dataclass(frozen=True)
class Settings:
    """All run-time settings. Build with :meth:`from_env`; tests may pass keyword arguments."""

    model_size: str = setting(defaults.MODEL_SIZE, "SAM2_MODEL_SIZE", "SAM 2.1 model: tiny, small, base_plus or large")
    checkpoint: str = setting(
        "",
        "SAM2_CHECKPOINT",
        "checkpoint file; empty = `<SAM2_CHECKPOINT_DIR>/sam2.1_hiera_<size>.pt`; "
        "`random` = random weights (tests and smoke runs only)",
    )
    checkpoint_dir: Path = setting(
        Path(defaults.CHECKPOINT_DIR), "SAM2_CHECKPOINT_DIR", "where the download script puts checkpoints"
    )
    image_size: int = setting(
        defaults.IMAGE_SIZE, "SAM2_IMAGE_SIZE", "square input side in pixels, a multiple of 32 (1024 = trained size)"
    )
    device: str = setting(defaults.DEVICE, "SAM2_DEVICE", "auto (cuda > mps > cpu), cuda, mps or cpu")
    bf16: bool = setting(defaults.BF16, "SAM2_BF16", "bfloat16 autocast on CUDA")
    tf32: bool = setting(defaults.TF32, "SAM2_TF32", "TF32 matmuls on CUDA")
    compile: bool = setting(False, "SAM2_COMPILE", "torch.compile the video predictor (`vos_optimized`, CUDA)")
    batch_objects: bool = setting(
        defaults.BATCH_OBJECTS,
        "SAM2_BATCH_OBJECTS",
        "track the objects of a frame as one batch where SAM 2's memory rules allow (same masks); "
        "0 = SAM 2's one-by-one path",
    )
    offload_state_to_cpu: bool = setting(False, "SAM2_OFFLOAD_STATE", "keep per-frame tracking state on the CPU")
    torch_threads: int = setting(
        defaults.TORCH_THREADS, "TORCH_THREADS", "CPU threads for PyTorch; 0 = PyTorch's default (all cores)"
    )
    random_seed: int = setting(defaults.RANDOM_SEED, "SAM2_RANDOM_SEED", "seed for random weights")
    label_studio_url: str = setting(
        defaults.LABEL_STUDIO_URL, "LABEL_STUDIO_URL", "Label Studio as the backend reaches it"
    )
    label_studio_api_key: str = setting(
        "", "LABEL_STUDIO_API_KEY", "legacy token or personal access token (JWT refresh token) of a Label Studio user"
    )
    basic_auth_user: str = setting("", "BASIC_AUTH_USER", "if set, /predict, /setup, /webhook need HTTP basic auth")
    basic_auth_pass: str = setting("", "BASIC_AUTH_PASS", "password for BASIC_AUTH_USER")
    redis_url: str = setting(
        defaults.REDIS_URL,
        "REDIS_URL",
        "Redis for the job queue (`redis://:PASSWORD@host:port/db`; `rediss://` for TLS); click sessions stay in "
        "the backend's memory",
    )
    queue_name: str = setting(defaults.QUEUE_NAME, "RQ_QUEUE", "RQ queue name")
    embedding_cache_items: int = setting(
        defaults.EMBEDDING_CACHE_ITEMS, "EMBEDDING_CACHE_ITEMS", "most image embeddings kept in memory"
    )
    embedding_cache_bytes: int = setting(
        defaults.EMBEDDING_CACHE_BYTES, "EMBEDDING_CACHE_BYTES", "most bytes of image embeddings kept in memory"
    )
    prefetch_embeddings: bool = setting(
        defaults.PREFETCH_EMBEDDINGS,
        "PREFETCH_EMBEDDINGS",
        "embed a task's frames in the background: when it is opened or first clicked, and when its job publishes",
    )
    prefetch_tasks: int = setting(
        defaults.PREFETCH_TASKS, "PREFETCH_TASKS", "most recently opened tasks whose frames are prefetched"
    )
    suggest_page_objects: bool = setting(
        defaults.SUGGEST_PAGE_OBJECTS,
        "SUGGEST_PAGE_OBJECTS",
        "answer each click with the latest masks of the other objects clicked on that page too",
    )
    download_cache_bytes: int = setting(
        defaults.DOWNLOAD_CACHE_BYTES, "DOWNLOAD_CACHE_BYTES", "most bytes of downloaded task files kept on disk"
    )
    max_image_pixels: int = setting(
        defaults.MAX_IMAGE_PIXELS, "MAX_IMAGE_PIXELS", "largest image accepted (width x height)"
    )
    max_request_bytes: int = setting(
        defaults.MAX_REQUEST_BYTES, "MAX_REQUEST_BYTES", "largest request body read, bytes (larger: 413 before reading)"
    )
    max_session_points: int = setting(
        defaults.MAX_SESSION_POINTS,
        "MAX_SESSION_POINTS",
        "most click points kept for one object on one page (more: 422)",
    )
    max_download_bytes: int = setting(
        defaults.MAX_DOWNLOAD_BYTES, "MAX_DOWNLOAD_BYTES", "largest task file accepted, bytes"
    )
    download_timeout: float = setting(
        defaults.DOWNLOAD_TIMEOUT, "DOWNLOAD_TIMEOUT", "seconds a download from Label Studio may take"
    )
    local_files_root: str = setting(
        "", "LOCAL_FILES_DOCUMENT_ROOT", "if set, `/data/local-files/?d=` URLs are read from this folder directly"
    )
    data_dir: Path = setting(Path(defaults.DATA_DIR), "DATA_DIR", "root for download cache and results")
    results_dir: Path = setting(Path(""), "RESULTS_DIR", "where exports go; empty = `<DATA_DIR>/results`")
    session_ttl: int = setting(defaults.SESSION_TTL, "SESSION_TTL", "seconds an interactive click session is kept")
    webhook_mode: str = setting(
        defaults.WEBHOOK_MODE,
        "WEBHOOK_MODE",
        "auto: propagate each submitted annotation; batch: only on Start training",
    )
    background_color: tuple[int, int, int] = setting(
        defaults.BACKGROUND_COLOR, "BACKGROUND_COLOR", "green-screen background as R,G,B"
    )
    job_timeout: int = setting(defaults.JOB_TIMEOUT, "JOB_TIMEOUT", "seconds a propagation job may run")
    job_heartbeat_ttl: int = setting(
        defaults.JOB_HEARTBEAT_TTL,
        "JOB_HEARTBEAT_TTL",
        "seconds without heartbeat before a running job counts as abandoned",
    )
    job_retries: int = setting(defaults.JOB_RETRIES, "JOB_RETRIES", "retries of a failed or abandoned job")
    label_studio_retry_seconds: float = setting(
        defaults.LABEL_STUDIO_RETRY_SECONDS,
        "LABEL_STUDIO_RETRY_SECONDS",
        "seconds a job retries, with backoff, while Label Studio is down or failing",
    )
    label_studio_best_effort_seconds: float = setting(
        defaults.LABEL_STUDIO_BEST_EFFORT_SECONDS,
        "LABEL_STUDIO_BEST_EFFORT_SECONDS",
        "seconds a best-effort write (state columns, progress, previews, review links) retries before giving up",
    )
    worker_alive_ttl: int = setting(
        defaults.WORKER_ALIVE_TTL,
        "WORKER_ALIVE_TTL",
        "seconds a worker's liveness key lives unless renewed; its job is requeued once it is gone",
    )
    redis_retry_seconds: float = setting(
        defaults.REDIS_RETRY_SECONDS,
        "REDIS_RETRY_SECONDS",
        "seconds a Redis command retries, with backoff, while Redis is down",
    )
    exports: str = setting(
        defaults.EXPORTS, "EXPORTS", "formats every job writes beside its own, comma-separated: davis, ytvis, mots"
    )
    review_exports: bool = setting(
        defaults.REVIEW_EXPORTS, "REVIEW_EXPORTS", "write an overlay WebM per video and a contact sheet per object"
    )
    quality_flags: bool = setting(
        defaults.QUALITY_FLAGS,
        "QUALITY_FLAGS",
        "record per-frame tracking quality and flag drift (`review/quality.json`)",
    )
    quality_min_score: float = setting(
        defaults.QUALITY_MIN_SCORE,
        "QUALITY_MIN_SCORE",
        "flag a shown mask whose object score is below this (`low_score`)",
    )
    quality_area_ratio: float = setting(
        defaults.QUALITY_AREA_RATIO,
        "QUALITY_AREA_RATIO",
        "flag a mask whose area changed by this factor since the frame before",
    )
    quality_jump: float = setting(
        defaults.QUALITY_JUMP,
        "QUALITY_JUMP",
        "flag a mask whose centroid moved this many object sizes since the frame before",
    )
    review_max_pages: int = setting(
        defaults.REVIEW_MAX_PAGES,
        "REVIEW_MAX_PAGES",
        "most flagged frames a job appends as annotation pages, per video",
    )
    review_keep_versions: int = setting(
        defaults.REVIEW_KEEP_VERSIONS,
        "REVIEW_KEEP_VERSIONS",
        "versions of each review video and preview kept (the newest job's and older ones that open pages show)",
    )
    greenscreen_mp4: bool = setting(
        defaults.GREENSCREEN_MP4,
        "GREENSCREEN_MP4",
        "assemble green-screen frames into an mp4 once every segment is exported",
    )
    greenscreen_fps: float = setting(
        defaults.GREENSCREEN_FPS,
        "GREENSCREEN_FPS",
        "override the frame rate of that mp4 and of flag times; 0 = the source's",
    )
    prefetch_frames: int = setting(defaults.PREFETCH_FRAMES, "PREFETCH_FRAMES", "frames decoded ahead of the tracker")
    prefetch_workers: int = setting(
        defaults.PREFETCH_WORKERS, "PREFETCH_WORKERS", "threads preparing frames; 0 = 1 on CPU, up to 8 on GPU"
    )
    resize_on_gpu: bool = setting(
        defaults.RESIZE_ON_GPU,
        "RESIZE_ON_GPU",
        "on a GPU, resize frames there (bit-identical to PIL); off = PIL in the prefetch workers",
    )
    port: int = setting(defaults.PORT, "PORT", "HTTP port of the backend")
    upload_segment_seconds: float = setting(
        defaults.UPLOAD_SEGMENT_SECONDS,
        "UPLOAD_SEGMENT_SECONDS",
        "seconds per segment task of a green-screen video uploaded in Label Studio",
    )
    upload_pair_stride: int = setting(
        defaults.UPLOAD_PAIR_STRIDE,
        "UPLOAD_PAIR_STRIDE",
        "an annotation frame every this many frames of an uploaded SceneDiff pair",
    )
    upload_max_side: int = setting(
        defaults.UPLOAD_MAX_SIDE,
        "UPLOAD_MAX_SIDE",
        "longest side, in pixels, of an uploaded video (8K is refused by default)",
    )
    upload_max_seconds: float = setting(
        defaults.UPLOAD_MAX_SECONDS,
        "UPLOAD_MAX_SECONDS",
        "longest uploaded video, in seconds",
    )
    upload_poll_seconds: float = setting(
        defaults.UPLOAD_POLL_SECONDS,
        "UPLOAD_POLL_SECONDS",
        "seconds between polls for uploads whose webhook never came; 0 = off",
    )
    upload_max_bytes: int = setting(
        defaults.UPLOAD_MAX_BYTES,
        "UPLOAD_MAX_BYTES",
        "largest uploaded video downloaded from Label Studio, in bytes",
    )

    def __post_init__(self) -> None:
        if self.model_size not in MODEL_SIZES:
            raise ConfigurationError(f"SAM2_MODEL_SIZE={self.model_size!r} is not one of {', '.join(MODEL_SIZES)}")
        if self.device not in DEVICES:
            raise ConfigurationError(f"SAM2_DEVICE={self.device!r} is not one of {', '.join(DEVICES)}")
        if self.image_size < 64 or self.image_size % 32:
            raise ConfigurationError(f"SAM2_IMAGE_SIZE={self.image_size} must be a multiple of 32 and at least 64")
        if self.webhook_mode not in WEBHOOK_MODES:
            raise ConfigurationError(f"WEBHOOK_MODE={self.webhook_mode!r} is not auto or batch")
        if len(self.background_color) != 3 or not all(0 <= c <= 255 for c in self.background_color):
            raise ConfigurationError(f"BACKGROUND_COLOR={self.background_color!r} is not R,G,B in 0..255")
        if self.export_list:
            unknown = [n for n in self.export_list if n not in REGISTRY]
            if unknown:
                raise ConfigurationError(
                    f"EXPORTS names an unknown format {unknown[0]!r}; choose from {', '.join(REGISTRY)}"
                )
        if self.job_heartbeat_ttl < 2:
            raise ConfigurationError(f"JOB_HEARTBEAT_TTL={self.job_heartbeat_ttl} must be at least 2 seconds")
        if self.label_studio_retry_seconds < 0 or self.redis_retry_seconds < 0:
            raise ConfigurationError("LABEL_STUDIO_RETRY_SECONDS and REDIS_RETRY_SECONDS must not be negative")
        if self.label_studio_best_effort_seconds < 0:
            raise ConfigurationError(
                f"LABEL_STUDIO_BEST_EFFORT_SECONDS={self.label_studio_best_effort_seconds} must not be negative"
            )
        if self.worker_alive_ttl < 2:
            raise ConfigurationError(f"WORKER_ALIVE_TTL={self.worker_alive_ttl} must be at least 2 seconds")
        if not 0 <= self.quality_min_score <= 1 or self.quality_area_ratio <= 1 or self.quality_jump <= 0:
            raise ConfigurationError(
                "QUALITY_MIN_SCORE must lie in 0..1, QUALITY_AREA_RATIO be above 1 and QUALITY_JUMP above 0"
            )
        if self.review_max_pages < 0:
            raise ConfigurationError(f"REVIEW_MAX_PAGES={self.review_max_pages} must not be negative")
        if self.review_keep_versions < 1:
            raise ConfigurationError(
                f"REVIEW_KEEP_VERSIONS={self.review_keep_versions} must be at least 1 (the newest job's files)"
            )
        if self.upload_segment_seconds <= 0 or self.upload_pair_stride < 1 or self.upload_max_side < 1:
            raise ConfigurationError(
                "UPLOAD_SEGMENT_SECONDS must be above 0, UPLOAD_PAIR_STRIDE and UPLOAD_MAX_SIDE at least 1"
            )
        if bool(self.basic_auth_user) != bool(self.basic_auth_pass):
            raise ConfigurationError("set both BASIC_AUTH_USER and BASIC_AUTH_PASS, or neither")

    # -- derived values ---------------------------------------------------------------------
    @property
    def random_weights(self) -> bool:
        """True when the model is built with random weights (explicit ``SAM2_CHECKPOINT=random``)."""
        return self.checkpoint == "random"

    @property
    def checkpoint_path(self) -> Path:
        """The checkpoint file this configuration loads (meaningless with random weights)."""
        if self.checkpoint and not self.random_weights:
            return Path(self.checkpoint)

        return self.checkpoint_dir / checkpoint_name(self.model_size)

    @property
    def export_list(self) -> list[str]:
        """``EXPORTS`` as a list of names."""
        return [n.strip() for n in self.exports.split(",") if n.strip()]

    @property
    def quality_rule(self) -> Any:
        """The drift-flag thresholds as a :class:`~ml_backend.video.quality.QualityRule`."""

        return QualityRule(self.quality_min_score, self.quality_area_ratio, self.quality_jump, self.review_max_pages)

    @property
    def results_root(self) -> Path:
        return self.results_dir if str(self.results_dir) not in ("", ".") else self.data_dir / "results"

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read every field from ``environ`` (default ``os.environ``); unset or empty = default."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw = environ.get(f.metadata["env"], "")
            if raw == "":
                continue
            values[f.name] = _parse(f, raw.strip())
        return cls(**values)

    @classmethod
    def table(cls) -> list[tuple[str, str, str]]:
        """``(variable, default, description)`` rows, for the README."""
        rows = []
        for f in dataclasses.fields(cls):
            default = f.default
            if isinstance(default, tuple):
                default = ",".join(map(str, default))
            rows.append((f.metadata["env"], str(default), f.metadata["doc"]))
        return rows


def _parse(f: dataclasses.Field, raw: str) -> Any:
    name = f.metadata["env"]
    kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    try:
        if kind == "bool":
            lowered = raw.lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if kind == "int":
            return int(raw.replace("_", ""))
        if kind == "float":
            return float(raw)
        if kind == "Path":
            return Path(raw)
        if kind.startswith("tuple"):
            return tuple(int(part) for part in raw.split(","))
        return raw
    except ValueError:
        raise ConfigurationError(f"{name}={raw!r} is not a valid {kind}") from None

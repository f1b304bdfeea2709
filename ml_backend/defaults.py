"""Default values for every setting, in one place.

Each constant is the value a :class:`ml_backend.settings.Settings` field takes when its
environment variable is unset. The README's settings table is generated from the same
names; keep the comments short and factual.
"""

#: SAM 2.1 model size: one of ``tiny``, ``small``, ``base_plus``, ``large``.
MODEL_SIZE = "tiny"

#: Folder where ``scripts/download_checkpoints.py`` puts ``sam2.1_hiera_<size>.pt``.
CHECKPOINT_DIR = "checkpoints"

#: Side, in pixels, of the square image SAM 2 sees. 1024 is the trained size; tests use 256.
IMAGE_SIZE = 1024

#: ``auto`` picks ``cuda`` > ``mps`` > ``cpu``.
DEVICE = "auto"

#: bfloat16 autocast on CUDA (ignored elsewhere).
BF16 = True

#: TF32 matmuls on Ampere+ GPUs (ignored elsewhere).
TF32 = True

#: Video propagation runs the objects of a frame as one batch wherever their memory layout is
#: the same (``ml_backend.video.batched``); off = SAM 2's own one-object-at-a-time loop.
BATCH_OBJECTS = True

#: Seed for the random-weight model (``SAM2_CHECKPOINT=random``) so runs are repeatable.
RANDOM_SEED = 0

#: Label Studio, as the backend reaches it (task files are downloaded from here).
LABEL_STUDIO_URL = "http://localhost:8080"

#: Redis for the RQ queue (interactive click sessions live in the backend process, not in Redis).
REDIS_URL = "redis://localhost:6379/0"

#: RQ queue the webhook and scripts enqueue propagation jobs on.
QUEUE_NAME = "sam2-propagation"

#: Most image embeddings kept in the LRU cache.
EMBEDDING_CACHE_ITEMS = 64

#: Most bytes of image embeddings kept in the LRU cache (tiny at 1024 px is ~17 MiB each).
EMBEDDING_CACHE_BYTES = 2 * 1024**3

#: Embed a task's annotation frames in the background when Label Studio opens the task (its
#: ``/predict`` call without clicks), so the first click on a page costs only the mask decoder.
PREFETCH_EMBEDDINGS = True

#: Most recently opened tasks whose frames are prefetched (newest first; older ones are dropped).
PREFETCH_TASKS = 4

#: Return, with each click's mask, the latest masks of the page's other clicked objects.
SUGGEST_PAGE_OBJECTS = True

#: Most bytes of downloaded task files kept on disk under ``DATA_DIR/downloads``.
DOWNLOAD_CACHE_BYTES = 2 * 1024**3

#: Largest image accepted for a preview, in pixels (width x height).
MAX_IMAGE_PIXELS = 40_000_000

#: Largest HTTP request body the backend reads, in bytes; larger bodies get 413 unread.
MAX_REQUEST_BYTES = 16 * 1024**2

#: Most click points one interactive session (one object on one page) keeps; more is a 422.
MAX_SESSION_POINTS = 100

#: Largest download accepted, in bytes.
MAX_DOWNLOAD_BYTES = 200 * 1024**2

#: Seconds a download from Label Studio may take.
DOWNLOAD_TIMEOUT = 30.0

#: Root folder for caches, sessions and results.
DATA_DIR = "data"

#: Seconds an interactive point session lives without a click.
SESSION_TTL = 3600

#: ``auto``: enqueue a propagation job on every submitted annotation;
#: ``batch``: only on "Start training" / ``scripts/process_all.py``.
WEBHOOK_MODE = "auto"

#: Background colour of exported green-screen frames (R,G,B).
BACKGROUND_COLOR = (0, 255, 0)

#: Seconds a propagation job may run before RQ stops it.
JOB_TIMEOUT = 6 * 3600

#: Frames decoded ahead of the tracker by the lazy frame source.
PREFETCH_FRAMES = 8

#: Threads preparing (decoding, resizing) those frames; 0 = automatic: 1 for a CPU model, up to
#: 8 for a GPU model (one core resizes a 1080p frame to 1024² in ~50 ms; a GPU tracks faster).
PREFETCH_WORKERS = 0

#: On a GPU, resize frames there (Pillow's bicubic arithmetic, bit for bit: ``video/resize.py``),
#: so the prefetch workers only decode; off: PIL resizes in the workers, as on a CPU.
RESIZE_ON_GPU = True

#: HTTP port of ``python -m ml_backend serve``.
PORT = 9090

#: Seconds without a heartbeat after which a running job counts as abandoned (worker killed);
#: every worker's watchdog then requeues it within a few seconds (``JOB_RETRIES`` permitting).
JOB_HEARTBEAT_TTL = 120

#: Times a failed or abandoned propagation job is retried.
JOB_RETRIES = 2

#: Seconds a job keeps retrying, with backoff, when Label Studio is unreachable or answers 5xx
#: (long enough to cover a restart of Label Studio: a cold start takes about 75 s).
LABEL_STUDIO_RETRY_SECONDS = 300

#: Seconds a best-effort write to Label Studio (a task's state columns, progress, preview and
#: review-file links) may retry before it is given up: such a write never holds a job up for long.
#: The prediction, the task's annotation and files keep ``LABEL_STUDIO_RETRY_SECONDS``.
LABEL_STUDIO_BEST_EFFORT_SECONDS = 5.0

#: Seconds a worker's liveness key (``sam2:worker-alive:<name>``) lives unless its own thread renews
#: it (every fifth of that); a started job whose worker's key is gone is requeued at once.
WORKER_ALIVE_TTL = 10

#: Seconds every Redis command keeps retrying, with backoff, while Redis is unreachable (a
#: restart), before the error reaches the caller.
REDIS_RETRY_SECONDS = 60

#: Export formats written by every job beside its own (SceneDiff or green-screen), comma-separated:
#: ``davis``, ``ytvis``, ``mots``. A prompt file's ``"exports"``, ``--export`` and a project's
#: choice in Label Studio add to these.
EXPORTS = ""

#: Write review outputs (overlay WebM per video, contact sheet per object).
REVIEW_EXPORTS = True

#: Record per-frame tracking quality (object scores, mask area and centroid) and flag frames where
#: tracking may have drifted: ``review/quality.json`` (:mod:`ml_backend.video.quality`).
QUALITY_FLAGS = True

#: A frame whose mask is shown with an object score (sigmoid) below this is flagged ``low_score``.
#: SAM 2 hides the mask below 0.5, so this catches masks the model shows but doubts.
QUALITY_MIN_SCORE = 0.7

#: A frame whose mask area changed by this factor or more since the frame before is flagged ``area``.
QUALITY_AREA_RATIO = 1.5

#: A frame whose mask centroid moved by this many object sizes (square root of the area on the
#: frame before) or more is flagged ``jump``.
QUALITY_JUMP = 0.5

#: Most flagged frames a job appends as new annotation pages, per video of a task.
REVIEW_MAX_PAGES = 8
#: Versions of each review file (overlay video, preview) kept beside a task's frames: the newest
#: job's and the ones before it, which task pages opened earlier still show.
REVIEW_KEEP_VERSIONS = 3

#: After the last missing green-screen segment is exported, assemble all frames into an
#: H.264 mp4 with ffmpeg (when ffmpeg is installed).
GREENSCREEN_MP4 = True

#: Frame rate of the assembled green-screen mp4, as an override: 0 = the source video's own
#: rate, recorded in each task at import (30 when the import did not know it).
GREENSCREEN_FPS = 0.0

#: Threads PyTorch uses for one model on the CPU; 0 keeps PyTorch's default (all cores). Set it
#: when the backend and a worker share one CPU machine, so they do not oversubscribe it.
TORCH_THREADS = 0

#: Videos uploaded in Label Studio's Import dialog (``ml_backend.uploads``): a green-screen upload
#: is cut into segments of this many seconds (as ``scripts/import_segments.py --seconds``).
UPLOAD_SEGMENT_SECONDS = 10.0

#: An uploaded SceneDiff pair gets an annotation frame every this many frames (``--stride``).
UPLOAD_PAIR_STRIDE = 30

#: Longest side, in pixels, of an uploaded video; larger ones (8K) are refused.
UPLOAD_MAX_SIDE = 4096

#: Longest uploaded video, in seconds; longer ones are refused.
UPLOAD_MAX_SECONDS = 2 * 3600

#: Largest uploaded video downloaded from Label Studio, in bytes.
UPLOAD_MAX_BYTES = 20 * 1024**3

#: Seconds between two polls of the uploads projects for uploads whose ``TASKS_CREATED`` webhook
#: never came (one worker polls); 0 = webhook only.
UPLOAD_POLL_SECONDS = 30.0

"""Building SAM 2 models: a registry of sizes and two builders.

Nothing here runs at import; torch and sam2 are imported inside the builders.

``build_image_model(settings)`` returns a ``SAM2Base`` ready for ``SAM2ImagePredictor``;
``build_video_predictor(settings)`` returns a ``SAM2VideoPredictor``: with
``settings.batch_objects`` (``SAM2_BATCH_OBJECTS``, default on) the subclass
:class:`ml_backend.video.batched.BatchedVideoPredictor` that tracks the objects of a frame as one batch
where SAM 2's memory rules allow it, else SAM 2's own class. Both builders honour:

- ``settings.model_size``: one of :data:`MODEL_CONFIGS`;
- ``settings.image_size``: input side in pixels; sizes other than 1024 rescale the model's
  feature-map sizes to match (``image_size / 16`` for memory attention);
- ``settings.checkpoint``: a file, or ``random`` for seeded random weights (an explicit opt-in;
  :func:`model_version` then says ``random`` so no prediction made that way passes unnoticed).
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, Any

from ml_backend.exceptions import CheckpointMissing, ConfigurationError
from ml_backend.settings import checkpoint_name  # noqa: F401 - public here too (the download script)

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from ml_backend.settings import Settings

log = logging.getLogger(__name__)

#: SAM 2.1 Hydra config (inside the ``sam2`` package) per model size.
MODEL_CONFIGS = {
    "tiny": "configs/sam2.1/sam2.1_hiera_t.yaml",
    "small": "configs/sam2.1/sam2.1_hiera_s.yaml",
    "base_plus": "configs/sam2.1/sam2.1_hiera_b+.yaml",
    "large": "configs/sam2.1/sam2.1_hiera_l.yaml",
}

#: Official download location of the SAM 2.1 checkpoints.
CHECKPOINT_BASE_URL = "https://dl.fbaipublicfiles.com/segment_anything_2/092824"

#: The video predictor classes SAM 2's config instantiates instead of its own (objects batched).
TARGET = "ml_backend.video.batched.BatchedVideoPredictor"
TARGET_VOS = "ml_backend.video.batched.BatchedVideoPredictorVOS"


def model_version(settings: Settings) -> str:
    """The ``model_version`` reported to Label Studio, e.g. ``sam2.1-tiny-1024``.

    Random weights add ``-random-weights`` so such predictions are never mistaken for real ones.
    """
    version = f"sam2.1-{settings.model_size}-{settings.image_size}"
    if settings.random_weights:
        version += "-random-weights"
    return version


def resolve_device(name: str) -> str:
    """``auto`` → ``cuda`` if available, else ``mps``, else ``cpu``; other names are checked."""
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigurationError("SAM2_DEVICE=cuda but torch sees no CUDA device")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigurationError("SAM2_DEVICE=mps but MPS is not available")
    return name


def check_checkpoint(settings: Settings) -> None:
    """Raise :class:`CheckpointMissing` with instructions unless a checkpoint (or ``random``) is set."""
    if settings.random_weights:
        return
    path = settings.checkpoint_path
    if not path.is_file():
        raise CheckpointMissing(
            f"SAM 2 checkpoint not found at {path}. Download it with\n"
            f"    python scripts/download_checkpoints.py --size {settings.model_size} --dir {settings.checkpoint_dir}\n"
            "or point SAM2_CHECKPOINT at a .pt file. For tests and smoke runs only, "
            "SAM2_CHECKPOINT=random builds the model with random weights."
        )


def hydra_overrides(settings: Settings) -> list[str]:
    """Overrides that rescale the model to ``settings.image_size`` (none at 1024)."""
    size = settings.image_size
    if size == 1024:
        return []
    feat = size // 16
    return [
        f"++model.image_size={size}",
        f"++model.memory_attention.layer.self_attention.feat_sizes=[{feat},{feat}]",
        f"++model.memory_attention.layer.cross_attention.feat_sizes=[{feat},{feat}]",
    ]


def _build(settings: Settings, *, video: bool) -> Any:
    check_checkpoint(settings)
    import torch
    from sam2.build_sam import build_sam2, build_sam2_video_predictor

    device = resolve_device(settings.device)
    if settings.torch_threads > 0:
        torch.set_num_threads(settings.torch_threads)
    if device == "cuda" and settings.tf32 and torch.cuda.get_device_properties(0).major >= 8:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    ckpt = None if settings.random_weights else str(settings.checkpoint_path)
    config = MODEL_CONFIGS[settings.model_size]
    overrides = hydra_overrides(settings)
    if settings.random_weights:
        log.warning("building SAM 2 (%s) with RANDOM WEIGHTS: predictions are meaningless", settings.model_size)
        torch.manual_seed(settings.random_seed)
    if video:
        kwargs: dict[str, Any] = {}
        if settings.compile:
            kwargs["vos_optimized"] = True
        if settings.batch_objects:
            # the last `_target_` override wins over the one build_sam2_video_predictor sets
            overrides = [*overrides, f"++model._target_={TARGET_VOS if settings.compile else TARGET}"]
        model = build_sam2_video_predictor(
            config, ckpt_path=ckpt, device=device, hydra_overrides_extra=overrides, **kwargs
        )
    else:
        model = build_sam2(config, ckpt_path=ckpt, device=device, hydra_overrides_extra=overrides)
    if video and not (device == "cuda" and settings.bf16):
        _float_memory(model)
    log.info("built SAM 2 %s at %d px on %s", settings.model_size, settings.image_size, device)
    return model


def _float_memory(model: Any) -> None:
    """Let the video predictor run without bf16 autocast (CPU, MPS, CUDA with SAM2_BF16=0).

    SAM 2's video predictor always stores memory features as bfloat16 to save space; under CUDA
    autocast that mixes fine, elsewhere memory attention fails on the dtype mismatch. This hook
    casts the stored memory back to the weights' dtype as it enters memory attention.
    """
    import torch

    dtype = next(model.memory_attention.parameters()).dtype

    def hook(_module: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        if torch.is_autocast_enabled():
            return args, kwargs
        for key in ("memory", "memory_pos"):
            value = kwargs.get(key)
            if isinstance(value, torch.Tensor) and value.dtype != dtype:
                kwargs[key] = value.to(dtype)
        return args, kwargs

    model.memory_attention.register_forward_pre_hook(hook, with_kwargs=True)


def build_image_model(settings: Settings) -> Any:
    """A ``SAM2Base`` in eval mode on the resolved device."""
    return _build(settings, video=False)


def build_video_predictor(settings: Settings) -> Any:
    """A ``SAM2VideoPredictor`` in eval mode on the resolved device (batched objects unless
    ``settings.batch_objects`` is off: :mod:`ml_backend.video.batched`)."""
    return _build(settings, video=True)


def autocast(settings: Settings, device: str | torch.device) -> Any:
    """The autocast context for inference: bf16 on CUDA when enabled, otherwise a no-op."""

    import torch

    if str(device).startswith("cuda") and settings.bf16:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()

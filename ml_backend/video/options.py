"""How one job propagates and exports: a typed value, built once from the settings.

:func:`~ml_backend.video.pipeline.run_job` takes one :class:`JobOptions`; the command line
(``propagate``), the RQ job functions and the speed check each build it with
:meth:`JobOptions.from_settings` instead of passing the settings' fields one by one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ml_backend.models import autocast, resolve_device
from ml_backend.settings import QualityRule, Settings


@dataclass(frozen=True)
class JobOptions:
    """Everything a job needs besides its prompts, videos and output folder."""

    image_size: int
    exports: tuple[str, ...] = ()  # formats beyond the job's own (``EXPORTS``, ``--export``)
    review: bool = True  # overlay videos and contact sheets
    quality: bool = True  # per-frame signals, drift flags and ``quality.json``
    quality_rule: QualityRule | None = None
    prefetch: int = 8  # frames decoded ahead of the model
    prefetch_workers: int = 0
    resize_on_gpu: bool = True  # frames resized on a CUDA model's device (bit-identical to PIL)
    offload_state_to_cpu: bool = False
    autocast: Callable[[], Any] | None = None  # a context manager factory around the model's calls
    greenscreen_mp4: bool = False
    greenscreen_fps: float = 0.0
    bounded: bool = True  # memory that does not grow with the video's length (benchmarks turn it off)
    device_rle: bool | None = None  # masks encoded on the model's device; None = where it pays

    def __post_init__(self) -> None:
        object.__setattr__(self, "exports", tuple(self.exports))

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        exports: Iterable[str] = (),
        review: bool = True,
        quality: bool = True,
        device: str | None = None,
    ) -> JobOptions:
        """The options ``settings`` give, with ``exports`` added and ``review``/``quality`` only
        when both the settings and the caller want them (``--no-review``, ``--no-quality``).
        ``device``: the resolved ``SAM2_DEVICE``, when the caller has it already."""
        return cls(
            image_size=settings.image_size,
            exports=(*settings.export_list, *exports),
            review=settings.review_exports and review,
            quality=settings.quality_flags and quality,
            quality_rule=settings.quality_rule,
            prefetch=settings.prefetch_frames,
            prefetch_workers=settings.prefetch_workers,
            resize_on_gpu=settings.resize_on_gpu,
            offload_state_to_cpu=settings.offload_state_to_cpu,
            autocast=_autocast(settings, device),
            greenscreen_mp4=settings.greenscreen_mp4,
            greenscreen_fps=settings.greenscreen_fps,
        )


def _autocast(settings: Settings, resolved: str | None) -> Callable[[], Any]:
    """The job's autocast factory; the device is resolved on first use (that loads torch)."""
    device: list[str] = [resolved] if resolved else []

    def make() -> Any:
        if not device:
            device.append(resolve_device(settings.device))
        return autocast(settings, device[0])

    return make

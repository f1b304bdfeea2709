"""Export formats by name: where each format's class lives, and which formats a job writes."""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from typing import Any

from ml_backend.exceptions import PromptError
from ml_backend.exporters.interface import Exporter

#: Format name → ``module:Class``; imported only when a job asks for the format.
REGISTRY: dict[str, str] = {
    "scenediff": "ml_backend.exporters.scenediff:SceneDiffExport",
    "greenscreen": "ml_backend.exporters.greenscreen:GreenScreenExport",
    "review": "ml_backend.exporters.overlays:ReviewExport",
    "davis": "ml_backend.exporters.davis:DavisExport",
    "ytvis": "ml_backend.exporters.ytvis:YouTubeVISExport",
    "mots": "ml_backend.exporters.mots:MOTSExport",
    "quality": "ml_backend.video.quality:QualityExport",
}


#: Formats tied to one kind of job (the job's own format); the others fit any job.
JOB_FORMATS = ("scenediff", "greenscreen")


def exporter_class(name: str) -> type[Exporter]:
    """The exporter class registered as ``name``."""
    if name not in REGISTRY:
        raise PromptError(f"unknown export format {name!r}: choose from {', '.join(REGISTRY)}")
    module, _, cls = REGISTRY[name].partition(":")
    return getattr(importlib.import_module(module), cls)


def choose_exports(spec: Any, extra: Iterable[str] = (), *, review: bool = True, quality: bool = True) -> list[str]:
    """The formats a job writes, in order: its own format, ``review`` and ``quality`` (each when
    on), then the formats the prompt document asks for (``spec.exports``) and ``extra`` (CLI
    ``--export``, the ``EXPORTS`` setting, the project's choice), each once. Raises
    :class:`PromptError` for an unknown name or another job kind's own format."""
    names = [
        spec.format,
        *(["review"] if review else []),
        *(["quality"] if quality else []),
        *getattr(spec, "exports", ()),
        *extra,
    ]
    out: list[str] = []
    for name in names:
        exporter_class(name)
        if name in JOB_FORMATS and name != spec.format:
            raise PromptError(f"the {name} export needs a {name} job; this job is {spec.format}")
        if name not in out:
            out.append(name)
    return out

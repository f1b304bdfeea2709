"""Talking to Label Studio: an SDK client and the headers that download task files.

Both token kinds work: a legacy token goes as ``Authorization: Token <key>``; a personal access
token (a JWT refresh token) is exchanged by label-studio-sdk for short-lived access tokens sent as
``Bearer``. The SDK does the exchange and the refresh; this module only builds the client.
"""

from __future__ import annotations

import functools
from typing import Any

from ml_backend.exceptions import ConfigurationError
from ml_backend.labelstudio.backoff import with_backoff


@functools.lru_cache(maxsize=8)
def client(url: str, api_key: str) -> Any:
    """A cached ``label_studio_sdk.LabelStudio`` for ``url`` and ``api_key``."""
    from label_studio_sdk.client import LabelStudio

    if not api_key:
        raise ConfigurationError(
            "LABEL_STUDIO_API_KEY is not set: the backend needs a Label Studio token to download "
            "task files and post predictions (Account & Settings → Personal Access Token or Legacy Token)"
        )
    try:
        return LabelStudio(base_url=url.rstrip("/"), api_key=api_key, timeout=60)
    except Exception as exc:  # the SDK raises ApiError for expired JWTs
        raise ConfigurationError(f"LABEL_STUDIO_API_KEY is not usable: {exc}") from None


def auth_headers(url: str, api_key: str) -> dict[str, str]:
    """``{"Authorization": ...}`` for a download from Label Studio (refreshes access tokens)."""
    wrapper = client(url, api_key)._client_wrapper
    headers = wrapper.get_headers()
    return {"Authorization": headers["Authorization"]}


def for_settings(settings: Any) -> Any:
    """The client for ``settings``' ``LABEL_STUDIO_URL`` and ``LABEL_STUDIO_API_KEY``."""
    return client(settings.label_studio_url, settings.label_studio_api_key)


def get(settings: Any, kind: str, ident: Any, *, seconds: float | None = None) -> Any:
    """One object of Label Studio's API (``kind``: ``projects``, ``tasks``, ``annotations``),
    transient trouble retried for ``seconds`` (default ``LABEL_STUDIO_RETRY_SECONDS``)."""
    seconds = settings.label_studio_retry_seconds if seconds is None else seconds
    return with_backoff(
        lambda: getattr(for_settings(settings), kind).get(id=ident),
        seconds=seconds,
        what=f"Label Studio at {settings.label_studio_url}",
    )


def as_dict(found: Any) -> dict[str, Any]:
    """An SDK object (or a dict) as a plain dict."""
    return found.dict() if hasattr(found, "dict") else dict(found)

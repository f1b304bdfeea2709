"""Shared bits of the scripts: repo on sys.path, the SDK client from flags or environment."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def add_label_studio_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url",
        default=os.environ.get("LABEL_STUDIO_URL", "http://localhost:8080"),
        help="Label Studio URL (env LABEL_STUDIO_URL)",
    )
    parser.add_argument(
        "--api-key",
        default=os.environ.get("LABEL_STUDIO_API_KEY", ""),
        help="legacy token or personal access token (env LABEL_STUDIO_API_KEY)",
    )


def client_from(args: argparse.Namespace):
    from ml_backend import labelstudio
    from ml_backend.exceptions import ConfigurationError

    try:
        client = labelstudio.client(args.url, args.api_key)
        client.projects.list()  # fail early with a clear message
        return client
    except ConfigurationError as exc:
        sys.exit(f"error: {exc}")
    except Exception as exc:
        sys.exit(f"error: cannot use Label Studio at {args.url}: {exc}")


def progress_bar(desc: str):
    from tqdm import tqdm

    bar = tqdm(desc=desc, unit="frame")

    def update(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()
        if done >= total:
            bar.close()

    return update

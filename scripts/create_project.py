#!/usr/bin/env python3
"""Create or update a Label Studio project with one of our labeling configs, and connect the
SAM 2 ML backend to it (interactive previews + webhook for propagation).

    python scripts/create_project.py --title "Scene changes" --config label_config/scenediff_pair.xml \\
        --backend http://localhost:9090 --local-root /data/ls-files
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from _common import ROOT, add_label_studio_args, client_from


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_label_studio_args(parser)
    parser.add_argument("--title", required=True)
    parser.add_argument("--config", type=Path, default=ROOT / "label_config" / "scenediff_pair.xml")
    parser.add_argument("--backend", default="http://localhost:9090", help="ML backend URL as Label Studio reaches it")
    parser.add_argument("--basic-auth", metavar="USER:PASS", help="if the backend uses BASIC_AUTH_USER/PASS")
    parser.add_argument(
        "--local-root", type=Path, help="add a local-files storage on this folder (under LOCAL_FILES_DOCUMENT_ROOT)"
    )
    parser.add_argument("--no-backend", action="store_true", help="only create the project")
    args = parser.parse_args()

    from ml_backend.automation import connect_backend, ensure_local_storage, ensure_project

    if not args.config.is_file():
        sys.exit(f"error: no config file {args.config}")
    client = client_from(args)
    project = ensure_project(client, args.title, args.config.read_text())
    print(f"project {project.id}: {project.title}")
    if args.local_root:
        args.local_root.mkdir(parents=True, exist_ok=True)
        storage = ensure_local_storage(client, project.id, args.local_root)
        print(f"local-files storage {storage.id} on {storage.path}")
    if not args.no_backend:
        auth = tuple(args.basic_auth.split(":", 1)) if args.basic_auth else None
        try:
            backend = connect_backend(client, project.id, args.backend, basic_auth=auth)
        except Exception as exc:
            sys.exit(f"error: Label Studio could not connect the ML backend at {args.backend}: {exc}")
        print(f"ML backend {backend.id} at {backend.url} (interactive)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Create or update a Label Studio project with one of our labeling configs, and connect the
SAM 2 ML backend to it (interactive previews + webhook for propagation; the webhook is sent
submitted and deleted annotations and created and deleted tasks: ``automation.WEBHOOK_ACTIONS``).

    python scripts/create_project.py --title "Scene changes" --config label_config/scenediff_pair.xml \\
        --backend http://localhost:9090 --local-root /data/ls-files

If a step after creating a new project fails, the project is deleted again.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from _common import ROOT, Fail, NewFiles, Parser, add_label_studio_args, client_from, explain, run, user_password


def main() -> int:
    parser = Parser(description=__doc__.split("\n\n")[0])
    add_label_studio_args(parser)
    parser.add_argument("--title", required=True)
    parser.add_argument("--config", type=Path, default=ROOT / "label_config" / "scenediff_pair.xml")
    parser.add_argument("--backend", default="http://localhost:9090", help="ML backend URL as Label Studio reaches it")
    parser.add_argument("--basic-auth", metavar="USER:PASS", type=user_password, help="if the backend uses BASIC_AUTH")
    parser.add_argument(
        "--local-root", type=Path, help="add a local-files storage on this folder (under LOCAL_FILES_DOCUMENT_ROOT)"
    )
    parser.add_argument("--no-backend", action="store_true", help="only create the project")
    args = parser.parse_args()

    from ml_backend.labelstudio.automation import connect_backend, ensure_local_storage, ensure_project

    if not args.title.strip():
        raise Fail("--title is empty")
    if not args.config.is_file():
        raise Fail(f"no config file {args.config}")
    config = args.config.read_text()
    try:
        ET.fromstring(config)
    except ET.ParseError as exc:
        raise Fail(f"{args.config} is not a labeling config (bad XML: {exc})") from None
    if not args.no_backend and not args.backend.startswith(("http://", "https://")):
        raise Fail(f"--backend {args.backend!r} is not an http:// or https:// URL")
    if args.local_root and args.local_root.exists() and not args.local_root.is_dir():
        raise Fail(f"--local-root {args.local_root} is not a folder")

    client = client_from(args)
    existed = any(p.title == args.title for p in client.projects.list())
    project = ensure_project(client, args.title, config)
    print(f"project {project.id}: {project.title}")
    step = "setting up the project"
    new_root = NewFiles(args.local_root) if args.local_root and not args.local_root.exists() else None
    try:
        if args.local_root:
            step = f"adding a local-files storage on {args.local_root}"
            args.local_root.mkdir(parents=True, exist_ok=True)
            storage = ensure_local_storage(client, project.id, args.local_root)
            print(f"local-files storage {storage.id} on {storage.path}")
        if not args.no_backend:
            step = f"connecting the ML backend at {args.backend} and its webhook"
            backend = connect_backend(client, project.id, args.backend.rstrip("/"), basic_auth=args.basic_auth)
            print(f"ML backend {backend.id} at {backend.url} (interactive)")
    except BaseException as exc:  # Ctrl-C too
        if new_root:
            new_root.remove()
        raise Fail(f"{step} failed: {explain(exc)}{'' if existed else _delete(client, project)}") from None
    return 0


def _delete(client, project) -> str:
    """Delete the project this run created (best effort); what happened, for the error message."""
    try:
        client.projects.delete(id=project.id)
        return f"; the new project {project.id} was deleted again"
    except Exception:
        return f"; the new project {project.id} could not be deleted, delete it in Label Studio"


if __name__ == "__main__":
    run(main)

#!/usr/bin/env python3
"""Create or update a Label Studio project with one of our labeling configs, and connect the
SAM 2 ML backend to it (interactive previews + webhook for propagation; the webhook is sent
submitted and deleted annotations and created and deleted tasks: ``automation.WEBHOOK_ACTIONS``).

    python scripts/create_project.py --title "Scene changes" --config label_config/scenediff_pair.xml \\
        --backend http://localhost:9090 --local-root /data/ls-files

With --uploads it also makes "<title> · uploads", a project whose Import dialog takes videos: each
upload becomes this project's tasks (segments, or SceneDiff pairs by the rule in the description;
see ml_backend/uploads.py). If a step after creating a new project fails, the project is deleted again.
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
    parser.add_argument(
        "--uploads", action="store_true",
        help="also create '<title> · uploads', where videos uploaded in the Import dialog become this project's tasks",
    )  # fmt: skip
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
    from ml_backend.labelstudio.automation import project_kind
    from ml_backend.worker.uploads import PAIR_RULE, ensure_uploads_project

    kind = project_kind(config)
    about = f"Upload pairs in '{args.title} · uploads'. {PAIR_RULE}" if args.uploads and kind == "scenediff" else ""
    project = ensure_project(client, args.title, config, description=about)
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
        if args.uploads:
            step = "creating the uploads project"
            if kind is None:
                raise Fail(f"{args.config} is neither a green-screen nor a SceneDiff config: no uploads project")
            uploads = ensure_uploads_project(client, project, kind, None if args.no_backend else args.backend)
            print(f"uploads project {uploads.id}: {uploads.title} (Import videos there)")
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

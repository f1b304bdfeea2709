#!/usr/bin/env python3
"""Import SceneDiff video pairs into a project: extract annotation frames (every --stride-th
frame, with the worker's decoder) under the local-files root, then create one task per pair.

    python scripts/import_pairs.py --project 1 --local-root /data/ls-files \\
        --pair kitchen before.mp4 after.mp4 --pair desk d1.mp4 d2.mp4 --stride 30

Everything is checked first (project, videos, output folder); if the import fails, the files
this run wrote are removed again.
"""

from __future__ import annotations

from pathlib import Path

from _common import (
    Fail,
    NewFiles,
    Parser,
    add_label_studio_args,
    check_video,
    client_from,
    get_project,
    positive,
    progress_bar,
    run,
    writable_folder,
)


def main() -> int:
    parser = Parser(description=__doc__.split("\n\n")[0])
    add_label_studio_args(parser)
    parser.add_argument("--project", type=positive(), required=True)
    parser.add_argument(
        "--local-root", type=Path, required=True, help="Label Studio's LOCAL_FILES_DOCUMENT_ROOT (or a folder under it)"
    )
    parser.add_argument("--document-root", type=Path, help="LOCAL_FILES_DOCUMENT_ROOT if --local-root is a subfolder")
    parser.add_argument("--pair", nargs=3, action="append", metavar=("NAME", "VIDEO1", "VIDEO2"), required=True)
    parser.add_argument("--stride", type=positive(), default=30, help="annotation frame every N frames (default 30)")
    args = parser.parse_args()

    from ml_backend.automation import ensure_local_storage, import_tasks
    from ml_backend.importing import pair_task

    document_root = (args.document_root or args.local_root).resolve()
    names = [name for name, _, _ in args.pair]
    for name in names:
        if not name.strip() or "/" in name or name in (".", ".."):
            raise Fail(f"pair name {name!r} cannot be a folder name")
    if len(set(names)) < len(names):
        raise Fail("two --pair options have the same name")
    for _, v1, v2 in args.pair:
        check_video(Path(v1))
        check_video(Path(v2))
    if not document_root.is_dir():
        raise Fail(f"the local-files root {document_root} does not exist")
    writable_folder(document_root / "pairs")
    client = client_from(args)
    get_project(client, args.project)

    pairs = document_root / "pairs"
    new = NewFiles(*(pairs / name for name in names))
    with new.removed_on_failure():
        tasks = [
            pair_task(v1, v2, document_root, name, stride=args.stride, progress=progress_bar(f"{name} frames"))
            for name, v1, v2 in args.pair
        ]
        ensure_local_storage(client, args.project, pairs)
        ids = import_tasks(client, args.project, tasks)
    print(f"imported {len(ids)} pair task(s): {ids}")
    return 0


if __name__ == "__main__":
    run(main)

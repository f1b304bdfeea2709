#!/usr/bin/env python3
"""Import SceneDiff video pairs into a project: extract annotation frames (every --stride-th
frame, with the worker's decoder) under the local-files root, then create one task per pair.

    python scripts/import_pairs.py --project 1 --local-root /data/ls-files \\
        --pair kitchen before.mp4 after.mp4 --pair desk d1.mp4 d2.mp4 --stride 30

Running the same import again imports nothing: a pair already in the project (the same name,
or the same two videos by content) is skipped, or with --replace imported again and its old task
deleted. Everything is checked first (project and its labeling config, videos, output folder);
if the import fails, the files and the storage this run made are removed again.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

from _common import (
    Fail,
    NewFiles,
    Parser,
    add_label_studio_args,
    check_project_config,
    check_video,
    client_from,
    get_project,
    positive,
    progress_bar,
    run,
    undo_storage,
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
    parser.add_argument("--replace", action="store_true", help="import a pair that is already in the project again")
    args = parser.parse_args()

    from ml_backend.labelstudio.automation import delete_tasks, import_tasks, local_storage, project_tasks, same_source
    from ml_backend.labelstudio.importing import pair_sha256, pair_task, review_fields

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
    project = get_project(client, args.project)
    probe = {**review_fields(["video1", "video2"]), "pair": "", "frames1": [], "frames2": [], "video1": "",
             "video2": "", "frame_indices1": [], "frame_indices2": []}  # fmt: skip
    check_project_config(project, "scenediff", probe)

    # pairs already in the project: the same name, or the same two videos by content
    existing = project_tasks(client, args.project)
    hashes = {name: pair_sha256(v1, v2) for name, v1, v2 in args.pair}
    old = {name: same_source(existing, {"pair": name, "source_sha256": hashes[name]}) for name in names}
    todo = [(name, v1, v2) for name, v1, v2 in args.pair if args.replace or not old[name]]
    for name in names:
        if old[name] and not args.replace:
            print(f"pair {name!r} is already in project {args.project} (task {', '.join(map(str, old[name]))}): "
                  "skipped; --replace imports it again")  # fmt: skip
    if not todo:
        print("nothing imported")
        return 0

    pairs = document_root / "pairs"
    aside = {}
    for name, _, _ in todo:  # the old files of a replaced pair stay until the new ones are in
        if old[name] and (pairs / name).exists():
            aside[name] = pairs / f".{name}.replaced-{int(time.time())}"
            (pairs / name).rename(aside[name])
    new = NewFiles(*(pairs / name for name, _, _ in todo))
    storage = None
    try:
        with new.removed_on_failure():
            tasks = [
                pair_task(
                    v1,
                    v2,
                    document_root,
                    name,
                    stride=args.stride,
                    progress=progress_bar(f"{name} frames"),
                    source_sha256=hashes[name],
                )
                for name, v1, v2 in todo
            ]
            storage, created = local_storage(client, args.project, pairs)
            storage = storage if created else None
            ids = import_tasks(client, args.project, tasks)
    except BaseException:
        if storage is not None:
            undo_storage(client, storage)
        for name, path in aside.items():
            shutil.rmtree(pairs / name, ignore_errors=True)
            path.rename(pairs / name)
        raise
    for name, _, _ in todo:
        if old[name]:
            delete_tasks(client, old[name])
            print(f"replaced pair {name!r}: deleted its old task(s) {old[name]}", file=sys.stderr)
    for path in aside.values():
        shutil.rmtree(path, ignore_errors=True)
    print(f"imported {len(ids)} pair task(s): {ids}")
    return 0


if __name__ == "__main__":
    run(main)

#!/usr/bin/env python3
"""Import green-screen segments into a project, one task per segment.

Either folders of frames named video_part_001, video_part_002, ... (as the original tool used),
or a long video cut into N-second segments that share one boundary frame:

    python scripts/import_segments.py --project 2 --local-root /data/ls-files --folders /data/ls-files/organized
    python scripts/import_segments.py --project 2 --local-root /data/ls-files --video long.mp4 --seconds 10

Everything is checked first (project, video or folders, output folder); if the import fails, the
segment frames this run wrote are removed again.
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
    not_negative,
    positive,
    progress_bar,
    run,
    writable_folder,
)


def main() -> int:
    parser = Parser(description=__doc__.split("\n\n")[0])
    add_label_studio_args(parser)
    parser.add_argument("--project", type=positive(), required=True)
    parser.add_argument("--local-root", type=Path, required=True, help="Label Studio's LOCAL_FILES_DOCUMENT_ROOT")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--folders", type=Path, help="folder holding video_part_XXX folders (inside --local-root)")
    source.add_argument("--video", type=Path, help="a long video to split")
    parser.add_argument("--seconds", type=positive(float), default=10.0, help="segment length when splitting --video")
    parser.add_argument("--name", default="segments", help="subfolder for split segments")
    parser.add_argument("--later-frames", type=not_negative, default=2, help="extra frames per task for drift fixes")
    parser.add_argument("--start-frame", type=not_negative, default=0, help="number of the first exported frame")
    args = parser.parse_args()

    from ml_backend.automation import ensure_local_storage, import_tasks
    from ml_backend.importing import segment_folders, segment_tasks, split_video

    root = args.local_root.resolve()
    if not root.is_dir():
        raise Fail(f"the local-files root {root} does not exist")
    if args.video:
        out = root / args.name
        if not args.name.strip() or not out.resolve().is_relative_to(root) or out.resolve() == root:
            raise Fail(f"--name {args.name!r} must name a subfolder of --local-root {root}")
        check_video(args.video)
        writable_folder(out)
    else:
        if not args.folders.is_dir():
            raise Fail(f"--folders {args.folders} is not a folder")
        if not args.folders.resolve().is_relative_to(root):
            raise Fail(f"--folders {args.folders} must be inside --local-root {root}")
        folders = segment_folders(args.folders.resolve())
        tasks = segment_tasks(folders, root, later_frames=args.later_frames, start_frame=args.start_frame)
    client = client_from(args)
    get_project(client, args.project)

    new = NewFiles(out) if args.video else NewFiles()
    with new.removed_on_failure():
        if args.video:
            folders = split_video(args.video, out, args.seconds, progress=progress_bar("segments"))
            tasks = segment_tasks(folders, root, later_frames=args.later_frames, start_frame=args.start_frame)
        ensure_local_storage(client, args.project, folders[0].parent)
        ids = import_tasks(client, args.project, tasks)
    print(f"imported {len(ids)} segment task(s): {ids}")
    return 0


if __name__ == "__main__":
    run(main)

#!/usr/bin/env python3
"""Import a green-screen take (one source video) into a project, one task per segment.

Either a long video cut into N-second segments that share one boundary frame, written to
<local-root>/segments/<take>/video_part_000, video_part_001, ..., or existing folders of frames
named video_part_XXX (as the original tool made them) under the local-files root:

    python scripts/import_segments.py --project 2 --local-root /data/ls-files --video take1.mp4 --seconds 10
    python scripts/import_segments.py --project 2 --local-root /data/ls-files --folders /data/ls-files/organized

The take's name (--name; default: the video's file name without extension, or the folder's
name) is stored in every task and keys the export folder RESULTS_DIR/project_<id>/greenscreen/<take>/,
so the takes of one project never touch each other's files. The video's frame rate goes into
every task too (--fps for folders of frames, which have none).

Running the same import again imports nothing: a take already in the project (the same name,
or the same video by content) is skipped, or with --replace imported again and its old tasks
deleted. Everything is checked first (project and its labeling config, video or folders, output
folder); if the import fails, the files and the storage this run made are removed again.
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
    not_negative,
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
    parser.add_argument("--local-root", type=Path, required=True, help="Label Studio's LOCAL_FILES_DOCUMENT_ROOT")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--folders", type=Path, help="folder holding video_part_XXX folders (inside --local-root)")
    source.add_argument("--video", type=Path, help="a long video to split")
    parser.add_argument("--seconds", type=positive(float), default=10.0, help="segment length when splitting --video")
    parser.add_argument(
        "--name", help="the take's name (default: the video's or the folder's name); --video writes segments/<name>/"
    )
    parser.add_argument("--fps", type=positive(float), help="frame rate of --folders frames (a video knows its own)")
    parser.add_argument("--later-frames", type=not_negative, default=2, help="extra frames per task for drift fixes")
    parser.add_argument("--start-frame", type=not_negative, default=0, help="number of the first exported frame")
    parser.add_argument("--replace", action="store_true", help="import a take that is already in the project again")
    args = parser.parse_args()

    from ml_backend.exceptions import VideoError
    from ml_backend.labelstudio.automation import delete_tasks, import_tasks, local_storage, project_tasks, same_source
    from ml_backend.labelstudio.importing import (
        file_sha256,
        segment_folders,
        segment_tasks,
        split_video,
        take_name,
        video_fps,
    )

    root = args.local_root.resolve()
    if not root.is_dir():
        raise Fail(f"the local-files root {root} does not exist")
    try:
        take = take_name(args.name or (args.video or args.folders).stem, "--name" if args.name else "the take name")
    except VideoError as exc:
        raise Fail(f"{exc}; choose one with --name" if not args.name else str(exc)) from None
    if args.video:
        if args.fps:
            raise Fail("--fps is for --folders; a video's own frame rate is used")
        out = root / "segments" / take
        check_video(args.video)
        writable_folder(out)
    else:
        if not args.folders.is_dir():
            raise Fail(f"--folders {args.folders} is not a folder")
        if not args.folders.resolve().is_relative_to(root):
            raise Fail(f"--folders {args.folders} must be inside --local-root {root}")
        try:
            folders = segment_folders(args.folders.resolve())
        except VideoError as exc:
            raise Fail(str(exc)) from None
    client = client_from(args)
    project = get_project(client, args.project)
    check_project_config(project, "greenscreen", segment_tasks_probe())

    # the same take (by name, or the same video by content) already in the project?
    probe = {"take": take}
    if args.video:
        probe["source_sha256"] = file_sha256(args.video)
    else:
        fps = args.fps or 0.0
        tasks = segment_tasks(folders, root, later_frames=args.later_frames, start_frame=args.start_frame,
                              take=take, fps=fps)  # fmt: skip
    existing = project_tasks(client, args.project)
    old = same_source(existing, probe)
    if not args.video:
        old = sorted({*old, *(i for t in tasks for i in same_source(existing, {"video": t["video"]}))})
    if old and not args.replace:
        same = [d for i, d in existing if i in old]
        if (
            args.video
            and all(d.get("take") == take for d in same)
            and any(d.get("source_sha256") not in (None, probe["source_sha256"]) for d in same)
        ):
            raise Fail(
                f"take {take!r} of project {args.project} holds another video (tasks {_ids(old)}); "
                "choose another --name, or --replace to replace it"
            )
        names = sorted({str(d.get("take") or "?") for d in same})
        print(f"take {', '.join(names)} is already in project {args.project} (tasks {_ids(old)}): nothing imported; "
              "--replace imports it again")  # fmt: skip
        return 0

    aside = None
    if args.video and args.replace and out.exists():  # the old frames stay until the new ones are in
        aside = out.with_name(f".{take}.replaced-{int(time.time())}")
        out.rename(aside)
    new = NewFiles(out) if args.video else NewFiles()
    storage = None
    try:
        with new.removed_on_failure():
            if args.video:
                folders = split_video(args.video, out, args.seconds, progress=progress_bar("segments", "segment"))
                tasks = segment_tasks(folders, root, later_frames=args.later_frames, start_frame=args.start_frame,
                                      take=take, fps=video_fps(args.video), source_sha256=probe["source_sha256"])  # fmt: skip
            storage, created = local_storage(client, args.project, folders[0].parent)
            storage = storage if created else None
            ids = import_tasks(client, args.project, tasks)
    except BaseException:
        if storage is not None:
            undo_storage(client, storage)
        if aside is not None:
            shutil.rmtree(out, ignore_errors=True)
            aside.rename(out)
        raise
    if old:
        delete_tasks(client, old)
        print(f"replaced take {take!r}: deleted its old tasks {_ids(old)}", file=sys.stderr)
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)
    print(f"imported take {take!r}: {len(ids)} segment task(s): {ids}")
    return 0


def segment_tasks_probe() -> dict:
    """The keys of a segment task's data (for the project's config check), without any video."""
    from ml_backend.labelstudio.importing import review_fields

    return {**review_fields(["video"]), "frames": [], "frame_indices": [], "video": "", "segment_index": 0,
            "segment_frames": [], "start_frame": 0, "take": "", "first_frame": 0, "last_frame": 0, "fps": 0.0}  # fmt: skip


def _ids(ids: list[int]) -> str:
    ids = sorted(ids)
    return f"{ids[0]}–{ids[-1]}" if len(ids) > 2 and ids[-1] - ids[0] == len(ids) - 1 else ", ".join(map(str, ids))


if __name__ == "__main__":
    run(main)

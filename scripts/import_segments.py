#!/usr/bin/env python3
"""Import green-screen segments into a project, one task per segment.

Either folders of frames named video_part_001, video_part_002, ... (as the original tool used),
or a long video cut into N-second segments that share one boundary frame:

    python scripts/import_segments.py --project 2 --local-root /data/ls-files --folders /data/ls-files/organized
    python scripts/import_segments.py --project 2 --local-root /data/ls-files --video long.mp4 --seconds 10
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from _common import add_label_studio_args, client_from, progress_bar


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_label_studio_args(parser)
    parser.add_argument("--project", type=int, required=True)
    parser.add_argument("--local-root", type=Path, required=True, help="Label Studio's LOCAL_FILES_DOCUMENT_ROOT")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--folders", type=Path, help="folder holding video_part_XXX folders (inside --local-root)")
    source.add_argument("--video", type=Path, help="a long video to split")
    parser.add_argument("--seconds", type=float, default=10.0, help="segment length when splitting --video")
    parser.add_argument("--name", default="segments", help="subfolder for split segments")
    parser.add_argument("--later-frames", type=int, default=2, help="extra frames per task for drift fixes")
    parser.add_argument("--start-frame", type=int, default=0, help="number of the first exported frame")
    args = parser.parse_args()

    from ml_backend.automation import ensure_local_storage, import_tasks
    from ml_backend.exceptions import MLBackendError
    from ml_backend.importing import segment_folders, segment_tasks, split_video

    root = args.local_root.resolve()
    client = client_from(args)
    try:
        if args.video:
            if not args.video.is_file():
                sys.exit(f"error: {args.video} does not exist")
            folders = split_video(args.video, root / args.name, args.seconds, progress=progress_bar("segments"))
        else:
            folders = segment_folders(args.folders.resolve())
        if not all(f.resolve().is_relative_to(root) for f in folders):
            sys.exit(f"error: segment folders must be inside --local-root {root}")
        tasks = segment_tasks(folders, root, later_frames=args.later_frames, start_frame=args.start_frame)
    except MLBackendError as exc:
        sys.exit(f"error: {exc}")
    ensure_local_storage(client, args.project, folders[0].parent)
    ids = import_tasks(client, args.project, tasks)
    print(f"imported {len(ids)} segment task(s): {ids}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

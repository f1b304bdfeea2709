#!/usr/bin/env python3
"""Import SceneDiff video pairs into a project: extract annotation frames (every --stride-th
frame, with the worker's decoder) under the local-files root, then create one task per pair.

    python scripts/import_pairs.py --project 1 --local-root /data/ls-files \\
        --pair kitchen before.mp4 after.mp4 --pair desk d1.mp4 d2.mp4 --stride 30
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
    parser.add_argument(
        "--local-root", type=Path, required=True, help="Label Studio's LOCAL_FILES_DOCUMENT_ROOT (or a folder under it)"
    )
    parser.add_argument("--document-root", type=Path, help="LOCAL_FILES_DOCUMENT_ROOT if --local-root is a subfolder")
    parser.add_argument("--pair", nargs=3, action="append", metavar=("NAME", "VIDEO1", "VIDEO2"), required=True)
    parser.add_argument("--stride", type=int, default=30, help="annotation frame every N frames (default 30)")
    args = parser.parse_args()

    from ml_backend.automation import ensure_local_storage, import_tasks
    from ml_backend.exceptions import MLBackendError
    from ml_backend.importing import pair_task

    client = client_from(args)
    document_root = (args.document_root or args.local_root).resolve()
    tasks = []
    for name, v1, v2 in args.pair:
        for v in (v1, v2):
            if not Path(v).exists():
                sys.exit(f"error: {v} does not exist")
        try:
            tasks.append(
                pair_task(v1, v2, document_root, name, stride=args.stride, progress=progress_bar(f"{name} frames"))
            )
        except MLBackendError as exc:
            sys.exit(f"error: pair {name}: {exc}")
    ensure_local_storage(client, args.project, document_root / "pairs")
    ids = import_tasks(client, args.project, tasks)
    print(f"imported {len(ids)} pair task(s): {ids}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

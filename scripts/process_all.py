#!/usr/bin/env python3
"""Queue propagation for every annotated task of a project ("Process all"), optionally waiting
with progress bars. Same as pressing "Start training" in Label Studio.

    python scripts/process_all.py --project 1 --wait
"""

from __future__ import annotations

import argparse
import sys
import time

from _common import add_label_studio_args


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_label_studio_args(parser)
    parser.add_argument("--project", type=int, required=True)
    parser.add_argument("--wait", action="store_true", help="show progress until every job ends")
    args = parser.parse_args()

    import os

    from tqdm import tqdm

    from ml_backend.jobs import JobQueue
    from ml_backend.settings import Settings

    settings = Settings.from_env({**os.environ, "LABEL_STUDIO_URL": args.url, "LABEL_STUDIO_API_KEY": args.api_key})
    try:
        queue = JobQueue.from_settings(settings)
        ids = queue.enqueue_project(args.project)
    except Exception as exc:
        sys.exit(f"error: {exc}")
    print(f"queued {len(ids)} job(s)")
    for job_id in ids:
        print(f"  {job_id}")
    if not args.wait:
        return 0
    failed = 0
    bar = tqdm(total=len(ids), desc="jobs", unit="job")
    pending = set(ids)
    while pending:
        for job_id in list(pending):
            info = queue.status(job_id) or {"status": "missing"}
            if info["status"] in ("finished", "failed", "canceled", "stopped", "missing"):
                pending.discard(job_id)
                bar.update(1)
                if info["status"] != "finished":
                    failed += 1
                    tqdm.write(f"{job_id}: {info['status']} {info.get('error', '')}")
        time.sleep(1)
    bar.close()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

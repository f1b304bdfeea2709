#!/usr/bin/env python3
"""Queue propagation for every annotated task of a project ("Process all"), optionally waiting
with progress bars. Same as pressing "Start training" in Label Studio.

    python scripts/process_all.py --project 1 --wait
"""

from __future__ import annotations

import time

from _common import Parser, add_label_studio_args, client_from, get_project, positive, redis_queue, run


def main() -> int:
    parser = Parser(description=__doc__.split("\n\n")[0])
    add_label_studio_args(parser)
    parser.add_argument("--project", type=positive(), required=True)
    parser.add_argument("--wait", action="store_true", help="show progress until every job ends")
    args = parser.parse_args()

    from tqdm import tqdm

    get_project(client_from(args), args.project)
    queue = redis_queue({"LABEL_STUDIO_URL": args.url, "LABEL_STUDIO_API_KEY": args.api_key})
    ids = queue.enqueue_project(args.project)
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
    run(main)

#!/usr/bin/env python3
"""Download a project's exports (segments.pkl, inference_data.pkl, green-screen frames, review
videos) from the ML backend, which serves what its workers wrote under RESULTS_DIR.

    python scripts/download_exports.py --backend http://localhost:9090 --project 1 --out exports/
    python scripts/download_exports.py --project 1 --task 7 --out exports/     # one task only
    python scripts/download_exports.py --project 2 --take take1 --out exports/ # one green-screen take

Green-screen exports are keyed by take: greenscreen/<take>/frame_XXXXXX_masked.png,
greenscreen/<take>/greenscreen.mp4 and greenscreen/<take>/review/ (tasks imported before takes
existed: greenscreen/ itself).

If a download fails, the files this run wrote are removed again.
"""

from __future__ import annotations

import os
from pathlib import Path

from _common import Fail, NewFiles, Parser, positive, run, talking_to, user_password, writable_folder


def main() -> int:
    parser = Parser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", default=os.environ.get("ML_BACKEND_URL", "http://localhost:9090"))
    parser.add_argument("--project", type=positive(), required=True)
    parser.add_argument("--task", type=positive(), help="only task_<id>/")
    parser.add_argument("--take", help="only the green-screen take greenscreen/<take>/")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--basic-auth", metavar="USER:PASS", type=user_password, default=None)
    args = parser.parse_args()

    import httpx
    from tqdm import tqdm

    base = args.backend.rstrip("/")
    talking_to("the ML backend", base)
    writable_folder(args.out)
    listing = httpx.get(f"{base}/exports/{args.project}", auth=args.basic_auth, timeout=30)
    listing.raise_for_status()
    try:
        files = listing.json()["files"]
    except (ValueError, KeyError, TypeError):
        raise Fail(f"{base} does not answer like the ML backend; check --backend or ML_BACKEND_URL") from None
    if args.task is not None:
        files = [f for f in files if f["path"].startswith(f"task_{args.task}/")]
    if args.take is not None:
        files = [f for f in files if f["path"].startswith(f"greenscreen/{args.take}/")]
    if not files:
        what = f"project {args.project}"
        what = f"task {args.task} of {what}" if args.task else f"take {args.take!r} of {what}" if args.take else what
        raise Fail(f"no exports for {what} yet (has the propagation job finished? see scripts/job_status.py)")
    total = sum(f["bytes"] for f in files)
    new = NewFiles(args.out)
    with new.removed_on_failure(), tqdm(total=total, unit="B", unit_scale=True, desc="download") as bar:
        for f in files:
            target = args.out / f["path"]
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.part")
            with httpx.stream(
                "GET", f"{base}/exports/{args.project}/{f['path']}", auth=args.basic_auth, timeout=60
            ) as r:
                r.raise_for_status()
                with tmp.open("wb") as out:
                    for chunk in r.iter_bytes(1 << 20):
                        out.write(chunk)
                        bar.update(len(chunk))
            tmp.replace(target)
    print(f"{len(files)} file(s) in {args.out}")
    return 0


if __name__ == "__main__":
    run(main)

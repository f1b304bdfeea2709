#!/usr/bin/env python3
"""Download a project's exports (segments.pkl, inference_data.pkl, green-screen frames, review
videos) from the ML backend, which serves what its workers wrote under RESULTS_DIR.

    python scripts/download_exports.py --backend http://localhost:9090 --project 1 --out exports/
    python scripts/download_exports.py --project 1 --task 7 --out exports/     # one task only
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from _common import ROOT  # noqa: F401


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", default=os.environ.get("ML_BACKEND_URL", "http://localhost:9090"))
    parser.add_argument("--project", type=int, required=True)
    parser.add_argument("--task", type=int, help="only task_<id>/")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--basic-auth", metavar="USER:PASS", default=None)
    args = parser.parse_args()

    import httpx
    from tqdm import tqdm

    auth = tuple(args.basic_auth.split(":", 1)) if args.basic_auth else None
    base = args.backend.rstrip("/")
    try:
        listing = httpx.get(f"{base}/exports/{args.project}", auth=auth, timeout=30)
        listing.raise_for_status()
    except httpx.HTTPError as exc:
        sys.exit(f"error: cannot list exports at {base}: {exc}")
    files = listing.json()["files"]
    if args.task is not None:
        files = [f for f in files if f["path"].startswith(f"task_{args.task}/")]
    if not files:
        print("no exports yet (has the propagation job finished? see scripts/job_status.py)")
        return 1
    total = sum(f["bytes"] for f in files)
    with tqdm(total=total, unit="B", unit_scale=True, desc="download") as bar:
        for f in files:
            target = args.out / f["path"]
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.part")
            with httpx.stream("GET", f"{base}/exports/{args.project}/{f['path']}", auth=auth, timeout=60) as r:
                r.raise_for_status()
                with tmp.open("wb") as out:
                    for chunk in r.iter_bytes(1 << 20):
                        out.write(chunk)
                        bar.update(len(chunk))
            tmp.replace(target)
    print(f"{len(files)} file(s) in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

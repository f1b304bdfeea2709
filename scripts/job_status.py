#!/usr/bin/env python3
"""Show propagation jobs, or follow one with progress bars (wraps `python -m ml_backend status`).

python scripts/job_status.py                 # every job
python scripts/job_status.py JOB_ID --follow
"""

import sys

from _common import redis_queue, run  # puts the repository on sys.path


def main() -> int:
    from ml_backend.__main__ import main as ml_backend_main

    if not {"-h", "--help"} & set(sys.argv[1:]):
        redis_queue()  # Redis reachable, or one error line
    return ml_backend_main(["status", *sys.argv[1:]])


if __name__ == "__main__":
    run(main)

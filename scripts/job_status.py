#!/usr/bin/env python3
"""Show propagation jobs, or follow one with progress bars (wraps `python -m ml_backend status`).

python scripts/job_status.py                 # every job
python scripts/job_status.py JOB_ID --follow
"""

import sys

from _common import ROOT  # noqa: F401  (puts the repository on sys.path)

from ml_backend.__main__ import main

if __name__ == "__main__":
    sys.exit(main(["status", *sys.argv[1:]]))

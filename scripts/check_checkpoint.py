#!/usr/bin/env python3
"""Exit 1 with instructions unless the SAM 2 checkpoint the stack would load exists (or
``SAM2_CHECKPOINT=random`` asks for random weights). Standard library only: ``make run`` runs
it with the system Python **before** it installs anything, so a missing checkpoint is said in
a second, not after minutes of installing.

    python3 scripts/check_checkpoint.py        # reads SAM2_CHECKPOINT, SAM2_MODEL_SIZE, SAM2_CHECKPOINT_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ml_backend.exceptions import MLBackendError  # noqa: E402 - after the path set-up
from ml_backend.models import check_checkpoint  # noqa: E402
from ml_backend.settings import Settings  # noqa: E402


def main() -> int:
    try:
        settings = Settings.from_env()
        check_checkpoint(settings)
    except MLBackendError as exc:
        print(f"error: {exc}", file=sys.stderr)
        print(
            "(make run checks this before installing; the download script needs `make install` first:\n"
            "    make install && .venv/bin/python scripts/download_checkpoints.py --size tiny && make run\n"
            " or a smoke run with random weights:  SAM2_CHECKPOINT=random make run)",
            file=sys.stderr,
        )
        return 1
    what = "random weights (smoke run)" if settings.random_weights else str(settings.checkpoint_path)
    print(f"SAM 2 checkpoint: {what}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

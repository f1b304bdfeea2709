#!/bin/sh
# Container entrypoint: `serve` (HTTP ML backend), `worker` (RQ propagation worker),
# `download-checkpoints [--size tiny|small|base_plus|large|all]`, or any other command.
set -eu

command="${1:-serve}"
[ "$#" -gt 0 ] && shift

case "$command" in
    serve)
        exec python -m ml_backend serve --host 0.0.0.0 --port "${PORT:-9090}" "$@"
        ;;
    worker)
        exec python -m ml_backend worker "$@"
        ;;
    download-checkpoints)
        exec python /app/scripts/download_checkpoints.py --dir "${SAM2_CHECKPOINT_DIR:-/checkpoints}" "$@"
        ;;
    *)
        exec "$command" "$@"
        ;;
esac

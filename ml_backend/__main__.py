"""Command line: ``python -m ml_backend <command>``.

- ``serve``: the HTTP backend (gunicorn, one process, threads; the model loads once);
- ``worker``: an RQ worker for propagation jobs (model loads once per process);
- ``propagate``: propagate prompts through videos without Label Studio;
- ``status``: show propagation jobs and their progress;
- ``settings``: print every setting, its variable and default.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from ml_backend import defaults


def _serve(args: argparse.Namespace) -> int:
    from gunicorn.app.base import BaseApplication

    from ml_backend.models import check_checkpoint
    from ml_backend.settings import Settings

    settings = Settings.from_env()
    if args.port:
        settings = settings.replace(port=args.port)
    check_checkpoint(settings)  # refuse to start, with instructions, before binding the port

    class Server(BaseApplication):
        def load_config(self) -> None:
            self.cfg.set("bind", f"{args.host}:{settings.port}")
            self.cfg.set("workers", 1)  # one model per process; threads share it
            self.cfg.set("worker_class", "gthread")
            self.cfg.set("threads", args.threads)
            self.cfg.set("timeout", 300)
            self.cfg.set("accesslog", "-")

        def load(self):
            # Runs in the worker process after the fork: the model (and CUDA) start there.
            from ml_backend.server.app import create_app

            jobs = None
            if not args.no_queue:
                from ml_backend.worker.queue import JobQueue

                # a webhook answers 503 after a few seconds of Redis outage instead of hanging
                jobs = JobQueue.from_settings(
                    settings.replace(redis_retry_seconds=min(settings.redis_retry_seconds, 5))
                )
            return create_app(settings, jobs=jobs, warmup=not args.lazy, prefetch_requests=True)

    logging.getLogger(__name__).info("serving on %s:%d", args.host, settings.port)
    Server().run()
    return 0


def _settings(_: argparse.Namespace) -> int:
    from ml_backend.settings import Settings

    print("| Variable | Default | Meaning |")
    print("|---|---|---|")
    for env, default, doc in Settings.table():
        print(f"| `{env}` | `{default}` | {doc} |")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ml_backend", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the HTTP ML backend")
    serve.add_argument("--host", default="0.0.0.0")
    serve.add_argument("--port", type=int, default=0, help="default: $PORT or 9090")
    serve.add_argument("--threads", type=int, default=8)
    serve.add_argument("--lazy", action="store_true", help="build the model on the first click, not at start")
    serve.add_argument("--no-queue", action="store_true", help="do not connect to Redis; webhooks are ignored")
    serve.set_defaults(func=_serve)

    show = sub.add_parser("settings", help="print the settings table")
    show.set_defaults(func=_settings)

    from ml_backend import cli

    cli.add_commands(sub)

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from ml_backend.exceptions import ConfigurationError

    try:
        return int(args.func(args) or 0)
    except ConfigurationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        from redis.exceptions import RedisError

        if not isinstance(exc, RedisError):
            raise
        from ml_backend.connection import redacted

        url = redacted(os.environ.get("REDIS_URL") or defaults.REDIS_URL)
        print(f"error: Redis at {url} did not answer ({type(exc).__name__}); is redis-server running?", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())

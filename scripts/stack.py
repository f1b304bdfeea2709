#!/usr/bin/env python3
"""The whole local stack as child processes: Redis, the SAM 2 ML backend, one worker and Label
Studio 1.23.2, plus demo projects.

    .venv/bin/python scripts/stack.py up                       # what `make run` does
    SAM2_CHECKPOINT=random .venv/bin/python scripts/stack.py up  # smoke run without weights
    .venv/bin/python scripts/stack.py up --ls-port 8081 --state-dir /tmp/stack --checkpoint random

``up`` starts

- ``redis-server`` on a loopback port, append-only persistence in ``<state>/redis``;
- the ML backend (``python -m ml_backend serve``) and one worker (``python -m ml_backend worker``);
- Label Studio 1.23.2 from ``.ls-venv`` (installed by ``scripts/install_label_studio.sh`` if
  missing), data in ``<state>/label-studio``, local files served from ``<state>/files``;

then creates the admin user (``LABEL_STUDIO_USERNAME`` / ``LABEL_STUDIO_PASSWORD`` /
``LABEL_STUDIO_USER_TOKEN``, or generated once and kept in ``<state>/credentials.json``), a demo
SceneDiff project with a synthetic pair and a demo green-screen project with synthetic segments,
connects the backend (interactive) and its webhook (``automation.WEBHOOK_ACTIONS``: submitted and
deleted annotations, created and deleted tasks), prints the URL and login, and runs until
Ctrl-C / SIGTERM, which stops every child (each in its own process group) and exits 0.

Every child logs to ``<state>/logs/<name>.log``. The state dir (default ``.stack/``) survives
restarts: the same login, projects and Redis data come back. Delete it to start afresh.

The pieces are reusable: :class:`Stack` (``start()`` / ``setup_demo()`` / ``stop()``, or ``with
Stack(config) as stack:``) is what the end-to-end tests use.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ml_backend.connection import redacted  # noqa: E402 - after the path set-up

LS_VERSION = "1.23.2"
#: Image size of a smoke run (random weights) on a CPU when none is chosen.
SMOKE_IMAGE_SIZE = 256
#: Frames of the demo pair's two videos.
DEMO_PAIR_FRAMES = (30, 24)
SCENEDIFF_TITLE = "SceneDiff demo"
GREENSCREEN_TITLE = "Green-screen demo"
CHECKPOINT_HINT = """\
The ML backend needs a SAM 2 checkpoint. Either
    .venv/bin/python scripts/download_checkpoints.py --size tiny   # -> checkpoints/sam2.1_hiera_tiny.pt
    .venv/bin/python scripts/stack.py up --checkpoint PATH/TO/sam2.1_hiera_tiny.pt
or, for a smoke run without network (random weights, useless masks, marked `random-weights`):
    SAM2_CHECKPOINT=random make run        # or: scripts/stack.py up --checkpoint random"""


class StackError(RuntimeError):
    """A piece of the stack did not come up; the message says which and shows its log."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _port_in_use(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def _http_json(url: str, *, headers: dict[str, str] | None = None, timeout: float = 2.0) -> tuple[int, Any]:
    """``(status, json body or None)`` of a GET; ``(0, None)`` if nothing answers."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read()
            status = response.status
    except urllib.error.HTTPError as exc:
        return exc.code, None
    except (OSError, ValueError):
        return 0, None
    try:
        return status, json.loads(body)
    except ValueError:
        return status, None


def tail(path: Path, lines: int = 30) -> str:
    """The last ``lines`` lines of a log file ('' if absent)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


@dataclass
class StackConfig:
    """Where and how the stack runs. ``None`` ports are picked free at start."""

    state_dir: Path = ROOT / ".stack"
    host: str = "127.0.0.1"
    ls_port: int | None = 8080
    backend_port: int | None = 9090
    redis_port: int | None = 6380
    username: str | None = None  # default: $LABEL_STUDIO_USERNAME or admin@example.com
    password: str | None = None  # default: $LABEL_STUDIO_PASSWORD or generated once
    token: str | None = None  # default: $LABEL_STUDIO_USER_TOKEN or generated once
    checkpoint: str | None = None  # SAM2_CHECKPOINT for backend and worker; None = leave the env as is
    image_size: int | None = None  # SAM2_IMAGE_SIZE; None = leave the env as is
    device: str | None = None  # SAM2_DEVICE; None = leave the env as is
    ls_venv: Path = ROOT / ".ls-venv"
    python: str = sys.executable  # the product venv's interpreter
    install_label_studio: bool = True
    extra_env: dict[str, str] = field(default_factory=dict)  # more env for backend and worker
    backend_threads: int = 8
    ls_timeout: float = 400.0  # cold start ≈75 s on 2 cores (a first run migrates the database)
    backend_timeout: float = 600.0  # model build; a real checkpoint on a slow disk takes a while


@dataclass
class Child:
    name: str
    proc: subprocess.Popen
    log: Path

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None


class Stack:
    """Redis + ML backend + worker + Label Studio as child processes of this one."""

    def __init__(self, config: StackConfig | None = None, *, say: Callable[[str], None] | None = None) -> None:
        self.config = config or StackConfig()
        self.say = say or (lambda msg: print(msg, flush=True))
        c = self.config
        self.state_dir = Path(c.state_dir).resolve()
        self.files_root = self.state_dir / "files"  # LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT
        self.data_dir = self.state_dir / "data"  # backend + worker DATA_DIR
        self.logs_dir = self.state_dir / "logs"
        self.demo_dir = self.state_dir / "demo-videos"
        self.children: dict[str, Child] = {}
        self.ls_port = c.ls_port
        self.backend_port = c.backend_port
        self.redis_port = c.redis_port
        self.username = ""
        self.password = ""
        self.token = ""
        self.demo: dict[str, Any] = {}
        self._client: Any = None
        self._results_root: Path | None = None

    # -- addresses ------------------------------------------------------------------------------
    @property
    def ls_url(self) -> str:
        return f"http://{self.config.host}:{self.ls_port}"

    @property
    def backend_url(self) -> str:
        return f"http://{self.config.host}:{self.backend_port}"

    @property
    def redis_password(self) -> str:
        """The stack's Redis password: made once, kept in ``<state>/redis/password`` (0600)."""
        path = self.state_dir / "redis" / "password"
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(24))
        return path.read_text().strip()

    @property
    def redis_url(self) -> str:
        return f"redis://:{self.redis_password}@{self.config.host}:{self.redis_port}/0"

    @property
    def results_root(self) -> Path:
        """Where the worker writes exports (``RESULTS_DIR``, default ``<DATA_DIR>/results``)."""
        if self._results_root is not None:
            return self._results_root
        env = self.backend_env()
        results = env.get("RESULTS_DIR", "")
        return Path(results) if results not in ("", ".") else self.data_dir / "results"

    # -- credentials ----------------------------------------------------------------------------
    def _credentials(self) -> None:
        """Login of the admin: flags > environment > ``<state>/credentials.json`` > generated.

        Label Studio creates the user on its first start only, so the first values stick.
        """
        c = self.config
        path = self.state_dir / "credentials.json"
        saved: dict[str, str] = {}
        if path.is_file():
            saved = json.loads(path.read_text())
        self.username = (
            c.username or os.environ.get("LABEL_STUDIO_USERNAME") or saved.get("username") or "admin@example.com"
        )
        self.password = (
            c.password or os.environ.get("LABEL_STUDIO_PASSWORD") or saved.get("password") or secrets.token_urlsafe(12)
        )
        self.token = c.token or os.environ.get("LABEL_STUDIO_USER_TOKEN") or saved.get("token") or secrets.token_hex(20)
        if len(self.token) <= 5 or len(self.token) > 40:
            raise StackError("LABEL_STUDIO_USER_TOKEN must be 6..40 characters (Label Studio ignores shorter ones)")
        new = {"username": self.username, "password": self.password, "token": self.token}
        if new != saved:
            old_umask = os.umask(0o077)
            try:
                path.write_text(json.dumps(new, indent=2) + "\n")
            finally:
                os.umask(old_umask)

    # -- environments ---------------------------------------------------------------------------
    def backend_env(self) -> dict[str, str]:
        """Environment of the backend and the worker: the user's, plus the stack's addresses."""
        c = self.config
        env = dict(os.environ)
        env.update(c.extra_env)
        if c.checkpoint is not None:
            env["SAM2_CHECKPOINT"] = c.checkpoint
        if c.image_size is not None:
            env["SAM2_IMAGE_SIZE"] = str(c.image_size)
        if c.device is not None:
            env["SAM2_DEVICE"] = c.device
        if self._smoke_run_on_cpu(env):
            # random weights mean nothing at any size; at 256 px a CPU demo takes minutes, not an hour
            env["SAM2_IMAGE_SIZE"] = str(SMOKE_IMAGE_SIZE)
        # Backend and worker share this machine's cores with each other and with Label Studio.
        # PyTorch's default (one OpenMP thread per core in each process) oversubscribes them, and
        # spinning OpenMP threads then slow propagation down several times over (measured 7x on
        # 2 cores); half the cores each is faster. An OMP_NUM_THREADS in the environment wins.
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 2) // 2)))
        env.update(
            REDIS_URL=self.redis_url,
            LABEL_STUDIO_URL=self.ls_url,
            LABEL_STUDIO_API_KEY=self.token,
            LOCAL_FILES_DOCUMENT_ROOT=str(self.files_root),
            DATA_DIR=str(self.data_dir),
            PORT=str(self.backend_port),
            PYTHONUNBUFFERED="1",
        )
        return env

    def ls_env(self) -> dict[str, str]:
        """Environment of Label Studio (FACTS.md): local files on, loopback backends allowed."""
        env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
        env.update(
            PATH=f"{self.config.ls_venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",
            LABEL_STUDIO_BASE_DATA_DIR=str(self.state_dir / "label-studio"),
            LABEL_STUDIO_USERNAME=self.username,
            LABEL_STUDIO_PASSWORD=self.password,
            LABEL_STUDIO_USER_TOKEN=self.token,
            LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN="true",
            LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK="true",
            LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED="true",
            LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=str(self.files_root),
            ML_BLOCK_LOCAL_IP="false",
            SSRF_PROTECTION_ENABLED="false",
            PYTHONUNBUFFERED="1",
        )
        return env

    # -- processes ------------------------------------------------------------------------------
    def _spawn(self, name: str, argv: list[str], env: dict[str, str], cwd: Path = ROOT) -> Child:
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        log = self.logs_dir / f"{name}.log"
        with open(log, "ab") as out:
            out.write(f"\n==== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(argv)}\n".encode())
            out.flush()
            proc = subprocess.Popen(
                argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: Ctrl-C in the terminal reaches only us
            )  # fmt: skip
        child = Child(name, proc, log)
        self.children[name] = child
        return child

    def _check_alive(self, name: str) -> None:
        child = self.children[name]
        if child.alive:
            return
        log = tail(child.log, 40)
        message = f"{name} exited with status {child.proc.returncode}; last lines of {child.log}:\n{log}"
        if name in ("backend", "worker") and "checkpoint" in log.lower():
            message += "\n\n" + CHECKPOINT_HINT
        raise StackError(message)

    def _pick_ports(self) -> None:
        host = self.config.host
        for attr, label in (("ls_port", "Label Studio"), ("backend_port", "ML backend"), ("redis_port", "Redis")):
            port = getattr(self, attr)
            if port is None:
                setattr(self, attr, free_port(host))
            elif _port_in_use(host, port):
                flag = "--" + attr.replace("_", "-")
                raise StackError(f"port {port} on {host} ({label}) is taken: stop what runs there or pass {flag}")

    def ensure_label_studio(self) -> Path:
        """``<ls_venv>/bin/label-studio``, installing Label Studio 1.23.2 there if needed."""
        exe = self.config.ls_venv / "bin" / "label-studio"
        if exe.exists():
            return exe
        if not self.config.install_label_studio:
            raise StackError(f"no Label Studio in {self.config.ls_venv}: run bash scripts/install_label_studio.sh")
        self.say(f"installing Label Studio {LS_VERSION} into {self.config.ls_venv} (a few minutes, once)")
        env = dict(os.environ, LS_VENV=str(self.config.ls_venv), LS_VERSION=LS_VERSION)
        done = subprocess.run(["bash", str(ROOT / "scripts" / "install_label_studio.sh")], env=env)
        if done.returncode != 0 or not exe.exists():
            raise StackError("installing Label Studio failed (scripts/install_label_studio.sh)")
        return exe

    def start_redis(self) -> Child:
        binary = shutil.which("redis-server")
        if binary is None:
            raise StackError(
                "redis-server is not installed: apt-get install redis-server (make install does it as root)"
            )
        directory = self.state_dir / "redis"
        directory.mkdir(parents=True, exist_ok=True)
        conf = directory / "redis.conf"  # the password goes in a 0600 file, not on the command line
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f"requirepass {self.redis_password}\n")
        child = self._spawn(
            "redis",
            [binary, str(conf), "--port", str(self.redis_port), "--bind", self.config.host, "--dir", str(directory),
             "--appendonly", "yes", "--daemonize", "no"],
            dict(os.environ),
        )  # fmt: skip
        import redis

        conn = redis.Redis.from_url(self.redis_url)
        deadline = time.monotonic() + 30
        while True:
            self._check_alive("redis")
            try:
                conn.ping()
                return child
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise StackError(f"redis-server did not answer on {self.redis_url}") from None
                time.sleep(0.1)

    @staticmethod
    def _smoke_run_on_cpu(env: dict[str, str]) -> bool:
        """Random weights, no image size chosen, and no GPU."""
        if env.get("SAM2_CHECKPOINT", "") != "random" or env.get("SAM2_IMAGE_SIZE"):
            return False
        device = env.get("SAM2_DEVICE", "auto")
        if device == "cpu":
            return True
        if device != "auto":
            return False
        import torch

        return not torch.cuda.is_available()

    def speed(self) -> float | None:
        """Seconds per propagated frame (one object) that the worker measured at its start."""
        import redis

        from ml_backend.speed import SPEED_KEY

        value = redis.Redis.from_url(self.redis_url).hget(SPEED_KEY, "seconds_per_frame")
        return float(value) if value else None

    def start_backend(self) -> Child:
        argv = [self.config.python, "-m", "ml_backend", "serve", "--host", self.config.host,
                "--port", str(self.backend_port), "--threads", str(self.config.backend_threads)]  # fmt: skip
        return self._spawn("backend", argv, self.backend_env())

    def start_worker(self) -> Child:
        return self._spawn("worker", [self.config.python, "-m", "ml_backend", "worker"], self.backend_env())

    def start_label_studio(self) -> Child:
        exe = self.ensure_label_studio()
        (self.state_dir / "label-studio").mkdir(parents=True, exist_ok=True)
        argv = [str(exe), "start", "--no-browser", "--internal-host", self.config.host,
                "--host", self.ls_url, "--port", str(self.ls_port)]  # fmt: skip
        return self._spawn("label-studio", argv, self.ls_env(), cwd=self.state_dir)

    # -- readiness ------------------------------------------------------------------------------
    def wait_backend(self, timeout: float | None = None) -> dict[str, Any]:
        """Wait until ``/health`` says the model is loaded (so Label Studio's 1 s / 3 s checks pass)."""
        deadline = time.monotonic() + (timeout or self.config.backend_timeout)
        while True:
            self._check_alive("backend")
            status, body = _http_json(f"{self.backend_url}/health")
            if status == 200 and isinstance(body, dict) and body.get("model_loaded"):
                return body
            if time.monotonic() > deadline:
                raise StackError(f"the ML backend did not load its model in time; see {self.children['backend'].log}")
            time.sleep(0.5)

    def wait_worker(self, timeout: float | None = None) -> None:
        """Wait until the worker has registered in Redis (it loads the model first)."""
        import redis
        from rq import Worker

        conn = redis.Redis.from_url(self.redis_url)
        deadline = time.monotonic() + (timeout or self.config.backend_timeout)
        while True:
            self._check_alive("worker")
            if Worker.all(connection=conn):
                return
            if time.monotonic() > deadline:
                raise StackError(f"the worker did not register in time; see {self.children['worker'].log}")
            time.sleep(0.5)

    def wait_label_studio(self, timeout: float | None = None) -> None:
        """Wait until Label Studio answers ``/health`` and accepts the admin's token."""
        deadline = time.monotonic() + (timeout or self.config.ls_timeout)
        headers = {"Authorization": f"Token {self.token}"}
        while True:
            self._check_alive("label-studio")
            status, _ = _http_json(f"{self.ls_url}/health", timeout=5)
            if status == 200:
                status, _ = _http_json(f"{self.ls_url}/api/projects?page_size=1", headers=headers, timeout=10)
                if status == 200:
                    return
                if status in (401, 403):
                    raise StackError(
                        f"Label Studio at {self.ls_url} refuses the admin token (HTTP {status}). The data dir "
                        f"{self.state_dir / 'label-studio'} was made with other credentials; use those or delete it."
                    )
            if time.monotonic() > deadline:
                raise StackError(f"Label Studio did not come up in time; see {self.children['label-studio'].log}")
            time.sleep(1)

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> Stack:
        """Start every child and wait until all are ready; on failure stop what started and raise."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        for d in (self.files_root, self.data_dir, self.logs_dir):
            d.mkdir(parents=True, exist_ok=True)
        try:
            self._credentials()
            self._pick_ports()
            self.ensure_label_studio()
            t0 = time.monotonic()
            self.say(
                f"redis-server on {redacted(self.redis_url)} (password in {self.state_dir / 'redis' / 'password'}, "
                f"append-only file in {self.state_dir / 'redis'})"
            )
            self.start_redis()
            self.say(f"Label Studio {LS_VERSION} starting on {self.ls_url} (a fresh database takes ~75 s)")
            self.start_label_studio()
            self.say(f"ML backend starting on {self.backend_url}; worker starting")
            self.start_backend()
            self.start_worker()
            health = self.wait_backend()
            self.say(f"ML backend up: {health}")
            self.wait_worker()
            env = self.backend_env()
            size = int(env.get("SAM2_IMAGE_SIZE") or 1024)
            seconds = self.speed()
            speed = f"about {seconds:.2f} s per frame and object" if seconds else "an unknown time per frame"
            self.say(f"worker ready: SAM 2 at {size} px takes {speed} on this machine")
            if seconds and seconds > 1 and env.get("SAM2_CHECKPOINT") != "random":
                self.say(
                    "warning: propagation is slow here (no GPU?): the demo job will take a while, and each first "
                    "click on a new frame takes an encoder pass; SAM2_IMAGE_SIZE=512 trades quality for speed"
                )
            self.wait_label_studio()
            self.say(f"Label Studio up ({time.monotonic() - t0:.0f} s)")
            self.write_info()
        except BaseException:
            self.stop()
            raise
        return self

    # -- a running stack, seen from another process ---------------------------------------------
    def info(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "ls_url": self.ls_url,
            "backend_url": self.backend_url,
            "redis_url": self.redis_url,
            "ports": {"ls": self.ls_port, "backend": self.backend_port, "redis": self.redis_port},
            "username": self.username,
            "password": self.password,
            "token": self.token,
            "results_root": str(self.results_root),
            "demo": self.demo,
        }

    def write_info(self) -> None:
        """``<state>/stack.json``: addresses and login of this running stack (for :meth:`attach`)."""
        path = self.state_dir / "stack.json"
        old_umask = os.umask(0o077)
        try:
            path.write_text(json.dumps(self.info(), indent=2) + "\n")
        finally:
            os.umask(old_umask)

    @classmethod
    def attach(cls, state_dir: Path, **kwargs: Any) -> Stack:
        """A handle on a stack another process runs (``stack.py up``) from its ``stack.json``.

        It has no children: :meth:`check` and :meth:`stop` do nothing. Tests use it to skip the
        Label Studio cold start while developing (``E2E_STACK_DIR``).
        """
        info = json.loads((Path(state_dir) / "stack.json").read_text())
        stack = cls(StackConfig(state_dir=Path(state_dir)), **kwargs)
        stack.ls_port, stack.backend_port, stack.redis_port = (info["ports"][k] for k in ("ls", "backend", "redis"))
        stack.username, stack.password, stack.token = info["username"], info["password"], info["token"]
        stack._results_root = Path(info["results_root"])
        stack.demo = info.get("demo") or {}
        return stack

    def check(self) -> None:
        """Raise :class:`StackError` if a child has exited."""
        for name in list(self.children):
            self._check_alive(name)

    #: Seconds a worker gets to stop after SIGTERM (its stop_grace_period): its running job
    #: stops at the next frame, goes back to the front of the queue and its Label Studio columns
    #: say "queued" (worker restarted) — a few seconds on a busy CPU, so 30 s is plenty.
    WORKER_GRACE = 30.0

    def stop(self, timeout: float = 20.0) -> None:
        """Stop every child: SIGTERM to its process group, SIGKILL what is left after ``timeout``.

        The worker goes first, with :data:`WORKER_GRACE` seconds, while Label Studio and Redis
        are still up, so it can put its job back on the queue and say so in the task's columns;
        then Label Studio and the backend (together), Redis last. After a SIGKILL the job is
        found by the next worker's watchdog (see README, "Stopping and restarting").
        """
        workers = [c for name, c in self.children.items() if name == "worker"]
        first = [c for name, c in self.children.items() if name not in ("redis", "worker")]
        last = [c for name, c in self.children.items() if name == "redis"]
        for group, grace in ((workers, max(timeout, self.WORKER_GRACE)), (first, timeout), (last, timeout)):
            for child in group:
                _signal_group(child.proc.pid, signal.SIGTERM)
            deadline = time.monotonic() + grace
            for child in group:
                try:
                    child.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    _signal_group(child.proc.pid, signal.SIGKILL)
                    child.proc.wait(timeout=10)
                # members of the group may outlive its leader (Label Studio's server, gunicorn's worker)
                _wait_group(child.proc.pid, max(1.0, deadline - time.monotonic()))
        self.children.clear()

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- Label Studio content -------------------------------------------------------------------
    def client(self) -> Any:
        """A label-studio-sdk client logged in as the admin."""
        if self._client is None:
            from label_studio_sdk.client import LabelStudio

            self._client = LabelStudio(base_url=self.ls_url, api_key=self.token, timeout=120)
        return self._client

    def setup_demo(self, *, greenscreen: bool = True, pair_frames: tuple[int, int] = DEMO_PAIR_FRAMES,
                   size: tuple[int, int] = (240, 320), stride: int = 10) -> dict[str, Any]:  # fmt: skip
        """Demo projects (idempotent): a SceneDiff pair and, with ``greenscreen``, green-screen segments.

        Returns ``{"scenediff": {"project", "tasks", "backend"}, "greenscreen": {...}}``.
        """
        from ml_backend.automation import connect_backend, ensure_local_storage, ensure_project, import_tasks
        from ml_backend.importing import pair_task, segment_tasks, split_video
        from ml_backend.synthetic import moving_shapes, scene_pair

        client = self.client()
        self.demo_dir.mkdir(parents=True, exist_ok=True)
        out: dict[str, Any] = {}

        config = (ROOT / "label_config" / "scenediff_pair.xml").read_text()
        project = ensure_project(
            client, SCENEDIFF_TITLE, config,
            description="Synthetic before/after pair: the mug is removed, a box is added, the ball moves.",
        )  # fmt: skip
        backend = connect_backend(client, project.id, self.backend_url)
        tasks = [t.id for t in client.tasks.list(project=project.id, fields="task_only")]
        if not tasks:
            v1, v2 = scene_pair(num_frames=pair_frames, size1=size)
            p1 = v1.write(self.demo_dir / "kitchen_before.mkv")
            p2 = v2.write(self.demo_dir / "kitchen_after.mkv")
            data = pair_task(p1, p2, self.files_root, "demo_kitchen", stride=stride)
            ensure_local_storage(client, project.id, self.files_root / "pairs")
            tasks = import_tasks(client, project.id, [data])
        out["scenediff"] = {"project": project.id, "tasks": tasks, "backend": backend.id}

        if greenscreen:
            config = (ROOT / "label_config" / "greenscreen_segment.xml").read_text()
            project = ensure_project(
                client, GREENSCREEN_TITLE, config,
                description="A synthetic video cut into 1 s segments that share their boundary frames.",
            )  # fmt: skip
            backend = connect_backend(client, project.id, self.backend_url)
            tasks = [t.id for t in client.tasks.list(project=project.id, fields="task_only")]
            if not tasks:
                video = moving_shapes(num_frames=25, height=size[0], width=size[1], seed=3)
                path = video.write(self.demo_dir / "shapes.mkv", fps=10)
                folders = split_video(path, self.files_root / "segments" / "demo_shapes", seconds=1.0)
                ensure_local_storage(client, project.id, self.files_root / "segments")
                made = segment_tasks(folders, self.files_root, take="demo_shapes", fps=10.0)
                tasks = import_tasks(client, project.id, made)
            out["greenscreen"] = {"project": project.id, "tasks": tasks, "backend": backend.id}
        self.demo = out
        self.write_info()
        return out


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _wait_group(pgid: int, timeout: float) -> None:
    """Wait until no process of group ``pgid`` is left; SIGKILL the group after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


# -- command line -------------------------------------------------------------------------------
class _Stop(Exception):
    pass


def _raise_stop(signum: int, _frame: Any) -> None:
    raise _Stop(signal.Signals(signum).name)


def cmd_up(args: argparse.Namespace) -> int:
    config = StackConfig(
        state_dir=args.state_dir,
        host=args.host,
        ls_port=args.ls_port or None,
        backend_port=args.backend_port or None,
        redis_port=args.redis_port or None,
        username=args.username,
        password=args.password,
        checkpoint=args.checkpoint,
        image_size=args.image_size,
        device=args.device,
        install_label_studio=not args.no_install,
    )
    stack = Stack(config)
    signal.signal(signal.SIGTERM, _raise_stop)
    signal.signal(signal.SIGINT, _raise_stop)
    status = 0
    try:
        stack.start()
        if not args.no_demo:
            stack.say("creating the demo projects")
            demo = stack.setup_demo(greenscreen=not args.no_greenscreen)
        else:
            demo = {}
        lines = [
            "",
            "=" * 72,
            f"Label Studio       {stack.ls_url}",
            f"login              {stack.username}",
            f"password           {stack.password}",
            f"API token          {stack.token}   (legacy token: 'Authorization: Token <key>')",
            f"ML backend         {stack.backend_url}   (worker on {redacted(stack.redis_url)})",
        ]
        for key, title in (("scenediff", SCENEDIFF_TITLE), ("greenscreen", GREENSCREEN_TITLE)):
            if key in demo:
                d = demo[key]
                lines.append(f"{title:19s}{stack.ls_url}/projects/{d['project']}/data  ({len(d['tasks'])} task(s))")
        seconds = stack.speed()
        if seconds and "scenediff" in demo:
            frames = sum(DEMO_PAIR_FRAMES)
            lines.append(
                f"demo pair job       about {frames * seconds / 60:.1f} min per annotated object "
                f"({frames} frames × {seconds:.2f} s, measured by the worker)"
            )
        lines += [
            f"exports            {stack.results_root}",
            f"logs               {stack.logs_dir}/*.log",
            "Ctrl-C stops everything.",
            "=" * 72,
        ]
        print("\n".join(lines), flush=True)
        while True:
            stack.check()
            time.sleep(1)
    except _Stop as stop:
        print(f"\n{stop}: stopping", flush=True)
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        status = 1
    except Exception as exc:  # e.g. Label Studio refused the demo import
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        status = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stack.stop()
        print("stopped", flush=True)
    return status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="stack.py", description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run `stack.py up --help` for the options.",
    )  # fmt: skip
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser(
        "up", help="start Redis, backend, worker, Label Studio and demo projects; Ctrl-C stops them",
        description="Start the local stack in the foreground; Ctrl-C or SIGTERM stops every child and exits 0.",
    )  # fmt: skip
    up.add_argument("--state-dir", type=Path, default=ROOT / ".stack", help="data, logs, credentials (default .stack/)")
    up.add_argument("--host", default="127.0.0.1", help="loopback address everything binds to (default 127.0.0.1)")
    up.add_argument("--ls-port", type=int, default=8080, help="Label Studio port (default 8080; 0 = any free)")
    up.add_argument("--backend-port", type=int, default=9090, help="ML backend port (default 9090; 0 = any free)")
    up.add_argument("--redis-port", type=int, default=6380, help="Redis port (default 6380; 0 = any free)")
    up.add_argument("--username", help="admin e-mail (default $LABEL_STUDIO_USERNAME or admin@example.com)")
    up.add_argument("--password", help="admin password (default $LABEL_STUDIO_PASSWORD or generated once)")
    up.add_argument(
        "--checkpoint", help="SAM 2 checkpoint file, or 'random' for random weights (default $SAM2_CHECKPOINT, "
        "else checkpoints/sam2.1_hiera_<size>.pt)",
    )  # fmt: skip
    up.add_argument("--image-size", type=int, help="SAM2_IMAGE_SIZE (default $SAM2_IMAGE_SIZE or 1024)")
    up.add_argument("--device", help="SAM2_DEVICE: auto, cuda, mps or cpu")
    up.add_argument("--no-demo", action="store_true", help="create no demo projects")
    up.add_argument("--no-greenscreen", action="store_true", help="only the SceneDiff demo project")
    up.add_argument("--no-install", action="store_true", help="fail instead of installing Label Studio")
    up.set_defaults(func=cmd_up)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

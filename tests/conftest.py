"""Shared fixtures: small random-weight SAM 2, synthetic frames, a file server posing as Label
Studio's file endpoints, and the app factory.

The SAM 2 model is the real code, built once per test session with random weights at 256 px.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ml_backend.settings import Settings

IMAGE_SIZE = 256


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "e2e: needs a real Label Studio (slow; `make test-e2e`)")
    config.addinivalue_line("markers", "browser: needs Chromium and Label Studio (slow; `make test-e2e`)")
    config.addinivalue_line("markers", "slow: long-running; `make test-slow`")


@pytest.fixture(scope="session")
def small_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    data = tmp_path_factory.mktemp("data")
    return Settings(checkpoint="random", image_size=IMAGE_SIZE, data_dir=data, device="cpu")


@pytest.fixture(scope="session")
def image_model(small_settings: Settings):
    from ml_backend.models import build_image_model

    return build_image_model(small_settings)


def make_frame(width: int = 160, height: int = 120, seed: int = 0) -> np.ndarray:
    """An RGB frame: a textured background with a bright square and a dark disc."""
    rng = np.random.default_rng(seed)
    frame = (rng.random((height, width, 3)) * 60 + 60).astype(np.uint8)
    frame[20:60, 30:80] = (230, 40, 40)
    yy, xx = np.mgrid[:height, :width]
    frame[(yy - 80) ** 2 + (xx - 120) ** 2 < 18**2] = (20, 20, 200)
    return frame


@pytest.fixture(scope="session")
def local_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A local-files root holding ``pair/f0.png`` … ``pair/f3.png`` (different content each)."""
    root = tmp_path_factory.mktemp("local_root")
    (root / "pair").mkdir()
    for i in range(4):
        Image.fromarray(make_frame(seed=i)).save(root / "pair" / f"f{i}.png")
    (root / "pair" / "not_image.png").write_bytes(b"this is not an image at all")
    huge = Image.new("RGB", (5000, 5000), (10, 10, 10))
    huge.save(root / "pair" / "huge.png")
    return root


class FileServer:
    """Serves a folder the way Label Studio serves task files, checking a token."""

    def __init__(self, root: Path, token: str = "secret-token") -> None:
        from werkzeug.serving import make_server
        from werkzeug.wrappers import Request, Response

        self.root = root
        self.token = token
        self.requests: list[str] = []

        @Request.application
        def app(request: Request) -> Response:
            self.requests.append(request.full_path)
            if request.headers.get("Authorization") != f"Token {self.token}":
                return Response("unauthorized", status=401)
            if request.path.startswith("/data/local-files"):
                rel = request.args.get("d", "")
            elif request.path.startswith("/data/upload/"):
                rel = request.path[len("/data/upload/") :]
            else:
                return Response("not found", status=404)
            path = (self.root / rel).resolve()
            if not path.is_relative_to(self.root.resolve()) or not path.is_file():
                return Response("not found", status=404)
            return Response(path.read_bytes(), mimetype="application/octet-stream")

        self._server = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()


@pytest.fixture(scope="session")
def file_server(local_root: Path) -> Iterator[FileServer]:
    server = FileServer(local_root)
    yield server
    server.close()


class RedisServer:
    """A real ``redis-server`` on a free loopback port, with append-only persistence in a tmp dir."""

    def __init__(self, directory: Path) -> None:
        import socket

        self.dir = directory
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc = None
        self.start()

    def start(self) -> None:
        import shutil
        import subprocess
        import time

        import redis

        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed (make install installs it: apt-get install redis-server)")
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
             "--appendonly", "yes", "--appendfsync", "always", "--save", "", "--protected-mode", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        client = redis.Redis.from_url(self.url)
        for _ in range(100):
            try:
                client.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture
def redis_conn(redis_server: RedisServer):
    """A connection to an emptied database of the test Redis."""
    import redis

    conn = redis.Redis.from_url(redis_server.url)
    conn.flushdb()
    yield conn
    conn.close()

"""README's engineer commands, pasted as written, against what ``make run`` leaves behind.

The two "As an engineer" blocks of README.md (SceneDiff pairs, then green-screen takes) are
extracted and run with bash in a folder laid out like the repository after ``make run``:
``.venv``, ``scripts`` and ``label_config`` (links to this checkout), ``.stack/files/`` as Label
Studio's local-files root, ``.stack/stack.json`` with the Redis URL (and password) of the stack,
and the demo projects 1 and 2. Label Studio is the fake (tests/fake_labelstudio.py) on a free
port, Redis a real redis-server **with a password**, the ML backend the real one
(``python -m ml_backend serve --no-queue``) serving exports. Only the addresses
(``http://127.0.0.1:8080``, ``:9090``) and the token placeholder are replaced in the commands.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .fake_labelstudio import FakeLabelStudio

ROOT = Path(__file__).resolve().parents[1]


def engineer_blocks() -> dict[str, str]:
    """``{section title: bash block}`` of every "#### As an engineer" in README.md."""
    readme = (ROOT / "README.md").read_text()
    out = {}
    for section in re.split(r"\n### ", readme):
        title = section.splitlines()[0]
        found = re.search(r"#### As an engineer\s*\n+```bash\n(.*?)\n```", section, re.S)
        if found:
            out[title] = found.group(1)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def redis_with_password(tmp_path):
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed")
    port, password = free_port(), secrets.token_hex(12)
    conf = tmp_path / "redis.conf"
    conf.write_text(f"requirepass {password}\n")
    conf.chmod(0o600)
    proc = subprocess.Popen([binary, str(conf), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--dir", str(tmp_path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    import redis

    url = f"redis://:{password}@127.0.0.1:{port}/0"
    for _ in range(100):
        try:
            redis.Redis.from_url(url).ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    yield url
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
def backend(tmp_path):
    import httpx

    port = free_port()
    env = {**os.environ, "SAM2_CHECKPOINT": "random", "SAM2_IMAGE_SIZE": "256", "SAM2_DEVICE": "cpu",
           "DATA_DIR": str(tmp_path / "backend-data")}  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "ml_backend", "serve", "--host", "127.0.0.1", "--port", str(port), "--no-queue"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                httpx.get(f"{url}/health", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        yield url, tmp_path / "backend-data" / "results"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def test_readme_engineer_commands_work_as_written(tmp_path, redis_with_password, backend):
    from ml_backend.video.synthetic import moving_shapes

    blocks = engineer_blocks()
    assert list(blocks) == ["1. SceneDiff pairs", "2. Green-screen segments"]
    work = tmp_path / "repo"
    files = work / ".stack" / "files"
    files.mkdir(parents=True)
    for name in (".venv", "scripts", "label_config"):
        (work / name).symlink_to(ROOT / name)
    (work / ".stack" / "stack.json").write_text(json.dumps({"redis_url": redis_with_password}))
    (work / ".stack" / "stack.json").chmod(0o600)
    for seed, name in enumerate(("before", "after", "d1", "d2", "take1", "take2")):
        moving_shapes(num_frames=8, height=32, width=48, seed=seed).write(work / f"{name}.mp4")
    for k in (1, 2):  # folders of frames as the original tool made them
        moving_shapes(num_frames=4, height=32, width=48, seed=10 + k).write(files / "organized" / f"video_part_{k:03d}")

    ls = FakeLabelStudio(files).start()
    ls.add_project(1, (ROOT / "label_config" / "scenediff_pair.xml").read_text())  # the demo projects
    ls.add_project(2, (ROOT / "label_config" / "greenscreen_segment.xml").read_text())
    backend_url, results = backend
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LABEL_STUDIO_", "REDIS_", "ML_BACKEND_"))}

        def paste(block: str) -> subprocess.CompletedProcess:
            text = (block.replace("http://127.0.0.1:8080", ls.url).replace("http://127.0.0.1:9090", backend_url)
                    .replace("<token printed by stack.py>", ls.token))  # fmt: skip
            return subprocess.run(["bash", "-e", "-o", "pipefail", "-c", text], cwd=work, env=env,
                                  capture_output=True, text=True, timeout=600)  # fmt: skip

        # what the worker will have exported by the time the engineer downloads
        for rel in ("project_3/task_3/segments.pkl", "project_4/greenscreen/take1/frame_000000_masked.png",
                    "project_4/greenscreen/take2/frame_000000_masked.png"):  # fmt: skip
            (results / rel).parent.mkdir(parents=True, exist_ok=True)
            (results / rel).write_bytes(b"exported")

        done = paste(blocks["1. SceneDiff pairs"])
        assert done.returncode == 0, done.stdout + done.stderr
        assert ls.projects[3]["title"] == "Scene changes"
        assert sorted(t["data"]["pair"] for t in ls.tasks.values() if t["project"] == 3) == ["desk", "kitchen"]
        assert "queued 0 job(s)" in done.stdout  # Redis of the stack found, password and all
        assert (work / "exports" / "task_3" / "segments.pkl").read_bytes() == b"exported"

        done = paste(blocks["2. Green-screen segments"])
        assert done.returncode == 0, done.stdout + done.stderr
        assert ls.projects[4]["title"] == "Green screen"
        takes = sorted(t["data"]["take"] for t in ls.tasks.values() if t["project"] == 4)
        assert takes == ["organized", "organized", "take1", "take2"]
        for take in ("take1", "take2"):  # the folders README names, under the storage create_project made
            assert (files / "segments" / take / "video_part_000").is_dir()
        storages = sorted(s["path"] for s in ls.storages.values() if s["project"] == 4)
        assert storages == [str(files / "organized"), str(files / "segments")]  # the imports used create_project's
        assert (work / "exports" / "greenscreen" / "take1" / "frame_000000_masked.png").is_file()
        assert not (work / "exports" / "greenscreen" / "take2").exists()

        # pasted again: nothing new
        count = len(ls.tasks)
        done = paste(blocks["2. Green-screen segments"])
        assert done.returncode == 0, done.stdout + done.stderr
        assert len(ls.tasks) == count and done.stdout.count("nothing imported") == 3
    finally:
        ls.stop()

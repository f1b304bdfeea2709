"""README's engineer commands and the import scripts against the real stack: Label Studio 1.23.2,
Redis with the stack's password, our backend and worker (``scripts/stack.py``).

What the fast suite takes from the fake Label Studio is checked here for real: task lists carry
the task data (so an import run twice finds its take), a storage covering the take folders is
reused, Label Studio's validation messages reach the user as it wrote them, and a wrong-config
import leaves no storage.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ..test_readme_commands import engineer_blocks

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


def test_readme_engineer_commands_and_imports_against_the_real_stack(stack_alive, tmp_path):
    from ml_backend.video.synthetic import moving_shapes

    stack = stack_alive
    client = stack.client()
    ids = sorted(p.id for p in client.projects.list())
    if ids != [1, 2]:
        pytest.skip(f"README's project ids 3 and 4 need a stack with only the demo projects (it has {ids})")
    work = tmp_path / "repo"
    work.mkdir()
    for name in (".venv", "scripts", "label_config"):
        (work / name).symlink_to(ROOT / name)
    (work / ".stack").symlink_to(stack.state_dir)  # files/, stack.json, redis/password, as `make run` leaves
    for seed, name in enumerate(("before", "after", "d1", "d2", "take1", "take2")):
        moving_shapes(num_frames=8, height=32, width=48, seed=seed).write(work / f"{name}.mp4")
    organized = stack.files_root / "organized"
    for k in (1, 2):
        moving_shapes(num_frames=4, height=32, width=48, seed=10 + k).write(organized / f"video_part_{k:03d}")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LABEL_STUDIO_", "REDIS_", "ML_BACKEND_"))}

    def paste(block: str) -> subprocess.CompletedProcess:
        text = (block.replace("http://127.0.0.1:8080", stack.ls_url).replace("http://127.0.0.1:9090", stack.backend_url)
                .replace("<token printed by stack.py>", stack.token))  # fmt: skip
        return subprocess.run(["bash", "-e", "-o", "pipefail", "-c", text], cwd=work, env=env,
                              capture_output=True, text=True, timeout=900)  # fmt: skip

    # what the worker will have exported by the time the engineer downloads (nothing is annotated)
    for rel in ("project_3/task_5/segments.pkl", "project_4/greenscreen/take1/frame_000000_masked.png"):
        (stack.results_root / rel).parent.mkdir(parents=True, exist_ok=True)
        (stack.results_root / rel).write_bytes(b"exported")
    blocks = engineer_blocks()
    for block in blocks.values():
        done = paste(block)
        out = done.stdout + done.stderr
        assert done.returncode == 0, out
        assert "queued 0 job(s)" in out, out  # the stack's Redis found, password and all
    assert (work / "exports" / "greenscreen" / "take1" / "frame_000000_masked.png").read_bytes() == b"exported"
    tasks = {p: [t for t in client.tasks.list(project=p, fields="task_only")] for p in (3, 4)}
    assert sorted(t.data["pair"] for t in tasks[3]) == ["desk", "kitchen"]
    assert sorted(t.data["take"] for t in tasks[4]) == ["organized", "organized", "take1", "take2"]
    storages = sorted(s.path for s in client.import_storage.local.list(project=4))
    assert storages == [str(stack.files_root / "organized"), str(stack.files_root / "segments")]

    # pasted again: the imports find what they imported (task lists carry the task data)
    for block in blocks.values():
        paste(block)
    assert {p: len(list(client.tasks.list(project=p, fields="task_only"))) for p in (3, 4)} == {3: 2, 4: 4}

    def script(name: str, *argv: str) -> subprocess.CompletedProcess:
        run_env = {**env, "LABEL_STUDIO_URL": stack.ls_url, "LABEL_STUDIO_API_KEY": stack.token}
        return subprocess.run([sys.executable, str(ROOT / "scripts" / name), *argv], env=run_env,
                              capture_output=True, text=True, timeout=300)  # fmt: skip

    # the wrong config: refused before any extraction, no storage made
    done = script("import_segments.py", "--project", "3", "--local-root", str(stack.files_root),
                  "--video", str(work / "take1.mp4"), "--name", "wrong")  # fmt: skip
    assert done.returncode == 1 and done.stderr.strip() == (
        "error: project 3 is a SceneDiff project (two videos per task); use scripts/import_pairs.py"
    ), done.stderr
    assert not (stack.files_root / "segments" / "wrong").exists()
    # a --local-root Label Studio does not serve: its own reason, and nothing left behind
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    before = sorted(s.id for s in client.import_storage.local.list(project=2))
    done = script("import_segments.py", "--project", "2", "--local-root", str(elsewhere),
                  "--video", str(work / "take1.mp4"), "--name", "lost")  # fmt: skip
    assert done.returncode == 1 and "LOCAL_FILES_DOCUMENT_ROOT" in done.stderr, done.stderr
    assert "Validation error" not in done.stderr
    assert not any(elsewhere.iterdir())
    assert sorted(s.id for s in client.import_storage.local.list(project=2)) == before

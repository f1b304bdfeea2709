"""The real stack for end-to-end and browser tests, started once per session.

Label Studio 1.23.2 (own venv ``.ls-venv``), ``redis-server``, our backend and one worker run as
child processes through :class:`scripts/stack.py <Stack>`, on free loopback ports, with SAM 2's
real code at 256 px and random weights. A fresh Label Studio database takes ~75 s to come up.
Logs are copied to ``artifacts/e2e/logs/`` at the end of the session.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "artifacts"
DOCS_IMG = ROOT / "docs" / "img"


def _load_stack_module():
    """``scripts/stack.py`` as a module (scripts/ is not a package)."""
    name = "sam2_stack"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / "stack.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


stack_module = _load_stack_module()


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """Redis + backend + worker + Label Studio, with the two demo projects created.

    ``E2E_STACK_DIR=<state dir>`` attaches to a stack that ``scripts/stack.py up --state-dir
    <dir> --checkpoint random`` already runs (no cold start; for developing the tests).
    """
    attach = os.environ.get("E2E_STACK_DIR")
    if attach:
        stack = stack_module.Stack.attach(Path(attach))
        if not stack.demo.get("greenscreen"):
            pytest.fail(f"the stack in {attach} has no demo projects (start it without --no-demo)")
        yield stack
        return
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed (apt-get install redis-server; make install does it)")
    state = tmp_path_factory.mktemp("stack")
    config = stack_module.StackConfig(
        state_dir=state,
        ls_port=None,
        backend_port=None,
        redis_port=None,
        username="e2e@example.com",
        password="e2e-password-1234",
        checkpoint="random",
        image_size=256,
        device="cpu",
        extra_env={
            "SAM2_MODEL_SIZE": "tiny",
            "RESULTS_DIR": str(state / "results"),
            "WEBHOOK_MODE": "auto",
            "UPLOAD_SEGMENT_SECONDS": "1",  # a short uploaded video still makes several segments
            # random weights track nothing in particular and score every mask ~0.53: no low-score
            # flags (they would start every range on frame 0, already a page), but flag every
            # change of area or position, so the review tests always have frames to append (the
            # rule itself is tested exactly on synthetic videos in tests/test_quality.py)
            "QUALITY_MIN_SCORE": "0",
            "QUALITY_AREA_RATIO": "1.0001",
            "QUALITY_JUMP": "0.0001",
        },
    )
    stack = stack_module.Stack(config, say=lambda msg: print(f"[stack] {msg}", flush=True))
    t0 = time.monotonic()
    try:
        stack.start()
        stack.setup_demo(greenscreen=True)
    except stack_module.StackError as exc:
        stack.stop()
        _keep_logs(state)
        pytest.fail(f"the stack did not come up: {exc}")
    stack.startup_seconds = time.monotonic() - t0
    print(f"[stack] up in {stack.startup_seconds:.0f} s: {stack.ls_url} backend {stack.backend_url}", flush=True)
    try:
        yield stack
    finally:
        stack.stop()
        _keep_logs(state)


def _keep_logs(state: Path) -> None:
    target = ARTIFACTS / "e2e" / "logs"
    target.mkdir(parents=True, exist_ok=True)
    for log in (state / "logs").glob("*.log"):
        shutil.copyfile(log, target / log.name)


@pytest.fixture
def stack_alive(stack) -> object:
    """The session stack, checked: a child that died fails the test with its log."""
    try:
        stack.check()
    except stack_module.StackError as exc:
        pytest.fail(str(exc))
    return stack


def wait_for(predicate, timeout: float, interval: float = 1.0, what: str = "condition", on_tick=None):
    """Poll ``predicate()`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if on_tick is not None:
            on_tick()
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def save_doc_image(src: Path, name: str, max_bytes: int = 300_000) -> None:
    """With ``UPDATE_DOCS_IMG=1``, copy a screenshot to ``docs/img/<name>`` as a palette PNG < 300 KB."""
    if os.environ.get("UPDATE_DOCS_IMG") != "1":
        return
    from PIL import Image

    DOCS_IMG.mkdir(parents=True, exist_ok=True)
    image = Image.open(src).convert("RGB")
    target = DOCS_IMG / name
    while True:
        image.quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(target, optimize=True)
        if target.stat().st_size < max_bytes or image.width < 600:
            return
        image = image.resize((int(image.width * 0.85), int(image.height * 0.85)), Image.Resampling.LANCZOS)

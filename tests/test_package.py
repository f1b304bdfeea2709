"""Package surface: settings, ``__all__``, the checkpoint rule, nothing heavy at import."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import ml_backend
from ml_backend.exceptions import CheckpointMissing, ConfigurationError
from ml_backend.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


def test_all_names_exist_and_are_sorted():
    for name in ml_backend.__all__:
        assert hasattr(ml_backend, name), name
    assert ml_backend.__all__ == sorted(ml_backend.__all__)


def test_import_is_light():
    code = "import sys, ml_backend, ml_backend.server.app, ml_backend.server.interactive; print('torch' in sys.modules, 'sam2' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_settings_from_env():
    s = Settings.from_env(
        {
            "SAM2_MODEL_SIZE": "large",
            "SAM2_IMAGE_SIZE": "512",
            "SAM2_BF16": "off",
            "EMBEDDING_CACHE_BYTES": "1_000",
            "BACKGROUND_COLOR": "0, 0, 255",
            "DATA_DIR": "/tmp/x",
            "LABEL_STUDIO_URL": "http://ls:8080",
        }
    )
    assert (s.model_size, s.image_size, s.bf16, s.embedding_cache_bytes) == ("large", 512, False, 1000)
    assert s.background_color == (0, 0, 255)
    assert s.checkpoint_path == Path("checkpoints/sam2.1_hiera_large.pt")
    assert s.results_root == Path("/tmp/x/results")


@pytest.mark.parametrize(
    "env",
    [
        {"SAM2_MODEL_SIZE": "huge"},
        {"SAM2_IMAGE_SIZE": "100"},
        {"SAM2_DEVICE": "tpu"},
        {"SAM2_BF16": "maybe"},
        {"EMBEDDING_CACHE_ITEMS": "many"},
        {"BACKGROUND_COLOR": "1,2"},
        {"BASIC_AUTH_USER": "only-user"},
        {"WEBHOOK_MODE": "sometimes"},
    ],
)
def test_bad_settings_name_the_variable(env):
    with pytest.raises(ConfigurationError, match=next(iter(env))):
        Settings.from_env(env)


def test_readme_documents_every_setting():
    readme = (ROOT / "README.md").read_text()
    for env, _, _ in Settings.table():
        assert f"`{env}`" in readme, f"{env} missing from README"


def test_no_checkpoint_refuses_to_start(tmp_path):
    from ml_backend.server.app import create_app

    with pytest.raises(CheckpointMissing, match="download_checkpoints.py"):
        create_app(Settings(checkpoint_dir=tmp_path))
    env = {"PATH": "/usr/bin:/bin", "SAM2_CHECKPOINT_DIR": str(tmp_path), "HOME": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-m", "ml_backend", "serve", "--no-queue"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "SAM2_CHECKPOINT=random" in proc.stderr and "download_checkpoints.py" in proc.stderr


def test_random_weights_are_named_in_model_version():
    from ml_backend.models import model_version

    assert "random" in model_version(Settings(checkpoint="random"))
    assert "random" not in model_version(Settings(checkpoint="/x.pt"))


def test_basic_auth(small_settings):
    import base64

    from ml_backend.server.app import create_app
    from ml_backend.server.interactive import InteractivePredictor

    settings = small_settings.replace(basic_auth_user="u", basic_auth_pass="p")
    predictor = InteractivePredictor(settings, fetcher=None, segmenter_factory=lambda: None)
    client = create_app(settings, predictor=predictor).test_client()
    assert client.get("/health").status_code == 200
    assert client.post("/setup", json={}).status_code == 401
    good = {"Authorization": "Basic " + base64.b64encode(b"u:p").decode()}
    bad = {"Authorization": "Basic " + base64.b64encode(b"u:x").decode()}
    assert client.post("/setup", json={}, headers=bad).status_code == 401
    assert client.post("/setup", json={}, headers=good).status_code == 200


def test_serve_runs_gunicorn_and_answers_health(tmp_path):
    import os
    import signal
    import socket
    import time

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        **os.environ,
        "SAM2_CHECKPOINT": "random",
        "SAM2_IMAGE_SIZE": "256",
        "SAM2_DEVICE": "cpu",
        "DATA_DIR": str(tmp_path),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "ml_backend", "serve", "--host", "127.0.0.1", "--port", str(port), "--no-queue"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        else:
            raise AssertionError("the server did not answer")
        assert response.json()["status"] == "UP"
        versions = httpx.get(f"http://127.0.0.1:{port}/versions", timeout=1).json()["versions"]
        assert versions == ["sam2.1-tiny-256-random-weights"]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=30) == 0

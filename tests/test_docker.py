"""The container files: the compose file validates with docker-compose 1.29 (no Docker engine
needed) and says what we rely on; the image runs as a non-root user."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker" / "docker-compose.yml"
DOCKERFILE = ROOT / "docker" / "Dockerfile"
SECRETS = {
    "LABEL_STUDIO_PASSWORD": "test-password",
    "LABEL_STUDIO_USER_TOKEN": "0123456789abcdef",
    "REDIS_PASSWORD": "redis-secret-42",
}


def compose(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose is not installed (apt-get install -y docker-compose gives 1.29.2)")
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("LABEL_STUDIO_", "SAM2_", "LS_"))}
    return subprocess.run(
        [binary, "-f", str(COMPOSE), *args], env={**clean, **(env or {})}, capture_output=True, text=True, timeout=60
    )


def test_compose_file_validates() -> None:
    done = compose("config", "-q", env=SECRETS)
    assert done.returncode == 0, done.stderr


def test_compose_requires_the_admin_secrets() -> None:
    assert compose("config", "-q").returncode != 0
    for secret in SECRETS:  # each one is required on its own, and the message names it
        done = compose("config", "-q", env={k: v for k, v in SECRETS.items() if k != secret})
        assert done.returncode != 0 and secret in done.stderr + done.stdout, secret


@pytest.fixture(scope="module")
def config() -> dict:
    """The compose file as docker-compose resolves it (anchors, defaults, secrets filled in)."""
    yaml = pytest.importorskip("yaml")
    done = compose("config", env=SECRETS)
    assert done.returncode == 0, done.stderr
    return yaml.safe_load(done.stdout)


def test_services_healthchecks_and_volumes(config: dict) -> None:
    services = config["services"]
    assert set(services) == {"label-studio", "redis", "ml-backend", "worker"}
    for name, service in services.items():
        assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"

    ls = services["label-studio"]
    assert ls["image"] == "heartexlabs/label-studio:1.23.2"
    env = ls["environment"]
    assert env["LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED"] == "true"
    assert env["LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"] == "/label-studio/files"
    assert env["ML_BLOCK_LOCAL_IP"] == "false" and env["SSRF_PROTECTION_ENABLED"] == "false"
    assert env["LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN"] == "true"
    assert env["LABEL_STUDIO_USER_TOKEN"] == SECRETS["LABEL_STUDIO_USER_TOKEN"]

    redis = services["redis"]
    assert "--appendonly" in redis["command"] and redis["command"][redis["command"].index("--appendonly") + 1] == "yes"
    assert redis["command"][redis["command"].index("--requirepass") + 1] == SECRETS["REDIS_PASSWORD"]
    assert any(v.endswith(":/data") or ":/data:" in v for v in _volumes(redis))

    for name in ("ml-backend", "worker"):
        service = services[name]
        env = service["environment"]
        assert env["REDIS_URL"] == f"redis://:{SECRETS['REDIS_PASSWORD']}@redis:6379/0"
        assert env["LABEL_STUDIO_URL"] == "http://label-studio:8080"
        assert env["LABEL_STUDIO_API_KEY"] == SECRETS["LABEL_STUDIO_USER_TOKEN"]
        targets = {v.split(":")[1] for v in _volumes(service)}
        assert {"/checkpoints", "/data", "/results", "/label-studio/files"} <= targets, (name, targets)
    assert services["ml-backend"]["command"] == ["serve"] and services["worker"]["command"] == ["worker"]
    # backend and worker share checkpoints, data and results
    shared = [
        set(v.split(":")[0] for v in _volumes(services[n]) if not v.startswith("/")) for n in ("ml-backend", "worker")
    ]
    assert {"checkpoints", "sam2-data", "sam2-results"} <= shared[0] & shared[1]


def _volumes(service: dict) -> list[str]:
    out = []
    for v in service.get("volumes", []):
        if isinstance(v, dict):  # long syntax
            out.append(f"{v.get('source', '')}:{v['target']}")
        else:
            out.append(v)
    return out


def test_worker_reserves_a_gpu(config: dict) -> None:
    for name in ("worker", "ml-backend"):
        devices = config["services"][name]["deploy"]["resources"]["reservations"]["devices"]
        assert any("gpu" in d.get("capabilities", []) and d.get("driver") == "nvidia" for d in devices), name


def test_dockerfile_runs_as_non_root_with_checkpoint_volume() -> None:
    lines = [line.strip() for line in DOCKERFILE.read_text().splitlines() if line.strip() and not line.startswith("#")]
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0", "0:0"), users
    assert re.search(r"^FROM \$\{BASE_IMAGE\}", "\n".join(lines), re.M)
    assert re.search(r"^ARG BASE_IMAGE=nvidia/cuda:", "\n".join(lines), re.M)
    volume = next(line for line in lines if line.startswith("VOLUME"))
    assert "/checkpoints" in volume
    assert any("--no-build-isolation sam2==1.1.0" in line for line in lines)
    assert any(line.startswith("ENTRYPOINT") for line in lines)


def test_entrypoint_chooses_serve_or_worker() -> None:
    script = (ROOT / "docker" / "entrypoint.sh").read_text()
    assert "ml_backend serve" in script and "ml_backend worker" in script
    assert subprocess.run(["sh", "-n", str(ROOT / "docker" / "entrypoint.sh")]).returncode == 0
    assert os.access(ROOT / "docker" / "entrypoint.sh", os.X_OK)


def test_dockerignore_keeps_the_context_small() -> None:
    ignored = (ROOT / ".dockerignore").read_text().split()
    for entry in (".venv/", ".ls-venv/", "checkpoints/", ".git", "data/"):
        assert entry in ignored

"""The scripts' errors: each bad input ends as one ``error:`` line and a non-zero exit, with no
traceback, no secret, and nothing left behind.

The scripts run as subprocesses against a small werkzeug server on 127.0.0.1 that poses as the
parts of Label Studio's API they use (and, for ``download_exports.py``, as the ML backend). No
model is built.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "tok-S3CRET-0123456789abcdef"
COOKIE = "sessionid-S3CRET-cookie-5678"
PASSWORD = "pw-S3CRET-basic"
SECRETS = (TOKEN, COOKIE, PASSWORD)


class FakeLabelStudio:
    """Label Studio's API as the scripts use it: projects, ML backends, webhooks, local storage,
    tasks and imports. ``fail[(METHOD, path)] = status`` makes a request fail; every answer sets
    a session cookie, so that a leaked response header would show in the output."""

    def __init__(self) -> None:
        from werkzeug.serving import make_server
        from werkzeug.wrappers import Request, Response

        config = (ROOT / "label_config" / "scenediff_pair.xml").read_text()  # the import scripts check it
        self.projects: dict[int, dict] = {1: {"id": 1, "title": "Existing", "label_config": config}}
        self.fail: dict[tuple[str, str], int] = {}
        self.calls: list[tuple[str, str]] = []
        self.tasks: list[dict] = []

        @Request.application
        def app(request: Request) -> Response:
            self.calls.append((request.method, request.path))
            status, body = self.answer(request)
            response = Response(json.dumps(body), status=status, mimetype="application/json")
            response.set_cookie("sessionid", COOKIE)
            return response

        self._server = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def answer(self, request: Any) -> tuple[int, Any]:
        method, path = request.method, request.path.rstrip("/")
        if request.headers.get("Authorization") != f"Token {TOKEN}":
            return 401, {"detail": "Invalid token."}
        if (method, path) in self.fail:
            status = self.fail[(method, path)]
            return status, {"detail": "the fake server was told to fail"} if status < 500 else "<h1>Server Error</h1>"
        page = int(request.args.get("page", 1))
        if path == "/api/projects" and method == "GET":
            return 200, {"count": len(self.projects), "results": list(self.projects.values()) if page == 1 else []}
        if path == "/api/projects" and method == "POST":
            project = {"id": max(self.projects) + 1, **request.get_json()}
            self.projects[project["id"]] = project
            return 201, project
        if m := re.fullmatch(r"/api/projects/(\d+)", path):
            project = self.projects.get(int(m[1]))
            if project is None:
                return 404, {"detail": "Not found."}
            if method == "DELETE":
                del self.projects[project["id"]]
                return 204, None
            return 200, project
        if m := re.fullmatch(r"/api/projects/(\d+)/import", path):
            new = [{"id": len(self.tasks) + i + 1, **t} for i, t in enumerate(request.get_json())]
            self.tasks += new
            return 201, {"task_count": len(new)}
        if path == "/api/tasks":
            return 200, {"tasks": [{"id": t["id"]} for t in self.tasks] if page == 1 else [], "total": len(self.tasks)}
        if re.fullmatch(r"/api/storages/localfiles/\d+", path) and method == "DELETE":
            return 204, None
        if path in ("/api/ml", "/api/webhooks", "/api/storages/localfiles"):
            return (200, []) if method == "GET" else (201, {"id": 7, **request.get_json()})
        return 404, {"detail": "Not found."}

    def close(self) -> None:
        self._server.shutdown()


@pytest.fixture
def ls() -> Iterator[FakeLabelStudio]:
    server = FakeLabelStudio()
    yield server
    server.close()


def free_url() -> str:
    """An http:// URL on which nothing listens."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def script(name: str, *argv: str, url: str = "", token: str = TOKEN, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("LABEL_STUDIO_", "REDIS_", "ML_BACKEND_"))}
    env = {**clean, "LABEL_STUDIO_URL": url, "LABEL_STUDIO_API_KEY": token, **env}
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / name), *argv], env=env, capture_output=True, text=True, timeout=60
    )


def assert_error(done: subprocess.CompletedProcess, *words: str) -> str:
    """One ``error:`` line holding ``words``, a non-zero exit, no traceback and no secret; the line."""
    out = done.stdout + done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert done.returncode != 0, out
    assert len(lines) == 1, out
    assert "Traceback" not in out, out
    for value in SECRETS:
        assert value not in out, f"{value} leaked:\n{out}"
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from ml_backend.video.synthetic import moving_shapes

    d = tmp_path_factory.mktemp("videos")
    (d / "broken.mp4").write_bytes(b"this is not a video" * 100)
    return {
        "good": moving_shapes(num_frames=6, height=32, width=48).write(d / "good.mkv"),
        "other": moving_shapes(num_frames=6, height=32, width=48, seed=1).write(d / "other.mkv"),
        "broken": d / "broken.mp4",
    }


def tree(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*")}


# -- Label Studio access (every script goes through _common.client_from) ---------------------------
def test_wrong_token_is_one_sentence_naming_the_variable(ls: FakeLabelStudio) -> None:
    done = script("create_project.py", "--title", "T", url=ls.url, token="wrong-token-value")
    assert_error(done, "refused the token", "HTTP 401", "LABEL_STUDIO_API_KEY")
    assert ls.projects.keys() == {1}


def test_missing_token(ls: FakeLabelStudio) -> None:
    assert_error(script("process_all.py", "--project", "1", url=ls.url, token=""), "LABEL_STUDIO_API_KEY")
    assert ls.calls == []


def test_expired_personal_access_token(ls: FakeLabelStudio) -> None:
    import jwt

    expired = jwt.encode({"exp": 1_000_000_000, "token_type": "refresh"}, "k" * 32, algorithm="HS256")
    done = script("process_all.py", "--project", "1", url=ls.url, token=expired)
    assert expired not in assert_error(done, "API key has expired", "LABEL_STUDIO_API_KEY")


def test_token_without_permission(ls: FakeLabelStudio) -> None:
    ls.fail[("POST", "/api/projects")] = 403
    assert_error(script("create_project.py", "--title", "T", url=ls.url), "refused the token", "HTTP 403")
    assert ls.projects.keys() == {1}


def test_nothing_listens_at_the_url() -> None:
    url = free_url()
    assert_error(script("create_project.py", "--title", "T", url=url), f"cannot reach Label Studio at {url}")


def test_url_without_http(ls: FakeLabelStudio) -> None:
    done = script("create_project.py", "--title", "T", url=ls.url.replace("http://", ""))
    assert_error(done, "not a usable Label Studio URL")


def test_a_server_that_is_not_label_studio(tmp_path: Path) -> None:
    from werkzeug.serving import make_server
    from werkzeug.wrappers import Response

    server = make_server("127.0.0.1", 0, Response("<html>hello</html>", mimetype="text/html"))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        assert_error(script("create_project.py", "--title", "T", url=url), "does not answer like Label Studio")
    finally:
        server.shutdown()


# -- create_project.py ------------------------------------------------------------------------------
def test_create_project_deletes_the_new_project_when_the_backend_fails(ls: FakeLabelStudio, tmp_path: Path) -> None:
    ls.fail[("POST", "/api/ml")] = 500
    root = tmp_path / "files" / "pairs"
    done = script(
        "create_project.py", "--title", "New", "--backend", "http://127.0.0.1:9", "--local-root", str(root),
        "--basic-auth", f"user:{PASSWORD}", url=ls.url,
    )  # fmt: skip
    line = assert_error(done, "connecting the ML backend", "HTTP 500", "try again", "project 2 was deleted again")
    assert "Server Error" not in line
    assert ls.projects.keys() == {1} and ("DELETE", "/api/projects/2/") in ls.calls
    assert tree(tmp_path) == set()  # the folders this run made are gone


def test_create_project_keeps_a_project_that_existed(ls: FakeLabelStudio) -> None:
    ls.fail[("POST", "/api/webhooks")] = 400
    config = (ROOT / "label_config" / "scenediff_pair.xml").read_text()
    ls.projects[1].update(title="Kept", label_config=config)
    done = script("create_project.py", "--title", "Kept", url=ls.url)
    line = assert_error(done, "HTTP 400", "the fake server was told to fail")
    assert "deleted" not in line and 1 in ls.projects


def test_create_project_config_missing_or_not_xml(ls: FakeLabelStudio, tmp_path: Path) -> None:
    assert_error(
        script("create_project.py", "--title", "T", "--config", str(tmp_path / "no.xml"), url=ls.url), "no config"
    )
    bad = tmp_path / "bad.xml"
    bad.write_text("<View><Image name='x'></View>")
    assert_error(script("create_project.py", "--title", "T", "--config", str(bad), url=ls.url), "bad XML")
    assert ls.calls == []  # checked before talking to Label Studio


def test_basic_auth_without_colon_does_not_echo_it(ls: FakeLabelStudio) -> None:
    done = script("create_project.py", "--title", "T", "--basic-auth", PASSWORD, url=ls.url)
    assert done.returncode == 2
    assert_error(done, "USER:PASS")


# -- import_pairs.py --------------------------------------------------------------------------------
def test_import_pairs_unknown_project_fails_before_extracting(ls, videos, tmp_path: Path) -> None:
    done = script(
        "import_pairs.py", "--project", "99", "--local-root", str(tmp_path),
        "--pair", "p", str(videos["good"]), str(videos["other"]), "--stride", "2", url=ls.url,
    )  # fmt: skip
    assert_error(done, "project 99 does not exist")
    assert tree(tmp_path) == set()


def test_import_pairs_missing_or_broken_video(ls, videos, tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.mp4")
    done = script("import_pairs.py", "--project", "1", "--local-root", str(tmp_path),
                  "--pair", "p", str(videos["good"]), missing, url=ls.url)  # fmt: skip
    assert_error(done, f"video {missing} does not exist")
    done = script("import_pairs.py", "--project", "1", "--local-root", str(tmp_path),
                  "--pair", "p", str(videos["broken"]), str(videos["good"]), url=ls.url)  # fmt: skip
    assert_error(done, "broken.mp4", "cannot be opened")
    assert tree(tmp_path) == set() and ls.calls == []


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--stride", "0"], ["--stride", "above 0"]),
        (["--stride", "ten"], ["--stride", "not a number"]),
        (["--project", "-3"], ["--project", "above 0"]),
    ],
)
def test_import_pairs_numbers(ls, videos, tmp_path: Path, argv: list[str], words: list[str]) -> None:
    base = ["--project", "1", "--local-root", str(tmp_path), "--pair", "p", str(videos["good"]), str(videos["other"])]
    assert_error(script("import_pairs.py", *base, *argv, url=ls.url), *words)
    assert tree(tmp_path) == set()


def test_import_pairs_local_root_missing(ls, videos, tmp_path: Path) -> None:
    done = script("import_pairs.py", "--project", "1", "--local-root", str(tmp_path / "absent"),
                  "--pair", "p", str(videos["good"]), str(videos["other"]), url=ls.url)  # fmt: skip
    assert_error(done, "does not exist")
    assert not (tmp_path / "absent").exists()


def test_import_pairs_removes_only_its_own_files_when_the_import_fails(ls, videos, tmp_path: Path) -> None:
    (tmp_path / "pairs" / "old").mkdir(parents=True)
    (tmp_path / "pairs" / "old" / "keep.jpg").write_bytes(b"earlier import")
    before = tree(tmp_path)
    ls.fail[("POST", "/api/projects/1/import")] = 503
    done = script("import_pairs.py", "--project", "1", "--local-root", str(tmp_path),
                  "--pair", "p", str(videos["good"]), str(videos["other"]), "--stride", "2", url=ls.url)  # fmt: skip
    assert_error(done, "HTTP 503", "try again")
    assert tree(tmp_path) == before


def test_import_pairs_works(ls, videos, tmp_path: Path) -> None:
    done = script("import_pairs.py", "--project", "1", "--local-root", str(tmp_path),
                  "--pair", "p", str(videos["good"]), str(videos["other"]), "--stride", "2", url=ls.url)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "imported 1 pair task(s): [1]" in done.stdout
    assert len(list((tmp_path / "pairs" / "p" / "frames1").iterdir())) == 3


# -- import_segments.py -----------------------------------------------------------------------------
def test_import_segments_unknown_project_leaves_no_segments(ls, videos, tmp_path: Path) -> None:
    done = script("import_segments.py", "--project", "5", "--local-root", str(tmp_path),
                  "--video", str(videos["good"]), "--seconds", "0.2", url=ls.url)  # fmt: skip
    assert_error(done, "project 5 does not exist")
    assert tree(tmp_path) == set()


def test_import_segments_bad_numbers_and_folders(ls, videos, tmp_path: Path) -> None:
    base = ["--project", "1", "--local-root", str(tmp_path)]
    assert_error(script("import_segments.py", *base, "--video", str(videos["good"]), "--seconds", "-1", url=ls.url),
                 "--seconds", "above 0")  # fmt: skip
    assert_error(script("import_segments.py", *base, "--folders", str(tmp_path), url=ls.url), "no video_part_XXX")
    assert_error(script("import_segments.py", *base, "--folders", "/tmp", url=ls.url), "inside --local-root")
    assert tree(tmp_path) == set() and ls.calls == []


def test_import_segments_removes_split_frames_when_labelstudio_fails(ls, videos, tmp_path: Path) -> None:
    config = (ROOT / "label_config" / "greenscreen_segment.xml").read_text()
    ls.projects[2] = {"id": 2, "title": "Green screen", "label_config": config}
    ls.fail[("POST", "/api/storages/localfiles")] = 500
    done = script("import_segments.py", "--project", "2", "--local-root", str(tmp_path),
                  "--video", str(videos["good"]), "--seconds", "0.2", url=ls.url)  # fmt: skip
    assert_error(done, "HTTP 500")
    assert tree(tmp_path) == set()


# -- process_all.py, job_status.py ----------------------------------------------------------------
def test_process_all_unknown_project(ls: FakeLabelStudio) -> None:
    assert_error(script("process_all.py", "--project", "42", url=ls.url), "project 42 does not exist")


def test_process_all_labelstudio_fails_listing_tasks(ls: FakeLabelStudio, redis_server) -> None:
    ls.fail[("GET", "/api/tasks")] = 502
    done = script(
        "process_all.py", "--project", "1", url=ls.url, REDIS_URL=redis_server.url, LABEL_STUDIO_RETRY_SECONDS="0"
    )
    assert_error(done, "HTTP 502", "try again")


def test_redis_unreachable_hides_its_password(ls: FakeLabelStudio) -> None:
    redis_url = f"redis://:{PASSWORD}@127.0.0.1:{free_url().rsplit(':', 1)[1]}/0"
    line = assert_error(
        script("process_all.py", "--project", "1", url=ls.url, REDIS_URL=redis_url), "cannot reach Redis"
    )
    assert ":***@" in line
    assert_error(script("job_status.py", url=ls.url, REDIS_URL=redis_url), "cannot reach Redis")


# -- download_exports.py ----------------------------------------------------------------------------
def test_download_exports_backend_unreachable_or_refusing(ls, tmp_path: Path) -> None:
    url = free_url()
    out = tmp_path / "out"
    assert_error(script("download_exports.py", "--backend", url, "--project", "1", "--out", str(out)),
                 f"cannot reach the ML backend at {url}")  # fmt: skip
    # the fake Label Studio refuses the basic auth the way a backend with BASIC_AUTH_USER does
    done = script("download_exports.py", "--backend", ls.url, "--project", "1", "--out", str(out),
                  "--basic-auth", f"u:{PASSWORD}")  # fmt: skip
    assert_error(done, "the ML backend", "HTTP 401", "--basic-auth")
    assert not out.exists()


def test_download_exports_out_is_a_file_or_nothing_to_download(tmp_path: Path) -> None:
    from werkzeug.serving import make_server
    from werkzeug.wrappers import Response

    server = make_server("127.0.0.1", 0, Response('{"files": []}', mimetype="application/json"))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        (tmp_path / "file").write_text("x")
        done = script("download_exports.py", "--backend", url, "--project", "1", "--out", str(tmp_path / "file" / "o"))
        assert_error(done, "is not a folder")
        done = script("download_exports.py", "--backend", url, "--project", "3", "--out", str(tmp_path / "o"))
        assert_error(done, "no exports for project 3")
        assert tree(tmp_path) == {"file"}
    finally:
        server.shutdown()


# -- make system-deps -------------------------------------------------------------------------------
def system_deps(tmp_path: Path, uid: int, tools: list[str]) -> subprocess.CompletedProcess:
    """``make system-deps`` with only ``tools`` on PATH, ``id -u`` answering ``uid`` and an apt-get
    that records its arguments in ``tmp_path/apt.log``."""
    import shutil

    make = shutil.which("make")
    if make is None:
        pytest.skip("make is not installed")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ["cat", "sha1sum", "cut", *tools]:
        (bin_dir / tool).symlink_to(shutil.which(tool))
    (bin_dir / "id").write_text(f"#!/bin/sh\necho {uid}\n")
    (bin_dir / "apt-get").write_text(f'#!/bin/sh\necho "$*" >> {tmp_path / "apt.log"}\n')
    for path in (bin_dir / "id", bin_dir / "apt-get"):
        path.chmod(0o755)
    return subprocess.run(
        [make, "-s", "-C", str(ROOT), "system-deps"], env={"PATH": str(bin_dir)}, capture_output=True, text=True
    )


@pytest.mark.parametrize(
    ("present", "ok", "named"),
    [
        (["redis-server", "ffmpeg"], True, ["docker-compose"]),
        (["redis-server"], True, ["ffmpeg", "docker-compose"]),
        (["ffmpeg", "docker-compose"], False, ["redis-server"]),
    ],
)
def test_system_deps_as_a_user_names_exactly_what_is_missing(tmp_path, present, ok, named) -> None:
    import shutil

    if not all(shutil.which(t) for t in present):
        pytest.skip(f"this machine lacks one of {present}")
    done = system_deps(tmp_path, 1000, present)
    out = done.stdout + done.stderr
    assert (done.returncode == 0) is ok, out
    assert not (tmp_path / "apt.log").exists()
    for tool in ("redis-server", "ffmpeg", "docker-compose"):
        assert (f"apt-get install -y {tool}" in out) is (tool in named), out
    if not ok:
        assert (
            "error: missing redis-server, which make needs; install with: sudo apt-get install -y redis-server" in out
        )


def test_system_deps_as_root_installs_what_is_missing(tmp_path: Path) -> None:
    import shutil

    if not shutil.which("redis-server"):
        pytest.skip("this machine lacks redis-server")
    done = system_deps(tmp_path, 0, ["redis-server"])
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "apt.log").read_text().splitlines() == ["update -qq", "install -y -qq ffmpeg docker-compose"]


def test_writable_folder_says_permission_denied(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """(Tests run as root here, where every folder is writable: ``os.access`` answers no instead.)"""
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import _common
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    monkeypatch.setattr(_common.os, "access", lambda *a: False)
    with pytest.raises(_common.Fail, match=f"cannot write in {tmp_path} \\(permission denied\\)"):
        _common.writable_folder(tmp_path / "pairs" / "p")

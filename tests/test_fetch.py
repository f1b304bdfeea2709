"""Fetching task files: only Label Studio's host or the local root, with a disk cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from ml_backend.exceptions import FetchError, ForbiddenURL, SourceNotFound, TooLarge
from ml_backend.labelstudio.fetch import FileFetcher


@pytest.fixture
def fetcher(file_server, tmp_path):
    return FileFetcher(
        file_server.url, tmp_path / "dl", headers=lambda: {"Authorization": f"Token {file_server.token}"}
    )


def test_download_is_cached_and_authenticated(fetcher, file_server, local_root):
    before = len(file_server.requests)
    first = fetcher.read("/data/upload/pair/f1.png")
    assert first == (local_root / "pair" / "f1.png").read_bytes()
    assert fetcher.read(f"{file_server.url}/data/upload/pair/f1.png") == first  # absolute form, same host
    assert len(file_server.requests) == before + 1
    assert fetcher.downloads == 1
    assert not [p for p in fetcher.cache_dir.iterdir() if p.name.startswith(".part-")]


def test_wrong_token_is_a_clear_error(file_server, tmp_path):
    bad = FileFetcher(file_server.url, tmp_path, headers=lambda: {"Authorization": "Token wrong"})
    with pytest.raises(FetchError, match="LABEL_STUDIO_API_KEY"):
        bad.read("/data/upload/pair/f0.png")


def test_unreachable_label_studio(tmp_path):
    dead = FileFetcher("http://127.0.0.1:9", tmp_path, timeout=2)
    with pytest.raises(SourceNotFound, match="cannot reach"):
        dead.read("/data/upload/x.png")


def test_size_limit(file_server, tmp_path):
    small = FileFetcher(
        file_server.url, tmp_path, headers=lambda: {"Authorization": f"Token {file_server.token}"}, max_bytes=100
    )
    with pytest.raises(TooLarge):
        small.read("/data/upload/pair/f0.png")
    assert not list(tmp_path.iterdir()) or all(not p.name.startswith(".part-") for p in tmp_path.iterdir())


@pytest.mark.parametrize(
    "ref",
    [
        "https://example.com/a.png",
        "http://127.0.0.1:1/data/upload/a.png",
        "ftp://host/a.png",
        "file:///etc/passwd",
        "s3://bucket/key.png",
        "data/upload/a.png",
        "/data/upload/../../etc/passwd",
        "/data/upload/%2E%2E/secret",
        "/data/local-files/?d=../x",
        "/data/local-files/?d=/etc/passwd",
        "/data/local-files/?d=a/..%2F..%2Fb",
        "",
        "/data/local-files/./?d=../../outside/x.png",
        "/data/local-files/%2e/?d=..%2fx",
        "/data//local-files/?d=../x.png",
        "/data\\local-files\\?d=..\\x.png",
        "/data/upload/a.png?d=../x",
        "/data/local-files/?d=%252e%252e/x.png",
        "/data/local-files/?d=..\\x.png",
        "/data/upload/a%00.png",
        "/data/upload/a\x00.png",
        "/data/local-files/?d=a.png%00.jpg",
        "/data/local-files/?d=.",
        "/data/local-files/?d=",
        "//evil.example.com/a.png",
    ],
)
def test_forbidden_references(fetcher, ref):
    with pytest.raises(ForbiddenURL):
        fetcher.resolve(ref)


def test_local_root_is_read_directly(local_root, tmp_path):
    local = FileFetcher("http://ls.invalid:8080", tmp_path, local_root=local_root)
    path = local.path("/data/local-files/?d=pair/f2.png")
    assert path == (local_root / "pair" / "f2.png").resolve()
    with pytest.raises(SourceNotFound):
        local.path("/data/local-files/?d=pair/nothing.png")
    link = local_root / "escape"
    if not link.exists():
        link.symlink_to("/etc")
    with pytest.raises(ForbiddenURL):
        local.path("/data/local-files/?d=escape/hostname")


def test_cache_is_trimmed_to_its_byte_bound(file_server, tmp_path, local_root):
    size = (local_root / "pair" / "f0.png").stat().st_size
    bounded = FileFetcher(
        file_server.url,
        tmp_path,
        headers=lambda: {"Authorization": f"Token {file_server.token}"},
        cache_bytes=int(size * 2.5),
    )
    for i in range(4):
        bounded.read(f"/data/upload/pair/f{i}.png")
    total = sum(p.stat().st_size for p in Path(tmp_path).iterdir())
    assert total <= size * 2.5


@pytest.mark.parametrize(
    ("ref", "sent"),
    [
        ("/data/local-files/./?d=pair/f0.png", "/data/local-files/?d=pair/f0.png"),
        ("/data//local-files/?d=pair//./f0.png", "/data/local-files/?d=pair/f0.png"),
        ("/data/local-files/%2e/?d=pair%2Ff0.png", "/data/local-files/?d=pair/f0.png"),
        ("/data/local-files?d=pair\\f0.png", "/data/local-files/?d=pair/f0.png"),
        ("/data/upload/./3//a%20b.png", "/data/upload/3/a%20b.png"),
        ("/data\\upload\\3\\a.png", "/data/upload/3/a.png"),
        ("/tasks/1/presign/?fileuri=czM6Ly9i%2BYQ%3D%3D", "/tasks/1/presign/?fileuri=czM6Ly9i%2BYQ%3D%3D"),
    ],
)
def test_the_url_sent_is_the_normalised_url_checked(fetcher, file_server, ref, sent):
    assert fetcher.resolve(ref) == file_server.url + sent


def test_url_length_is_bounded(fetcher):
    from ml_backend.labelstudio.fetch import MAX_URL_CHARS

    with pytest.raises(TooLarge, match="characters"):
        fetcher.resolve("/data/upload/" + "a" * MAX_URL_CHARS)


def test_folders_are_for_the_worker_only(local_root, tmp_path, fetcher):
    from ml_backend.labelstudio.fetch import NotAFile

    local = FileFetcher("http://ls.invalid:8080", tmp_path, local_root=local_root)
    assert local.path("/data/local-files/?d=pair").is_dir()  # the worker's frame folders
    for ref in ("/data/local-files/?d=pair", "/data/local-files/?d=pair/"):
        with pytest.raises(NotAFile, match="folder"):
            local.path(ref, folder_ok=False)
    with pytest.raises(NotAFile):
        fetcher.path("/data/local-files/?d=pair/", folder_ok=False)

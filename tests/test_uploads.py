"""Videos uploaded in Label Studio's Import dialog become tasks (:mod:`ml_backend.worker.uploads`).

A real redis-server, RQ's SimpleWorker in-process running the real job, real videos written by
OpenCV, and the stand-in for Label Studio's API (uploads served from ``/data/upload/``; the real
Label Studio 1.23.2 does the same in ``tests/e2e/test_browser_uploads.py``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from ml_backend.labelstudio.importing import segment_tasks, split_video
from ml_backend.video.synthetic import moving_shapes
from ml_backend.worker import process as process_module
from ml_backend.worker import uploadpoll, uploads
from ml_backend.worker.queue import JobQueue
from ml_backend.worker.runner import make_worker

from .fake_labelstudio import FakeLabelStudio

ROOT = Path(__file__).resolve().parents[1]
GREEN = (ROOT / "label_config" / "greenscreen_segment.xml").read_text()
PAIR = (ROOT / "label_config" / "scenediff_pair.xml").read_text()
TARGET, INBOX, PAIRS, PAIR_INBOX = 3, 10, 4, 11
OTHER = 99  # an unrelated task of the green-screen project, which no upload may change


@pytest.fixture(autouse=True)
def quiet_werkzeug():
    logging.getLogger("werkzeug").setLevel(logging.WARNING)


@pytest.fixture
def ls(tmp_path):
    root = tmp_path / "ls_files"
    (root / "upload").mkdir(parents=True)
    server = FakeLabelStudio(root)
    server.add_project(TARGET, GREEN)
    server.add_project(INBOX, uploads.uploads_config(TARGET, "greenscreen"))
    server.add_project(PAIRS, PAIR)
    server.add_project(PAIR_INBOX, uploads.uploads_config(PAIRS, "scenediff"))
    server.add_task(OTHER, TARGET, {"take": "old", "frames": [], "video": "/data/local-files/?d=old", "job_state": ""})
    server.start()
    yield server
    server.stop()


@pytest.fixture
def settings(small_settings, redis_server, tmp_path, ls):
    return small_settings.replace(
        redis_url=redis_server.url,
        queue_name="test-uploads",
        data_dir=tmp_path / "data",
        label_studio_url=ls.url,
        label_studio_api_key=ls.token,
        label_studio_retry_seconds=10,
        label_studio_best_effort_seconds=2,
        local_files_root=str(ls.root),
        upload_segment_seconds=1.0,
        upload_pair_stride=5,
        job_retries=0,
    )


@pytest.fixture
def queue(settings, redis_conn):
    return JobQueue(redis_conn, settings)


def put(ls, project: int, name: str, content: bytes | Path) -> str:
    """An uploaded file as Label Studio stores it; its ``/data/upload/`` URL."""
    folder = ls.root / "upload" / str(project)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{len(list(folder.iterdir())):08x}-{name}"
    target.write_bytes(content.read_bytes() if isinstance(content, Path) else content)
    return f"/data/upload/{project}/{target.name}"


def upload(queue, ls, settings, redis_conn, project: int, data: dict) -> int:
    """Create a task as Label Studio's import does, send ``TASKS_CREATED``, run the worker."""
    task = max(ls.tasks, default=0) + 1
    ls.add_task(task, project, dict(data))
    config = ls.projects[project]["label_config"]
    queue.on_webhook({"action": "TASKS_CREATED", "tasks": [{"id": task, "data": data}],
                      "project": {"id": project, "label_config": config}})  # fmt: skip
    for thread in queue.cleanups:
        thread.join(timeout=30)
    process_module._settings = settings
    make_worker(settings, redis_conn, preload=False).work(burst=True)
    return task


def tasks_of(ls, project: int) -> dict[int, dict]:
    return {i: t["data"] for i, t in ls.tasks.items() if t["project"] == project}


@pytest.fixture
def long_video(tmp_path):
    return moving_shapes(num_frames=25, height=48, width=64).write(tmp_path / "take.mkv", fps=10)


def test_a_long_video_becomes_one_task_per_segment(queue, ls, settings, redis_conn, long_video, tmp_path):
    other = dict(ls.tasks[OTHER]["data"])
    task = upload(queue, ls, settings, redis_conn, INBOX, {"video": put(ls, INBOX, "beach take.mkv", long_video)})
    made = {i: d for i, d in tasks_of(ls, TARGET).items() if i != OTHER}
    assert len(made) == 3
    # cut as import_segments.py cuts: the same functions on the same video give the same tasks
    script_root = tmp_path / "script"
    expected = segment_tasks(split_video(long_video, script_root / "segments" / "beach_take", 1.0), script_root,
                             take="beach_take", fps=10.0)  # fmt: skip
    for data, want in zip(sorted(made.values(), key=lambda d: d["segment_index"]), expected, strict=True):
        for key in ("segment_index", "segment_frames", "first_frame", "last_frame", "frame_indices", "take", "fps"):
            assert data[key] == want[key], key
        assert data["frames"] == want["frames"]  # the same relative paths under the local-files root
        assert all((ls.root / f.split("?d=", 1)[1]).is_file() for f in data["frames"])
        assert data["source_tasks"] == [task] and data["source_project"] == INBOX
    assert [d["segment_frames"] for d in made.values()][0] == [11, 11, 5]  # boundary frames shared
    state = ls.tasks[task]["data"]
    assert state["job_state"] == "ready" and state["job_error"] == ""
    assert "3 segment task(s)" in state["job_message"] and f"project {TARGET}" in state["job_message"]
    assert [s["path"] for s in ls.storages.values()] == [str(ls.root / "segments")]
    assert ls.tasks[OTHER]["data"] == other
    assert not list((ls.root / "segments").glob(".*part*"))  # staged folders renamed into place


def test_the_same_video_uploaded_twice_makes_no_duplicates(queue, ls, settings, redis_conn, long_video):
    first = upload(queue, ls, settings, redis_conn, INBOX, {"video": put(ls, INBOX, "take.mkv", long_video)})
    before = {i: dict(d) for i, d in ls.tasks.items()}
    second = upload(queue, ls, settings, redis_conn, INBOX, {"video": put(ls, INBOX, "take-again.mkv", long_video)})
    state = ls.tasks[second]["data"]
    assert state["job_state"] == "duplicate"
    assert "imported already" in state["job_error"] and f"project {TARGET}" in state["job_error"]
    assert {i: d for i, d in ls.tasks.items() if i != second} == before
    # the same webhook twice enqueues nothing new, and a rerun of the first job keeps it ready
    upload_again = queue.on_webhook(
        {
            "action": "TASKS_CREATED",
            "tasks": [{"id": first, "data": {}}],
            "project": {"id": INBOX, "label_config": ls.projects[INBOX]["label_config"]},
        }
    )
    make_worker(settings, redis_conn, preload=False).work(burst=True)
    assert upload_again["uploads"] == [uploads.job_id(INBOX, first)]
    assert ls.tasks[first]["data"]["job_state"] == "ready"
    assert len(tasks_of(ls, TARGET)) == 4


def _bad_file(case: str, tmp_path: Path) -> tuple[str, bytes | Path]:
    """``(file name, content)`` of one bad upload."""
    video = moving_shapes(num_frames=30, height=48, width=64)
    if case == "an image":
        from PIL import Image

        Image.fromarray(video.frames[0]).save(tmp_path / "still.png")
        return "still.png", tmp_path / "still.png"
    if case == "8K":
        return "huge.avi", moving_shapes(num_frames=2, height=4320, width=7680).write(tmp_path / "8k.avi")
    if case == "over 2 hours":
        return "long.avi", video.write(tmp_path / "slow.avi", fps=30 / (3 * 3600))  # 30 frames over 3 hours
    if case == "truncated":
        mkv = video.write(tmp_path / "full.mkv")
        return "cut.mkv", mkv.read_bytes()[: mkv.stat().st_size // 2]
    if case == "unsupported codec":  # a valid AVI whose codec id no decoder knows
        return "odd.avi", video.write(tmp_path / "full.avi").read_bytes().replace(b"MJPG", b"ZZ9Z")
    return {"not a video": ("notes.mp4", b"hello, this is text\n" * 50), "zero-length": ("empty.mp4", b"")}[case]


REASONS = {
    "not a video": "notes.mp4 cannot be decoded (not a video, or an unsupported codec)",
    "an image": "still.png is not a video",
    "zero-length": "empty.mp4 is empty (0 bytes)",
    "truncated": "cut.mkv ends at frame",
    "unsupported codec": "odd.avi cannot be decoded (not a video, or an unsupported codec)",
    "8K": "huge.avi is 7680×4320 pixels, larger than UPLOAD_MAX_SIDE=4096",
    "over 2 hours": "long.avi lasts 2:",  # 30 frames at ~0.003 fps (the container rounds the rate)
}


@pytest.mark.parametrize("case", list(REASONS))
def test_bad_uploads_fail_with_a_reason_and_change_nothing_else(case, queue, ls, settings, redis_conn, tmp_path):
    name, content = _bad_file(case, tmp_path)
    before = {i: dict(t["data"]) for i, t in ls.tasks.items()}
    task = upload(queue, ls, settings, redis_conn, INBOX, {"video": put(ls, INBOX, name, content)})
    state = ls.tasks[task]["data"]
    assert state["job_state"] == "failed", state
    assert state["job_error"].startswith(REASONS[case]), state["job_error"]
    if case == "over 2 hours":
        assert "longer than UPLOAD_MAX_SECONDS=7200 (2:00:00); cut it or raise the limit" in state["job_error"]
    assert "\n" not in state["job_error"] and "Traceback" not in state["job_error"]
    assert "/tmp" not in state["job_error"] and str(settings.data_dir) not in state["job_error"]
    assert {i: t["data"] for i, t in ls.tasks.items() if i != task} == before
    assert not ls.storages and not (ls.root / "segments").exists() or not any((ls.root / "segments").iterdir())


def test_a_pair_by_file_names_waits_for_its_partner(queue, ls, settings, redis_conn, tmp_path):
    v1 = moving_shapes(num_frames=12, height=48, width=64).write(tmp_path / "a.mkv", fps=10)
    v2 = moving_shapes(num_frames=9, height=60, width=80, seed=1).write(tmp_path / "b.mkv", fps=15)  # other size, fps
    first = upload(
        queue, ls, settings, redis_conn, PAIR_INBOX, {"video1": put(ls, PAIR_INBOX, "kitchen_before.mkv", v1)}
    )
    assert ls.tasks[first]["data"]["job_state"] == "waiting"
    assert "kitchen_2.*" in ls.tasks[first]["data"]["job_message"]
    assert not tasks_of(ls, PAIRS)
    second = upload(queue, ls, settings, redis_conn, PAIR_INBOX, {"video1": put(ls, PAIR_INBOX, "kitchen_2.mkv", v2)})
    ((pair_id, pair),) = tasks_of(ls, PAIRS).items()
    assert pair["pair"] == "kitchen" and pair["frame_indices1"] == [0, 5, 10] and pair["frame_indices2"] == [0, 5]
    assert sorted(pair["source_tasks"]) == [first, second]
    assert (ls.root / "pairs" / "kitchen" / "frames2" / "frame_000005.jpg").is_file()
    for task in (first, second):
        assert ls.tasks[task]["data"]["job_state"] == "ready", ls.tasks[task]["data"]
        assert f"pair task {pair_id}" in ls.tasks[task]["data"]["job_message"]
    # the partner's own job (both uploads in one import) finds the pair made: still one task
    queue.on_webhook(
        {
            "action": "TASKS_CREATED",
            "tasks": [{"id": first, "data": ls.tasks[first]["data"]}],
            "project": {"id": PAIR_INBOX, "label_config": ls.projects[PAIR_INBOX]["label_config"]},
        }
    )
    make_worker(settings, redis_conn, preload=False).work(burst=True)
    assert len(tasks_of(ls, PAIRS)) == 1 and ls.tasks[first]["data"]["job_state"] == "ready"


def test_a_csv_row_with_video1_and_video2_is_a_pair(queue, ls, settings, redis_conn, tmp_path):
    v1 = moving_shapes(num_frames=12, height=48, width=64).write(tmp_path / "a.mkv")
    v2 = moving_shapes(num_frames=12, height=48, width=64, seed=2).write(tmp_path / "b.mkv")
    row = {"video1": put(ls, PAIR_INBOX, "x.mkv", v1), "video2": put(ls, PAIR_INBOX, "y.mkv", v2), "pair": "desk"}
    task = upload(queue, ls, settings, redis_conn, PAIR_INBOX, row)
    ((_, pair),) = tasks_of(ls, PAIRS).items()
    assert pair["pair"] == "desk" and ls.tasks[task]["data"]["job_state"] == "ready"


def test_a_pair_video_named_against_the_rule_says_the_rule(queue, ls, settings, redis_conn, tmp_path):
    v1 = moving_shapes(num_frames=6, height=48, width=64).write(tmp_path / "a.mkv")
    task = upload(queue, ls, settings, redis_conn, PAIR_INBOX, {"video1": put(ls, PAIR_INBOX, "kitchen.mkv", v1)})
    state = ls.tasks[task]["data"]
    assert state["job_state"] == "failed" and "<scene>_1.*" in state["job_error"]
    assert not tasks_of(ls, PAIRS)


def test_tasks_of_other_projects_are_left_to_the_import_check(queue, ls):
    reply = queue.on_webhook({"action": "TASKS_CREATED", "tasks": [{"id": OTHER, "data": ls.tasks[OTHER]["data"]}],
                              "project": {"id": TARGET, "label_config": GREEN}})  # fmt: skip
    assert "uploads" not in reply and reply["tasks"] == [OTHER]


def test_pairing_rule_and_file_names():
    assert uploads.pair_role("/data/upload/3/1a2b3c4d-Kitchen_Before.mp4") == ("Kitchen", 1)
    assert uploads.pair_role("/data/local-files/?d=videos/desk-2.webm") == ("desk", 2)
    assert uploads.pair_role("/data/upload/3/1a2b3c4d-desk_3.mp4") is None
    assert uploads.take_for("/data/upload/3/1a2b3c4d-my take (1).mp4", "x") == "my_take_1"
    assert uploads.uploads_target(uploads.uploads_config(7, "scenediff", "A <b>")) == (7, "scenediff")


def test_polling_finds_an_upload_whose_webhook_never_came(queue, ls, settings, redis_conn, long_video):
    ls.add_task(50, INBOX, {"video": put(ls, INBOX, "lost.mkv", long_video)})  # no TASKS_CREATED sent
    ls.add_task(51, INBOX, {"video": put(ls, INBOX, "done.mkv", long_video), "job_state": "failed"})
    assert uploadpoll.poll_once(queue) == [uploads.job_id(INBOX, 50)]
    process_module._settings = settings
    make_worker(settings, redis_conn, preload=False).work(burst=True)
    assert ls.tasks[50]["data"]["job_state"] == "ready"
    assert len(tasks_of(ls, TARGET)) == 1 + 3
    assert uploadpoll.poll_once(queue) == []  # it has a state now


def test_create_project_with_uploads_makes_the_uploads_project_and_says_the_rule(tmp_path):
    from .test_scripts import script

    server = FakeLabelStudio(tmp_path).start()
    try:
        done = script("create_project.py", "--title", "Scenes", "--uploads", url=server.url, token=server.token)
        assert done.returncode == 0, done.stderr
        (target,) = [p for p in server.projects.values() if p["title"] == "Scenes"]
        (inbox,) = [p for p in server.projects.values() if p["title"] == "Scenes · uploads"]
        assert uploads.uploads_target(inbox["label_config"]) == (target["id"], "scenediff")
        assert uploads.PAIR_RULE in target["description"] and uploads.PAIR_RULE in inbox["description"]
        assert f"uploads project {inbox['id']}: Scenes · uploads" in done.stdout
    finally:
        server.stop()

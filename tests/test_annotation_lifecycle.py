"""Several annotations, Updates and deletions (:mod:`ml_backend.worker.lifecycle`), with the stand-in
Label Studio, a real redis-server, RQ's SimpleWorker in-process and the real pipeline.

A deletion arriving during each stage of a job (queued, propagating, exporting, publishing):
the job never publishes after it has seen the deletion, and nothing of the annotation is left
(no prediction, no export in the task's folder or the annotation's own, no half-removed folder).
Deletions are injected with hooks at the stage itself, never with timers.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from ml_backend.video import pipeline as pipeline_module
from ml_backend.worker import lifecycle, records
from ml_backend.worker import process as process_module
from ml_backend.worker.queue import JobQueue

from . import test_task_jobs as task_jobs
from .test_task_jobs import PROJECT, TASK, Hooked, point, published, run, submit

ls, settings, queue, video, predictor = (
    task_jobs.ls, task_jobs.settings, task_jobs.queue, task_jobs.video, task_jobs.predictor
)  # fmt: skip


def delete(queue: JobQueue, ls, annotation_id: int) -> dict:
    """What Label Studio does on ⋮ → Delete: the annotation is gone, then the webhook comes."""
    ls.annotations.pop(annotation_id, None)
    return queue.on_webhook({"action": "ANNOTATIONS_DELETED", "annotations": [{"id": annotation_id}],
                             "project": {"id": PROJECT}})  # fmt: skip


def settle(queue: JobQueue) -> None:
    for thread in list(queue.cleanups):
        thread.join(timeout=60)


def leftovers(settings) -> list[Path]:
    """Hidden folders a removal or a swap may leave behind (none once settled)."""
    root = settings.results_root
    return [p for p in root.rglob(".*") if ".removed-" in p.name or ".new-" in p.name or ".old-" in p.name]


def message(ls) -> str:
    return ls.tasks[TASK]["data"].get("job_message", "")


def annotation_files(settings, annotation: int) -> list[Path]:
    folder = records.annotation_dir(settings.results_root, PROJECT, TASK, annotation)
    return sorted(folder.rglob("frame_*_masked.png")) if folder.exists() else []


def assert_nothing_left(settings, ls, queue, annotation: int) -> None:
    settle(queue)
    assert ls.task_predictions(TASK) == [], "a prediction of the deleted annotation is left"
    assert published(settings) == [], "the task's export folder still holds the deleted annotation's result"
    assert annotation_files(settings, annotation) == []
    assert not records.annotation_dir(settings.results_root, PROJECT, TASK, annotation).exists()
    assert leftovers(settings) == []
    assert f"Annotation {annotation}: deleted" in message(ls), message(ls)


STAGES = ["queued", "propagating", "exporting", "publishing"]


@pytest.mark.parametrize("stage", STAGES)
def test_a_deletion_during_each_stage_publishes_nothing_after_it_and_leaves_nothing(
    stage, queue, settings, redis_conn, ls, video, monkeypatch
):
    ls.start()
    seen: dict[str, object] = {}

    def delete_now() -> None:
        if "deleted" not in seen:
            seen["deleted"] = delete(queue, ls, 1)
            seen["posted_before"] = len(ls.predictions)

    made = Hooked(delete_now if stage == "propagating" else None)
    monkeypatch.setattr(process_module, "get_predictor", lambda s: made)
    if stage == "exporting":  # while the exporters finish their files, before anything is published
        timed = pipeline_module._timed
        lock = threading.Lock()

        def deleting_timed(name, call, *args):
            with lock:
                delete_now()
            return timed(name, call, *args)

        monkeypatch.setattr(pipeline_module, "_timed", deleting_timed)
    if stage == "publishing":  # the job holds the gate and posts its prediction

        def hook(method, parts):
            if method == "POST" and parts[:2] == ["api", "predictions"]:
                delete_now()

        ls.hook = hook
    reply = submit(queue, ls, 1, [point(video, "disc", 0, 0)])
    if stage == "queued":
        delete_now()
    run(settings, redis_conn)
    settle(queue)
    status = queue.status(reply["job_id"])
    assert "deleted" in seen
    if stage == "queued":
        assert status["status"] == "canceled", status
    else:
        assert status["status"] == "finished" and status["result"]["status"] == "superseded", status
    # never published after the job saw the deletion: nothing counted as published, and the only
    # prediction ever posted is the one in flight when the webhook came (publishing stage)
    assert redis_conn.get(f"sam2:published:{reply['job_id']}") is None
    assert len(ls.predictions) == (1 if stage == "publishing" else 0) == seen["posted_before"] + (stage == "publishing")
    assert_nothing_left(settings, ls, queue, 1)


def test_a_deletion_webhook_that_never_came_is_caught_before_publishing(queue, settings, redis_conn, ls, video,
                                                                      monkeypatch):  # fmt: skip
    """The annotation is deleted in Label Studio while the job runs, and the webhook is lost: the
    job asks Label Studio just before publishing and publishes nothing."""
    ls.start()
    made = Hooked(lambda: ls.annotations.pop(1))
    monkeypatch.setattr(process_module, "get_predictor", lambda s: made)
    reply = submit(queue, ls, 1, [point(video, "disc", 0, 0)])
    run(settings, redis_conn)
    status = queue.status(reply["job_id"])
    assert status["result"]["status"] == "superseded" and "no longer exists" in status["result"]["reason"], status
    assert ls.predictions == []
    assert_nothing_left(settings, ls, queue, 1)


def test_two_annotations_each_get_their_result_and_the_newer_one_is_the_tasks(
    queue, settings, redis_conn, ls, video, monkeypatch
):
    """A second annotation submitted while the first one's job runs: both jobs publish, each its
    own prediction and folder; the task's folder holds the newer one's; job_message says which.
    Deleting the newer (primary) one makes the first the task's result: it runs again."""
    ls.start()
    replies: dict[str, dict] = {}
    made = Hooked(lambda: replies.setdefault("b", submit(queue, ls, 2, [point(video, "square", 0, 0)])))
    monkeypatch.setattr(process_module, "get_predictor", lambda s: made)
    replies["a"] = submit(queue, ls, 1, [point(video, "disc", 0, 0)])
    run(settings, redis_conn)
    settle(queue)
    a, b = queue.status(replies["a"]["job_id"]), queue.status(replies["b"]["job_id"])
    assert a["result"]["status"] == "done" and a["result"]["primary"] is False, a
    assert b["result"]["status"] == "done" and b["result"]["primary"] is True, b
    versions = sorted(p["model_version"].rsplit("-job-", 1)[1] for p in ls.task_predictions(TASK))
    assert versions == sorted([replies["a"]["job_id"], replies["b"]["job_id"]])
    assert len(annotation_files(settings, 1)) == len(annotation_files(settings, 2)) == len(published(settings)) > 0
    primary = lifecycle.primary_record(redis_conn, PROJECT, TASK)
    assert primary["annotation"] == 2
    # the task's files are annotation 2's (hard links of its own files)
    mine = {p.name: p.stat().st_ino for p in annotation_files(settings, 2)}
    assert {p.name: p.stat().st_ino for p in published(settings)} == mine
    text = message(ls)
    assert "Annotation 1: done · not the task's result" in text and "annotation_1/" in text, text
    assert "Annotation 2: done · the task's result" in text, text

    delete(queue, ls, 2)
    settle(queue)
    assert published(settings) == [], "the deleted primary's files are still the task's result"
    assert [p["model_version"].rsplit("-job-", 1)[1] for p in ls.task_predictions(TASK)] == [replies["a"]["job_id"]]
    assert "Annotation 1: queued · runs again to become the task's result" in message(ls), message(ls)
    monkeypatch.setattr(process_module, "get_predictor", lambda s: Hooked(None))
    run(settings, redis_conn)
    settle(queue)
    assert lifecycle.primary_record(redis_conn, PROJECT, TASK)["annotation"] == 1
    assert {p.name for p in published(settings)} == {p.name for p in annotation_files(settings, 1)}
    assert len(ls.task_predictions(TASK)) == 1
    assert "Annotation 1: done · the task's result" in message(ls) and "Annotation 2: deleted" in message(ls)
    assert leftovers(settings) == []


def test_three_updates_leave_one_job_prediction(queue, settings, redis_conn, ls, video, predictor):
    ls.start()
    versions = [[point(video, "disc", 0, 0)], [point(video, "square", 0, 0)],
                [point(video, "disc", 0, 0), point(video, "square", 3, 1)]]  # fmt: skip
    last = None
    for result in versions:
        last = submit(queue, ls, 1, result)
        run(settings, redis_conn)
    settle(queue)
    assert len(ls.predictions) == 3
    (kept,) = ls.task_predictions(TASK)
    assert kept["model_version"].endswith(last["job_id"])


def test_the_ground_truth_annotation_is_the_tasks_result(queue, settings, redis_conn, ls, video, predictor):
    ls.start()
    submit(queue, ls, 1, [point(video, "disc", 0, 0)])
    ls.annotations[1]["ground_truth"] = True
    submit(queue, ls, 2, [point(video, "square", 0, 0)])  # newer, but not the ground truth
    run(settings, redis_conn)
    settle(queue)
    assert lifecycle.primary_record(redis_conn, PROJECT, TASK)["annotation"] == 1
    assert "annotation 1 is the task's primary one" in message(ls), message(ls)


def test_an_unreadable_video_is_flagged_at_import_and_its_job_fails_without_server_paths(
    queue, settings, redis_conn, ls, video, predictor
):
    ls.start()
    (ls.root / "bad").mkdir()
    (ls.root / "bad" / "video.mp4").write_text("this is not a video")
    settings = settings.replace(local_files_root=str(ls.root), job_retries=0)
    queue = JobQueue(redis_conn, settings)
    data = dict(ls.tasks[TASK]["data"], video="/data/local-files/?d=bad/video.mp4")
    ls.tasks[TASK]["data"] = data
    queue.on_webhook({"action": "TASKS_CREATED", "tasks": [{"id": TASK, "data": data}], "project": {"id": PROJECT}})
    settle(queue)
    flagged = ls.tasks[TASK]["data"]
    assert flagged["job_state"] == "failed", flagged
    for text in (flagged["job_error"], flagged["job_message"]):
        assert "bad/video.mp4" in text and str(ls.root) not in text and text.count("bad/video.mp4") == 1, text

    reply = submit(queue, ls, 1, [point(video, "disc", 0, 0)])
    run(settings, redis_conn)
    settle(queue)
    assert queue.status(reply["job_id"])["status"] == "failed"
    data = ls.tasks[TASK]["data"]
    line = next(x for x in data["job_message"].splitlines() if x.startswith("Annotation 1"))
    assert "failed" in line and "bad/video.mp4" in line and str(ls.root) not in line, line
    assert line.count("bad/video.mp4") == 1 and "/" not in line.split("bad/video.mp4")[0].split()[-1], line
    assert str(ls.root) not in data["job_error"] and data["job_error"].count("bad/video.mp4") == 1, data["job_error"]


def test_the_task_folder_mirrors_files_reached_through_links(tmp_path):
    """A SceneDiff pair's files are links into its ``.scenediff`` folder: the task's folder gets
    the files themselves (hard links), and swapping it leaves nothing behind."""
    source = tmp_path / "annotation_1"
    (source / ".scenediff-v1").mkdir(parents=True)
    (source / ".scenediff-v1" / "segments.pkl").write_bytes(b"pair")
    (source / "segments.pkl").symlink_to(".scenediff-v1/segments.pkl")
    task_dir = tmp_path / "task_7"
    task_dir.mkdir()
    (task_dir / "stale.txt").write_text("an older job's file")
    rels = lifecycle.mirror([source / "segments.pkl"], source, task_dir, shared=False)
    assert rels == ["segments.pkl"]
    assert (task_dir / "segments.pkl").read_bytes() == b"pair" and not (task_dir / "segments.pkl").is_symlink()
    assert (task_dir / "segments.pkl").stat().st_ino == (source / ".scenediff-v1" / "segments.pkl").stat().st_ino
    assert sorted(p.name for p in tmp_path.iterdir()) == ["annotation_1", "task_7"]
    assert not (task_dir / "stale.txt").exists()

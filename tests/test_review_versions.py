"""Review files kept for pages opened before a newer job published: ``prune_versions`` keeps
``REVIEW_KEEP_VERSIONS`` versions of each overlay video and preview and deletes the older ones;
through the worker, the URL an earlier job set stays served after the next job."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ml_backend.exceptions import ConfigurationError
from ml_backend.labelstudio.review import prune_versions
from ml_backend.labelstudio.taskdata import local_path
from ml_backend.settings import Settings

from . import test_task_review as review
from .test_task_review import FIRST, data, point, run, submit

# the review tests' fixtures: a Label Studio stand-in with a synthetic pair, settings, queue, predictor
ls, settings, queue, predictor, quiet_werkzeug = (
    review.ls,
    review.settings,
    review.queue,
    review.predictor,
    review.quiet_werkzeug,
)


def version(folder: Path, name: str, age: int) -> Path:
    """A file ``folder/name`` whose mtime is ``age`` seconds in the past (larger = older)."""
    path = folder / name
    path.write_bytes(name.encode())
    stamp = 1_700_000_000 - age
    os.utime(path, (stamp, stamp))
    return path


def test_keeps_the_current_and_the_newest_older_versions(tmp_path):
    old = [version(tmp_path, f"video1_overlay-k{i}.webm", age=10 * (i + 1)) for i in range(5)]  # k0 newest
    current = version(tmp_path, "video1_overlay-new.webm", age=0)
    other = version(tmp_path, "video2_overlay-k9.webm", age=99)  # another stem: untouched
    hidden = version(tmp_path, ".video1_overlay-part.webm.part", age=99)  # a write in progress
    kept = prune_versions(tmp_path, "video1_overlay", ".webm", 3, current=current)
    assert kept == [current, old[0], old[1]]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [current.name, old[0].name, old[1].name, other.name, hidden.name]
    )


def test_without_a_current_file_it_counts_as_one_version(tmp_path):
    old = [version(tmp_path, f"pair_preview-k{i}.png", age=i + 1) for i in range(4)]
    assert prune_versions(tmp_path, "pair_preview", ".png", 3) == old[:2]
    assert sorted(tmp_path.iterdir()) == sorted(old[:2])


def test_keep_one_deletes_every_older_version(tmp_path):
    old = version(tmp_path, "a-old.png", age=5)
    current = version(tmp_path, "a-new.png", age=0)
    assert prune_versions(tmp_path, "a", ".png", 1, current=current) == [current]
    assert not old.exists()


def test_equal_mtimes_are_ordered_by_name(tmp_path):
    files = [version(tmp_path, f"b-{c}.png", age=3) for c in "xyz"]
    assert prune_versions(tmp_path, "b", ".png", 2) == [files[2]]


def test_the_setting_must_keep_at_least_the_newest(small_settings: Settings):
    assert small_settings.review_keep_versions == 3
    assert Settings.from_env({"REVIEW_KEEP_VERSIONS": "5"}).review_keep_versions == 5
    with pytest.raises(ConfigurationError, match="REVIEW_KEEP_VERSIONS=0"):
        small_settings.replace(review_keep_versions=0)


def test_an_open_pages_video_and_preview_survive_newer_jobs_up_to_the_bound(settings, redis_conn, queue, ls):
    """Job 1's overlay video and preview (what a page opened then shows) are still there after
    job 2; after jobs 3 and 4 only the newest three versions remain."""
    settings = settings.replace(review_keep_versions=3)
    submit(queue, ls, 1, FIRST)
    run(settings, redis_conn)
    first = {k: data(ls)[k] for k in ("review_video1", "preview")}
    for annotation, extra in ((2, 2), (3, 1), (4, 0)):
        submit(
            queue, ls, annotation, [*FIRST, point(1, 0, 0) | {"value": {**point(1, 0, 0)["value"], "x": 5.0 + extra}}]
        )
        run(settings, redis_conn)
        if annotation == 2:
            assert all(local_path(settings, url).is_file() for url in first.values()), "job 2 deleted job 1's files"
    review = ls.root / "pairs/p/review"
    assert len(list(review.glob("video1_overlay-*.webm"))) == 3
    assert len(list(review.glob("pair_preview-*.png"))) == 3
    assert not any(local_path(settings, url).exists() for url in first.values())  # the 4th job pruned job 1's
    assert local_path(settings, data(ls)["review_video1"]).is_file()

"""The CLI surface: every bad ``propagate`` run ends with one ``error:`` line and a non-zero exit,
before the model is built (the model builder raises if it is reached), and writes nothing."""

from __future__ import annotations

import json

import pytest

from ml_backend import __main__ as entry
from ml_backend import models
from ml_backend.video.synthetic import moving_shapes

W, H, N = 64, 48, 6


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    moving_shapes(num_frames=N, height=H, width=W).write(tmp_path / "v.mkv")
    (tmp_path / "junk.mkv").write_bytes(b"not a video at all" * 100)
    (tmp_path / "afile").write_text("x")

    def no_model(settings):
        raise AssertionError("the model was built before the input was checked")

    monkeypatch.setattr(models, "build_video_predictor", no_model)
    monkeypatch.setenv("SAM2_CHECKPOINT", "random")
    return tmp_path


def doc(**changes) -> dict:
    prompt = {"frame": 2, "points": [[20.0, 20.0]], "labels": [1]}
    prompt.update(changes.pop("prompt", {}))
    obj = {"id": 1, "name": "disc", "prompts": [prompt]}
    obj.update(changes.pop("obj", {}))
    return {"format": "scenediff", "objects": [obj], **changes}


def greenscreen(**block) -> dict:
    return doc(format="greenscreen", greenscreen={"segment_index": 0, "segment_frames": [N], **block})


CASES = {
    "prompt file missing": (None, [], "does not exist"),
    "prompt file not JSON": ("{not json", [], "not valid JSON"),
    "prompt file a list": ([1, 2], [], "must hold a JSON object"),
    "no objects": ({"objects": []}, [], "non-empty list"),
    "point NaN": ('{"objects": [{"prompts": [{"frame": 1, "points": [[NaN, 3]], "labels": [1]}]}]}', [], "finite"),
    "point Infinity": (doc(prompt={"points": [[1e999, 3]]}), [], "finite"),
    "frame past the end": (doc(prompt={"frame": 99}), [], "which has 6 frames"),
    "frame negative": (doc(prompt={"frame": -1}), [], "0-based frame index"),
    "point outside the frame": (doc(prompt={"points": [[500.0, 20.0]]}), [], "outside the 64×48 frame"),
    "label 2": (doc(prompt={"labels": [2]}), [], "labels (1 or 0)"),
    "object id 0": (doc(obj={"id": 0}), [], "unique positive integer"),
    "mask_rle abc": (doc(prompt={"mask_rle": {"size": [H, W], "counts": "abc"}}), [], "not a COCO RLE"),
    "mask of another size": (
        doc(prompt={"mask_rle": {"size": [10, 10], "counts": [0, 100]}}),
        [],
        "but video1 is 64×48",
    ),
    "start_frame abc": (greenscreen(start_frame="abc"), [], "start_frame must be a non-negative"),
    "negative segment": (greenscreen(segment_frames=[N, -3]), [], "positive frame counts"),
    "segment list disagrees": (greenscreen(segment_frames=[N + 1]), [], "segment list says"),
    "--out is a file": (doc(), ["--out", "{tmp}/afile"], "is a file, not a folder"),
    "--out under a file": (doc(), ["--out", "{tmp}/afile/sub"], "which is a file"),
    "video missing": (doc(), ["--video1", "{tmp}/nope.mkv"], "does not exist"),
    "video not a video": (doc(), ["--video1", "{tmp}/junk.mkv"], "cannot be opened"),
    "video2 needed but not given": (doc(obj={"in_video2": True}), [], "no video2 was given"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_cli_runs_end_in_one_error_line(name, workdir, capsys):
    content, extra, expected = CASES[name]
    prompts = workdir / "prompts.json"
    if content is not None:
        prompts.write_text(content if isinstance(content, str) else json.dumps(content))
    extra = [a.format(tmp=workdir) for a in extra]
    argv = ["propagate", "--prompts", str(prompts), "--video1", str(workdir / "v.mkv"), "--out", str(workdir / "out")]
    code = entry.main([*argv, *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert expected in err[0], err
    assert not (workdir / "out").exists()  # checked before anything was written


def test_out_not_writable(workdir, capsys, monkeypatch):
    import os

    (workdir / "prompts.json").write_text(json.dumps(doc()))
    monkeypatch.setattr(os, "access", lambda path, mode: False)  # tests run as root, who may write anywhere
    argv = ["propagate", "--prompts", str(workdir / "prompts.json"), "--video1", str(workdir / "v.mkv")]
    assert entry.main([*argv, "--out", str(workdir / "ro" / "out")]) == 1
    assert "is not writable by this user" in capsys.readouterr().err


def test_status_of_an_unknown_job_is_an_error_line(redis_server, monkeypatch, capsys):
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    assert entry.main(["status", "no-such-job"]) == 1
    assert capsys.readouterr().err.strip() == "error: no job no-such-job"


def test_export_flag_adds_formats(workdir, monkeypatch, capsys):
    from .fakes import ColorVideoPredictor

    monkeypatch.setattr(models, "build_video_predictor", lambda settings: ColorVideoPredictor())
    video = moving_shapes(num_frames=N, height=H, width=W)
    x, y = video.shapes["disc"].center(2 / (N - 1))
    (workdir / "prompts.json").write_text(json.dumps(doc(prompt={"points": [[x, y]]})))
    argv = ["propagate", "--prompts", str(workdir / "prompts.json"), "--video1", str(workdir / "v.mkv")]
    out = workdir / "out"
    assert entry.main([*argv, "--out", str(out), "--export", "davis", "--export", "ytvis", "--no-review"]) == 0
    assert len(list((out / "davis" / "video1").glob("*.png"))) == N and (out / "ytvis.json").is_file()
    assert entry.main([*argv, "--out", str(workdir / "o2"), "--export", "gif"]) == 1
    assert "unknown export format 'gif'" in capsys.readouterr().err


def test_paths_in_the_file_are_relative_to_it_and_on_the_command_line_to_the_cwd(
    workdir, monkeypatch, redis_server, redis_conn
):
    """With --queue the job is only queued: its recorded video paths show how each was resolved."""
    from ml_backend.settings import Settings
    from ml_backend.worker.queue import JobQueue

    monkeypatch.setenv("REDIS_URL", redis_server.url)
    monkeypatch.setenv("RQ_QUEUE", "test-paths")
    sub = workdir / "prompts"
    sub.mkdir()
    (sub / "p.json").write_text(json.dumps(doc(videos={"video1": "../v.mkv"})))
    monkeypatch.chdir(workdir)
    assert entry.main(["propagate", "--prompts", "prompts/p.json", "--out", "out", "--queue"]) == 0
    moving_shapes(num_frames=N, height=H, width=W).write(sub / "v.mkv")
    monkeypatch.chdir(sub)
    assert entry.main(["propagate", "--prompts", "p.json", "--video1", "v.mkv", "--out", "out", "--queue"]) == 0
    queue = JobQueue.from_settings(Settings.from_env())
    recorded = [queue.fetch(job_id).args[1]["video1"] for job_id in queue.queue.job_ids[-2:]]
    assert recorded == [str(workdir / "v.mkv"), str(sub / "v.mkv")]

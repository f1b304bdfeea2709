"""Green-screen projects with several takes (source videos): exports keyed by take, the source's
frame rate and original frame numbers in every output, imports that can be run twice, and
import errors that say why and leave nothing behind.

The import scripts run as subprocesses against the fake Label Studio (tests/fake_labelstudio.py),
which also serves the worker's calls; jobs run on a real redis-server in RQ's SimpleWorker with
the real pipeline: the real SAM 2 code with random weights at 256 px for the two-take test, the
deterministic colour predictor where the test needs known flags.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ml_backend.worker import process as process_module
from ml_backend.worker.queue import JobQueue
from ml_backend.worker.runner import make_worker

from .fake_labelstudio import FakeLabelStudio
from .fakes import ColorVideoPredictor

ROOT = Path(__file__).resolve().parents[1]
GS_CONFIG = (ROOT / "label_config" / "greenscreen_segment.xml").read_text()
SD_CONFIG = (ROOT / "label_config" / "scenediff_pair.xml").read_text()
W, H = 64, 48
SQUARE = (200, 30, 30)  # a flat colour the colour predictor tracks
GS, SD = 2, 1  # project ids: green-screen, SceneDiff


@pytest.fixture(autouse=True)
def quiet_werkzeug():
    logging.getLogger("werkzeug").setLevel(logging.WARNING)


def numbered_video(path: Path, take: int, n: int, fps: float = 25.0, square: range = range(0)) -> Path:
    """A lossless video whose frame ``i`` has a flat colour unique to ``(take, i)`` with ``i``
    drawn on it in white; on the frames in ``square``, a flat :data:`SQUARE` square."""
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"FFV1"), fps, (W, H))
    for i in range(n):
        frame = np.full((H, W, 3), (30 + 90 * take, 20 + 9 * i, 120), np.uint8)
        cv2.putText(frame, str(i), (3, 40), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (255, 255, 255), 2)
        if i in square:
            frame[4:22, 38:60] = SQUARE
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def decoded(video: Path) -> list[np.ndarray]:
    """Every frame of ``video`` as the worker's decoder reads it."""
    from ml_backend.video.frames import open_frames

    with open_frames(video, cache_frames=4) as source:
        return [source.read(i) for i in range(source.num_frames)]


def script(ls: FakeLabelStudio, name: str, *argv: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("LABEL_STUDIO_", "REDIS_", "ML_BACKEND_"))}
    env = {**clean, "LABEL_STUDIO_URL": ls.url, "LABEL_STUDIO_API_KEY": ls.token}
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / name), *argv], env=env, capture_output=True, text=True, timeout=300
    )


def ok(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def error_line(done: subprocess.CompletedProcess) -> str:
    """The one ``error:`` line of a failed script (and nothing else of note on stderr)."""
    assert done.returncode != 0, done.stdout + done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip() and "\r" not in line]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in done.stderr, done.stderr
    return errors[0]


def tree(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*")} if folder.exists() else set()


def files_of(*folders: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for folder in folders for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def ls(tmp_path):
    root = tmp_path / "ls_files"
    root.mkdir()
    server = FakeLabelStudio(root)
    server.add_project(SD, SD_CONFIG)
    server.add_project(GS, GS_CONFIG)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def settings(small_settings, redis_server, tmp_path, ls):
    return small_settings.replace(
        redis_url=redis_server.url,
        queue_name="test-takes",
        data_dir=tmp_path / "data",
        label_studio_url=ls.url,
        label_studio_api_key=ls.token,
        local_files_root=str(ls.root),
        label_studio_retry_seconds=5,
        greenscreen_mp4=True,
        job_heartbeat_ttl=5,
    )


@pytest.fixture
def queue(settings, redis_conn):
    return JobQueue(redis_conn, settings)


def import_take(ls, video: Path, *argv: str) -> list[int]:
    """Import ``video`` with import_segments.py into the green-screen project; the new task ids."""
    before = set(ls.tasks)
    ok(script(ls, "import_segments.py", "--project", str(GS), "--local-root", str(ls.root), "--video", str(video),
              "--seconds", "0.2", *argv))  # fmt: skip
    return sorted(set(ls.tasks) - before)


def submit(ls, queue, task_id: int, annotation_id: int, x: float = 75.0, y: float = 25.0) -> str:
    """A keypoint on page 0 of the task at (x, y) percent, submitted through the webhook; the job id."""
    region = {
        "from_name": "kp", "to_name": "image", "type": "keypointlabels", "item_index": 0,
        "original_width": W, "original_height": H, "is_positive": True,
        "value": {"x": x, "y": y, "width": 1, "keypointlabels": ["Subject 1"]},
    }  # fmt: skip
    annotation = ls.add_annotation(annotation_id, task_id, [region])
    action = "ANNOTATION_UPDATED" if annotation_id > 100 else "ANNOTATION_CREATED"
    reply = queue.on_webhook({"action": action, "annotation": annotation, "project": {"id": GS}})
    return reply["job_id"]


def work(settings, redis_conn) -> None:
    process_module._settings = settings
    make_worker(settings, redis_conn, preload=False).work(burst=True)


# -- the Must-show tests ---------------------------------------------------------------------------
def test_two_takes_in_one_project_never_touch_each_others_files(ls, settings, queue, redis_conn, tmp_path):
    """Real SAM 2 code (random weights, 256 px): two takes, every segment submitted, then one
    segment of take 1 again; take 2's exports stay byte-identical, and each take's frames are its
    own original frames, by content."""
    videos = {
        "take1": numbered_video(tmp_path / "take1.mkv", take=1, n=12),
        "take2": numbered_video(tmp_path / "take2.mkv", take=0, n=9),
    }
    tasks = {take: import_take(ls, path) for take, path in videos.items()}
    assert [ls.tasks[t]["data"]["segment_frames"] for t in tasks["take1"]] == [[6, 6, 2]] * 3
    assert [ls.tasks[t]["data"]["segment_frames"] for t in tasks["take2"]] == [[6, 4]] * 2
    assert {ls.tasks[t]["data"]["take"] for t in tasks["take2"]} == {"take2"}

    jobs = [submit(ls, queue, task, i + 1) for i, task in enumerate(tasks["take1"] + tasks["take2"])]
    work(settings, redis_conn)
    assert [queue.status(j)["status"] for j in jobs] == ["finished"] * len(jobs)

    out = settings.results_root / f"project_{GS}" / "greenscreen"
    assert sorted(p.name for p in out.iterdir()) == ["take1", "take2"]  # nothing in the shared folder
    for take, n in (("take1", 12), ("take2", 9)):
        names = sorted(p.name for p in (out / take).glob("frame_*_masked.png"))
        assert names == [f"frame_{i:06d}_masked.png" for i in range(n)], take
    before = files_of(out / "take2", ls.root / "segments" / "take2")
    assert any("overlay" in name for name in before) and any(name.endswith("quality.json") for name in before)

    # one segment of take 1 again, with another click
    again = submit(ls, queue, tasks["take1"][1], 101, x=30.0, y=70.0)
    work(settings, redis_conn)
    status = queue.status(again)
    assert status["status"] == "finished", status
    assert status["result"]["out_dir"] == str(out / "take1")
    assert files_of(out / "take2", ls.root / "segments" / "take2") == before

    # each take's frames are exactly its own original frames (a colour per take and frame, and the
    # frame number drawn in): every pixel is the background or that very frame's pixel
    from PIL import Image

    shown = 0
    for take, video in videos.items():
        frames = decoded(video)
        other = decoded(videos["take2" if take == "take1" else "take1"])
        for i, frame in enumerate(frames):
            img = np.array(Image.open(out / take / f"frame_{i:06d}_masked.png"))
            kept = ~(img == [0, 255, 0]).all(axis=2)
            assert (img[kept] == frame[kept]).all(), (take, i)
            for j, wrong in enumerate(frames[:i] + frames[i + 1 :] + other):  # no other frame fits
                assert not kept.any() or not (img[kept] == wrong[kept]).all(), (take, i, j)
            shown += int(kept.any())
    assert shown >= 10, "the masks are empty on most frames: the content check proves little"


def test_25_fps_take_gives_a_25_fps_mp4_and_flags_in_original_frames_and_seconds(
    ls, settings, queue, redis_conn, tmp_path, monkeypatch
):
    """A 30-frame 25 fps take cut into 3 segments ([0..10], [10..20], [20..29]); the tracked
    square vanishes at original frame 25 (frame 5 of segment 2)."""
    import cv2

    monkeypatch.setattr(process_module, "get_predictor", lambda settings: ColorVideoPredictor())
    video = numbered_video(tmp_path / "clip25.mkv", take=1, n=30, square=range(25))
    tasks = import_take(ls, video, "--seconds", "0.4", "--name", "clip25")
    data = [ls.tasks[t]["data"] for t in tasks]
    assert [d["segment_frames"] for d in data] == [[11, 11, 10]] * 3
    assert [(d["first_frame"], d["last_frame"], d["fps"]) for d in data] == [
        (0, 10, 25.0),
        (10, 20, 25.0),
        (20, 29, 25.0),
    ]
    jobs = [submit(ls, queue, task, k + 1, x=(38 + 11) / W * 100, y=13 / H * 100) for k, task in enumerate(tasks)]
    work(settings, redis_conn)
    assert [queue.status(j)["status"] for j in jobs] == ["finished"] * 3

    out = settings.results_root / f"project_{GS}" / "greenscreen" / "clip25"
    mp4 = cv2.VideoCapture(str(out / "greenscreen.mp4"))
    fps, count = mp4.get(cv2.CAP_PROP_FPS), int(mp4.get(cv2.CAP_PROP_FRAME_COUNT))
    mp4.release()
    assert (fps, count) == (25.0, 30) and count / fps == pytest.approx(1.2)  # the source's 1.2 s

    report = json.loads((out / "review" / "segment_002_quality.json").read_text())
    assert report["videos"]["video1"]["fps"] == 25.0 and report["videos"]["video1"]["first_frame"] == 20
    (flag,) = report["ranges"]
    assert (flag["start"], flag["end"], flag["reasons"]) == (25, 25, ["vanished"])
    assert (flag["segment_start"], flag["segment_frame"]) == (5, 5)
    last = ls.tasks[tasks[2]]["data"]
    assert last["review_flags"] == "segment_002 · Subject 1 · frame 25 (1.00 s) · vanished"
    # the flagged frame became a page: segment frame 5, which is original frame 25
    assert last["frame_indices"][-1] == 5
    page = last["frames"][-1].split("?d=", 1)[1]
    from PIL import Image

    shown = np.array(Image.open(ls.root / page)).astype(int)  # a JPEG page
    frames = decoded(video)
    error = {i: np.abs(shown - frames[i]).mean() for i in range(len(frames))}
    assert min(error, key=error.get) == 25 and error[25] < 8
    assert [ls.tasks[t]["data"]["review_flags"] for t in tasks[:2]] == ["no flagged frames"] * 2


def test_the_same_import_twice_makes_no_duplicates(ls, tmp_path):
    video = numbered_video(tmp_path / "take1.mkv", take=1, n=12)
    first = import_take(ls, video)
    assert len(first) == 3
    again = script(ls, "import_segments.py", "--project", str(GS), "--local-root", str(ls.root),
                   "--video", str(video), "--seconds", "0.2")  # fmt: skip
    assert "already in project 2" in ok(again) and "nothing imported" in again.stdout
    assert sorted(ls.tasks) == first
    # the same video under another name is found by its content
    renamed = script(ls, "import_segments.py", "--project", str(GS), "--local-root", str(ls.root),
                     "--video", str(video), "--seconds", "0.2", "--name", "other")  # fmt: skip
    assert "take take1 is already in project 2" in ok(renamed)
    assert sorted(ls.tasks) == first and not (ls.root / "segments" / "other").exists()
    # another video under the same name is refused
    other = numbered_video(tmp_path / "x.mkv", take=0, n=12)
    line = error_line(script(ls, "import_segments.py", "--project", str(GS), "--local-root", str(ls.root),
                             "--video", str(other), "--seconds", "0.2", "--name", "take1"))  # fmt: skip
    assert "take 'take1' of project 2 holds another video" in line and "--replace" in line
    # --replace imports it again and deletes the old tasks
    replaced = script(ls, "import_segments.py", "--project", str(GS), "--local-root", str(ls.root),
                      "--video", str(other), "--seconds", "0.2", "--name", "take1", "--replace")  # fmt: skip
    assert "imported take 'take1'" in ok(replaced) and "deleted its old tasks" in replaced.stderr
    assert len(ls.tasks) == 3 and not set(ls.tasks) & set(first)
    assert [p.name for p in (ls.root / "segments").iterdir()] == ["take1"]  # no old copy left aside
    assert len(ls.storages) == 1


def test_the_same_pair_import_twice_makes_no_duplicates(ls, tmp_path):
    a, b = numbered_video(tmp_path / "a.mkv", 0, 6), numbered_video(tmp_path / "b.mkv", 1, 6)
    argv = ["--project", str(SD), "--local-root", str(ls.root), "--pair", "kitchen", str(a), str(b), "--stride", "3"]
    ok(script(ls, "import_pairs.py", *argv))
    first = sorted(ls.tasks)
    assert "skipped" in ok(script(ls, "import_pairs.py", *argv)) and sorted(ls.tasks) == first
    renamed = [*argv[:5], "desk", *argv[6:]]
    assert "'desk' is already in project 1" in ok(script(ls, "import_pairs.py", *renamed))
    assert sorted(ls.tasks) == first and not (ls.root / "pairs" / "desk").exists()
    ok(script(ls, "import_pairs.py", *argv, "--replace"))
    assert len(ls.tasks) == 1 and sorted(ls.tasks) != first


def test_wrong_config_fails_before_any_extraction_and_leaves_no_storage(ls, tmp_path):
    video = numbered_video(tmp_path / "take1.mkv", take=1, n=12)
    line = error_line(script(ls, "import_segments.py", "--project", str(SD), "--local-root", str(ls.root),
                             "--video", str(video), "--seconds", "0.2"))  # fmt: skip
    assert line == "error: project 1 is a SceneDiff project (two videos per task); use scripts/import_pairs.py"
    line = error_line(script(ls, "import_pairs.py", "--project", str(GS), "--local-root", str(ls.root),
                             "--pair", "p", str(video), str(video)))  # fmt: skip
    assert line == "error: project 2 is a green-screen project (one video per task); use scripts/import_segments.py"
    # a green-screen config that shows a task-data key the import does not make
    ls.add_project(3, GS_CONFIG.replace("</View>\n</View>", '<Text name="n" value="$notes"/></View>\n</View>'))
    line = error_line(script(ls, "import_segments.py", "--project", "3", "--local-root", str(ls.root),
                             "--video", str(video), "--seconds", "0.2"))  # fmt: skip
    assert "task data 'notes'" in line
    ls.add_project(
        4, "<View><Text name='t' value='$text'/><Choices name='c' toName='t'><Choice value='a'/></Choices></View>"
    )
    line = error_line(script(ls, "import_segments.py", "--project", "4", "--local-root", str(ls.root),
                             "--video", str(video), "--seconds", "0.2"))  # fmt: skip
    assert "project 4 has no labeling config for video annotation" in line
    assert tree(ls.root) == set() and ls.storages == {} and ls.imports == 0 and ls.tasks == {}


def test_a_storage_label_studio_refuses_is_shown_as_said_and_nothing_is_left(ls, tmp_path):
    """A --local-root outside Label Studio's document root: its own message, frames removed."""
    video = numbered_video(tmp_path / "take1.mkv", take=1, n=12)
    elsewhere = tmp_path / "not_the_root"
    elsewhere.mkdir()
    line = error_line(script(ls, "import_segments.py", "--project", str(GS), "--local-root", str(elsewhere),
                             "--video", str(video), "--seconds", "0.2"))  # fmt: skip
    assert "must start with LOCAL_FILES_DOCUMENT_ROOT" in line and "Validation error" not in line
    assert tree(elsewhere) == set() and ls.storages == {} and ls.tasks == {}


def test_a_failed_import_removes_the_storage_it_made(ls, tmp_path):
    video = numbered_video(tmp_path / "take1.mkv", take=1, n=12)
    # Label Studio accepts the storage, then refuses the tasks (here: the config changed meanwhile)
    ls.projects[GS]["label_config"] = GS_CONFIG
    real = ls._scripts_api

    def refuse_import(request, parts):
        if parts[-1:] == ["import"]:
            message = '"review_video1" key is expected in task data [id=None]'
            return {"detail": "Validation error", "validation_errors": {"non_field_errors": [message]}}, 400
        return real(request, parts)

    ls._scripts_api = refuse_import
    line = error_line(script(ls, "import_segments.py", "--project", str(GS), "--local-root", str(ls.root),
                             "--video", str(video), "--seconds", "0.2"))  # fmt: skip
    said = '"review_video1" key is expected in task data [id=None]'
    assert line == f"error: Label Studio at {ls.url} refused the request (HTTP 400: {said})"
    assert ls.storages == {} and ls.tasks == {} and tree(ls.root / "segments") == set()


def test_a_corrupt_video_is_one_line_without_ffmpeg_noise(ls, tmp_path):
    import struct

    broken = tmp_path / "broken.mp4"  # an mp4 header without its moov atom
    broken.write_bytes(struct.pack(">I", 24) + b"ftypisom" + b"\0\0\0\0" + b"isomiso2" + b"\0" * 5000)
    done = script(ls, "import_segments.py", "--project", str(GS), "--local-root", str(ls.root), "--video", str(broken))
    line = error_line(done)
    assert "broken.mp4" in line and "moov" not in done.stderr
    assert done.stderr.strip() == line


# -- smaller pieces --------------------------------------------------------------------------------
def test_job_out_dir_keys_green_screen_exports_by_take():
    from ml_backend.video.prompts import GreenScreenSpec, PromptSpec
    from ml_backend.worker.jobs import job_out_dir

    root = Path("/r")
    take = PromptSpec("greenscreen", [], greenscreen=GreenScreenSpec(0, [5], take="take2"))
    legacy = PromptSpec("greenscreen", [], greenscreen=GreenScreenSpec(0, [5]))
    pair = PromptSpec("scenediff", [])
    assert job_out_dir(root, 3, 7, take) == Path("/r/project_3/greenscreen/take2")
    assert job_out_dir(root, 3, 7, legacy) == Path("/r/project_3/greenscreen")  # imported before takes
    assert job_out_dir(root, 3, 7, pair) == Path("/r/project_3/task_7")


def test_fps_precedence_override_then_import_then_decoder():
    from types import SimpleNamespace

    from ml_backend.exporters.interface import ExportJob
    from ml_backend.video.prompts import GreenScreenSpec, PromptSpec

    source = SimpleNamespace(fps=30.0)  # a folder of frames reports 30
    spec = PromptSpec("greenscreen", [], greenscreen=GreenScreenSpec(2, [11, 11, 10], fps=25.0))
    assert ExportJob(spec, None).fps_of(source) == 25.0
    assert ExportJob(spec, None, greenscreen_fps=10.0).fps_of(source) == 10.0
    assert ExportJob(PromptSpec("greenscreen", [], greenscreen=GreenScreenSpec(0, [5])), None).fps_of(source) == 30.0
    assert ExportJob(spec, None).first_frame() == 20


def test_take_names_and_task_data_checks():
    from ml_backend.exceptions import PromptError, VideoError
    from ml_backend.labelstudio.importing import take_name
    from ml_backend.video.prompts import parse_greenscreen

    assert take_name("take_1.b-2") == "take_1.b-2"
    for bad in ("", ".hidden", "a/b", "..", "x" * 101, "täke", "review", "frame_000001_masked.png"):
        with pytest.raises(VideoError):
            take_name(bad)
    assert parse_greenscreen({"take": "t1", "fps": 25}).take == "t1"
    with pytest.raises(PromptError, match="take"):
        parse_greenscreen({"take": "../escape"})
    with pytest.raises(PromptError, match="fps"):
        parse_greenscreen({"fps": -1})


def test_label_studio_validation_messages_are_shown_as_written():
    sys.path.insert(0, str(ROOT / "scripts"))
    from _common import _detail

    body = {"id": "x", "status_code": 400, "detail": "Validation error",
            "validation_errors": {"non_field_errors": ['"review_video1" key is expected in task data [id=None]']}}  # fmt: skip
    assert _detail(body) == '"review_video1" key is expected in task data [id=None]'
    assert _detail({"path": ["Path /x does not exist"]}) == "path: Path /x does not exist"
    assert _detail({"detail": "Not found."}) == "Not found."

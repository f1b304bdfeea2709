"""End to end with the real thing: Label Studio 1.23.2, redis-server, our backend and worker.

The scripts create a SceneDiff project and import a tiny synthetic pair (12 + 10 frames,
128×96, lossless FFV1); a keypoint posted to Label Studio's interactive-annotating API comes back
from our backend as a brush mask; an annotation submitted with the SDK fires the webhook, the
worker propagates it, writes ``segments.pkl`` and posts a prediction that Label Studio then holds.

Run: ``.venv/bin/python -m pytest -m "e2e or browser" -o addopts="-ra" tests/e2e -x``
"""

from __future__ import annotations

import json
import os
import pickle
import re
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from .conftest import ROOT, stack_module, wait_for

tail = stack_module.tail

pytestmark = pytest.mark.e2e

W, H = 128, 96  # the synthetic pair's frame size (scene_pair default)
STRIDE = 5  # annotation frames: video 1 (12 frames) 0, 5, 10; video 2 (10 frames) 0, 5
TITLE = "E2E SceneDiff pair"


def run_script(stack: Any, *argv: str) -> str:
    """Run ``scripts/<argv[0]>`` with the product interpreter against the stack; its stdout."""
    env = dict(os.environ, LABEL_STUDIO_URL=stack.ls_url, LABEL_STUDIO_API_KEY=stack.token)
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / argv[0]), *argv[1:]],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, f"{argv[0]} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return done.stdout


def api(stack: Any, method: str, path: str, body: Any = None) -> Any:
    """A JSON call to Label Studio's REST API with the admin's legacy token."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        f"{stack.ls_url}{path}", data=data, method=method,
        headers={"Authorization": f"Token {stack.token}", "Content-Type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def pair(stack: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A project made by scripts/create_project.py with a pair imported by scripts/import_pairs.py."""
    from ml_backend.video.synthetic import scene_pair

    src = tmp_path_factory.mktemp("videos")
    v1, v2 = scene_pair()  # mug removed, box added, ball moved, lamp static
    p1 = v1.write(src / "before.mkv")
    p2 = v2.write(src / "after.mkv")

    out = run_script(
        stack, "create_project.py", "--title", TITLE, "--config", str(ROOT / "label_config" / "scenediff_pair.xml"),
        "--backend", stack.backend_url, "--local-root", str(stack.files_root / "pairs"),
    )  # fmt: skip
    project = int(re.search(r"^project (\d+):", out, re.M).group(1))
    out = run_script(
        stack, "import_pairs.py", "--project", str(project), "--local-root", str(stack.files_root),
        "--pair", "e2e_kitchen", str(p1), str(p2), "--stride", str(STRIDE),
    )  # fmt: skip
    tasks = json.loads(re.search(r"imported 1 pair task\(s\): (\[.*\])", out).group(1))
    backends = api(stack, "GET", f"/api/ml?project={project}")
    return {"project": project, "task": tasks[0], "ml": backends[0]["id"], "videos": (v1, v2)}


def keypoint(rid: str, image: str, page: int, x: float, y: float, label: str, positive: bool = True) -> dict:
    """A smart keypoint as Label Studio's frontend sends it (x, y in percent)."""
    return {
        "id": rid, "from_name": "kp" + image[-1], "to_name": image, "type": "keypointlabels",
        "original_width": W, "original_height": H, "image_rotation": 0, "item_index": page,
        "origin": "manual", "is_positive": positive,
        "value": {"x": x, "y": y, "width": 0.6, "keypointlabels": [label]},
    }  # fmt: skip


def brush_mask(region: dict) -> np.ndarray:
    """Decode a brush result's RLE with label-studio-sdk into an H×W bool mask."""
    from label_studio_sdk.converter.brush import decode_rle

    h, w = region["original_height"], region["original_width"]
    flat = np.asarray(decode_rle(region["value"]["rle"]))
    assert flat.size == h * w * 4, f"RLE decodes to {flat.size} bytes, not {h}×{w}×4"
    return flat.reshape(h, w, 4)[:, :, 3] > 0


def test_scripts_create_project_and_import_pair(stack_alive: Any, pair: dict[str, Any]) -> None:
    stack = stack_alive
    project = api(stack, "GET", f"/api/projects/{pair['project']}")
    assert project["title"] == TITLE
    assert project["label_config"].strip() == (ROOT / "label_config" / "scenediff_pair.xml").read_text().strip()

    backend = api(stack, "GET", f"/api/ml/{pair['ml']}")
    assert backend["url"] == stack.backend_url and backend["is_interactive"] and backend["state"] == "CO"
    assert "random-weights" in backend["model_version"]
    hooks = api(stack, "GET", f"/api/webhooks?project={pair['project']}")
    assert [h for h in hooks if h["url"] == f"{stack.backend_url}/webhook" and h["is_active"]], hooks

    data = api(stack, "GET", f"/api/tasks/{pair['task']}")["data"]
    assert data["frame_indices1"] == [0, 5, 10] and data["frame_indices2"] == [0, 5]
    assert len(data["frames1"]) == 3 and len(data["frames2"]) == 2
    assert data["video1"].startswith("/data/local-files/?d=pairs/e2e_kitchen/")
    # Label Studio serves the imported frame (local-files storage covers the folder) to the token
    request = urllib.request.Request(
        f"{stack.ls_url}{data['frames1'][1]}", headers={"Authorization": f"Token {stack.token}"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200 and response.read(3) == b"\xff\xd8\xff"  # a JPEG


def test_interactive_keypoint_comes_back_as_brush_through_label_studio(stack_alive: Any, pair: dict[str, Any]) -> None:
    stack = stack_alive
    url = f"/api/ml/{pair['ml']}/interactive-annotating"
    # a click on the lamp on page 2 (frame 5) of video 1
    answer = api(stack, "POST", url, {"task": pair["task"], "context": {"result": [
        keypoint("c1", "image1", 1, 15.0, 20.0, "Object 1")]}})  # fmt: skip
    assert "errors" not in answer, answer
    data = answer["data"]
    assert "random-weights" in data["model_version"]
    (region,) = data["result"]
    assert region["type"] == "brushlabels" and region["value"]["format"] == "rle"
    assert (region["from_name"], region["to_name"], region["item_index"]) == ("brush1", "image1", 1)
    assert (region["original_width"], region["original_height"]) == (W, H)
    assert region["value"]["brushlabels"] == ["Object 1"]
    mask = brush_mask(region)
    assert mask.shape == (H, W) and mask.any()

    # video 2, page 2: a positive and a negative point; Label Studio also sends an older point on
    # page 1 of the same label, which must be ignored (the answer is on the newest click's page)
    answer = api(stack, "POST", url, {"task": pair["task"], "context": {"result": [
        keypoint("d0", "image2", 0, 15.0, 20.0, "Object 3"),
        keypoint("d1", "image2", 1, 75.0, 30.0, "Object 3"),
        keypoint("d2", "image2", 1, 40.0, 80.0, "Object 3", positive=False)]}})  # fmt: skip
    assert "errors" not in answer, answer
    (region2,) = answer["data"]["result"]
    assert (region2["from_name"], region2["to_name"], region2["item_index"]) == ("brush2", "image2", 1)
    assert region2["value"]["brushlabels"] == ["Object 3"]
    assert brush_mask(region2).shape == (H, W)


def annotation_result() -> list[dict[str, Any]]:
    """Keypoints for three objects on frames of both videos, plus the per-pair and per-object fields."""

    def text(name: str, value: str) -> dict:
        return {"id": name, "from_name": name, "to_name": "image1", "type": "textarea", "value": {"text": [value]}}

    def choices(name: str, values: list[str]) -> dict:
        return {"id": name, "from_name": name, "to_name": "image1", "type": "choices", "value": {"choices": values}}

    return [
        keypoint("k1", "image1", 0, 15.0, 20.0, "Object 1"),  # lamp, frame 0 of video 1
        keypoint("k2", "image2", 0, 15.0, 20.0, "Object 1"),  # lamp, frame 0 of video 2
        keypoint("k3", "image1", 1, 50.0, 30.0, "Object 2"),  # mug, frame 5 of video 1
        keypoint("k4", "image1", 1, 80.0, 80.0, "Object 2", positive=False),
        keypoint("k5", "image2", 1, 75.0, 30.0, "Object 3"),  # box, frame 5 of video 2
        text("scene_type", "kitchen"),
        text("obj1_name", "lamp"),
        text("obj2_name", "mug"),
        text("obj3_name", "box"),
        {"id": "n3", "from_name": "obj3_number", "to_name": "image1", "type": "number", "value": {"number": 2}},
        choices("obj1_presence", ["in_video1", "in_video2"]),
        choices("obj2_presence", ["in_video1"]),
        choices("obj3_presence", ["in_video2"]),
        choices("obj3_deformability", ["deformable"]),
        text("comments", "e2e"),
    ]


def test_submitted_annotation_is_propagated_exported_and_predicted(stack_alive: Any, pair: dict[str, Any]) -> None:
    from label_studio_sdk.client import LabelStudio
    from pycocotools import mask as mask_utils

    from ml_backend.settings import Settings
    from ml_backend.worker.queue import JobQueue

    stack = stack_alive
    client = LabelStudio(base_url=stack.ls_url, api_key=stack.token, timeout=120)
    project, task = pair["project"], pair["task"]
    # the project asks for DAVIS and YouTube-VIS beside its SceneDiff pair: the ML backend's extra params
    extra = {"url": stack.backend_url, "project": project, "extra_params": {"exports": ["davis", "ytvis"]}}
    assert api(stack, "PATCH", f"/api/ml/{pair['ml']}", extra)["extra_params"] == extra["extra_params"]
    annotation = client.annotations.create(id=task, result=annotation_result(), lead_time=3.0)
    pair["annotation"] = annotation.id

    # the webhook (ANNOTATION_CREATED) made a job; follow it in Redis, fail fast if it fails
    queue = JobQueue.from_settings(Settings(redis_url=stack.redis_url))
    prefix = f"p{project}-t{task}-a{annotation.id}-"

    def job_state() -> dict | None:
        ids = [j for j in queue.jobs() if j.startswith(prefix)]
        return queue.status(ids[0]) if ids else None

    def check_failed() -> None:
        stack.check()
        state = job_state()
        if state and state["status"] in ("failed", "canceled", "stopped"):
            pytest.fail(
                f"job {state['id']} {state['status']}: {state.get('error')}\n{tail(stack.logs_dir / 'worker.log', 40)}"
            )

    wait_for(job_state, 30, 0.5, "the webhook to enqueue a job", on_tick=check_failed)
    out_dir = stack.results_root / f"project_{project}" / f"task_{task}"
    wait_for(lambda: (out_dir / "segments.pkl").is_file(), 600, 1, f"{out_dir}/segments.pkl", on_tick=check_failed)
    done = wait_for(lambda: (s := job_state()) and s["status"] == "finished" and s, 120, 0.5, "the job to finish",
                    on_tick=check_failed)  # fmt: skip
    assert done["result"]["prediction_regions"] > 0

    # the backend's job route tells the same
    with urllib.request.urlopen(f"{stack.backend_url}/jobs/{done['id']}", timeout=10) as response:
        info = json.loads(response.read())
    assert info["status"] == "finished"
    assert info["progress"] == {"video1": {"done": 12, "total": 12}, "video2": {"done": 10, "total": 10}}

    # segments.pkl in the SceneDiff format
    segments = pickle.loads((out_dir / "segments.pkl").read_bytes())
    assert segments["scene_type"] == "kitchen"
    assert isinstance(segments["objects"], list)
    objects = {o["original_obj_idx"]: o for o in segments["objects"]}
    assert sorted(objects) == [1, 2, 3] and all(type(k) is int for k in objects)
    assert [objects[k]["label"] for k in (1, 2, 3)] == ["lamp_1", "mug_1", "box_2"]
    assert [(objects[k]["in_video1"], objects[k]["in_video2"]) for k in (1, 2, 3)] == [
        (True, True), (True, False), (False, True)]  # fmt: skip
    assert objects[3]["deformability"] == "deformable" and objects[1]["deformability"] == "rigid"
    assert set(segments["video1_objects"]) <= {1, 2} and set(segments["video2_objects"]) <= {1, 3}
    n_masks = 0
    for video, frames in (("video1_objects", 12), ("video2_objects", 10)):
        for per_frame in segments[video].values():
            for key, rle in per_frame.items():
                assert isinstance(key, str) and 0 <= int(key) < frames
                assert rle["size"] == [H, W] and isinstance(rle["counts"], str)
                assert mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()}).shape == (H, W)
                n_masks += 1
    assert n_masks > 0
    assert (out_dir / "inference_data.pkl").is_file()
    assert len(list((out_dir / "davis" / "video1").glob("*.png"))) == 12  # the project's own choice
    assert len(list((out_dir / "davis" / "video2").glob("*.png"))) == 10
    ytvis = json.loads((out_dir / "ytvis.json").read_text())
    assert [v["length"] for v in ytvis["videos"]] == [12, 10] and len(ytvis["annotations"]) == 4

    # the prediction is on the task in Label Studio
    def job_prediction() -> Any:
        return [p for p in client.predictions.list(task=task) if "-job-" in (p.model_version or "")]

    (prediction,) = wait_for(job_prediction, 60, 1, "the worker's prediction on the task")
    assert done["id"] in prediction.model_version and "random-weights" in prediction.model_version
    assert len(prediction.result) == done["result"]["prediction_regions"]
    data = api(stack, "GET", f"/api/tasks/{task}")["data"]  # flagged frames were appended as pages
    pages = {"image1": len(data["frames1"]), "image2": len(data["frames2"])}
    for region in prediction.result:
        assert region["type"] == "brushlabels" and region["value"]["format"] == "rle"
        assert region["from_name"] == "brush" + region["to_name"][-1]
        assert 0 <= region["item_index"] < pages[region["to_name"]]
        label = region["value"]["brushlabels"][0]
        assert label in {"image1": {"Object 1", "Object 2"}, "image2": {"Object 1", "Object 3"}}[region["to_name"]]
        assert brush_mask(region).shape == (H, W)


def served(stack: Any, url: str) -> bytes:
    """What Label Studio serves at a task-data URL to the admin's token (local-files storage)."""
    request = urllib.request.Request(f"{stack.ls_url}{url}", headers={"Authorization": f"Token {stack.token}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200
        return response.read()


def new_job(stack: Any, prefix: str, known: set[str], status: str = "finished") -> dict:
    """Wait for a job whose id starts with ``prefix`` and is not in ``known`` to reach ``status``."""
    from ml_backend.settings import Settings
    from ml_backend.worker.queue import JobQueue

    queue = JobQueue.from_settings(Settings(redis_url=stack.redis_url))

    def state() -> dict | None:
        stack.check()
        for job_id in queue.jobs():
            if job_id.startswith(prefix) and job_id not in known:
                s = queue.status(job_id)
                if s and s["status"] in ("failed", "finished") and s["status"] != status:
                    pytest.fail(
                        f"job {job_id} {s['status']}: {s.get('error')}\n{tail(stack.logs_dir / 'worker.log', 40)}"
                    )
                if s and s["status"] == status:
                    return s
        return None

    return wait_for(state, 600, 1, f"a new job {prefix}… to be {status}")


def job_ids(stack: Any) -> set[str]:
    from ml_backend.settings import Settings
    from ml_backend.worker.queue import JobQueue

    return set(JobQueue.from_settings(Settings(redis_url=stack.redis_url)).jobs())


def test_review_in_label_studio_state_flagged_pages_video_and_correction(
    stack_alive: Any, pair: dict[str, Any]
) -> None:
    """After the job: the state columns, flagged frames appended as pages with masks in the
    prediction, the overlay video and preview served by Label Studio; then a correction on an
    appended page re-propagates with it as a prompt, and a broken update shows its reason."""
    from label_studio_sdk.client import LabelStudio

    stack = stack_alive
    client = LabelStudio(base_url=stack.ls_url, api_key=stack.token, timeout=120)
    project, task = pair["project"], pair["task"]
    assert "annotation" in pair, "runs after test_submitted_annotation_is_propagated_exported_and_predicted"
    data = wait_for(lambda: (d := api(stack, "GET", f"/api/tasks/{task}")["data"]).get("job_state") == "done" and d,
                    120, 1, "job_state=done on the task")  # fmt: skip
    assert data["job_progress"] == 100 and data["job_error"] == ""
    assert isinstance(data["flagged_ranges"], int) and data["flagged_ranges"] > 0  # thresholds: conftest
    assert isinstance(data["lowest_score"], float) and 0.0 <= data["lowest_score"] <= 1.0  # SAM 2 object scores
    assert len(data["frames1"]) == len(data["frame_indices1"]) > 3  # pages appended after 0, 5, 10
    assert data["frame_indices1"][:3] == [0, 5, 10] and len(set(data["frame_indices1"])) == len(data["frames1"])
    for url in data["frames1"][3:]:
        assert served(stack, url)[:3] == b"\xff\xd8\xff"  # a JPEG, served by Label Studio
    assert served(stack, data["review_video1"])[:4] == b"\x1a\x45\xdf\xa3"  # WebM (EBML)
    assert served(stack, data["review_video2"])[:4] == b"\x1a\x45\xdf\xa3"
    assert served(stack, data["preview"])[:8] == b"\x89PNG\r\n\x1a\n"
    assert "video1 · " in data["review_flags"]

    (prediction,) = [p for p in client.predictions.list(task=task) if "-job-" in (p.model_version or "")]
    appended = {r["item_index"] for r in prediction.result if r["to_name"] == "image1" and r["item_index"] >= 3}
    assert appended, "the prediction has masks on the appended pages"
    assert 0.0 < prediction.score <= 1.0

    # the reviewer corrects object 1 on the first appended page of video 1, then Update
    page = min(appended)
    frame = data["frame_indices1"][page]
    result = [*annotation_result(), keypoint("fix", "image1", page, 15.0, 20.0, "Object 1")]
    prefix = f"p{project}-t{task}-a{pair['annotation']}-"
    known = job_ids(stack)
    client.annotations.update(id=pair["annotation"], result=result)
    new_job(stack, prefix, known)
    out_dir = stack.results_root / f"project_{project}" / f"task_{task}"
    inference = pickle.loads((out_dir / "inference_data.pkl").read_bytes())["video1"]
    lamp = {obj_id: idx for idx, obj_id in inference["obj_idx_to_id"].items()}[1]
    assert frame in inference["point_inputs_per_obj"][lamp]  # the correction is a prompted frame
    after = api(stack, "GET", f"/api/tasks/{task}")["data"]
    assert after["job_state"] == "done"
    assert after["frame_indices1"][: len(data["frame_indices1"])] == data["frame_indices1"]
    assert len(set(after["frame_indices1"])) == len(after["frame_indices1"])  # nothing appended twice

    # an update that cannot be propagated: object 3 marked present in video 1 without a point there
    broken = [r for r in result if r["id"] != "obj3_presence"] + [
        {"id": "obj3_presence", "from_name": "obj3_presence", "to_name": "image1", "type": "choices",
         "value": {"choices": ["in_video1", "in_video2"]}}]  # fmt: skip
    known = job_ids(stack)
    client.annotations.update(id=pair["annotation"], result=broken)
    new_job(stack, prefix, known, status="failed")
    failed = wait_for(lambda: (d := api(stack, "GET", f"/api/tasks/{task}")["data"])["job_state"] == "failed" and d,
                      60, 1, "job_state=failed on the task")  # fmt: skip
    assert "object 3 is marked present in video1" in failed["job_error"]


def test_stack_module_reports_a_missing_checkpoint(tmp_path: Path) -> None:
    """``stack.py`` turns the backend's refusal into the download hint (no Label Studio needed)."""
    config = stack_module.StackConfig(state_dir=tmp_path, checkpoint=str(tmp_path / "missing.pt"), backend_port=None)
    stack = stack_module.Stack(config, say=lambda msg: None)
    stack.backend_port = stack_module.free_port()
    stack.redis_port = stack_module.free_port()
    stack.ls_port = stack_module.free_port()
    stack._credentials()
    try:
        stack.start_backend()
        with pytest.raises(stack_module.StackError) as excinfo:
            stack.wait_backend(timeout=120)
    finally:
        stack.stop()
    assert "download_checkpoints.py" in str(excinfo.value) and "SAM2_CHECKPOINT=random" in str(excinfo.value)

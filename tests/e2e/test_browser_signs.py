"""Review and correct as an annotator does it, in Label Studio 1.23.2 and headless Chromium:
an Alt+click stays a negative point through Submit, reopen + correction + Update, and one more
Update; a page left open while a newer job publishes keeps working; and neither log shows an
error over the whole session.

What Label Studio 1.23.2 does (checked here): the keypoints of a reopened annotation are loaded
without their sign, so Update saves them without ``is_positive`` and the next smart click sends
them without it; the backend restores the sign it recorded (:mod:`ml_backend.labelstudio.signs`).

Run: ``.venv/bin/python -m pytest -m "e2e or browser" -o addopts="-ra" tests/e2e/test_browser_signs.py -x``
(``E2E_STACK_DIR=<dir>`` attaches to a stack started with ``scripts/stack.py up``).
"""

from __future__ import annotations

import pickle
import re
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from . import test_browser as tb
from .conftest import wait_for

pytestmark = pytest.mark.browser

# the browser fixtures of tests/e2e/test_browser.py (a logged-in Chromium context, a page per test)
browser_context, page, ui_stack = tb.browser_context, tb.page, tb.ui_stack

#: What an error looks like in either log (Label Studio's, and the backend's access and app log).
LS_ERRORS = re.compile(r"incorrect response|Prediction not created|incorrect prediction")
BACKEND_ERRORS = re.compile(r"(rejected|failed) POST /predict|\"POST /predict HTTP/1\.[01]\" [45]\d\d|unexpected error")


class LogWatch:
    """Lines added to the stack's logs since it was made."""

    def __init__(self, stack: Any) -> None:
        self.paths = {"label-studio": stack.logs_dir / "label-studio.log", "backend": stack.logs_dir / "backend.log"}
        self.start = {name: self._size(path) for name, path in self.paths.items()}

    @staticmethod
    def _size(path: Path) -> int:
        return path.stat().st_size if path.exists() else 0

    def new(self, name: str) -> list[str]:
        with open(self.paths[name], "rb") as f:
            f.seek(self.start[name])
            return f.read().decode(errors="replace").splitlines()

    def errors(self) -> dict[str, list[str]]:
        return {
            "label-studio": [line for line in self.new("label-studio") if LS_ERRORS.search(line)],
            "backend": [line for line in self.new("backend") if BACKEND_ERRORS.search(line)],
        }


def new_pair_task(stack: Any) -> tuple[int, int]:
    """A fresh synthetic SceneDiff pair in the demo project (its own folder of frames)."""
    from ml_backend.labelstudio.automation import import_tasks
    from ml_backend.labelstudio.importing import pair_task
    from ml_backend.video.synthetic import scene_pair

    project = stack.demo["scenediff"]["project"]
    name = f"signs_{uuid.uuid4().hex[:8]}"
    v1, v2 = scene_pair(num_frames=(30, 24), size1=(240, 320))
    folder = stack.demo_dir
    folder.mkdir(parents=True, exist_ok=True)
    data = pair_task(v1.write(folder / f"{name}_1.mkv"), v2.write(folder / f"{name}_2.mkv"), stack.files_root, name,
                     stride=10)  # fmt: skip
    (task,) = import_tasks(stack.client(), project, [data])
    return project, task


def job_ids(stack: Any) -> set[str]:
    from ml_backend.settings import Settings
    from ml_backend.worker.queue import JobQueue

    return set(JobQueue.from_settings(Settings(redis_url=stack.redis_url)).jobs())


def wait_job(stack: Any, project: int, task: int, known: set[str]) -> dict:
    """The next job of ``task`` (not in ``known``) once finished; fails at once if it fails."""
    from ml_backend.settings import Settings
    from ml_backend.worker.queue import JobQueue

    queue = JobQueue.from_settings(Settings(redis_url=stack.redis_url))
    prefix = f"p{project}-t{task}-"

    def finished() -> dict | None:
        stack.check()
        for job_id in queue.jobs():
            if job_id.startswith(prefix) and job_id not in known:
                state = queue.status(job_id)
                if state and state["status"] == "failed":
                    pytest.fail(f"job {job_id} failed: {state.get('error')}")
                if state and state["status"] == "finished" and state["result"].get("status") == "done":
                    return state
        return None

    return wait_for(finished, 600, 1, f"a new job of task {task}")


def point_labels(stack: Any, project: int, task: int, obj: int = 1) -> dict[int, list[int]]:
    """``{frame: labels}`` of object ``obj`` in video 1 of the task's ``inference_data.pkl``."""
    path = stack.results_root / f"project_{project}" / f"task_{task}" / "inference_data.pkl"
    video1 = pickle.loads(path.read_bytes())["video1"]
    idx = {obj_id: i for i, obj_id in video1["obj_idx_to_id"].items()}[obj]
    return {f: [int(v) for v in np.asarray(p["point_labels"]).reshape(-1)]
            for f, p in video1["point_inputs_per_obj"][idx].items()}  # fmt: skip


def open_task(page: Any, stack: Any, project: int, task: int) -> None:
    tb.open_task(page, stack, project, task)
    assert not page.get_by_text("Errors in the configuration").count()


def smart_click(page: Any, label: str, x: float, y: float, *, alt: bool = False) -> dict:
    """Auto-Annotation on, ``label`` selected, the smart keypoint tool of image 1 active, a click
    at (x, y) (fractions of the image shown); returns the context sent and Label Studio's answer."""
    toolbar = page.locator(".lsf-toolbar").nth(0)
    if not toolbar.locator("button.lsf-tool_smart").count():
        page.get_by_text("Auto-Annotation", exact=True).click()
        toolbar.locator("button.lsf-tool_smart").first.wait_for()
    page.get_by_text(label, exact=True).nth(0).click()
    smart = toolbar.locator("button.lsf-tool_smart[aria-label='key-point-tool']").first
    if "lsf-tool_active" not in (smart.get_attribute("class") or ""):
        toolbar.locator("button.lsf-tool_smart").first.click()
        if "lsf-tool_active" not in (smart.get_attribute("class") or ""):
            smart.click(force=True)
    box = page.locator(".konvajs-content").nth(0).bounding_box()
    with page.expect_response(lambda r: "/interactive-annotating" in r.url, timeout=120_000) as info:
        if alt:
            page.keyboard.down("Alt")
        page.mouse.click(box["x"] + box["width"] * x, box["y"] + box["height"] * y)
        if alt:
            page.keyboard.up("Alt")
    response = info.value
    answer = response.json()
    assert response.status == 200 and "errors" not in answer, answer
    return {"context": response.request.post_data_json["context"]["result"], "data": answer["data"]}


def save(page: Any, button: str) -> None:
    """Press Submit or Update and wait for Label Studio to store the annotation."""
    with page.expect_response(
        lambda r: re.search(r"/api/(tasks/\d+/)?annotations", r.url) and r.request.method in ("POST", "PATCH")
    ):
        # the Update button's accessible name is "submit" (aria-label): find it by its text
        page.locator("button").filter(has_text=re.compile(rf"^\s*{button}\s*$")).first.click()


def direct_mask(stack: Any, task: int, context: list[dict], signs: list[bool]) -> np.ndarray:
    """The backend's mask for ``context`` with explicit ``signs``, asked for another task id (so
    nothing is recorded for the task under test); the images come from the task's data."""
    import json

    data = stack.client().tasks.get(id=task).data
    regions = [dict(r, is_positive=s, id=f"direct-{i}") for i, (r, s) in enumerate(zip(context, signs, strict=True))]
    body = {
        "tasks": [{"id": 10**9 + task, "data": data, "annotations": [], "predictions": [], "drafts": []}],
        "project": str(stack.demo["scenediff"]["project"]),
        "label_config": stack.client().projects.get(id=stack.demo["scenediff"]["project"]).label_config,
        "params": {"login": None, "password": None, "context": {"result": regions}},
    }
    request = urllib.request.Request(f"{stack.backend_url}/predict", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})  # fmt: skip
    with urllib.request.urlopen(request, timeout=120) as response:
        (region,) = json.loads(response.read())["results"][0]["result"]
    return tb.decode(region)


@pytest.mark.timeout(1500)  # three propagation jobs of the demo pair on a loaded CPU
def test_alt_click_stays_negative_through_submit_and_two_updates(page: Any, ui_stack: Any) -> None:
    """Two clicks and an Alt+click on frame 0, Submit → job 1; reopen, a preview click on frame 0
    (the old negative still negative), a correction on an appended page, Update → job 2; reopen,
    Update once more → job 3. Every job: the Alt+click labelled 0, every other point 1. Over the
    whole session neither log holds an error line."""
    stack = ui_stack
    logs = LogWatch(stack)
    project, task = new_pair_task(stack)

    open_task(page, stack, project, task)
    sent = [smart_click(page, "Object 1", 0.15, 0.2), smart_click(page, "Object 1", 0.2, 0.25)]
    sent.append(smart_click(page, "Object 1", 0.5, 0.6, alt=True))
    assert [r.get("is_positive") for r in sent[-1]["context"]] == [True, True, False]
    known = job_ids(stack)
    save(page, "Submit")
    first = wait_job(stack, project, task, known)
    assert point_labels(stack, project, task)[0] == [1, 1, 0]
    assert first["result"]["signs"]["unknown"] == 0
    (annotation,) = stack.client().annotations.list(id=task)
    assert [r.get("is_positive") for r in annotation.result if r["type"] == "keypointlabels"] == [True, True, False]

    # reopen: Label Studio sends the old points without their sign; the preview keeps the negative
    open_task(page, stack, project, task)
    preview = smart_click(page, "Object 1", 0.3, 0.3)
    old = [r for r in preview["context"] if r["id"] != preview["context"][-1]["id"]]
    assert len(old) == 3 and all("is_positive" not in r for r in old), preview["context"]
    shown = tb.decode(preview["data"]["result"][0])
    assert (shown == direct_mask(stack, task, preview["context"], [True, True, False, True])).all()
    assert (shown != direct_mask(stack, task, preview["context"], [True, True, True, True])).any(), (
        "random weights gave the same mask with the Alt+click positive: the check above proves nothing"
    )

    # a correction on the last appended (flagged) page of video 1, then Update
    data = stack.client().tasks.get(id=task).data
    n = len(data["frames1"])
    assert n > 3, data["frame_indices1"]
    indicator = page.locator(".lsf-pagination__page-indicator").first
    page.locator(".lsf-pagination__btn_arrow-right-double").first.click()
    wait_for(lambda: indicator.inner_text().strip() == f"{n} of {n}", 30, 0.5, f"page {n} of {n}")
    time.sleep(1)
    correction = smart_click(page, "Object 1", 0.15, 0.2)
    assert correction["context"][-1]["item_index"] == n - 1
    known = job_ids(stack)
    save(page, "Update")
    second = wait_job(stack, project, task, known)
    labels = point_labels(stack, project, task)
    assert labels[0] == [1, 1, 0, 1] and labels[data["frame_indices1"][n - 1]] == [1], labels
    assert second["result"]["signs"]["unknown"] == 0 and second["result"]["signs"]["recorded"] >= 3
    (annotation,) = stack.client().annotations.list(id=task)
    flags = [r.get("is_positive") for r in annotation.result if r["type"] == "keypointlabels"]
    assert flags.count(None) >= 3, flags  # what Label Studio 1.23.2 saved: the earlier points unsigned

    # reopen and Update once more (a scene type typed, so there is something to save)
    open_task(page, stack, project, task)
    scene = page.get_by_placeholder("e.g. kitchen").first
    scene.fill("kitchen")
    scene.press("Enter")
    known = job_ids(stack)
    save(page, "Update")
    third = wait_job(stack, project, task, known)
    labels = point_labels(stack, project, task)
    assert labels[0] == [1, 1, 0, 1] and labels[data["frame_indices1"][n - 1]] == [1], labels
    assert third["result"]["signs"]["unknown"] == 0
    (annotation,) = stack.client().annotations.list(id=task)
    print("is_positive saved after the third save:",
          [r.get("is_positive") for r in annotation.result if r["type"] == "keypointlabels"])  # fmt: skip

    errors = logs.errors()
    assert errors == {"label-studio": [], "backend": []}, errors
    assert any("POST /predict" in line for line in logs.new("backend"))  # the calls were made and logged
    assert not page.js_errors, page.js_errors


def served_status(stack: Any, url: str) -> int:
    request = urllib.request.Request(f"{stack.ls_url}{url}", headers={"Authorization": f"Token {stack.token}"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_a_page_left_open_while_a_newer_job_publishes_keeps_working(page: Any, ui_stack: Any) -> None:
    """A task page opened after job 1 still plays job 1's overlay video after job 2 published
    (no "error rendering your video" dialog), and takes clicks; a reload shows job 2's video."""
    stack = ui_stack
    logs = LogWatch(stack)
    project, task = new_pair_task(stack)
    client = stack.client()
    point = {"id": "p1", "from_name": "kp1", "to_name": "image1", "type": "keypointlabels", "original_width": 320,
             "original_height": 240, "image_rotation": 0, "item_index": 0, "is_positive": True,
             "value": {"x": 15.0, "y": 20.0, "width": 0.6, "keypointlabels": ["Object 1"]}}  # fmt: skip
    known = job_ids(stack)
    annotation = client.annotations.create(id=task, result=[point])
    wait_job(stack, project, task, known)
    old_video = client.tasks.get(id=task).data["review_video1"]
    assert old_video.endswith(".webm")

    open_task(page, stack, project, task)
    page.wait_for_function("() => { const v = document.querySelector('video'); return v && v.readyState >= 1; }")

    known = job_ids(stack)
    client.annotations.update(
        id=annotation.id, result=[point, dict(point, id="p2", value={**point["value"], "x": 18.0})]
    )
    wait_job(stack, project, task, known)
    new_video = client.tasks.get(id=task).data["review_video1"]
    assert new_video != old_video
    assert served_status(stack, old_video) in (200, 206), "the newer job deleted the video the open page shows"

    # the open page: seek and play the old video, page through the frames, click
    page.evaluate("""() => { const v = document.querySelector('video'); v.muted = true;
                            v.currentTime = Math.max(0, (v.duration || 1) / 2); return v.play().catch(() => {}); }""")
    page.wait_for_function("() => document.querySelector('video').readyState >= 2", timeout=30_000)
    page.locator(".lsf-pagination__btn_arrow-right").first.click()
    time.sleep(2)
    assert not page.get_by_text("error rendering your video").count(), "Label Studio's video error dialog"
    assert not page.locator(".ant-modal:visible, .lsf-modal:visible").count()
    answer = smart_click(page, "Object 2", 0.6, 0.6)
    assert answer["data"]["result"], "the page no longer takes clicks"
    assert page.evaluate("() => document.querySelector('video').error") is None

    open_task(page, stack, project, task)  # a reload shows the new video
    src = page.evaluate("() => document.querySelector('video').currentSrc")
    assert new_video.split("?d=")[1].replace("/", "%2F") in src or new_video.split("?d=")[1] in src, src
    errors = logs.errors()
    assert errors == {"label-studio": [], "backend": []}, errors
    assert not page.js_errors, page.js_errors

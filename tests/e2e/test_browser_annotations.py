"""Several annotations, Updates, deletions and failures as people see them, in Label Studio
1.23.2 and headless Chromium against the real stack (:mod:`ml_backend.worker.lifecycle`).

Each test makes its own small SceneDiff pair (12 + 10 frames, pages every 5 frames) in a project
with the current ``label_config/scenediff_pair.xml`` and checks, besides the screen, the task's
predictions, its job columns and the files on disk.

Run: ``.venv/bin/python -m pytest -m "e2e or browser" -o addopts="-ra" tests/e2e/test_browser_annotations.py -x``
(``E2E_STACK_DIR=<dir>`` attaches to a stack started with ``scripts/stack.py up``).
"""

from __future__ import annotations

import re
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from . import test_browser as tb
from .conftest import ROOT, wait_for

pytestmark = pytest.mark.browser

browser_context, page, ui_stack = tb.browser_context, tb.page, tb.ui_stack

TITLE = "Several annotations (e2e)"


@pytest.fixture(scope="module")
def project(browser_context: Any, request: pytest.FixtureRequest) -> int:
    """A SceneDiff project with the current config, the backend and its webhook, local files."""
    from ml_backend.labelstudio.automation import connect_backend, ensure_local_storage, ensure_project

    stack = request.getfixturevalue("stack")
    client = stack.client()
    config = (ROOT / "label_config" / "scenediff_pair.xml").read_text()
    made = ensure_project(client, TITLE, config)
    if made.label_config.strip() != config.strip():
        client.projects.update(id=made.id, label_config=config)
    connect_backend(client, made.id, stack.backend_url)
    (stack.files_root / "pairs").mkdir(parents=True, exist_ok=True)
    ensure_local_storage(client, made.id, stack.files_root / "pairs")
    return made.id


def new_task(stack: Any, project: int, *, broken_video: bool = False) -> tuple[int, str]:
    """A fresh small pair (its own folder of frames); ``broken_video``: video1 is a text file."""
    from ml_backend.labelstudio.automation import import_tasks
    from ml_backend.labelstudio.importing import pair_task
    from ml_backend.video.synthetic import scene_pair

    name = f"ann_{uuid.uuid4().hex[:8]}"
    v1, v2 = scene_pair(num_frames=(12, 10), size1=(240, 320))
    folder = stack.demo_dir
    folder.mkdir(parents=True, exist_ok=True)
    data = pair_task(v1.write(folder / f"{name}_1.mkv"), v2.write(folder / f"{name}_2.mkv"), stack.files_root, name,
                     stride=5)  # fmt: skip
    if broken_video:
        bad = stack.files_root / "pairs" / name / "video1.mp4"
        bad.write_text("not a video")
        data["video1"] = "/data/local-files/?d=" + bad.relative_to(stack.files_root).as_posix()
    (task,) = import_tasks(stack.client(), project, [data])
    return task, name


def keypoint(x: float, y: float, rid: str = "p1", label: str = "Object 1") -> dict:
    return {"id": rid, "from_name": "kp1", "to_name": "image1", "type": "keypointlabels", "original_width": 320,
            "original_height": 240, "image_rotation": 0, "item_index": 0, "is_positive": True,
            "value": {"x": x, "y": y, "width": 0.6, "keypointlabels": [label]}}  # fmt: skip


def queue(stack: Any) -> Any:
    from ml_backend.settings import Settings
    from ml_backend.worker.queue import JobQueue

    return JobQueue.from_settings(Settings(redis_url=stack.redis_url))


def job_of(stack: Any, project: int, task: int, annotation: int, known: set[str] = frozenset()) -> str:
    prefix = f"p{project}-t{task}-a{annotation}-"
    return wait_for(lambda: next((j for j in queue(stack).jobs() if j.startswith(prefix) and j not in known), None),
                    120, 0.5, f"a job of annotation {annotation}")  # fmt: skip


def wait_status(stack: Any, job_id: str, want: str = "done", timeout: float = 600) -> dict:
    """The job's status once finished with result ``want`` (fails at once if it failed)."""
    jobs = queue(stack)

    def check() -> dict | None:
        stack.check()
        state = jobs.status(job_id)
        if state and state["status"] == "failed":
            pytest.fail(f"job {job_id} failed: {state.get('error')}")
        if state and state["status"] == "finished":
            assert state["result"]["status"] == want, state["result"]
            return state
        return None

    return wait_for(check, timeout, 1, f"job {job_id} to finish")


def wait_running(stack: Any, job_id: str) -> None:
    jobs = queue(stack)
    wait_for(lambda: (s := jobs.status(job_id)) and s["status"] == "started" and s["frames"]["done"] > 0,
             600, 0.3, f"job {job_id} to be propagating")  # fmt: skip


def data(stack: Any, task: int) -> dict:
    return dict(stack.client().tasks.get(id=task).data)


def predictions(stack: Any, task: int) -> list[Any]:
    return list(stack.client().predictions.list(task=task))


def of_annotation(preds: list[Any], annotation: int) -> list[Any]:
    return [p for p in preds if re.search(rf"-t\d+-a{annotation}-[0-9a-f]+$", p.model_version or "")]


def task_dir(stack: Any, project: int, task: int) -> Path:
    return stack.results_root / f"project_{project}" / f"task_{task}"


def annotation_dir(stack: Any, project: int, task: int, annotation: int) -> Path:
    from ml_backend.worker.records import annotation_dir as folder

    return folder(stack.results_root, project, task, annotation)


def exported(folder: Path) -> dict[str, int]:
    """``{name: inode}`` of the SceneDiff files a folder holds (resolved through its links)."""
    out = {}
    for name in ("segments.pkl", "inference_data.pkl"):
        path = folder / name
        if path.exists():
            out[name] = path.resolve().stat().st_ino
    return out


def shown_message(page: Any) -> str:
    """The job_message Text as the labeling screen shows it (not the Data Manager's column)."""
    node = message_box(page)
    node.wait_for(state="visible", timeout=30_000)
    return node.inner_text()


def message_box(page: Any) -> Any:
    """The job_message ``<Text>`` in the labeling area (a ``.lsf-richtext``, one span a line)."""
    return page.locator(".lsf-main-view .lsf-richtext").filter(has_text="Rule: each annotation").first


def delete_in_ui(page: Any) -> None:
    """⋮ → Delete annotation on the open annotation tab, confirmed; waits for Label Studio."""
    page.locator(".lsf-annotation-button_selected .lsf-annotation-button__trigger").first.click()
    with page.expect_response(lambda r: "/api/annotations/" in r.url and r.request.method == "DELETE"):
        page.get_by_text(re.compile(r"^Delete Annotation$", re.I)).first.click()
        page.locator("[class*='modal'] button").filter(has_text=re.compile(r"^\s*Delete\s*$")).first.click()


def assert_all_gone(stack: Any, project: int, task: int, annotation: int) -> dict:
    """Nothing of ``annotation`` left: prediction, exports, its folder; columns say deleted."""

    def settled() -> dict | None:
        d = data(stack, task)
        return d if f"Annotation {annotation}: deleted" in d.get("job_message", "") else None

    d = wait_for(settled, 120, 0.5, f"annotation {annotation} to be marked deleted")
    assert of_annotation(predictions(stack, task), annotation) == []
    assert not annotation_dir(stack, project, task, annotation).exists()
    hidden = [p for p in (stack.results_root / f"project_{project}").rglob(".*") if ".removed-" in p.name]
    assert hidden == [], hidden
    return d


def test_deleting_a_finished_annotation_removes_its_results(page: Any, ui_stack: Any, project: int) -> None:
    stack = ui_stack
    task, _ = new_task(stack, project)
    annotation = stack.client().annotations.create(id=task, result=[keypoint(20.0, 20.0)])
    wait_status(stack, job_of(stack, project, task, annotation.id))
    before = data(stack, task)
    assert before["job_state"] == "done" and before["review_video1"], before
    assert len(of_annotation(predictions(stack, task), annotation.id)) == 1
    assert exported(task_dir(stack, project, task)) == exported(annotation_dir(stack, project, task, annotation.id))
    assert len(exported(task_dir(stack, project, task))) == 2

    tb.open_task(page, stack, project, task)
    assert f"Annotation {annotation.id}: done · the task's result" in shown_message(page)
    delete_in_ui(page)
    d = assert_all_gone(stack, project, task, annotation.id)
    assert not task_dir(stack, project, task).exists(), "the task's export folder still holds the deleted result"
    assert d["job_state"] == "deleted" and d["review_video1"] == "" and d["preview"] == "", d
    assert predictions(stack, task) == []
    tb.open_task(page, stack, project, task)
    assert f"Annotation {annotation.id}: deleted" in shown_message(page)


def test_deleting_an_annotation_while_its_job_runs_publishes_nothing(page: Any, ui_stack: Any, project: int) -> None:
    stack = ui_stack
    client = stack.client()
    task, _ = new_task(stack, project)
    annotation = client.annotations.create(id=task, result=[keypoint(20.0, 20.0)])
    job_id = job_of(stack, project, task, annotation.id)
    wait_running(stack, job_id)
    client.annotations.delete(id=annotation.id)
    deleted_at = time.time()
    state = wait_status(stack, job_id, want="superseded")
    assert "deleted" in state["result"]["reason"] or "withdrawn" in state["result"]["reason"], state["result"]
    d = assert_all_gone(stack, project, task, annotation.id)
    assert predictions(stack, task) == [], "a prediction was posted after the delete"
    assert not task_dir(stack, project, task).exists()
    assert d["job_state"] == "deleted", d
    assert stack.redis_url and queue(stack).connection.get(f"sam2:published:{job_id}") is None
    time.sleep(max(0.0, 3 - (time.time() - deleted_at)))  # anything late would show now
    assert predictions(stack, task) == [] and not task_dir(stack, project, task).exists()


def test_two_annotations_submitted_while_the_first_job_runs(page: Any, ui_stack: Any, project: int) -> None:
    """Both annotators get their own prediction and folder; the newer annotation is the task's
    result; the rule and both lines show in the labeling screen (the README's screenshot)."""
    stack = ui_stack
    client = stack.client()
    task, _ = new_task(stack, project)
    first = client.annotations.create(id=task, result=[keypoint(20.0, 20.0)])
    first_job = job_of(stack, project, task, first.id)
    wait_running(stack, first_job)
    second = client.annotations.create(id=task, result=[keypoint(60.0, 60.0, label="Object 2")])
    second_job = job_of(stack, project, task, second.id)
    a = wait_status(stack, first_job)
    b = wait_status(stack, second_job)
    assert a["result"]["primary"] is False and b["result"]["primary"] is True, (a["result"], b["result"])
    preds = predictions(stack, task)
    assert len(of_annotation(preds, first.id)) == 1 and len(of_annotation(preds, second.id)) == 1, preds
    assert exported(task_dir(stack, project, task)) == exported(annotation_dir(stack, project, task, second.id))
    assert len(exported(annotation_dir(stack, project, task, first.id))) == 2
    d = data(stack, task)
    assert d["job_state"] == "done", d
    message = d["job_message"]
    assert f"Annotation {first.id}: done · not the task's result" in message, message
    assert f"Annotation {second.id}: done · the task's result" in message, message

    tb.open_task(page, stack, project, task)
    shown = shown_message(page)
    assert f"annotation_{first.id}/" in shown and f"Annotation {second.id}: done · the task's result" in shown, shown
    message_box(page).scroll_into_view_if_needed()
    tb.shot(page, "several_annotations.png", doc="several_annotations.png")


def test_three_updates_leave_one_job_prediction(page: Any, ui_stack: Any, project: int) -> None:
    stack = ui_stack
    client = stack.client()
    task, _ = new_task(stack, project)
    annotation = client.annotations.create(id=task, result=[keypoint(20.0, 20.0)])
    known: set[str] = set()
    job_id = job_of(stack, project, task, annotation.id)
    wait_status(stack, job_id)
    for x in (25.0, 30.0, 35.0):  # three Updates, each published
        known.add(job_id)
        client.annotations.update(id=annotation.id, result=[keypoint(20.0, 20.0), keypoint(x, 40.0, rid=f"p{x:g}")])
        job_id = job_of(stack, project, task, annotation.id, known)
        wait_status(stack, job_id)
    preds = of_annotation(predictions(stack, task), annotation.id)
    assert len(preds) == 1 and preds[0].model_version.endswith(job_id), [p.model_version for p in preds]
    assert data(stack, task)["job_state"] == "done"
    assert exported(task_dir(stack, project, task)) == exported(annotation_dir(stack, project, task, annotation.id))
    tb.open_task(page, stack, project, task)
    tabs = page.locator(".lsf-annotation-button")
    assert tabs.count() == 2, "one annotation tab and one prediction tab"


def test_an_unreadable_video_shows_its_reason_in_the_labeling_screen(page: Any, ui_stack: Any, project: int) -> None:
    stack = ui_stack
    task, name = new_task(stack, project, broken_video=True)
    d = wait_for(lambda: (x := data(stack, task)).get("job_state") == "failed" and x, 120, 0.5, "the import check")
    shown_path = f"pairs/{name}/video1.mp4"
    for text in (d["job_error"], d["job_message"]):
        assert shown_path in text and text.count(shown_path) == 1, text
        assert str(stack.files_root) not in text and str(stack.state_dir) not in text, text
    tb.open_task(page, stack, project, task)
    body = page.locator("body").inner_text()
    assert "cannot be opened" in body and shown_path in body, "the reason is not in the labeling screen"
    assert str(stack.files_root) not in body
    assert predictions(stack, task) == [] and not task_dir(stack, project, task).exists()

    # annotated anyway: the job fails with the same kind of sentence, in the task itself
    annotation = stack.client().annotations.create(id=task, result=[keypoint(20.0, 20.0)])
    job_id = job_of(stack, project, task, annotation.id)
    jobs = queue(stack)
    wait_for(lambda: (s := jobs.status(job_id)) and s["status"] == "failed", 300, 1, "the job to fail")
    d = wait_for(lambda: (x := data(stack, task)).get("job_state") == "failed" and f"Annotation {annotation.id}: failed"
                 in x.get("job_message", "") and x, 60, 0.5, "the failure in the task")  # fmt: skip
    line = next(x for x in d["job_message"].splitlines() if x.startswith(f"Annotation {annotation.id}"))
    assert line.count(shown_path) == 1 and str(stack.files_root) not in line, line
    assert d["job_error"].count(shown_path) == 1 and str(stack.files_root) not in d["job_error"], d["job_error"]
    tb.open_task(page, stack, project, task)
    assert f"Annotation {annotation.id}: failed" in shown_message(page)
    assert predictions(stack, task) == [] and not task_dir(stack, project, task).exists()


MEASURE = """() => [...document.querySelectorAll('.konvajs-content')].map(k => {
  const c = k.getBoundingClientRect(), b = k.parentElement.parentElement.getBoundingClientRect();
  return {canvas: [c.width, c.height], box: [b.width, b.height]}; })"""


def test_pages_1_and_3_show_the_whole_frame_at_first_paint(page: Any, ui_stack: Any, project: int) -> None:
    """The canvas of video 1 fits its box on page 1 and, right after paging, on page 3 (Label
    Studio 1.23.2 drew pages 2+ 500×500 in a 458×343 box before the config's size bounds)."""
    stack = ui_stack
    task, _ = new_task(stack, project)
    tb.open_task(page, stack, project, task)
    indicator = page.locator(".lsf-pagination__page-indicator").first
    sizes = {}
    for number in (1, 3):
        if number == 3:
            page.locator(".lsf-pagination__btn_arrow-right-double").first.click()
            wait_for(lambda: indicator.inner_text().strip() == "3 of 3", 30, 0.2, "page 3 of 3")
            page.wait_for_function("() => document.querySelector('.konvajs-content canvas')")
            time.sleep(1.0)  # the page's image is drawn; nothing resized the window
        sizes[number] = page.evaluate(MEASURE)[0]
        canvas, box = sizes[number]["canvas"], sizes[number]["box"]
        assert canvas[0] <= box[0] + 0.5 and canvas[1] <= box[1] + 0.5, (number, sizes[number])
        assert canvas[0] >= 0.9 * box[0], (number, sizes[number])  # the frame fills its box's width
        pixels = tb.canvas_pixels(page)
        assert pixels.std() > 5, f"page {number}: the frame is not drawn"
    print("canvas vs box:", sizes)
    tb.shot(page, "pages_page3.png")

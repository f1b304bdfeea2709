"""Videos uploaded in Label Studio's Import dialog (real Label Studio 1.23.2, headless Chromium)
become annotatable tasks with no script (:mod:`ml_backend.worker.uploads`).

Green-screen: a long video uploaded into "Green-screen demo · uploads" becomes one task per 1-s
segment (the e2e stack runs with ``UPLOAD_SEGMENT_SECONDS=1``) in "Green-screen demo", with its
frames; a smart-keypoint click gives a mask, Submit gives the green-screen export. SceneDiff: two
uploads ``<scene>_1.mp4`` / ``<scene>_2.mp4`` in one Import become one pair task, annotatable,
whose job exports ``segments.pkl``. Each test prints the time from the Import click to
annotatable tasks.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from . import test_browser as tb
from . import test_browser_signs as signs
from .conftest import wait_for

# the browser fixtures of tests/e2e/test_browser.py (a logged-in Chromium context, a page per test)
browser_context, page = tb.browser_context, tb.page

pytestmark = pytest.mark.browser


@pytest.fixture
def ui_stack(page: Any, request: pytest.FixtureRequest) -> Any:
    """The session stack with an uploads project beside each demo project, made as
    ``create_project.py --uploads`` makes them (``stack.demo[kind]["uploads"]``)."""
    from ml_backend.worker.uploads import ensure_uploads_project

    stack = request.getfixturevalue("stack")
    client = stack.client()
    for kind in ("greenscreen", "scenediff"):
        project = client.projects.get(id=stack.demo[kind]["project"])
        stack.demo[kind]["uploads"] = ensure_uploads_project(client, project, kind, stack.backend_url).id
    return stack


def import_files(page: Any, stack: Any, project: int, files: list[Path]) -> float:
    """Upload ``files`` in the project's Import dialog and press Import; the time of that press."""
    page.goto(f"{stack.ls_url}/projects/{project}/data")
    page.wait_for_load_state("networkidle")
    page.get_by_role("button", name="Import").first.click()
    with page.expect_response(lambda r: "/import?commit_to_project=false" in r.url, timeout=120_000) as sent:
        page.locator("input[type=file]").first.set_input_files([str(f) for f in files])
    assert sent.value.status == 201, sent.value.text()
    page.get_by_text(f"{len(files)} files uploaded").wait_for()
    tb.shot(page, f"upload_dialog_{project}.png", doc="upload_dialog.png" if len(files) == 1 else None)
    with page.expect_response(lambda r: "/reimport" in r.url and r.request.method == "POST") as done:
        page.get_by_role("button", name="Import").last.click()  # the dialog's (the toolbar's comes first)
        pressed = time.monotonic()
    assert done.value.status in (200, 201), done.value.text()
    return pressed


def task_ids(stack: Any, project: int) -> set[int]:
    return {int(t.id) for t in stack.client().tasks.list(project=project, fields="task_only")}


def made_from(stack: Any, target: int, uploads: int, count: int, before: set[int]) -> list[tuple[int, dict]]:
    """Wait until ``count`` new tasks (not in ``before``) of ``target`` were made from uploads
    project ``uploads``."""

    def made() -> list[tuple[int, dict]] | None:
        stack.check()
        tasks = [(int(t.id), dict(t.data)) for t in stack.client().tasks.list(project=target, fields="task_only")]
        found = [(i, d) for i, d in tasks if d.get("source_project") == uploads and i not in before]
        failed = [t.data for t in stack.client().tasks.list(project=uploads, fields="task_only")
                  if (t.data or {}).get("job_state") == "failed"]  # fmt: skip
        assert not failed, failed
        return found if len(found) >= count else None

    return wait_for(made, 600, 1, f"{count} task(s) made from the uploads")


def upload_states(stack: Any, uploads: int, names: list[str]) -> dict[str, dict]:
    from ml_backend.worker.uploads import file_name

    tasks = [
        dict(t.data) for t in sorted(stack.client().tasks.list(project=uploads, fields="task_only"), key=lambda t: t.id)
    ]  # the newest upload of a name last
    return {file_name(d.get("video") or d.get("video1")): d for d in tasks
            if file_name(d.get("video") or d.get("video1")) in names}  # fmt: skip


@pytest.mark.timeout(1500)
def test_a_long_video_uploaded_becomes_segment_tasks_that_annotate_and_export(page: Any, ui_stack: Any,
                                                                             tmp_path: Path) -> None:  # fmt: skip
    from ml_backend.video.synthetic import moving_shapes

    stack = ui_stack
    target, uploads = stack.demo["greenscreen"]["project"], stack.demo["greenscreen"]["uploads"]
    seed = int(time.time()) % 1000  # new content on every run: an attached stack has seen the last one
    video = moving_shapes(num_frames=25, height=240, width=320, seed=seed).write(tmp_path / "beach_take.mp4", fps=10)
    before = task_ids(stack, target)
    pressed = import_files(page, stack, uploads, [video])
    made = sorted(made_from(stack, target, uploads, 3, before), key=lambda t: t[1]["segment_index"])
    seconds = time.monotonic() - pressed
    print(f"[uploads] green-screen: Import pressed → 3 segment tasks annotatable in {seconds:.1f} s "
          "(25 frames 320×240, 1-s segments)", flush=True)  # fmt: skip
    assert [d["segment_frames"] for _, d in made][0] == [11, 11, 5]
    assert [(d["first_frame"], d["last_frame"]) for _, d in made] == [(0, 10), (10, 20), (20, 24)]
    source = wait_for(lambda: [d for d in upload_states(stack, uploads, ["beach_take.mp4"]).values()
                               if d.get("job_state") == "ready"], 60, 0.5, "the source task's state ready")[0]  # fmt: skip
    assert f"project {target}" in source["job_message"] and str(made[0][0]) in source["job_message"]

    page.goto(f"{stack.ls_url}/projects/{uploads}/data")
    page.wait_for_selector(".lsf-table-row, .dm-table-row, [class*=table-row]")
    time.sleep(2)
    tb.shot(page, "upload_source_ready.png", doc="upload_source_ready.png")

    task = made[0][0]
    files = tb.open_task(page, stack, target, task)
    assert files and all(r.status == 200 for r in files), [(r.url, r.status) for r in files]
    assert tb.canvas_pixels(page).std() > 5, "the segment's frame is not drawn"
    click = signs.smart_click(page, "Subject 1", 0.3, 0.4)
    (region,) = click["data"]["result"]
    assert region["type"] == "brushlabels" and tb.decode(region).any()
    time.sleep(1)
    tb.shot(page, "upload_segment_click.png", doc="upload_segment_click.png")
    signs.save(page, "Submit")
    out = stack.results_root / f"project_{target}" / "greenscreen" / made[0][1]["take"]  # beach_take[-<sha>]
    wait_for(lambda: len(list(out.glob("frame_*_masked.png"))) >= 10, 900, 2, "the segment's green-screen frames")
    assert sorted(p.name for p in out.glob("frame_*_masked.png"))[0] == "frame_000000_masked.png"


@pytest.mark.timeout(1500)
def test_a_pair_uploaded_by_name_becomes_one_pair_task_that_exports_segments_pkl(page: Any, ui_stack: Any,
                                                                                  tmp_path: Path) -> None:  # fmt: skip
    from ml_backend.video.synthetic import scene_pair

    stack = ui_stack
    target, uploads = stack.demo["scenediff"]["project"], stack.demo["scenediff"]["uploads"]
    frames = 12 + int(time.time()) % 7  # new content on every run
    v1, v2 = scene_pair(num_frames=(frames, 9), size1=(240, 320), size2=(180, 240))  # other size: allowed
    files = [v1.write(tmp_path / "garage_1.mp4", fps=10), v2.write(tmp_path / "garage_2.mp4", fps=15)]
    before = task_ids(stack, target)
    pressed = import_files(page, stack, uploads, files)
    ((task, data),) = made_from(stack, target, uploads, 1, before)
    seconds = time.monotonic() - pressed
    print(f"[uploads] SceneDiff: Import pressed → pair task annotatable in {seconds:.1f} s", flush=True)
    assert data["pair"].startswith("garage") and len(data["source_tasks"]) == 2
    wait_for(lambda: {d.get("job_state") for d in upload_states(stack, uploads, ["garage_1.mp4", "garage_2.mp4"])
                      .values()} == {"ready"}, 60, 0.5, "both uploads' state ready")  # fmt: skip
    time.sleep(5)  # both uploads' jobs have run: still one pair task
    assert len(made_from(stack, target, uploads, 1, before)) == 1

    tb.open_task(page, stack, target, task)
    click = signs.smart_click(page, "Object 1", 0.15, 0.2)
    (region,) = click["data"]["result"]
    assert region["to_name"] == "image1" and tb.decode(region).any()
    signs.save(page, "Submit")
    pkl = stack.results_root / f"project_{target}" / f"task_{task}" / "segments.pkl"
    wait_for(pkl.is_file, 900, 2, "segments.pkl of the uploaded pair")

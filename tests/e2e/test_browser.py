"""The Label Studio 1.23.2 web UI in headless Chromium, against our backend.

Needs ``pip install playwright`` (into the product venv) and Debian's Chromium
(``apt-get install -y chromium``; ``npx playwright install`` cannot download browsers offline).
Screenshots go to ``artifacts/browser/``; with ``UPDATE_DOCS_IMG=1`` the ones the docs show are
also written, compressed, to ``docs/img/``.

Run: ``.venv/bin/python -m pytest -m "e2e or browser" -o addopts="-ra" tests/e2e -x``
"""

from __future__ import annotations

import io
import os
import re
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from .conftest import ARTIFACTS, ROOT, save_doc_image, wait_for

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip
SHOTS = ARTIFACTS / "browser"


@pytest.fixture(scope="module")
def browser_context(request: pytest.FixtureRequest) -> Iterator[Any]:
    """A logged-in Chromium context (fresh profile) on the session's Label Studio."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (make test-e2e does)")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM}: apt-get install -y chromium (or set CHROMIUM_PATH)")
    stack = request.getfixturevalue("stack")  # only now: the skips above cost no Label Studio start
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as p, tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        context = p.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS,
            viewport={"width": 1600, "height": 1000},
        )  # fmt: skip
        context.set_default_timeout(60_000)
        page = context.new_page()
        page.goto(f"{stack.ls_url}/user/login")
        shot(page, "login.png")
        page.fill("input[name=email]", stack.username)
        page.fill("input[name=password]", stack.password)
        page.click("button[type=submit]")
        page.wait_for_url(lambda url: "/user/login" not in url)
        page.close()
        yield context
        context.close()


@pytest.fixture
def ui_stack(page: Any, request: pytest.FixtureRequest) -> Any:
    """The session stack, asked for only after the browser fixtures (which may skip) have run:
    a session-scoped ``stack`` in a test's signature would be set up first, skip or not."""
    return request.getfixturevalue("stack")


@pytest.fixture
def page(browser_context: Any) -> Iterator[Any]:
    page = browser_context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.js_errors = errors
    yield page
    page.close()


def shot(page: Any, name: str, doc: str | None = None, **kwargs: Any) -> Path:
    path = SHOTS / name
    page.screenshot(path=str(path), **kwargs)
    if doc:
        save_doc_image(path, doc)
    return path


def open_task(page: Any, stack: Any, project: int, task: int) -> list[Any]:
    """Open the labeling screen of ``task``; returns the responses of task files Label Studio served."""
    files: list[Any] = []
    page.on("response", lambda r: files.append(r) if "/data/local-files/" in r.url else None)
    page.goto(f"{stack.ls_url}/projects/{project}/data?task={task}")
    page.wait_for_selector(".lsf-toolbar", state="attached")
    page.wait_for_selector(".konvajs-content canvas")
    page.wait_for_load_state("networkidle")
    time.sleep(1.5)  # konva paints the images after they load
    return files


def canvas_pixels(page: Any, index: int = 0) -> np.ndarray:
    """The rendered image area (``.konvajs-content``) as an RGB array."""
    from PIL import Image

    png = page.locator(".konvajs-content").nth(index).screenshot()
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(np.int16)


def decode(region: dict) -> np.ndarray:
    from label_studio_sdk.converter.brush import decode_rle

    h, w = region["original_height"], region["original_width"]
    return np.asarray(decode_rle(region["value"]["rle"])).reshape(h, w, 4)[:, :, 3] > 0


def test_both_configs_render(page: Any, ui_stack: Any) -> None:
    """Both labeling configs are accepted by Label Studio 1.23.2 and render, frames loaded."""
    stack = ui_stack
    demo = stack.demo
    cases = [
        ("scenediff", "scenediff_pair.xml", ["Video 1 (before)", "Video 2 (after)", "Object 8", "Scene type"], 2),
        ("greenscreen", "greenscreen_segment.xml", ["Subject 1", "Subject 3", "Masks (brush)"], 1),
    ]
    for key, config_file, texts, n_images in cases:
        project, task = demo[key]["project"], demo[key]["tasks"][0]
        label_config = stack.client().projects.get(id=project).label_config
        assert label_config.strip() == (ROOT / "label_config" / config_file).read_text().strip()
        files = open_task(page, stack, project, task)
        for text in texts:
            assert page.get_by_text(text, exact=True).first.is_visible(), f"{key}: {text!r} not shown"
        assert page.locator(".konvajs-content").count() == n_images
        assert files and all(r.status == 200 for r in files), [(r.url, r.status) for r in files]
        assert canvas_pixels(page).std() > 5, f"{key}: the frame is not drawn"
        assert not page.get_by_text("Errors in the configuration").count()
        shot(page, f"{key}_task.png", doc=f"{key}_task.png")
        if key == "scenediff":  # the per-pair and per-object fields below the images
            page.get_by_text("Object 1", exact=True).last.click()  # the "Object 1" panel
            page.get_by_placeholder("name, e.g. mug").first.wait_for(state="visible")  # TextArea rows=1: an input
            page.get_by_placeholder("Comments on this pair (optional)").first.scroll_into_view_if_needed()
            time.sleep(0.5)
            shot(page, "scenediff_fields.png", doc="scenediff_fields.png")
        page.goto(f"{stack.ls_url}/projects/{project}/data")
        page.wait_for_selector(".lsf-table-row")
        time.sleep(2)
        shot(page, f"{key}_data_manager.png", doc=f"{key}_data_manager.png")
    assert not page.js_errors, page.js_errors


def click_keypoint(page: Any, toolbar: int, label: str, x: float, y: float, *, alt: bool = False) -> dict:
    """Select ``label`` and click at (x, y) (fractions of image ``toolbar``); Label Studio's answer."""
    page.get_by_text(label, exact=True).nth(0).click()  # the first group of labels: the keypoints of image 1
    box = page.locator(".konvajs-content").nth(toolbar).bounding_box()
    with page.expect_response(lambda r: "/interactive-annotating" in r.url, timeout=120_000) as info:
        if alt:
            page.keyboard.down("Alt")
        page.mouse.click(box["x"] + box["width"] * x, box["y"] + box["height"] * y)
        if alt:
            page.keyboard.up("Alt")
    response = info.value
    assert response.status == 200
    answer = response.json()
    assert "errors" not in answer, answer
    return {"request": response.request.post_data_json, "data": answer["data"]}


def test_smart_keypoint_gives_mask_and_alt_click_changes_it(page: Any, ui_stack: Any) -> None:
    """Auto-Annotation on, smart keypoint tool, click → our backend's brush suggestion appears;
    Alt+click (negative point) → a new suggestion replaces it."""
    stack = ui_stack
    project, task = stack.demo["scenediff"]["project"], stack.demo["scenediff"]["tasks"][0]
    open_task(page, stack, project, task)
    before = canvas_pixels(page)
    page.get_by_text("Auto-Annotation", exact=True).click()
    toolbar = page.locator(".lsf-toolbar").nth(0)
    toolbar.locator("button.lsf-tool_smart").first.click()
    smart_keypoint = toolbar.locator("button.lsf-tool_smart[aria-label='key-point-tool']")
    if smart_keypoint.count():
        smart_keypoint.first.click(force=True)
    shot(page, "scenediff_auto_annotation.png")

    # click on the lamp (top left) of video 1, page 1
    first = click_keypoint(page, 0, "Object 1", 0.15, 0.2)
    (sent,) = first["request"]["context"]["result"]
    assert sent["type"] == "keypointlabels" and sent["to_name"] == "image1" and sent["is_positive"] is True
    assert sent["value"]["keypointlabels"] == ["Object 1"] and sent["item_index"] == 0
    (region,) = first["data"]["result"]
    assert (region["type"], region["from_name"], region["to_name"], region["item_index"]) == (
        "brushlabels", "brush1", "image1", 0)  # fmt: skip
    mask1 = decode(region)
    assert mask1.any()
    page.get_by_text("1 suggestions").or_(page.get_by_text("1 suggestion")).first.wait_for()
    time.sleep(1)
    after_click = canvas_pixels(page)
    assert np.abs(after_click - before).mean() > 1, "no mask drawn on the frame"
    shot(page, "scenediff_click.png", doc="scenediff_click.png")

    # Alt+click on the background: a negative point; Label Studio sends both points
    second = click_keypoint(page, 0, "Object 1", 0.5, 0.6, alt=True)
    sent = second["request"]["context"]["result"]
    assert [(k["is_positive"], k["item_index"]) for k in sent] == [(True, 0), (False, 0)]
    (region2,) = second["data"]["result"]
    assert (region2["to_name"], region2["item_index"]) == ("image1", 0)
    mask2 = decode(region2)
    assert (mask1 != mask2).any(), "the negative point did not change the mask"
    page.get_by_text("1 suggestions").or_(page.get_by_text("1 suggestion")).first.wait_for()
    time.sleep(1)
    after_alt = canvas_pixels(page)
    assert np.abs(after_alt - after_click).max() > 0, "the suggestion on screen did not change"
    shot(page, "scenediff_alt_click.png", doc="scenediff_alt_click.png")
    assert not page.js_errors, page.js_errors


def test_propagated_prediction_shows_in_the_task(page: Any, ui_stack: Any) -> None:
    """A submitted green-screen annotation comes back from the worker as a prediction that the
    labeling screen shows."""
    stack = ui_stack
    project, task = stack.demo["greenscreen"]["project"], stack.demo["greenscreen"]["tasks"][0]
    client = stack.client()
    client.annotations.create(
        id=task,
        result=[{
            "id": "s1", "from_name": "kp", "to_name": "image", "type": "keypointlabels", "original_width": 320,
            "original_height": 240, "image_rotation": 0, "item_index": 0, "is_positive": True,
            "value": {"x": 20.0, "y": 30.0, "width": 0.6, "keypointlabels": ["Subject 1"]},
        }],
    )  # fmt: skip

    def prediction() -> Any:
        stack.check()
        return [p for p in client.predictions.list(task=task) if "-job-" in (p.model_version or "")]

    (pred,) = wait_for(prediction, 300, 1, "the worker's prediction")
    assert pred.result and {r["to_name"] for r in pred.result} == {"image"}
    out = stack.results_root / f"project_{project}" / "greenscreen" / "demo_shapes"  # the demo's take
    assert sorted(p.name for p in out.glob("frame_*_masked.png"))[0] == "frame_000000_masked.png"
    open_task(page, stack, project, task)
    before = canvas_pixels(page)
    tab = re.compile(r"^sam2\.1-t.*" + re.escape(pred.model_version[-6:]) + "$")  # the tab shortens the name
    page.get_by_text(tab).first.click()
    page.mouse.move(5, 500)  # away from the tab's tooltip
    time.sleep(1.5)
    assert np.abs(canvas_pixels(page) - before).mean() > 1, "the predicted mask is not drawn"
    shot(page, "greenscreen_prediction.png", doc="greenscreen_prediction.png")


def submit_every_segment(stack: Any) -> tuple[int, list[int]]:
    """Submit a click on every green-screen demo segment not annotated yet; wait for every job."""
    project, tasks = stack.demo["greenscreen"]["project"], stack.demo["greenscreen"]["tasks"]
    client = stack.client()
    for i, task in enumerate(tasks):
        if list(client.annotations.list(id=task)):
            continue
        # segment i gets i + 1 subjects, so the segments differ in their number of flagged ranges
        client.annotations.create(
            id=task,
            result=[{
                "id": f"g{i}-{j}", "from_name": "kp", "to_name": "image", "type": "keypointlabels",
                "original_width": 320, "original_height": 240, "image_rotation": 0, "item_index": 0,
                "is_positive": True,
                "value": {"x": 20.0 + 25 * j, "y": 30.0 + 20 * j, "width": 0.6, "keypointlabels": [f"Subject {j + 1}"]},
            } for j in range(i + 1)],
        )  # fmt: skip

    def all_done() -> bool:
        stack.check()
        states = [client.tasks.get(id=task).data.get("job_state") for task in tasks]
        assert "failed" not in states, states
        return all(s == "done" for s in states)

    wait_for(all_done, 600, 2, "job_state=done on every segment")
    return project, tasks


def test_review_columns_sort_by_flagged_count(page: Any, ui_stack: Any) -> None:
    """The job columns are in the Data Manager, and ordering by flagged_ranges (the Data
    Manager's "Order by" menu) sorts the tasks by that number, ascending and descending."""
    stack = ui_stack
    project, tasks = submit_every_segment(stack)
    client = stack.client()
    counts = {task: client.tasks.get(id=task).data["flagged_ranges"] for task in tasks}
    assert all(isinstance(c, int) for c in counts.values()), counts
    assert len(set(counts.values())) > 1, counts  # else any order would pass
    page.goto(f"{stack.ls_url}/projects/{project}/data")
    page.wait_for_selector(".lsf-table-row")
    for column in ("job_state", "job_progress", "flagged_ranges", "lowest_score"):
        assert page.locator(f'.lsf-table-head [data-id="tasks:data.{column}"]').count(), f"no {column} column"

    def ordered(view_id: str) -> list[int]:
        body = (
            stack.client()
            ._client_wrapper.httpx_client.request(
                "api/tasks", method="GET", params={"view": view_id, "project": project, "page_size": 100}
            )
            .json()
        )
        rows = body["tasks"] if isinstance(body, dict) else body
        return [row["data"]["flagged_ranges"] for row in rows]

    def ordering_request(r: Any) -> bool:
        return "/api/dm/views/" in r.url and r.method == "PATCH" and "ordering" in (r.post_data or "")

    with page.expect_request(ordering_request) as request:
        page.get_by_role("button", name="Order by").click()
        page.locator(".lsf-menu-dm__item").filter(has_text="flagged_ranges").first.click()
    view_id = re.search(r"/api/dm/views/(\d+)", request.value.url).group(1)
    assert "tasks:data.flagged_ranges" in request.value.post_data
    wait_for(lambda: ordered(view_id) == sorted(counts.values()), 30, 1, "tasks ordered by flagged_ranges")
    with page.expect_request(ordering_request) as request:
        page.get_by_role("button", name="Sort descending").click()
    assert "-tasks:data.flagged_ranges" in request.value.post_data
    wait_for(lambda: ordered(view_id) == sorted(counts.values(), reverse=True), 30, 1, "descending order")
    page.wait_for_load_state("networkidle")
    page.locator('.lsf-table-head [data-id="tasks:data.lowest_score"]').scroll_into_view_if_needed()
    time.sleep(1.5)
    shot(page, "review_columns.png", doc="review_columns.png")
    assert not page.js_errors, page.js_errors


def test_review_grid_shows_every_segment_preview(page: Any, ui_stack: Any) -> None:
    """The Data Manager's grid view shows each segment's preview image (set by the backend on
    submit, then by the worker's strip)."""
    stack = ui_stack
    project, tasks = submit_every_segment(stack)
    client = stack.client()
    previews = {client.tasks.get(id=task).data["preview"] for task in tasks}
    assert all(p.startswith("/data/local-files/?d=") for p in previews), previews
    page.goto(f"{stack.ls_url}/projects/{project}/data")
    page.wait_for_selector(".lsf-table-row, .lsf-grid-view__cell")
    page.locator('label[aria-label="Switch to grid view"]').click()
    page.wait_for_selector(".lsf-grid-view__cell")
    page.wait_for_load_state("networkidle")
    try:
        images = page.locator(".lsf-grid-image-wrapper img")
        wait_for(lambda: images.count() == len(tasks), 30, 0.5, "one preview per grid card")
        wait_for(
            lambda: all(images.nth(i).evaluate("img => img.complete && img.naturalWidth > 0") for i in range(len(tasks))),
            30, 0.5, "every preview image loaded",
        )  # fmt: skip
        shown = {images.nth(i).get_attribute("src") for i in range(len(tasks))}
        assert {s[s.index("/data/local-files/") :] for s in shown} == previews
        time.sleep(1)
        shot(page, "review_grid.png", doc="review_grid.png")
    finally:
        page.locator('label[aria-label="Switch to list view"]').click()  # the view remembers its type
        page.wait_for_selector(".lsf-table-row")
    assert not page.js_errors, page.js_errors


def test_overlay_video_plays_in_the_task_panel(page: Any, ui_stack: Any) -> None:
    """The propagated overlay video plays inside the task (readyState ≥ 2), next to the list of
    flagged ranges."""
    stack = ui_stack
    project, tasks = submit_every_segment(stack)
    data = stack.client().tasks.get(id=tasks[0]).data
    assert data["review_video"].startswith("/data/local-files/?d=") and data["review_video"].endswith(".webm")
    files = open_task(page, stack, project, tasks[0])
    page.wait_for_function(
        """() => { const v = document.querySelector('video');
                  if (!v) return false; v.muted = true; v.play().catch(() => {}); return v.readyState >= 2; }""",
        timeout=60_000,
    )
    state = page.evaluate("() => { const v = document.querySelector('video'); return [v.readyState, v.duration]; }")
    assert state[0] >= 2 and state[1] > 0, state
    assert any(data["review_video"].split("?d=")[1] in r.url and r.status in (200, 206) for r in files)
    first_line = data["review_flags"].splitlines()[0]
    assert page.get_by_text(first_line, exact=True).count(), first_line
    panel = page.locator(".lsf-video-canvas").first
    panel.scroll_into_view_if_needed()
    time.sleep(2)
    shot(page, "review_video_panel.png", doc="review_video_panel.png")
    assert not page.js_errors, page.js_errors


def test_flagged_frame_is_an_appended_page_with_the_propagated_mask(page: Any, ui_stack: Any) -> None:
    """The flagged frames appended to a segment's image list are pages of the task, and the job's
    prediction draws its mask there (the reviewer corrects drift on that page)."""
    stack = ui_stack
    project, tasks = submit_every_segment(stack)
    client = stack.client()
    task = tasks[0]
    data = client.tasks.get(id=task).data
    n = len(data["frames"])
    assert n == len(data["frame_indices"]) > 3, data["frame_indices"]  # 3 imported pages + appended
    (pred,) = [p for p in client.predictions.list(task=task) if "-job-" in (p.model_version or "")]
    assert any(r["item_index"] == n - 1 for r in pred.result), "no mask on the last appended page"

    open_task(page, stack, project, task)
    indicator = page.locator(".lsf-pagination__page-indicator").first
    page.locator(".lsf-pagination__btn_arrow-right-double").first.click()  # the user's annotation: no mask there
    wait_for(lambda: indicator.inner_text().strip() == f"{n} of {n}", 30, 0.5, f"page {n} of {n}")
    time.sleep(1.5)
    without = canvas_pixels(page)
    # the prediction's tab, by its (shortened) name: ids of annotations and predictions may coincide
    name = re.compile(re.escape(pred.model_version[-6:]) + "$")
    tab = page.locator(".lsf-annotation-button").filter(has=page.locator(".lsf-annotation-button__name", has_text=name))
    tab.first.locator(".lsf-annotation-button__mainSection").first.click()  # selecting a tab resets the pager
    tab = tab.first
    wait_for(lambda: "lsf-annotation-button_selected" in (tab.get_attribute("class") or ""), 30, 0.5, "tab selected")
    page.mouse.move(5, 500)  # the tab's tooltip would take the next click
    page.locator(".lsf-annotation-button__tooltipContainer_open").wait_for(state="detached", timeout=10_000)
    page.locator(".lsf-pagination__btn_arrow-right-double").first.click()
    wait_for(lambda: indicator.inner_text().strip() == f"{n} of {n}", 30, 0.5, f"page {n} of {n} again")
    page.mouse.move(5, 500)
    time.sleep(1.5)
    with_mask = canvas_pixels(page)
    h, w = (
        min(with_mask.shape[0], without.shape[0]),
        min(with_mask.shape[1], without.shape[1]),
    )  # layouts differ a little
    assert np.abs(with_mask[:h, :w] - without[:h, :w]).mean() > 1, (
        "the propagated mask is not drawn on the appended page"
    )
    shot(page, "review_flagged_page.png", doc="review_flagged_page.png")
    assert not page.js_errors, page.js_errors

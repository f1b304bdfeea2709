"""Several objects on one page in the Label Studio 1.23.2 web UI (issue 29): every clicked
object's preview stays visible, and a click after accepting suggestions that cover most of the
frame still reaches the backend (with the documented way around Label Studio's region hit test).

Run: ``.venv/bin/python -m pytest -m browser -o addopts="-ra" tests/e2e/test_browser_clicks.py``
(``E2E_STACK_DIR=<state dir>`` attaches to a running ``scripts/stack.py up`` stack).
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import numpy as np
import pytest

from . import test_browser as tb

pytestmark = pytest.mark.browser

# the browser fixtures of tests/e2e/test_browser.py (a logged-in Chromium context, a page per test)
browser_context, page, ui_stack = tb.browser_context, tb.page, tb.ui_stack
decode, shot = tb.decode, tb.shot

THREE = [("Object 1", 0.15, 0.2), ("Object 2", 0.5, 0.5), ("Object 3", 0.8, 0.7)]


def new_pair_task(stack: Any) -> tuple[int, int]:
    """A SceneDiff task of its own (fresh files, no drafts from other tests) in the demo project."""
    from ml_backend.labelstudio.automation import import_tasks
    from ml_backend.labelstudio.importing import pair_task
    from ml_backend.video.synthetic import scene_pair

    project = stack.demo["scenediff"]["project"]
    name = f"clicks_{uuid.uuid4().hex[:8]}"
    stack.demo_dir.mkdir(parents=True, exist_ok=True)
    v1, v2 = scene_pair(num_frames=(12, 12), size1=(240, 320))
    p1 = v1.write(stack.demo_dir / f"{name}_before.mkv")
    p2 = v2.write(stack.demo_dir / f"{name}_after.mkv")
    (task,) = import_tasks(stack.client(), project, [pair_task(p1, p2, stack.files_root, name, stride=10)])
    return project, task


def open_with_smart_keypoints(page: Any, stack: Any, project: int, task: int) -> None:
    page.goto(f"{stack.ls_url}/projects/{project}/data?task={task}")
    page.wait_for_selector(".konvajs-content canvas")
    page.wait_for_load_state("networkidle")
    time.sleep(1.5)
    toolbar = page.locator(".lsf-toolbar").nth(0)
    smart = toolbar.locator("button.lsf-tool_smart[aria-label='key-point-tool']")
    if not smart.count():  # Auto-Annotation off (Label Studio remembers it per browser)
        page.get_by_text("Auto-Annotation", exact=True).click()
        smart.first.wait_for(state="attached")
    if "tool_active" not in (smart.first.get_attribute("class") or ""):
        toolbar.locator("button.lsf-tool_smart").first.click()
        smart.first.click(force=True)


def click(page: Any, label: str, x: float, y: float, timeout: float = 120_000) -> dict | None:
    """Select ``label``, click at (x, y) of image 1; the backend's answer via Label Studio, or
    None when no request left the page within ``timeout`` ms."""
    page.get_by_text(label, exact=True).nth(0).click()
    box = page.locator(".konvajs-content").nth(0).bounding_box()
    try:
        with page.expect_response(lambda r: "/interactive-annotating" in r.url, timeout=timeout) as info:
            page.mouse.click(box["x"] + box["width"] * x, box["y"] + box["height"] * y)
    except Exception as exc:  # playwright's TimeoutError
        if "Timeout" in type(exc).__name__:
            return None
        raise
    assert info.value.status == 200
    answer = info.value.json()
    assert "errors" not in answer, answer
    return answer["data"]


def suggestions_shown(page: Any) -> str:
    return page.locator(".lsf-auto-accept__info").first.inner_text().strip()


def test_three_objects_on_a_page_are_all_previewed_and_clicks_go_on_after_accepting(page: Any, ui_stack: Any) -> None:
    stack = ui_stack
    project, task = new_pair_task(stack)
    open_with_smart_keypoints(page, stack, project, task)
    answers = []
    for n, (label, x, y) in enumerate(THREE, start=1):
        answers.append(click(page, label, x, y))
        assert answers[-1] is not None, f"the click for {label} sent no request"
        page.wait_for_function(
            "n => { const e = document.querySelector('.lsf-auto-accept__info');"
            " return e && e.textContent.trim().startsWith(n + ' suggestion'); }",
            arg=n,
        )
    last = answers[-1]["result"]
    assert [r["value"]["brushlabels"][0] for r in last] == ["Object 3", "Object 1", "Object 2"]
    assert {(r["to_name"], r["item_index"]) for r in last} == {("image1", 0)}
    assert suggestions_shown(page) == "3 suggestions"  # all three previews on the page at once
    time.sleep(1)
    shot(page, "clicks_three_objects.png")

    # accept all three; with random weights their masks cover most of the frame
    union = np.logical_or.reduce([decode(r) for r in last])
    assert union.mean() > 0.5, f"the accepted masks cover only {union.mean():.0%} of the frame"
    page.get_by_test_id("bottombar-accept-suggestions-button").click()
    page.locator(".lsf-auto-accept__info").wait_for(state="detached")
    ys, xs = np.nonzero(union)
    k = len(xs) // 2
    x, y = (xs[k] + 0.5) / union.shape[1], (ys[k] + 0.5) / union.shape[0]  # inside an accepted region

    # Label Studio 1.23.2 gives a click on a visible region to that region (it selects it) and
    # places no keypoint; README "Several objects on one page" documents the way around it
    blocked = click(page, "Object 4", x, y, timeout=15_000)
    selected = page.locator(".lsf-tree-treenode-selected").count()
    shot(page, "clicks_after_accept_plain.png")
    if blocked is not None:  # a later Label Studio may let the click through: then all is well
        assert blocked["result"][0]["value"]["brushlabels"] == ["Object 4"]
        return
    assert selected >= 1, "the click neither reached the backend nor selected a region"
    page.keyboard.press("Escape")  # unselect the region
    page.keyboard.press("Control+h")  # hide all regions (Ctrl+H / ⌘H; the eye in the Regions panel)
    answer = click(page, "Object 4", x, y)
    assert answer is not None, "the click after hiding the accepted regions sent no request"
    assert answer["result"][0]["value"]["brushlabels"] == ["Object 4"]
    page.wait_for_function(
        "() => { const e = document.querySelector('.lsf-auto-accept__info');"
        " return e && e.textContent.trim().startsWith('1 suggestion'); }"
    )
    shot(page, "clicks_after_accept_hidden.png")
    assert not page.js_errors, page.js_errors

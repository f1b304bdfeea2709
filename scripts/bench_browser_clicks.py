#!/usr/bin/env python
"""Click → suggestion latency as annotators feel it: Playwright drives headless Chromium in the
real Label Studio 1.23.2 against the real backend and worker (``scripts/stack.py``).

Opt-in (needs ``.ls-venv``, Chromium and Playwright; a cold Label Studio start takes ~75 s)::

    .venv/bin/python scripts/bench_browser_clicks.py                   # starts its own stack
    .venv/bin/python scripts/bench_browser_clicks.py --attach .stack   # a running `stack.py up`

It creates a project "Clicks bench" (the green-screen config) with synthetic segments of its own
(distinct files, so no embedding is shared with another task), then measures, per click, from the
``mousedown`` in the page to the end of the ``/interactive-annotating`` response, both as the
browser stamps them (``Date.now()`` and the request's resource timing):

- **fresh task, first click**: a task without predictions, opened (Label Studio's call without
  clicks queues its pages), the annotator's first click on page 1;
- **repeat click**: more clicks on that page (new points, other objects);
- **task with a job prediction, first click**: a task whose job has published (the worker asks
  the backend to embed its pages), opened, first click;
- **reopened after its job**: a fresh task clicked, submitted, propagated, opened again;
- **N annotators at once** (N = 1, 2, 4): N browsers (processes), each on its own fresh task,
  clicking together at a barrier: a first click, then repeat clicks on three objects.

The backend's own share comes from its ``Server-Timing`` (Label Studio does not forward the
header, so the backend logs it per click and the script reads ``logs/backend.log``). Printed: a
markdown table, then the issue's goals with met / not met.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip
TITLE = "Clicks bench"
POINTS = [(0.3, 0.35), (0.6, 0.5), (0.45, 0.7), (0.7, 0.3), (0.25, 0.6), (0.55, 0.25), (0.8, 0.75), (0.4, 0.45)]
#: First clicks on tasks clicked or annotated before: away from every earlier point (a click on a
#: keypoint selects it and sends nothing)
PRED_POINT, REOPEN_POINT = (0.62, 0.62), (0.35, 0.82)
SETTLE = 3.0  # seconds between opening a task and its first click (an annotator looks first)


def _stack_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("sam2_stack", ROOT / "scripts" / "stack.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["sam2_stack"] = module
    spec.loader.exec_module(module)
    return module


# -- the browser side --------------------------------------------------------------------------
def select_smart_keypoint(page: Any) -> None:
    """Auto-Annotation on (Label Studio remembers it per browser) and the smart keypoint tool
    of the first image selected (clicking the smart group when it is already active closes it)."""
    toolbar = page.locator(".lsf-toolbar").nth(0)
    smart = toolbar.locator("button.lsf-tool_smart[aria-label='key-point-tool']")
    if not smart.count():  # Auto-Annotation is off
        page.get_by_text("Auto-Annotation", exact=True).click()
        smart.first.wait_for(state="attached")
    if "tool_active" not in (smart.first.get_attribute("class") or ""):
        toolbar.locator("button.lsf-tool_smart").first.click()
        smart.first.click(force=True)


class Annotator:
    """One logged-in Chromium page (own profile) that opens tasks and clicks smart keypoints."""

    def __init__(self, ls_url: str, username: str, password: str) -> None:
        from playwright.sync_api import sync_playwright

        self.ls_url = ls_url
        self._pw = sync_playwright().start()
        self._profile = tempfile.mkdtemp(prefix="bench-chromium-")
        self.context = self._pw.chromium.launch_persistent_context(
            self._profile, executable_path=CHROMIUM, headless=True, args=FLAGS, viewport={"width": 1400, "height": 900}
        )
        self.context.set_default_timeout(120_000)
        self.page = self.context.new_page()
        self.page.goto(f"{ls_url}/user/login")
        self.page.fill("input[name=email]", username)
        self.page.fill("input[name=password]", password)
        self.page.click("button[type=submit]")
        self.page.wait_for_url(lambda url: "/user/login" not in url)

    def open(self, project: int, task: int, settle: float = SETTLE) -> None:
        page = self.page
        page.goto(f"{self.ls_url}/projects/{project}/data?task={task}")
        page.wait_for_selector(".konvajs-content canvas")
        page.wait_for_load_state("networkidle")
        page.evaluate(
            "() => { window.__clicks = []; "
            "window.addEventListener('mousedown', () => window.__clicks.push(Date.now()), true); }"
        )
        select_smart_keypoint(page)
        time.sleep(settle)

    def click(self, label: str, x: float, y: float) -> dict[str, float]:
        """Click ``label`` at (x, y) (fractions of the first image); browser-side milliseconds."""
        page = self.page
        page.get_by_text(label, exact=True).nth(0).click()
        box = page.locator(".konvajs-content").nth(0).bounding_box()
        started = time.time() * 1000.0
        with page.expect_response(
            lambda r: "/interactive-annotating" in r.url,
            timeout=int(os.environ.get("BENCH_CLICK_TIMEOUT_MS", "120000")),
        ) as info:
            page.mouse.click(box["x"] + box["width"] * x, box["y"] + box["height"] * y)
        response = info.value
        response.finished()
        ended = time.time() * 1000.0
        if response.status != 200 or "errors" in (response.json() or {}):
            raise RuntimeError(f"the click was answered {response.status}: {response.text()[:300]}")
        timing = response.request.timing
        clicked = page.evaluate("() => window.__clicks.length ? window.__clicks[window.__clicks.length - 1] : null")
        clicked = clicked or started
        sent = timing["startTime"] + max(timing.get("requestStart", 0), 0)
        done = timing["startTime"] + timing["responseEnd"] if timing.get("responseEnd", -1) >= 0 else ended
        regions = len((response.json().get("data") or {}).get("result") or [])
        server = (
            timing["responseStart"] - timing["requestStart"] if timing.get("responseStart", -1) >= 0 else float("nan")
        )
        return {"total": done - clicked, "frontend": sent - clicked, "server": server, "regions": regions}

    def close(self) -> None:
        self.context.close()
        self._pw.stop()
        shutil.rmtree(self._profile, ignore_errors=True)


def _annotator_process(ls_url, username, password, project, task, rounds, barrier, out) -> None:
    try:
        annotator = Annotator(ls_url, username, password)
        annotator.open(project, task)
        results = []
        barrier.wait(timeout=600)
        for r in range(rounds):
            barrier.wait(timeout=600)
            x, y = POINTS[r % len(POINTS)]
            results.append(annotator.click(f"Subject {r % 3 + 1}", x, y))
        barrier.wait(timeout=600)
        annotator.close()
        out.put(("ok", results))
    except Exception as exc:  # reported by the main process
        barrier.abort()
        out.put(("error", f"{type(exc).__name__}: {exc}"))


def at_once(stack: Any, project: int, tasks: list[int], rounds: int) -> list[dict[str, float]]:
    """``len(tasks)`` annotators in their own processes clicking together, round by round."""
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(len(tasks))
    out = ctx.Queue()
    procs = [
        ctx.Process(
            target=_annotator_process,
            args=(stack.ls_url, stack.username, stack.password, project, task, rounds, barrier, out),
        )
        for task in tasks
    ]
    for proc in procs:
        proc.start()
    results: list[dict[str, float]] = []
    for _ in procs:
        status, value = out.get(timeout=1800)
        if status != "ok":
            raise RuntimeError(f"an annotator failed: {value}")
        results.extend(value)
    for proc in procs:
        proc.join(60)
    return results


# -- the stack side ----------------------------------------------------------------------------
def make_project(stack: Any, takes: int) -> tuple[int, list[int]]:
    """The bench project with ``takes`` × 3 segment tasks of their own files."""
    from ml_backend.labelstudio.automation import connect_backend, ensure_local_storage, ensure_project, import_tasks
    from ml_backend.labelstudio.importing import segment_tasks, split_video
    from ml_backend.video.synthetic import moving_shapes

    client = stack.client()
    config = (ROOT / "label_config" / "greenscreen_segment.xml").read_text()
    project = ensure_project(client, TITLE, config)
    connect_backend(client, project.id, stack.backend_url)
    stack.demo_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d%H%M%S")
    root = stack.files_root / "bench"
    made = []
    for t in range(takes):
        video = moving_shapes(num_frames=25, height=240, width=320, seed=100 + t)
        path = video.write(stack.demo_dir / f"bench_{stamp}_{t}.mkv", fps=10)
        folders = split_video(path, root / f"bench_{stamp}_{t}", seconds=1.0)
        made.extend(segment_tasks(folders, stack.files_root, take=f"bench_{stamp}_{t}", fps=10.0))
    ensure_local_storage(client, project.id, root, title="bench frames")
    return project.id, import_tasks(client, project.id, made)


def submit(stack: Any, tasks: list[int]) -> None:
    """An annotation with one keypoint per task (a webhook queues its job); wait for every job."""
    client = stack.client()
    for task in tasks:
        client.annotations.create(
            id=task,
            result=[{
                "id": f"b{task}", "from_name": "kp", "to_name": "image", "type": "keypointlabels",
                "original_width": 320, "original_height": 240, "image_rotation": 0, "item_index": 0,
                "is_positive": True,
                "value": {"x": 88.0, "y": 88.0, "width": 0.6, "keypointlabels": ["Subject 1"]},
            }],
        )  # fmt: skip
    deadline = time.monotonic() + 900
    while True:
        states = [client.tasks.get(id=task).data.get("job_state") for task in tasks]
        if "failed" in states:
            raise RuntimeError(f"a job failed: {states}")
        if all(s == "done" for s in states):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"jobs not done after 15 min: {states}")
        time.sleep(2)


class BackendLog:
    """Server-Timing totals the backend logged since :meth:`mark`."""

    PATTERN = re.compile(r"click answered; Server-Timing: (.*)$")

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0

    def mark(self) -> None:
        self.offset = self.path.stat().st_size

    def since(self) -> list[dict[str, float]]:
        with self.path.open("rb") as fh:
            fh.seek(self.offset)
            text = fh.read().decode("utf-8", "replace")
        out = []
        for line in text.splitlines():
            match = self.PATTERN.search(line)
            if match:
                parts = {}
                for item in match.group(1).split(", "):
                    name, _, rest = item.partition(";dur=")
                    parts[name] = float(rest.split(";", 1)[0])
                    if 'desc="encoder"' in item:
                        parts["encoded"] = 1.0
                out.append(parts)
        return out


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def row(name: str, clicks: list[dict[str, float]], backend: list[dict[str, float]]) -> dict[str, Any]:
    totals = [c["total"] for c in clicks]
    server = [b.get("total", float("nan")) for b in backend]
    return {
        "name": name,
        "n": len(clicks),
        "p50": pct(totals, 0.5),
        "p95": pct(totals, 0.95),
        "frontend": statistics.median([c["frontend"] for c in clicks]) if clicks else float("nan"),
        "ls": statistics.median([c["server"] for c in clicks]) if clicks else float("nan"),
        "b50": pct(server, 0.5),
        "b95": pct(server, 0.95),
        "encoded": sum(int(b.get("encoded", 0)) for b in backend),
        "regions": max((c["regions"] for c in clicks), default=0),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--attach", type=Path, help="state dir of a running `stack.py up` (default: start one)")
    parser.add_argument("--tasks", type=int, default=4, help="tasks per single-annotator situation (default 4)")
    parser.add_argument("--repeats", type=int, default=4, help="repeat clicks per fresh task (default 4)")
    parser.add_argument("--rounds", type=int, default=8, help="clicks per annotator when several click at once")
    args = parser.parse_args(argv)

    stack_module = _stack_module()
    own = None
    if args.attach:
        stack = stack_module.Stack.attach(args.attach)
    else:
        state = Path(tempfile.mkdtemp(prefix="bench-clicks-"))
        config = stack_module.StackConfig(
            state_dir=state, ls_port=None, backend_port=None, redis_port=None, username="bench@example.com",
            password="bench-password-1234", checkpoint="random", image_size=None, device="cpu",
            extra_env={"SAM2_MODEL_SIZE": "tiny", "RESULTS_DIR": str(state / "results")},
        )  # fmt: skip
        own = stack = stack_module.Stack(config, say=lambda msg: print(f"[stack] {msg}", file=sys.stderr, flush=True))
        stack.start()
    try:
        return run(stack, args)
    finally:
        if own is not None:
            own.stop()


def run(stack: Any, args: argparse.Namespace) -> int:
    log = BackendLog(stack.state_dir / "logs" / "backend.log")
    concurrent = [1, 2, 4]
    n = args.tasks
    takes = -(-(3 * n + sum(concurrent)) // 3)
    project, tasks = make_project(stack, takes)
    fresh, predicted, rest = tasks[:n], tasks[n : 2 * n], tasks[2 * n :]
    say = lambda msg: print(f"[bench] {msg}", file=sys.stderr, flush=True)  # noqa: E731
    say(f"project {project}: {len(tasks)} tasks; jobs for {len(predicted)} tasks first")
    submit(stack, predicted)
    time.sleep(5)  # the backend embeds the jobs' pages in the background
    rows = []
    annotator = Annotator(stack.ls_url, stack.username, stack.password)
    try:
        first, repeat, first_b, repeat_b = [], [], [], []
        for task in fresh:
            annotator.open(project, task)
            log.mark()
            first.append(annotator.click("Subject 1", *POINTS[0]))
            first_b += log.since()
            log.mark()
            for r in range(args.repeats):
                repeat.append(annotator.click(f"Subject {r % 3 + 1}", *POINTS[(r + 1) % len(POINTS)]))
            repeat_b += log.since()
        rows.append(row("fresh task (prefetched on open), first click", first, first_b))
        rows.append(row("repeat click (same page)", repeat, repeat_b))
        pred, pred_b = [], []
        for task in predicted:
            annotator.open(project, task)
            log.mark()
            pred.append(annotator.click("Subject 1", *PRED_POINT))
            pred_b += log.since()
        rows.append(row("task with a job prediction, first click", pred, pred_b))
        annotator.page.goto(f"{stack.ls_url}/projects/{project}/data")
        say("jobs for the fresh tasks, then reopening them")
        submit(stack, fresh)
        time.sleep(5)
        again, again_b = [], []
        for task in fresh:
            annotator.open(project, task)
            log.mark()
            again.append(annotator.click("Subject 2", *REOPEN_POINT))
            again_b += log.since()
        rows.append(row("reopened after its job, first click", again, again_b))
    finally:
        annotator.close()
    for k in concurrent:
        chosen, rest = rest[:k], rest[k:]
        say(f"{k} annotator(s) at once")
        log.mark()
        clicks = at_once(stack, project, chosen, args.rounds)
        rows.append(row(f"{k} annotator{'s' if k > 1 else ''} at once (all clicks)", clicks, log.since()))

    print(f"\nClick → suggestion on this machine, SAM 2.1 tiny, random weights, {stack_image_size(stack)}:\n")
    print(
        "| situation | clicks | **browser** p50 | **browser** p95 | request leaves the page after (p50) "
        "| Label Studio server, backend included (p50) | **backend only** p50 | **backend only** p95 "
        "| encoder runs inside clicks |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['name']} | {r['n']} | {r['p50']:.0f} ms | {r['p95']:.0f} ms | {r['frontend']:.0f} ms | "
            f"{r['ls']:.0f} ms | {r['b50']:.0f} ms | {r['b95']:.0f} ms | {r['encoded']} |"
        )
    by = {r["name"]: r for r in rows}
    fresh_p50 = rows[0]["p50"]
    pred_p50 = by["task with a job prediction, first click"]["p50"]
    single = by["1 annotator at once (all clicks)"]["p95"]
    two = by["2 annotators at once (all clicks)"]["p95"]
    goals = [
        ("first click on a task with a prediction within 1.3× of a fresh prefetched task (p50)",
         pred_p50 <= 1.3 * fresh_p50, f"{pred_p50:.0f} vs {fresh_p50:.0f} ms = {pred_p50 / fresh_p50:.2f}×"),
        ("repeat click in the browser p50 ≤ 150 ms", rows[1]["p50"] <= 150, f"{rows[1]['p50']:.0f} ms"),
        ("2 annotators at once: p95 ≤ 2× one annotator's p95", two <= 2 * single,
         f"{two:.0f} vs {single:.0f} ms = {two / single:.2f}×"),
    ]  # fmt: skip
    print()
    for text, met, figures in goals:
        print(f"- {text}: **{'met' if met else 'NOT met'}** ({figures})")
    print(json.dumps({"rows": rows}), file=sys.stderr)
    return 0


def stack_image_size(stack: Any) -> str:
    """The image size the backend reported at start (``… 256 px on cpu``)."""
    try:
        text = (stack.state_dir / "logs" / "backend.log").read_text(errors="replace")
    except OSError:
        return "the stack's default size"
    found = re.findall(r"(\d+) px on ", text)
    return f"{found[-1]} px" if found else "the stack's default size"


if __name__ == "__main__":
    sys.exit(main())

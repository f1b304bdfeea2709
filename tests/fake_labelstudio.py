"""A small HTTP server posing as the parts of Label Studio's API a propagation job uses.

Serves ``GET /api/projects/<id>/``, ``/api/tasks/<id>/``, ``/api/annotations/<id>/``, ``/api/ml/``,
``POST /api/predictions/`` (and ``GET /api/predictions/?task=``, ``DELETE /api/predictions/<id>/``),
``GET /api/tasks/<id>/annotations/``, ``DELETE /api/annotations/<id>/``, ``PATCH /api/tasks/<id>/`` (data replaced whole) and task files under ``/data/local-files/?d=<path>`` and
``/data/upload/<path>`` (from ``<root>/upload/``), checking the
legacy token. For the import scripts also: ``GET /api/projects/`` (list), ``GET /api/tasks/?project=``,
``DELETE /api/tasks/<id>/``, ``POST /api/projects/<id>/import`` (refusing a task that lacks a key
the config's object tags read, with Label Studio's message), local-files storages
(``GET``/``POST``/``DELETE /api/storages/localfiles/``, the path checked against ``root`` as the
document root) and ``/api/webhooks/``. It can be taken down and brought back on the same port (``stop`` / ``start``), and
records the predictions it receives. The real Label Studio 1.23.2 answers the same calls in the
end-to-end suite (``make test-e2e``); this stand-in lets the fast suite break it on purpose.
"""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path
from typing import Any


class FakeLabelStudio:
    def __init__(self, root: Path, token: str = "fake-token") -> None:
        self.root = Path(root)
        self.token = token
        self.projects: dict[int, dict[str, Any]] = {}
        self.tasks: dict[int, dict[str, Any]] = {}
        self.annotations: dict[int, dict[str, Any]] = {}
        self.predictions: list[dict[str, Any]] = []  # every prediction posted, in order
        self.live: dict[int, dict[str, Any]] = {}  # prediction id -> prediction not deleted
        self.hook: Any = None  # called with (method, path parts) before a request is answered
        self._clock = 0
        self.task_updates: list[tuple[int, dict[str, Any]]] = []  # PATCH /api/tasks/<id>/ bodies
        self.ml_backends: list[dict[str, Any]] = []  # GET /api/ml/?project=<id>
        self.storages: dict[int, dict[str, Any]] = {}  # local-files storages by id
        self.imports = 0  # POST /api/projects/<id>/import calls
        self.fail_with: int | None = None  # answer every API call with this status (e.g. 502)
        self.fail_task_writes: int | None = None  # answer every PATCH /api/tasks/<id>/ with this status
        self.fail_predictions: int | None = None  # answer every POST /api/predictions/ with this status
        self.requests = 0
        self.failed_task_writes = 0
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._server = None
        self._thread = None

    def _app(self):
        from werkzeug.wrappers import Request, Response

        def reply(body: Any, status: int = 200) -> Response:
            return Response(json.dumps(body), status=status, mimetype="application/json")

        @Request.application
        def app(request: Request) -> Response:
            self.requests += 1
            if request.headers.get("Authorization") != f"Token {self.token}":
                return reply({"detail": "Authentication credentials were not provided."}, 401)
            if self.fail_with is not None:
                return reply({"detail": "failing on purpose"}, self.fail_with)
            parts = [p for p in request.path.split("/") if p]
            if self.hook is not None:
                self.hook(request.method, parts)
            if request.path.startswith("/data/upload/"):  # files uploaded in the Import dialog: <root>/upload/
                path = (self.root / "upload" / request.path[len("/data/upload/") :]).resolve()
                if not path.is_relative_to(self.root.resolve()) or not path.is_file():
                    return Response("not found", status=404)
                return Response(path.read_bytes(), mimetype="application/octet-stream")
            if request.path.startswith("/data/local-files"):
                path = (self.root / request.args.get("d", "")).resolve()
                if not path.is_relative_to(self.root.resolve()) or not path.is_file():
                    return Response("not found", status=404)
                return Response(path.read_bytes(), mimetype="application/octet-stream")
            if parts[:2] == ["api", "predictions"] and request.method == "POST":
                if self.fail_predictions is not None:
                    return reply({"detail": "failing predictions on purpose"}, self.fail_predictions)
                body = request.get_json(force=True)
                self.predictions.append(body)
                pid = len(self.predictions)
                self.live[pid] = {"id": pid, **body}
                return reply(self.live[pid], 201)
            if parts == ["api", "predictions"] and request.method == "GET":
                task = request.args.get("task", type=int)
                return reply([p for p in self.live.values() if task is None or p.get("task") == task])
            if parts[:2] == ["api", "predictions"] and len(parts) == 3 and request.method == "DELETE":
                return reply(None, 204) if self.live.pop(int(parts[2]), None) else reply({"detail": "Not found."}, 404)
            if len(parts) == 4 and parts[:2] == ["api", "tasks"] and parts[3] == "annotations":
                if int(parts[2]) not in self.tasks:
                    return reply({"detail": "Not found."}, 404)
                return reply([a for a in self.annotations.values() if a["task"] == int(parts[2])])
            if parts[:2] == ["api", "annotations"] and len(parts) == 3 and request.method == "DELETE":
                found = self.annotations.pop(int(parts[2]), None)
                return reply(None, 204) if found else reply({"detail": "Not found."}, 404)
            if parts == ["api", "ml"] and request.method == "GET":
                project = request.args.get("project", type=int)
                return reply([b for b in self.ml_backends if project is None or b["project"] == project])
            answer = self._scripts_api(request, parts)
            if answer is not None:
                return reply(*answer)
            if len(parts) == 3 and parts[0] == "api" and parts[2].isdigit():
                store = {"projects": self.projects, "tasks": self.tasks, "annotations": self.annotations}.get(parts[1])
                if store is not None and int(parts[2]) in store:
                    if request.method == "PATCH" and parts[1] == "tasks":
                        if self.fail_task_writes is not None:
                            self.failed_task_writes += 1
                            return reply({"detail": "failing task writes on purpose"}, self.fail_task_writes)
                        body = request.get_json(force=True)
                        self.task_updates.append((int(parts[2]), body))
                        store[int(parts[2])].update(body)  # Label Studio replaces 'data' whole
                    return reply(store[int(parts[2])])
            return reply({"detail": "Not found."}, 404)

        return app

    def _scripts_api(self, request: Any, parts: list[str]) -> tuple[Any, int] | None:
        """The calls of the import scripts (module docstring); None for any other path."""
        method, page = request.method, request.args.get("page", 1, type=int)
        if parts == ["api", "projects"] and method == "GET":
            return {"count": len(self.projects), "results": list(self.projects.values()) if page == 1 else []}, 200
        if parts == ["api", "projects"] and method == "POST":
            body = request.get_json(force=True)
            project_id = max(self.projects, default=0) + 1
            self.add_project(project_id, body["label_config"])
            self.projects[project_id].update(title=body.get("title", ""), description=body.get("description", ""))
            return self.projects[project_id], 201
        if parts == ["api", "ml"] and method == "POST":
            backend = {"id": len(self.ml_backends) + 1, **request.get_json(force=True)}
            self.ml_backends.append(backend)
            return backend, 201
        if len(parts) == 3 and parts[:2] == ["api", "ml"] and method == "PATCH":
            found = [b for b in self.ml_backends if str(b["id"]) == parts[2]]
            if not found:
                return {"detail": "Not found."}, 404
            found[0].update(request.get_json(force=True))
            return found[0], 200
        if parts == ["api", "tasks"] and method == "GET":
            project = request.args.get("project", type=int)
            tasks = [t for t in self.tasks.values() if project is None or t["project"] == project]
            return {"tasks": tasks if page == 1 else [], "total": len(tasks)}, 200
        if len(parts) == 3 and parts[:2] == ["api", "tasks"] and method == "DELETE":
            return (None, 204) if self.tasks.pop(int(parts[2]), None) else ({"detail": "Not found."}, 404)
        if len(parts) == 4 and parts[:2] == ["api", "projects"] and parts[3] == "import" and method == "POST":
            project = int(parts[2])
            if project not in self.projects:
                return {"detail": "Not found."}, 404
            self.imports += 1
            needed = _object_keys(self.projects[project]["label_config"])
            body = request.get_json(force=True)
            for item in body:
                missing = [k for k in needed if k not in item.get("data", {})]
                if missing:  # what Label Studio 1.23.2 answers (its exception handler's shape)
                    message = f'"{missing[0]}" key is expected in task data [id=None]'
                    return {"status_code": 400, "detail": "Validation error",
                            "validation_errors": {"non_field_errors": [message]}}, 400  # fmt: skip
            first = max(self.tasks, default=0) + 1
            for i, item in enumerate(body):
                self.add_task(first + i, project, dict(item["data"]))
            return {"task_count": len(body)}, 201
        if parts[:3] == ["api", "storages", "localfiles"]:
            if len(parts) == 3 and method == "GET":
                project = request.args.get("project", type=int)
                return [s for s in self.storages.values() if project is None or s["project"] == project], 200
            if len(parts) == 3 and method == "POST":
                body = request.get_json(force=True)
                path = Path(body.get("path") or "")
                root = self.root.resolve()
                if not path.resolve().is_relative_to(root) or path.resolve() == root:
                    message = (f"Path {path} must start with LOCAL_FILES_DOCUMENT_ROOT={root} and must be a child, "
                               f"e.g.: {root / 'abc'}")  # fmt: skip
                    return {"status_code": 400, "detail": "Validation error",
                            "validation_errors": {"non_field_errors": [message]}}, 400  # fmt: skip
                storage = {"id": max(self.storages, default=0) + 1, **body}
                self.storages[storage["id"]] = storage
                return storage, 201
            if len(parts) == 4 and method == "DELETE":
                return (None, 204) if self.storages.pop(int(parts[3]), None) else ({"detail": "Not found."}, 404)
        if parts == ["api", "webhooks"]:
            return ([], 200) if method == "GET" else ({"id": 1, **request.get_json(force=True)}, 201)
        return None

    def add_project(self, project_id: int, label_config: str) -> None:
        self.projects[project_id] = {"id": project_id, "title": f"project {project_id}", "label_config": label_config}

    def add_task(self, task_id: int, project_id: int, data: dict[str, Any]) -> None:
        self.tasks[task_id] = {"id": task_id, "project": project_id, "data": data}

    def add_annotation(self, annotation_id: int, task_id: int, result: list[dict[str, Any]]) -> dict[str, Any]:
        self._clock += 1
        stamp = f"2026-01-01T00:{self._clock // 60:02d}:{self._clock % 60:02d}.000000Z"
        old = self.annotations.get(annotation_id, {})
        self.annotations[annotation_id] = {"id": annotation_id, "task": task_id, "result": result,
                                           "ground_truth": old.get("ground_truth", False),
                                           "created_at": old.get("created_at", stamp), "updated_at": stamp}  # fmt: skip
        return self.annotations[annotation_id]

    def task_predictions(self, task_id: int) -> list[dict[str, Any]]:
        """The predictions of a task that were not deleted."""
        return [p for p in self.live.values() if p.get("task") == task_id]

    def start(self) -> FakeLabelStudio:
        from werkzeug.serving import make_server

        self._server = make_server("127.0.0.1", self.port, self._app(), threaded=True)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def _object_keys(label_config: str) -> list[str]:
    """The task-data keys Label Studio checks on import: ``value="$key"`` of object tags."""
    import xml.etree.ElementTree as ET

    keys = []
    for tag in ET.fromstring(label_config).iter():
        value = tag.attrib.get("value", "")
        if tag.tag in ("Image", "Video", "Text", "Audio", "HyperText") and value.startswith("$"):
            keys.append(value[1:])
    return keys

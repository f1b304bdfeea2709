"""A small HTTP server posing as the parts of Label Studio's API a propagation job uses.

Serves ``GET /api/projects/<id>/``, ``/api/tasks/<id>/``, ``/api/annotations/<id>/``, ``/api/ml/``,
``POST /api/predictions/``, ``PATCH /api/tasks/<id>/`` (data replaced whole) and task files under ``/data/local-files/?d=<path>``, checking the
legacy token. It can be taken down and brought back on the same port (``stop`` / ``start``), and
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
        self.predictions: list[dict[str, Any]] = []
        self.task_updates: list[tuple[int, dict[str, Any]]] = []  # PATCH /api/tasks/<id>/ bodies
        self.ml_backends: list[dict[str, Any]] = []  # GET /api/ml/?project=<id>
        self.fail_with: int | None = None  # answer every API call with this status (e.g. 502)
        self.requests = 0
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
            if request.path.startswith("/data/local-files"):
                path = (self.root / request.args.get("d", "")).resolve()
                if not path.is_relative_to(self.root.resolve()) or not path.is_file():
                    return Response("not found", status=404)
                return Response(path.read_bytes(), mimetype="application/octet-stream")
            if parts[:2] == ["api", "predictions"] and request.method == "POST":
                body = request.get_json(force=True)
                self.predictions.append(body)
                return reply({"id": len(self.predictions), **body}, 201)
            if parts == ["api", "ml"]:
                project = request.args.get("project", type=int)
                return reply([b for b in self.ml_backends if project is None or b["project"] == project])
            if len(parts) == 3 and parts[0] == "api" and parts[2].isdigit():
                store = {"projects": self.projects, "tasks": self.tasks, "annotations": self.annotations}.get(parts[1])
                if store is not None and int(parts[2]) in store:
                    if request.method == "PATCH" and parts[1] == "tasks":
                        body = request.get_json(force=True)
                        self.task_updates.append((int(parts[2]), body))
                        store[int(parts[2])].update(body)  # Label Studio replaces 'data' whole
                    return reply(store[int(parts[2])])
            return reply({"detail": "Not found."}, 404)

        return app

    def add_project(self, project_id: int, label_config: str) -> None:
        self.projects[project_id] = {"id": project_id, "title": f"project {project_id}", "label_config": label_config}

    def add_task(self, task_id: int, project_id: int, data: dict[str, Any]) -> None:
        self.tasks[task_id] = {"id": task_id, "project": project_id, "data": data}

    def add_annotation(self, annotation_id: int, task_id: int, result: list[dict[str, Any]]) -> dict[str, Any]:
        self.annotations[annotation_id] = {"id": annotation_id, "task": task_id, "result": result}
        return self.annotations[annotation_id]

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

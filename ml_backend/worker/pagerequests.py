"""Pages a job asks the backend to embed: the Redis list the worker pushes and the backend reads."""

from __future__ import annotations

import json
from typing import Any

#: The Redis list of prefetch requests (JSON ``{"project", "task", "refs"}``), newest first.
REQUESTS_KEY = "sam2:prefetch-requests"


#: Most requests kept on the list (the worker trims it; an idle backend reads nothing).
MAX_REQUESTS = 200


def push_request(connection: Any, project: Any, task: Any, refs: list[str]) -> None:
    """Ask the backend to embed ``refs`` (a task's pages), best effort (the worker's side)."""
    body = json.dumps({"project": project, "task": task, "refs": [r for r in refs if isinstance(r, str)]})
    pipe = connection.pipeline()
    pipe.lpush(REQUESTS_KEY, body)
    pipe.ltrim(REQUESTS_KEY, 0, MAX_REQUESTS - 1)
    pipe.execute()


def page_order(lists: list[list[str]]) -> list[str]:
    """Refs of several images' pages: every image's page 0, then every page 1, and so on; each
    ref once, and only strings."""
    out: list[str] = []
    for page in range(max((len(refs) for refs in lists), default=0)):
        for refs in lists:
            if page < len(refs) and isinstance(refs[page], str) and refs[page] not in out:
                out.append(refs[page])
    return out

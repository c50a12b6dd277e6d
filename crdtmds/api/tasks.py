"""Tasks: what `publish` and `revert-to-revision` leave for `show-task`. Both finish
before they reply, so a task is recorded as succeeded; the last ones are kept."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from crdtmds.core import model
from crdtmds.errors import ObjectNotFound

MAX_TASKS_KEPT = 1000


class Tasks:
    """The recent tasks of one server, each visible to its administrator and superusers."""

    def __init__(self) -> None:
        self.by_id: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._owner: dict[str, str] = {}

    def record(self, admin: str, name: str, details: dict[str, Any]) -> dict[str, Any]:
        task = {
            "task-id": model.new_uid(),
            "task-name": name,
            "status": "succeeded",
            "progress-percentage": 100,
            "suppressed": False,
            "comments": "",
            "task-details": [{"statusDescription": f"{name}: succeeded", **details}],
        }
        self.by_id[task["task-id"]] = task
        self._owner[task["task-id"]] = admin
        while len(self.by_id) > MAX_TASKS_KEPT:
            old, _ = self.by_id.popitem(last=False)
            self._owner.pop(old, None)
        return task

    def get(self, task_id: str, admin: str, superuser: bool) -> dict[str, Any]:
        task = self.by_id.get(task_id)
        if task is None or not (superuser or self._owner.get(task_id) == admin):
            raise ObjectNotFound(f"task '{task_id}' not found", details={"task-id": task_id})
        return task

# Copyright: (c) 2026, tlsops.tikv maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A timing callback for the benchmarks (not shipped: bench/ is left out of the collection tarball).

ansible-core 2.19 has no profile_tasks (that lives in ansible.posix, which the project does not
install), so this records, for every task of a run, when it started (the strategy's task start), when
each host started and finished it, its action, and whether it was retried (until/retries), into the
JSON file named by $BENCH_TIMING_FILE. bench/_bench.py reads it and classifies the tasks.
Enabled with ANSIBLE_CALLBACK_PLUGINS=<repo>/bench/callback_plugins ANSIBLE_CALLBACKS_ENABLED=bench_timing.
"""

from __future__ import annotations

import json
import os
import time

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
name: bench_timing
type: aggregate
short_description: record task and per-host timings to a JSON file (benchmarks only)
description:
  - Writes every task's start time, per-host start and end times, action and retry count to
    C($BENCH_TIMING_FILE) at the end of the run.
requirements:
  - enabled in the configuration (ANSIBLE_CALLBACKS_ENABLED)
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "bench_timing"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._path = os.environ.get("BENCH_TIMING_FILE")
        self._began = time.time()
        self._tasks = []
        self._current = None
        self._plays = []

    def _task_record(self, task):
        """The record of the task now running (a task object is reused across serial batches, so the
        latest record with its uuid is the one)."""
        uuid = task._uuid  # pylint: disable=protected-access
        if self._current is not None and self._current["uuid"] == uuid:
            return self._current
        for record in reversed(self._tasks):
            if record["uuid"] == uuid:
                return record
        return self._start(task, handler=False)

    def _start(self, task, handler):
        role = task._role.get_name() if task._role else None  # pylint: disable=protected-access
        record = {"uuid": task._uuid, "name": task.get_name(), "action": task.action, "role": role,  # pylint: disable=protected-access
                  "path": task.get_path(), "handler": handler, "start": time.time(), "hosts": {}, "retries": 0}
        self._tasks.append(record)
        self._current = record
        return record

    def v2_playbook_on_play_start(self, play):
        self._plays.append({"name": play.get_name(), "start": time.time()})

    def v2_playbook_on_task_start(self, task, is_conditional):
        self._start(task, handler=False)

    def v2_playbook_on_handler_task_start(self, task):
        self._start(task, handler=True)

    def v2_runner_on_start(self, host, task):
        record = self._task_record(task)
        record["hosts"].setdefault(host.get_name(), {})["start"] = time.time()

    def _end(self, result, status):
        record = self._task_record(result._task)  # pylint: disable=protected-access
        entry = record["hosts"].setdefault(result._host.get_name(), {})  # pylint: disable=protected-access
        entry["end"] = time.time()
        entry["status"] = status

    def v2_runner_on_ok(self, result):
        self._end(result, "ok")

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._end(result, "failed")

    def v2_runner_on_skipped(self, result):
        self._end(result, "skipped")

    def v2_runner_on_unreachable(self, result):
        self._end(result, "unreachable")

    def v2_runner_retry(self, result):
        self._task_record(result._task)["retries"] += 1  # pylint: disable=protected-access

    def v2_playbook_on_stats(self, stats):
        if not self._path:
            return
        with open(self._path, "w", encoding="utf-8") as handle:
            json.dump({"began": self._began, "ended": time.time(), "plays": self._plays, "tasks": self._tasks}, handle)

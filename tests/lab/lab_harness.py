"""Driving a whole lab from tests: through the `tikv-lab` CLI, as a user or a playbook does.

Kept out of conftest.py so test modules can import it by a name no other conftest shares.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any

from tikvlab import cli, health, services
from tikvlab.layout import REPO, Instance, Lab

TIKV_LAB = os.path.join(REPO, "lab", "bin", "tikv-lab")
# Below Linux's ephemeral range (32768+), so outgoing connections never take a lab port.
BASE_PORT_CHOICES = range(20000, 32000, 200)
PORTS_PER_LAB = 140


def port_free(port: int) -> bool:
    return not cli.port_in_use(port)


def free_base_port() -> int:
    """A base port whose whole block (PDs at B.., TiKVs at B+100..) is free now."""
    for base in random.sample(list(BASE_PORT_CHOICES), len(BASE_PORT_CHOICES)):
        if all(port_free(p) for p in range(base, base + PORTS_PER_LAB)):
            return base
    raise RuntimeError("no free block of ports for a lab")


def wait_for(predicate: Callable[[], Any], timeout: float, interval: float = 0.25) -> Any:
    """Poll until predicate() is truthy; returns its value or fails with the last one."""
    deadline = time.monotonic() + timeout
    value = predicate()
    while not value and time.monotonic() < deadline:
        time.sleep(interval)
        value = predicate()
    assert value, f"condition not met within {timeout} s (last value: {value!r})"
    return value


class LabHandle:
    """A running lab as the tests drive it: through the CLI, like a user or a playbook."""

    def __init__(self, root: str, base_port: int):
        self.root = root
        self.base_port = base_port
        self.up_seconds = 0.0

    def run(self, *args: str, timeout: float = 150) -> subprocess.CompletedProcess:
        return subprocess.run([TIKV_LAB, "--root", self.root, *args], capture_output=True, text=True,
                              check=False, timeout=timeout)

    def ok(self, *args: str, timeout: float = 150) -> str:
        """Run a CLI command that must succeed; its stdout."""
        result = self.run(*args, timeout=timeout)
        assert result.returncode == 0, (f"tikv-lab {' '.join(args)} -> {result.returncode}\n"
                                        f"{result.stdout}\n{result.stderr}")
        return result.stdout

    def lab(self) -> Lab:
        return services.load_lab(self.root)

    def instance(self, name: str) -> Instance:
        return self.lab().instance(name)

    def pd(self, method: str, path: str, body: Any = None) -> Any:
        """PD API call with a PD instance's own certificate (as `status` does); 200 required."""
        _asked, status, data = health.pd_request(self.lab(), method, path, body)
        assert status == 200, f"{method} {path} -> {status}: {data}"
        return data

    def store_state(self, name: str) -> str | None:
        address = self.instance(name).address
        for entry in self.pd("GET", "/stores")["stores"]:
            if entry["store"]["address"] == address:
                return entry["store"]["state_name"]
        return None

    def wait_healthy(self, timeout: float = 60) -> None:
        self.ok("wait", "--timeout", str(timeout), timeout=timeout + 30)

    def log(self, name: str) -> str:
        with open(self.instance(name).log_path, encoding="utf-8", errors="replace") as fh:
            return fh.read()


def force_cleanup(root: str) -> None:
    """Last resort when `down` failed: SIGKILL every recorded process group, then remove the root."""
    with contextlib.suppress(services.NoLab):
        for inst in services.load_lab(root).instances:
            services.signal_group(inst, signal.SIGKILL)
    shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def running_lab(root: str, *up_args: str) -> Iterator[LabHandle]:
    handle = LabHandle(root, free_base_port())
    try:
        began = time.monotonic()
        handle.ok("up", "--base-port", str(handle.base_port), *up_args)
        handle.up_seconds = time.monotonic() - began
        yield handle
    finally:
        if os.path.exists(root):
            result = handle.run("down")
            if result.returncode != 0 or os.path.exists(root):
                force_cleanup(root)

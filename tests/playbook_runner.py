"""Run real `ansible-playbook` from tests and read what a user reads: the exit code and the recap.

The collection is found through ANSIBLE_COLLECTIONS_PATH (tests/conftest.py links this checkout
there), so playbooks and roles are run by FQCN exactly as users run them.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ANSIBLE_PLAYBOOK = os.path.join(os.path.dirname(sys.executable), "ansible-playbook")
RECAP_LINE = re.compile(r"^(\S+)\s+:\s+((?:\w+=\d+\s*)+)$")


@dataclass
class PlaybookRun:
    returncode: int
    output: str
    recap: dict[str, dict[str, int]] = field(default_factory=dict)

    def changed(self) -> dict[str, int]:
        """Hosts that reported changes, with their counts."""
        return {host: counts["changed"] for host, counts in self.recap.items() if counts.get("changed")}

    def assert_ok(self) -> "PlaybookRun":
        assert self.returncode == 0, f"ansible-playbook failed ({self.returncode}):\n{self.output[-8000:]}"
        return self


def parse_recap(output: str) -> dict[str, dict[str, int]]:
    recap: dict[str, dict[str, int]] = {}
    in_recap = False
    for line in output.splitlines():
        if line.startswith("PLAY RECAP"):
            in_recap = True
            continue
        match = RECAP_LINE.match(line.strip()) if in_recap else None
        if match:
            recap[match.group(1)] = {k: int(v) for k, v in (kv.split("=") for kv in match.group(2).split())}
    return recap


def playbook_command(playbook: str, inventory: str, *args: str, extra_env: dict[str, str] | None = None
                     ) -> tuple[list[str], dict[str, str]]:
    """The command line and environment of `ansible-playbook -i inventory playbook args...`."""
    env = dict(os.environ)
    env.update({
        "ANSIBLE_COLLECTIONS_PATH": os.path.join(REPO, "build", "collections"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_LOCALHOST_WARNING": "0",
        "ANSIBLE_RETRY_FILES_ENABLED": "0",
        "ANSIBLE_HOST_KEY_CHECKING": "0",
    })
    env.update(extra_env or {})
    return [ANSIBLE_PLAYBOOK, "-i", inventory, playbook, *args], env


def run_playbook(playbook: str, inventory: str, *args: str, extra_env: dict[str, str] | None = None,
                 timeout: float = 900) -> PlaybookRun:
    """`ansible-playbook -i inventory playbook args...`; playbook is a path or an FQCN."""
    command, env = playbook_command(playbook, inventory, *args, extra_env=extra_env)
    proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout, cwd=REPO, check=False)
    output = proc.stdout + proc.stderr
    return PlaybookRun(proc.returncode, output, parse_recap(proc.stdout))


def interrupt_playbook_at(marker: str, playbook: str, inventory: str, *args: str, timeout: float = 900) -> str:
    """Run a playbook and kill it (SIGKILL, as a lost controller would stop) as soon as a line of its output
    contains `marker`; returns the output up to there. Fails when the run ends before the marker."""
    command, env = playbook_command(playbook, inventory, *args)
    lines = []
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                          cwd=REPO, start_new_session=True) as proc:
        deadline = time.monotonic() + timeout
        for line in proc.stdout:
            lines.append(line)
            if marker in line or time.monotonic() > deadline:
                os.killpg(proc.pid, signal.SIGKILL)
                break
        proc.wait()
    output = "".join(lines)
    assert marker in output, f"the run ended before {marker!r}:\n{output[-4000:]}"
    return output

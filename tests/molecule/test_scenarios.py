"""The Molecule scenarios of extensions/molecule, each run as a user runs it: `molecule test -s NAME`.

Each scenario brings up its own netns lab (root, no Docker), runs the collection over SSH, checks the
hosts with testinfra and takes the lab down; afterwards nothing of it may be left on the machine.
Skipped with the reason when this machine cannot have netns lab hosts (not root, no namespaces).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tikvlab import netns

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.dirname(sys.executable)
# TIKV_TLS_MOLECULE_SCENARIOS=enable,faults narrows the run (each scenario costs minutes of both cores).
SCENARIOS = [name for name in os.environ.get("TIKV_TLS_MOLECULE_SCENARIOS", "enable,rotate,faults").split(",") if name]

pytestmark = [
    pytest.mark.timeout(2400),
    pytest.mark.skipif(netns.unsupported() is not None, reason=f"netns lab: {netns.unsupported()}"),
]


def molecule_env(ephemeral: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "ANSIBLE_COLLECTIONS_PATH": os.path.join(REPO, "build", "collections"),
        "PATH": os.pathsep.join([BIN, os.path.join(REPO, "lab", "bin"), env.get("PATH", "")]),
        # The scenario's working directory (and so its lab) under the test's tmp_path, not ~/.cache.
        "MOLECULE_EPHEMERAL_DIRECTORY": ephemeral,
        "ANSIBLE_NOCOLOR": "1",
        "NO_COLOR": "1",
    })
    return env


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_scenario(scenario: str, tmp_path) -> None:
    assert netns.missing_tools() is None, netns.missing_tools()
    ephemeral = str(tmp_path / scenario)
    proc = subprocess.run([os.path.join(BIN, "molecule"), "test", "-s", scenario], cwd=REPO,
                          env=molecule_env(ephemeral), capture_output=True, text=True, timeout=2300, check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"molecule test -s {scenario} failed ({proc.returncode}):\n{output[-12000:]}"
    lab_root = os.path.join(ephemeral, "lab")
    assert not os.path.exists(lab_root), "destroy left the lab root"
    assert netns.leftovers(lab_root) == {"namespaces": [], "links": [], "processes": []}

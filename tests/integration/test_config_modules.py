"""toml_edit and script_flags through ansible-playbook on localhost: --check --diff, real, again.

Also runs each module's EXAMPLES as written (paths moved under a temporary /tidb-deploy tree), so the
documentation cannot drift from the module.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap

import pytest
import yaml

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURES = os.path.join(REPO, "tests", "unit", "fixtures")
PLAYBOOK_BIN = os.path.join(os.path.dirname(sys.executable), "ansible-playbook")

pytestmark = pytest.mark.timeout(300)

PLAYBOOK = textwrap.dedent("""\
    - name: Enable TLS in the files of one PD and one TiKV
      hosts: localhost
      gather_facts: false
      tasks:
        - name: Read the PD run script's flags
          tlsops.tikv.script_flags:
            path: "{{ work }}/pd/scripts/run_pd.sh"
          register: pd_run_script
          check_mode: false

        - name: PD URLs to https and certificate flags
          tlsops.tikv.script_flags:
            path: "{{ work }}/pd/scripts/run_pd.sh"
            flags:
              client-urls: "{{ pd_run_script.flags['client-urls'] | replace('http://', 'https://') }}"
              advertise-client-urls: "{{ pd_run_script.flags['advertise-client-urls'] | replace('http://', 'https://') }}"
              initial-cluster: "{{ pd_run_script.flags['initial-cluster'] | replace('http://', 'https://') }}"
              cacert: "{{ work }}/pd/tls/ca.crt"
            backup: true

        - name: Stage pd.toml with a [security] table
          tlsops.tikv.toml_edit:
            path: "{{ work }}/pd/conf/pd.toml"
            dest: "{{ work }}/pd/conf/pd.toml.tls-pending"
            settings:
              security.cacert-path: "{{ work }}/pd/tls/ca.crt"
              security.cert-path: "{{ work }}/pd/tls/pd.crt"
              security.key-path: "{{ work }}/pd/tls/pd.pem"

        - name: TLS in tikv.toml
          tlsops.tikv.toml_edit:
            path: "{{ work }}/tikv/conf/tikv.toml"
            settings:
              security.ca-path: "{{ work }}/tikv/tls/ca.crt"
              security.cert-path: "{{ work }}/tikv/tls/tikv.crt"
              security.key-path: "{{ work }}/tikv/tls/tikv.pem"
              security.cert-allowed-cn: [tikv, pd]
            backup: true
    """)


def _tree(root):
    for component, files in (("pd", [("conf", "pd.toml"), ("scripts", "run_pd.sh")]),
                             ("tikv", [("conf", "tikv.toml"), ("scripts", "run_tikv.sh")])):
        for sub, name in files:
            os.makedirs(os.path.join(root, component, sub), exist_ok=True)
            shutil.copy(os.path.join(FIXTURES, name), os.path.join(root, component, sub, name))


def _snapshot(root):
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as fh:
                out[os.path.relpath(path, root)] = (fh.read(), os.stat(path).st_mtime_ns)
    return out


def _play(playbook, *args, extra_vars=None):
    env = dict(os.environ)
    env["ANSIBLE_COLLECTIONS_PATH"] = os.path.join(REPO, "build", "collections")
    env["ANSIBLE_NOCOLOR"] = "1"
    env["ANSIBLE_LOCALHOST_WARNING"] = "false"
    env["ANSIBLE_INVENTORY_UNPARSED_WARNING"] = "false"
    env["ANSIBLE_PYTHON_INTERPRETER"] = sys.executable
    cmd = [PLAYBOOK_BIN, "-i", "localhost,", "-c", "local", playbook] + list(args)
    for key, value in (extra_vars or {}).items():
        cmd += ["-e", "%s=%s" % (key, value)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    recap = re.search(r"localhost\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", proc.stdout)
    assert recap, proc.stdout
    return proc.stdout, int(recap.group(2))


def test_playbook_check_real_again(tmp_path):
    work = tmp_path / "work"
    _tree(str(work))
    playbook = tmp_path / "enable.yml"
    playbook.write_text(PLAYBOOK)
    before = _snapshot(str(work))

    out, changed = _play(str(playbook), "--check", "--diff", extra_vars={"work": work})
    assert changed == 3, out
    assert _snapshot(str(work)) == before, "check mode wrote something"
    assert '+    --cacert="%s/pd/tls/ca.crt" \\' % work in out
    assert "+[security]" in out
    assert '-    --client-urls="http://0.0.0.0:2379" \\' in out

    out, changed = _play(str(playbook), "--diff", extra_vars={"work": work})
    assert changed == 3, out
    with open(work / "pd" / "scripts" / "run_pd.sh") as fh:
        script = fh.read()
    assert '--client-urls="https://0.0.0.0:2379"' in script
    assert "--initial-cluster=\"pd-10.0.1.1-2379=https://" in script
    with open(work / "pd" / "conf" / "pd.toml", "rb") as fh:
        assert fh.read() == before["pd/conf/pd.toml"][0], "staging touched the live pd.toml"
    assert "[security]" in (work / "pd" / "conf" / "pd.toml.tls-pending").read_text()
    assert "[security]" in (work / "tikv" / "conf" / "tikv.toml").read_text()
    backups = sorted(p for p in os.listdir(work / "tikv" / "conf") if p.endswith(".bak"))
    assert len(backups) == 1

    after = _snapshot(str(work))
    out, changed = _play(str(playbook), "--diff", extra_vars={"work": work})
    assert changed == 0, out
    assert _snapshot(str(work)) == after, "an unchanged run rewrote a file"


def _examples(module):
    with open(os.path.join(REPO, "plugins", "modules", module + ".py")) as fh:
        source = fh.read()
    return re.search(r'EXAMPLES = r"""\n(.*?)"""', source, re.S).group(1)


@pytest.mark.parametrize("module", ["toml_edit", "script_flags"])
def test_examples_run(tmp_path, module):
    root = tmp_path / "tidb-deploy"
    for inst, files in (("pd-2379", [("conf", "pd.toml"), ("scripts", "run_pd.sh")]),
                        ("tikv-20160", [("conf", "tikv.toml"), ("scripts", "run_tikv.sh")])):
        for sub, name in files:
            os.makedirs(root / inst / sub, exist_ok=True)
            shutil.copy(os.path.join(FIXTURES, name), root / inst / sub / name)
    tasks = yaml.safe_load(_examples(module).replace("/tidb-deploy/", "%s/" % root))
    playbook = tmp_path / "examples.yml"
    playbook.write_text(yaml.safe_dump([{"name": "Examples of %s" % module, "hosts": "localhost",
                                         "gather_facts": False, "tasks": tasks}], sort_keys=False))
    out, changed = _play(str(playbook))
    assert changed >= 1, out

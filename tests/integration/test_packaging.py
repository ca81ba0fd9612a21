"""The collection as users get it: `ansible-galaxy collection build`, install the tarball into a fresh
collections path, then run a playbook by FQCN from that copy against a lab, with the inventory made by
the tiup_topology plugin from a TiUP topology.yaml that describes the lab.

Nothing here uses the checkout's own collection link: ANSIBLE_COLLECTIONS_PATH is the fresh path only.
"""

from __future__ import annotations

import getpass
import grp
import json
import os
import subprocess
import sys
import tarfile

import pytest
import yaml

from lab_harness import running_lab
from playbook_runner import REPO, run_playbook

pytestmark = pytest.mark.timeout(300)

BIN = os.path.dirname(sys.executable)
TIKV_LAB = os.path.join(REPO, "lab", "bin", "tikv-lab")
# Never in the tarball: the lab, tests, benchmarks, build output, the venv, lab roots, dev tooling.
NOT_SHIPPED = ("lab/", "tests/", "bench/", "build/", ".venv", ".lab", "extensions/", "tools/", "requirements/",
               ".git/", "Makefile")
CHANNELS = {"pd": {"pd_client", "pd_peer"}, "tikv": {"tikv_grpc", "tikv_status"}}


def clean_env(collections_path: str) -> dict[str, str]:
    """Only the fresh collections path: not the checkout's link, not site-packages, not ~/.ansible."""
    env = dict(os.environ)
    env.update({"ANSIBLE_COLLECTIONS_PATH": collections_path, "ANSIBLE_COLLECTIONS_SCAN_SYS_PATH": "0",
                "ANSIBLE_NOCOLOR": "1", "ANSIBLE_INVENTORY_UNPARSED_FAILED": "1"})
    return env


def run(*argv: str, env: dict[str, str] | None = None, cwd: str = REPO) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=180, env=env, cwd=cwd)
    assert proc.returncode == 0, "%s -> %d\n%s\n%s" % (" ".join(argv), proc.returncode, proc.stdout, proc.stderr)
    return proc.stdout


def plain(value):
    """ansible-inventory marks what an inventory plugin read as not-to-be-templated; the data is the same."""
    if isinstance(value, dict):
        if set(value) == {"__ansible_unsafe"}:
            return value["__ansible_unsafe"]
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [plain(item) for item in value]
    return value


@pytest.fixture(scope="module")
def tarball(tmp_path_factory: pytest.TempPathFactory) -> str:
    out = tmp_path_factory.mktemp("dist")
    run(os.path.join(BIN, "ansible-galaxy"), "collection", "build", "--output-path", str(out))
    built = [name for name in os.listdir(out) if name.endswith(".tar.gz")]
    assert built == ["tlsops-tikv-0.1.0.tar.gz"]
    return str(out / built[0])


@pytest.fixture(scope="module")
def installed(tarball: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The tarball installed, as `ansible-galaxy collection install` does for users; the collections path."""
    path = str(tmp_path_factory.mktemp("collections"))
    run(os.path.join(BIN, "ansible-galaxy"), "collection", "install", tarball, "-p", path, env=clean_env(path))
    return path


def test_tarball_holds_the_collection_and_nothing_of_the_development_tree(tarball: str):
    with tarfile.open(tarball) as tar:
        names = tar.getnames()
        manifest = json.load(tar.extractfile("MANIFEST.json"))
    shipped = [n for n in names if n.startswith(NOT_SHIPPED) or "__pycache__" in n or n.endswith(".pyc")]
    assert shipped == []
    for needed in ("playbooks/verify.yml", "plugins/inventory/tiup_topology.py",
                   "plugins/plugin_utils/_tiup_topology.py", "roles/verify/tasks/main.yml",
                   "roles/preflight/meta/argument_specs.yml", "meta/runtime.yml", "meta/ee-requirements.txt",
                   "docs/inventory.md", "README.md", "LICENSE"):
        assert needed in names, "%s missing from the tarball" % needed
    info = manifest["collection_info"]
    assert (info["namespace"], info["name"]) == ("tlsops", "tikv")
    assert info["dependencies"] == {}  # no Galaxy collection is needed: ansible.builtin only


def test_installed_collection_runs_verify_on_a_lab_described_by_a_tiup_topology(installed: str, tmp_path):
    env = clean_env(installed)
    # The only tlsops.tikv these runs can find is the installed copy (no tests/ in it: the tarball's).
    copy = os.path.join(installed, "ansible_collections", "tlsops", "tikv")
    assert os.path.isfile(os.path.join(copy, "MANIFEST.json")) and not os.path.islink(copy)
    assert not os.path.exists(os.path.join(copy, "tests"))

    with running_lab(str(tmp_path / "lab"), "--pd", "1", "--tikv", "1") as handle:
        lab = handle.lab()
        pds, tikvs = lab.of("pd"), lab.of("tikv")
        # What a TiUP user has: the topology, with the lab's ports and TiUP's default layout under the
        # global dirs (the lab lays instances out at <root>/tidb-deploy/<component>-<port>).
        topology = {
            "global": {"user": getpass.getuser(), "group": grp.getgrgid(os.getgid()).gr_name,
                       "deploy_dir": os.path.join(lab.root, "tidb-deploy"),
                       "data_dir": os.path.join(lab.root, "tidb-data")},
            "component_versions": {"pd": lab.pd_version, "tikv": lab.tikv_version},
            "pd_servers": [{"host": i.host, "client_port": i.ports["client"], "peer_port": i.ports["peer"]}
                           for i in pds],
            "tikv_servers": [{"host": i.host, "port": i.ports["grpc"], "status_port": i.ports["status"]}
                             for i in tikvs],
        }
        inventory_dir = tmp_path / "inventory"
        (inventory_dir / "group_vars").mkdir(parents=True)
        (inventory_dir / "topology.yaml").write_text(yaml.safe_dump(topology), encoding="utf-8")
        config = inventory_dir / "lab.tiup_topology.yml"
        config.write_text("plugin: tlsops.tikv.tiup_topology\ntopology_file: topology.yaml\n", encoding="utf-8")
        names = {"pd-%s-%d" % (i.host, i.ports["client"]): i.name for i in pds}
        names.update({"tikv-%s-%d" % (i.host, i.ports["grpc"]): i.name for i in tikvs})
        # Only what is specific to the lab (no SSH, no systemd) goes next to it, as a user would add it.
        service = "%s --root %s service {{ tiup_lab_names[inventory_hostname] }} " % (TIKV_LAB, lab.root)
        (inventory_dir / "group_vars" / "all.yml").write_text(yaml.safe_dump({
            "ansible_connection": "local",
            "ansible_python_interpreter": sys.executable,
            "tikv_tls_service_manager": "command",
            "tikv_tls_service_commands": {a: service + a for a in ("start", "stop", "restart", "status")},
            "tikv_tls_controller_dir": str(tmp_path / "controller"),
            "tiup_lab_names": names,
        }), encoding="utf-8")

        inventory = plain(json.loads(run(os.path.join(BIN, "ansible-inventory"), "-i", str(config), "--list", env=env)))
        assert sorted(inventory["pd"]["hosts"]) == sorted(n for n in names if n.startswith("pd-"))
        assert sorted(inventory["tikv"]["hosts"]) == sorted(n for n in names if n.startswith("tikv-"))
        hostvars = inventory["_meta"]["hostvars"]
        for inst in pds + tikvs:
            own = hostvars["%s-%s-%d" % (inst.component, inst.host, inst.main_port)]
            assert own["deploy_dir"] == inst.deploy_dir and own["data_dir"] == inst.data_dir
        assert hostvars["pd-%s-%d" % (pds[0].host, pds[0].main_port)]["pd_name"] == pds[0].pd_name

        report_dir = tmp_path / "report"
        result = run_playbook("tlsops.tikv.verify", str(config), "-e", "tikv_tls_report_dir=%s" % report_dir,
                              extra_env=env, timeout=240)
        result.assert_ok()
        assert result.changed() == {}
        assert set(result.recap) == set(names)
        with open(report_dir / "verify.json", encoding="utf-8") as fh:
            report = json.load(fh)
        assert report["verdict"] == "pass"
        seen = {(row["instance"], row["channel"]) for row in report["rows"]}
        assert seen == {(name, channel) for name in names for channel in CHANNELS[name.split("-")[0]]}

"""The config role against a running lab, through real ansible-playbook runs.

TestConfigRoleOnLab walks one plaintext lab through the whole life of the files: --check --diff
(nothing written, the diff shown), enable live (client https, peer still http: etcd keeps the stored
http peer URLs until a member update, see docs/tls-facts.md), a restart of every instance that brings
the cluster up healthy over TLS, a second run that changes nothing, disable (byte-identical files),
staged + swap, restore (from a later run and within the same run).
TestConfigRoleRefusals proves that bad input fails naming the instance before any file of any
instance changes (every file under tidb-deploy hashed before and after, mtimes included).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil

import pytest
import yaml
from tikvlab import certs

from lab_files import managed_files
from playbook_runner import REPO, run_playbook

pytestmark = pytest.mark.timeout(1800)

PLAYBOOKS = os.path.join(REPO, "tests", "integration", "playbooks")
CONFIG = os.path.join(PLAYBOOKS, "config_role.yml")
CONFIG_THEN_RESTORE = os.path.join(PLAYBOOKS, "config_then_restore.yml")
VERSION = os.path.join(PLAYBOOKS, "version.yml")
PD_NAMES = ("pd1", "pd2", "pd3")
TIKV_NAMES = ("tikv1", "tikv2", "tikv3")
CNS = {"pd": "pd", "tikv": "tikv"}
# The cutover's first step (docs/tls-facts.md): TLS on, client URLs https, peer listener still http.
ENABLE = ("-e", "tikv_tls_pd_peer_scheme=http",
          "-e", json.dumps({"tikv_tls_pd_allowed_cn": ["pd", "tikv"], "tikv_tls_tikv_allowed_cn": ["pd", "tikv"]}))


def place_certs(lab) -> certs.Issued:
    """A throwaway CA and one certificate per instance at <deploy_dir>/tls with TiUP's names."""
    ca = certs.make_ca()
    for inst in lab.instances:
        leaf = certs.make_leaf(ca, CNS[inst.component], [inst.host, "127.0.0.1", "localhost"])
        certs.write_tls_dir(os.path.join(inst.deploy_dir, "tls"), inst.component, ca, leaf)
    return ca


def deploy_files(root: str) -> dict[str, tuple[str, int]]:
    """sha256 and mtime of every file under <root>/tidb-deploy (logs excluded: the servers write them)."""
    out = {}
    base = os.path.join(root, "tidb-deploy")
    for dirpath, dirs, names in os.walk(base):
        dirs[:] = [d for d in dirs if d != "log"]
        for name in names:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as fh:
                out[os.path.relpath(path, base)] = (hashlib.sha256(fh.read()).hexdigest(), os.stat(path).st_mtime_ns)
    return out


def pending_files(root: str) -> list[str]:
    return sorted(p for p in deploy_files(root) if p.endswith(".tls-pending"))


def restart_cluster(handle) -> None:
    """TiKVs down, every PD restarted, TiKVs up again (the cutover's shape), then healthy."""
    for name in TIKV_NAMES:
        handle.ok("service", name, "stop")
    for name in PD_NAMES:
        handle.ok("service", name, "restart")
    for name in TIKV_NAMES:
        handle.ok("service", name, "start")
    handle.wait_healthy(90)


def tls_states(handle) -> dict[str, str]:
    status = json.loads(handle.run("status", "--json").stdout)
    return {row["name"]: row["tls"] for row in status["instances"]}


class TestConfigRoleOnLab:
    """One plaintext lab, taken through enable, idempotence, disable, staged/swap and restore."""

    state: dict = {}

    @pytest.fixture(autouse=True)
    def _lab(self, plaintext_cluster):
        self.cluster = plaintext_cluster
        self.handle = plaintext_cluster.handle
        self.lab = self.handle.lab()
        if "ca" not in self.state:
            self.state["ca"] = place_certs(self.lab)
            self.state["plaintext"] = managed_files(self.lab)

    def play(self, *args, playbook=CONFIG):
        return run_playbook(playbook, self.cluster.inventory, *args)

    def test_check_diff_writes_nothing(self):
        before = deploy_files(self.cluster.root)
        run = self.play("--check", "--diff", *ENABLE).assert_ok()
        assert deploy_files(self.cluster.root) == before, "check mode wrote something"
        assert set(run.changed()) == set(PD_NAMES + TIKV_NAMES)
        pd1 = self.lab.instance("pd1")
        # A readable unified diff of each file, as the operator reviews it.
        assert f"--- before: {pd1.config_path}" in run.output
        assert f'+cacert-path = "{pd1.deploy_dir}/tls/ca.crt"' in run.output
        assert '+cert-allowed-cn = ["pd", "tikv"]' in run.output
        assert f'-    --client-urls="http://127.0.0.1:{pd1.ports["client"]}" \\' in run.output
        assert f'+    --client-urls="https://127.0.0.1:{pd1.ports["client"]}" \\' in run.output
        assert '+    --peer-urls="https://' not in run.output, "the peer side must stay http"
        assert f'+ca-path = "{self.lab.instance("tikv1").deploy_dir}/tls/ca.crt"' in run.output

    def test_enable_live_then_the_cluster_runs_over_tls(self):
        run = self.play(*ENABLE).assert_ok()
        assert set(run.changed()) == set(PD_NAMES + TIKV_NAMES)
        for inst in self.lab.instances:
            with open(inst.config_path, encoding="utf-8") as fh:
                config = fh.read()
            assert "[security]" in config and f"{inst.deploy_dir}/tls/{inst.component}.pem" in config
            sets = os.listdir(os.path.join(inst.deploy_dir, "tls-backup"))
            assert len(sets) == 1
            with open(os.path.join(inst.deploy_dir, "tls-backup", sets[0], "manifest.json"), encoding="utf-8") as fh:
                manifest = json.load(fh)
            assert manifest["instance"] == inst.name and manifest["operation"] == "config"
            for original, entry in manifest["files"].items():
                with open(os.path.join(inst.deploy_dir, "tls-backup", sets[0], entry["backup"]), "rb") as fh:
                    assert fh.read() == self.state["plaintext"][original]
        with open(self.lab.instance("pd2").run_script, encoding="utf-8") as fh:
            script = fh.read()
        assert '--client-urls="https://' in script and '--peer-urls="http://' in script
        self.state["enabled"] = managed_files(self.lab)

        restart_cluster(self.handle)
        assert set(tls_states(self.handle).values()) == {"on"}
        # LabHandle.pd asks PD with an instance's own certificate now that its config has TLS.
        members = self.handle.pd("GET", "/members")["members"]
        assert len(members) == 3
        assert all(url.startswith("https://") for m in members for url in m["client_urls"])
        for name in TIKV_NAMES:
            assert self.handle.store_state(name) == "Up"

    def test_second_run_changes_nothing(self):
        before = deploy_files(self.cluster.root)
        run = self.play(*ENABLE).assert_ok()
        assert run.changed() == {}
        assert deploy_files(self.cluster.root) == before, "an unchanged run rewrote a file"

    def test_disable_gives_back_the_original_files(self):
        run = self.play("-e", "tikv_tls_config_state=disabled", "--diff").assert_ok()
        assert set(run.changed()) == set(PD_NAMES + TIKV_NAMES)
        assert managed_files(self.lab) == self.state["plaintext"], "disable is not the exact reverse"
        restart_cluster(self.handle)
        assert set(tls_states(self.handle).values()) == {"off"}
        assert self.play("-e", "tikv_tls_config_state=disabled").assert_ok().changed() == {}

    def test_staged_leaves_live_files_alone_and_swap_promotes(self):
        live = managed_files(self.lab)
        run = self.play("-e", "tikv_tls_config_mode=staged", *ENABLE).assert_ok()
        assert set(run.changed()) == set(PD_NAMES + TIKV_NAMES)
        assert managed_files(self.lab) == live, "staged mode touched a live file"
        expected = [os.path.relpath(p, os.path.join(self.cluster.root, "tidb-deploy")) + ".tls-pending"
                    for p in self.state["enabled"] if self.state["enabled"][p] != self.state["plaintext"][p]]
        assert pending_files(self.cluster.root) == sorted(expected)
        assert len(expected) == 9  # pd.toml + run_pd.sh for each PD, tikv.toml for each TiKV

        before = deploy_files(self.cluster.root)
        assert self.play("-e", "tikv_tls_config_mode=staged", *ENABLE).assert_ok().changed() == {}
        assert deploy_files(self.cluster.root) == before

        run = self.play("-e", "config_entry=swap", "--diff").assert_ok()
        assert set(run.changed()) == set(PD_NAMES + TIKV_NAMES)
        assert managed_files(self.lab) == self.state["enabled"], "swap did not give what live mode gives"
        assert pending_files(self.cluster.root) == []
        assert "(from pd.toml.tls-pending)" in run.output
        assert self.play("-e", "config_entry=swap").assert_ok().changed() == {}

    def test_restore_in_a_later_run_puts_back_the_latest_set(self):
        run = self.play("-e", "config_entry=restore", "--diff").assert_ok()
        assert set(run.changed()) == set(PD_NAMES + TIKV_NAMES)
        assert managed_files(self.lab) == self.state["plaintext"]
        assert self.play("-e", "config_entry=restore").assert_ok().changed() == {}
        assert managed_files(self.lab) == self.state["plaintext"]

    def test_restore_in_the_same_run_undoes_that_run(self):
        run = self.play(*ENABLE, playbook=CONFIG_THEN_RESTORE).assert_ok()
        assert set(run.changed()) == set(PD_NAMES + TIKV_NAMES)
        assert managed_files(self.lab) == self.state["plaintext"]
        # The cluster still starts from the restored (plaintext) files.
        restart_cluster(self.handle)
        assert set(tls_states(self.handle).values()) == {"off"}


@contextlib.contextmanager
def moved_aside(path: str):
    shutil.move(path, path + ".aside")
    try:
        yield
    finally:
        shutil.move(path + ".aside", path)


class TestConfigRoleRefusals:
    """Bad input fails naming the instance, and nothing changes on any instance."""

    ready: dict = {}

    @pytest.fixture(autouse=True)
    def _lab(self, plaintext_cluster, tmp_path):
        self.cluster = plaintext_cluster
        self.handle = plaintext_cluster.handle
        self.lab = self.handle.lab()
        self.tmp_path = tmp_path
        if self.cluster.root not in self.ready:
            self.ready[self.cluster.root] = place_certs(self.lab)

    def inventory(self, edit) -> str:
        with open(self.cluster.inventory, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
        edit(data)
        path = str(self.tmp_path / "inventory.yml")
        with open(path, "w", encoding="utf-8") as fh:
            yaml.safe_dump(data, fh)
        return path

    def refused(self, *args, inventory=None):
        before = deploy_files(self.cluster.root)
        run = run_playbook(CONFIG, inventory or self.cluster.inventory, *args)
        assert run.returncode != 0, run.output[-3000:]
        assert deploy_files(self.cluster.root) == before, "a refused run changed a file"
        return run.output.replace('\\"', '"')  # messages as the operator reads them, JSON escapes undone

    def test_bad_tls_files_name_each_instance(self):
        """tikv2 without its certificate, pd2 with a key of another certificate, tikv3 unreadable."""
        tikv2, pd2 = self.lab.instance("tikv2"), self.lab.instance("pd2")
        other = certs.make_leaf(self.ready[self.cluster.root], "pd")
        with open(os.path.join(pd2.deploy_dir, "tls", "pd.pem"), "rb") as fh:
            pd2_key = fh.read()

        def nobody_on_tikv3(data):
            data["all"]["children"]["tikv"]["hosts"]["tikv3"]["tikv_tls_service_user"] = "nobody"

        try:
            with open(os.path.join(pd2.deploy_dir, "tls", "pd.pem"), "wb") as fh:
                fh.write(other.key_pem)
            with moved_aside(os.path.join(tikv2.deploy_dir, "tls", "tikv.crt")):
                out = self.refused(inventory=self.inventory(nobody_on_tikv3))
        finally:
            with open(os.path.join(pd2.deploy_dir, "tls", "pd.pem"), "wb") as fh:
                fh.write(pd2_key)
        assert f"tikv2: missing TLS file(s): {tikv2.deploy_dir}/tls/tikv.crt" in out
        assert (f"pd2: {pd2.deploy_dir}/tls/pd.crt cannot be used: the private key {pd2.deploy_dir}/tls/pd.pem "
                "does not match the certificate") in out
        if os.geteuid() == 0:
            assert "tikv3: the service user nobody" in out and "cannot read" in out
        assert "not writing anything, because" in out

    def test_pd_v83_with_two_cns(self):
        out = self.refused("-e", "tikv_tls_version=v8.3.0",
                           "-e", json.dumps({"tikv_tls_pd_allowed_cn": ["pd", "tikv"]}))
        for name in PD_NAMES:
            assert f"{name}: PD v8.3.0 accepts only one cert-allowed-cn" in out
        assert "tikv1: not writing anything, because pd1, pd2, pd3 failed" in out

    def test_unknown_component(self):
        def add_tidb(data):
            data["all"]["children"]["tidb"] = {"hosts": {"tidb1": {"ansible_host": "127.0.0.1"}}}

        out = self.refused("-e", "config_hosts=all", inventory=self.inventory(add_tidb))
        assert "tidb1: not in the 'pd' or 'tikv' group" in out
        assert "pd1: not writing anything, because tidb1 failed" in out

    def test_unknown_version_with_a_cn_list(self):
        pd1 = self.lab.instance("pd1")
        with moved_aside(os.path.join(pd1.deploy_dir, "bin", "pd-server")):
            out = self.refused("-e", "tikv_tls_version=", "-e", json.dumps({"tikv_tls_pd_allowed_cn": ["pd", "tikv"]}))
        assert f"pd1: cannot tell which PD release runs here: `{pd1.deploy_dir}/bin/pd-server -V` failed" in out
        assert 'Its cert-allowed-cn ["pd", "tikv"] depends on it' in out
        assert "Set tikv_tls_version for this host" in out

    def test_caller_cn_missing_from_the_allow_list(self):
        out = self.refused("-e", json.dumps({"tikv_tls_tikv_allowed_cn": ["tikv"]}))
        assert 'tikv1: tikv_tls_tikv_allowed_cn ["tikv"] leaves out ["pd"]' in out

    def test_scheme_contradicting_the_state(self):
        out = self.refused("-e", "tikv_tls_config_state=disabled", "-e", "tikv_tls_pd_client_scheme=https")
        assert "pd1: tikv_tls_config_state=disabled with tikv_tls_pd_client_scheme=https" in out

    def test_single_pd_cn_warns_and_the_version_is_detected(self):
        """A check run (writes nothing): without tikv_tls_version the binary's -V is read; a single PD CN
        on v8.5 gets the warning that the client port checks no CN."""
        before = deploy_files(self.cluster.root)
        run = run_playbook(CONFIG, self.cluster.inventory, "--check", "-e", "tikv_tls_version=",
                           "-e", json.dumps({"tikv_tls_pd_allowed_cn": ["pd"]})).assert_ok()
        assert deploy_files(self.cluster.root) == before
        assert "WARNING pd1: PD v8.5.0 with the single cert-allowed-cn" in run.output
        assert "checks the CN only on its peer port" in run.output

        run = run_playbook(VERSION, self.cluster.inventory, "-e", "tikv_tls_version=").assert_ok()
        for name in PD_NAMES + TIKV_NAMES:
            assert f'"msg": "{name}: v8.5.0 from binary"' in run.output

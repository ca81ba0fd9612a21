"""tlsops.tikv.rotate_certs against a TLS lab (3 PD + 3 TiKV, local mode) whose PKI the collection adopted.

What an operator checks after a certificate rotation: every port serves the new serial; PD and TiKV's gRPC
port reloaded without a restart (same PIDs); only instances whose status port kept the old certificate
were restarted; a second run changes nothing; --check changes nothing. The lab's leaves are valid for 30
days, so the pki role's renewal rule (tikv_tls_renew_before_days=30) selects every one of them.
One lab for the class; the tests run in order.
"""

from __future__ import annotations

import os
import re
import time

import pytest

from playbook_runner import run_playbook
from tikvlab import certs
from rotation_lab import PlaintextPoker, adopt_lab_pki, file_serials, pids, restarted_between, served_serials, starts

pytestmark = pytest.mark.timeout(3600)

PLAYBOOK = "tlsops.tikv.rotate_certs"


@pytest.fixture(scope="class")
def ctl(tls_cluster, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("rotate-certs") / "tlsops")
    adopt_lab_pki(tls_cluster, path)
    return path


def rotate(lab, ctl, *args):
    began = time.monotonic()
    run = run_playbook(PLAYBOOK, lab.inventory, "-e", "tikv_tls_controller_dir=" + ctl,
                       "-e", "tikv_tls_report_dir=" + os.path.join(ctl, "report"), *args,
                       timeout=2400)  # generous: the machine may be shared
    print("rotate_certs %s: %.0f s wall" % (" ".join(args) or "(defaults)", time.monotonic() - began))
    return run


def changed_tasks(run):
    """The tasks that reported a change, with the hosts: what to look at when a run should change nothing."""
    out, task = [], None
    for line in run.output.splitlines():
        if line.startswith("TASK ["):
            task = line
        elif line.startswith("changed: ["):
            out.append("%s %s" % (task, line))
    return out


def tls_tree(lab):
    """Content and mtime of every file in every instance's TLS directory."""
    state = {}
    for inst in lab.handle.lab().instances:
        tls = os.path.join(inst.deploy_dir, "tls")
        for name in sorted(os.listdir(tls)):
            path = os.path.join(tls, name)
            with open(path, "rb") as fh:
                state[path] = (fh.read(), os.stat(path).st_mtime_ns)
    return state


@pytest.mark.usefixtures("tls_cluster")
class TestRotateCerts:
    def test_check_mode_says_what_it_would_issue_and_changes_nothing(self, tls_cluster, ctl):
        before_files, before_pids = tls_tree(tls_cluster), pids(tls_cluster)
        run = rotate(tls_cluster, ctl, "--check").assert_ok()
        assert tls_tree(tls_cluster) == before_files, "check mode wrote something"
        assert pids(tls_cluster) == before_pids
        for inst in tls_cluster.handle.lab().instances:
            assert re.search(r"%s \(%s, CN %s\): would be issued - expires \S+ \(\d+ days left, renew_before_days=30\)"
                             % (inst.name, inst.component, inst.component), run.output), run.output[-3000:]

    def test_a_run_that_would_change_trust_is_refused_before_any_write(self, tls_cluster, ctl):
        # tikv3 trusts one more CA than the controller's CA: renewing with it would drop that trust.
        ca_crt = os.path.join(tls_cluster.handle.instance("tikv3").deploy_dir, "tls", "ca.crt")
        with open(ca_crt, "rb") as fh:
            original = fh.read()
        try:
            with open(ca_crt, "ab") as fh:
                fh.write(certs.make_ca("another CA").cert_pem)
            before = tls_tree(tls_cluster)
            run = rotate(tls_cluster, ctl, "--limit", "tikv2,tikv3")
            assert run.returncode != 0
            assert "is not the set of CAs that tikv3 trust(s) now" in run.output, run.output[-3000:]
            assert "run tlsops.tikv.rotate_ca" in run.output and "Nothing was written on any instance" in run.output
            assert tls_tree(tls_cluster) == before, "a refused run wrote something"
        finally:
            with open(ca_crt, "wb") as fh:
                fh.write(original)

    def test_rotation_reloads_without_restarts_and_restarts_only_stale_status_ports(self, tls_cluster, ctl):
        lab = tls_cluster
        before_pids, before_files, before_served = pids(lab), file_serials(lab), served_serials(lab, ctl)
        before_starts = starts(lab)
        assert all(before_served[(name, channel)] == before_files[name] for name, channel in before_served)
        tikv1 = lab.handle.instance("tikv1")
        # A plaintext health checker on tikv1's status port: every attempt is a failed handshake, after
        # which TiKV's status server re-reads its certificate. tikv2's and tikv3's status ports see no
        # error, so they keep serving the old certificate: without provoking one (the default), the
        # playbook must restart exactly those two.
        with PlaintextPoker(tikv1.host, tikv1.ports["status"]):
            run = rotate(lab, ctl, "-e", "tikv_tls_rotation_provoke_reload=false")
        run.assert_ok()
        after_pids, after_files, after_served = pids(lab), file_serials(lab), served_serials(lab, ctl)
        # Every certificate is new, and every port serves it.
        assert all(after_files[name] != before_files[name] for name in before_files)
        assert after_served == {(name, channel): after_files[name] for name, channel in after_served}
        # PD read the new certificate on the next handshake and tikv1 reloaded both ports: not restarted
        # (their logs show no new start, their PIDs are the same); tikv2 and tikv3 were restarted once.
        assert restarted_between(before_starts, starts(lab)) == {"tikv2": 1, "tikv3": 1}
        assert {name for name in before_pids if after_pids[name] != before_pids[name]} == {"tikv2", "tikv3"}
        assert "To restart (auto): tikv2, tikv3" in run.output
        for name in ("tikv2", "tikv3"):
            port = lab.handle.instance(name).ports["status"]
            assert re.search(r"%s tikv_status 127\.0\.0\.1:%d: serves serial [0-9A-F]+, the certificate file holds serial "
                             r"%X \(the new certificate is not loaded\)" % (name, port, after_files[name]), run.output)
        assert not re.search(r"tikv1 tikv_\w+ 127\.0\.0\.1:\d+: serves serial", run.output)
        assert "TLS audit passed: cluster tls" in run.output
        lab.handle.wait_healthy(30)

    def test_a_second_run_changes_nothing(self, tls_cluster, ctl):
        lab = tls_cluster
        before_files, before_pids = tls_tree(lab), pids(lab)
        run = rotate(lab, ctl).assert_ok()
        # The audit keeps a record of when its own probes ran on the controller (not a change to the cluster).
        changes = [t for t in changed_tasks(run) if "Record the window of this audit's probes" not in t]
        assert changes == [], changes
        assert tls_tree(lab) == before_files and pids(lab) == before_pids
        assert "Every port shows the new material; nothing to restart." in run.output

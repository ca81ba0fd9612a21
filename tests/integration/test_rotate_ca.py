"""tlsops.tikv.rotate_ca against a TLS lab (3 PD + 3 TiKV, local mode) whose PKI the collection adopted,
with TiKV's cert-allowed-cn set (so its status port checks client certificates too).

An application keeps making requests to PD and to every TiKV throughout, with the operator's files from the
controller directory, and none may fail. The rotation is interrupted after phase 1 (tikv_tls_rotation_last_phase=1)
and a second run must resume at phase 2 and finish. Afterwards a certificate the old CA signed is refused on
every port, every certificate is from the new CA, and the new CA has replaced the old one on the controller.
PD is restarted once per trust change (phases 1 and 3); TiKV never: it reloads when its certificate is touched.
One lab for the class; the tests run in order.
"""

from __future__ import annotations

import glob
import os
import re
import time

import pytest
import tomlkit
from cryptography import x509

from playbook_runner import run_playbook
from rotation_lab import Client, adopt_lab_pki, cert_of, grpc_accepts, pids, restarted_between, starts, tls_accepts

pytestmark = pytest.mark.timeout(3600)

PLAYBOOK = "tlsops.tikv.rotate_ca"
ALLOWED_CN = ["pd", "tikv", "client"]


@pytest.fixture(scope="class")
def rotation(tls_cluster, tmp_path_factory):
    """The adopted controller directory; TiKV restarted once with cert-allowed-cn (before the PIDs are noted)."""
    ctl = str(tmp_path_factory.mktemp("rotate-ca") / "tlsops")
    adopt_lab_pki(tls_cluster, ctl)
    for inst in tls_cluster.handle.lab().of("tikv"):
        with open(inst.config_path, encoding="utf-8") as fh:
            doc = tomlkit.parse(fh.read())
        doc["security"]["cert-allowed-cn"] = ALLOWED_CN
        with open(inst.config_path, "w", encoding="utf-8") as fh:
            fh.write(tomlkit.dumps(doc))
        tls_cluster.handle.ok("service", inst.name, "restart")
    tls_cluster.handle.wait_healthy(60)
    return {"ctl": ctl, "pids": pids(tls_cluster), "starts": starts(tls_cluster),
            "old_ca": cert_of(os.path.join(tls_cluster.root, "ca", "ca.crt"))}


def rotate(lab, ctl, *args):
    began = time.monotonic()
    with Client(lab, ctl) as client:
        run = run_playbook(PLAYBOOK, lab.inventory, "-e", "tikv_tls_controller_dir=" + ctl,
                           "-e", "tikv_tls_report_dir=" + os.path.join(ctl, "report"),
                           "-e", "tikv_tls_renew_before_days=7", *args,
                           timeout=2400)  # generous: the machine may be shared
    print("rotate_ca %s: %.0f s wall, %d client requests, %d failed"
          % (" ".join(args) or "(defaults)", time.monotonic() - began, client.requests, len(client.failures)))
    return run, client


def why(run):
    """The run's own account of what it restarted and why (for assertion messages)."""
    return [line.strip() for line in run.output.splitlines()
            if "To restart" in line or re.search(r"^\s+\"\w+ (pd|tikv)_\w+ \S+: ", line)][:30]


def certs_in(path):
    with open(path, "rb") as fh:
        return x509.load_pem_x509_certificates(fh.read())


def tls_dir(inst):
    return os.path.join(inst.deploy_dir, "tls")


@pytest.mark.usefixtures("tls_cluster")
class TestRotateCA:
    def test_a_run_limited_to_part_of_the_cluster_is_refused_before_anything_changes(self, tls_cluster, rotation):
        lab, ctl = tls_cluster, rotation["ctl"]
        trust = {inst.name: certs_in(os.path.join(tls_dir(inst), "ca.crt")) for inst in lab.handle.lab().instances}
        run = run_playbook(PLAYBOOK, lab.inventory, "-e", "tikv_tls_controller_dir=" + ctl, "--limit", "pd1,pd2,pd3,tikv1")
        assert run.returncode != 0
        assert re.search(r"rotate_ca moves every PD and TiKV instance through each phase together, but this run "
                         r"leaves out tikv2, tikv3 \(--limit\)\. Run it without --limit", run.output), run.output[-3000:]
        assert not os.path.exists(os.path.join(ctl, "ca-next"))
        assert {inst.name: certs_in(os.path.join(tls_dir(inst), "ca.crt")) for inst in lab.handle.lab().instances} == trust
        assert pids(lab) == rotation["pids"]

    def test_phase_1_every_instance_trusts_both_cas_with_pd_restarted_and_tikv_reloaded(self, tls_cluster, rotation):
        lab, ctl = tls_cluster, rotation["ctl"]
        run, client = rotate(lab, ctl, "-e", "tikv_tls_rotation_last_phase=1")
        run.assert_ok()
        assert client.requests > 20 and client.failures == [], client.failures[:5]
        assert "phase 1 (trust the new CA next to the old one) is next, this run goes up to phase 1" in run.output
        assert "Stopped after phase 1: every instance trusts both CAs." in run.output
        new_ca = cert_of(os.path.join(ctl, "ca-next", "ca.crt"))
        assert new_ca.subject != rotation["old_ca"].subject
        # Files: every ca.crt trusts the old and the new CA; the certificates are still the old CA's.
        for inst in lab.handle.lab().instances:
            assert certs_in(os.path.join(tls_dir(inst), "ca.crt")) == [rotation["old_ca"], new_ca], inst.name
            assert cert_of(os.path.join(tls_dir(inst), inst.component + ".crt")).issuer == rotation["old_ca"].subject
        # Processes (their logs and PIDs): every PD started once more (it loads its CA at start only); TiKV not.
        rotation["after_phase_1"] = starts(lab)
        restarted = restarted_between(rotation["starts"], rotation["after_phase_1"])
        assert restarted == {"pd1": 1, "pd2": 1, "pd3": 1}, (restarted, why(run))
        now = pids(lab)
        assert all(now[n] != rotation["pids"][n] for n in ("pd1", "pd2", "pd3"))
        assert all(now[n] == rotation["pids"][n] for n in ("tikv1", "tikv2", "tikv3"))
        # Every port that checks client certificates accepts one from the new CA (TiKV's status port too: it
        # asks for one, having cert-allowed-cn).
        probe = [os.path.join(ctl, "rotation", name) for name in ("trust-both.crt", "probe-new.crt", "probe.pem")]
        for inst in lab.handle.lab().instances:
            if inst.component == "pd":
                assert tls_accepts(inst.host, inst.ports["client"], *probe), inst.name
            else:
                assert grpc_accepts(inst.address, *probe), inst.name
                assert tls_accepts(inst.host, inst.ports["status"], *probe), inst.name

    def test_a_rerun_resumes_at_phase_2_and_finishes_with_only_the_new_ca_trusted(self, tls_cluster, rotation):
        lab, ctl = tls_cluster, rotation["ctl"]
        run, client = rotate(lab, ctl)
        run.assert_ok()
        assert client.requests > 20 and client.failures == [], client.failures[:5]
        assert "phase 2 (certificates from the new CA) is next, this run goes up to phase 3" in run.output
        # Phase 1 was not redone: every PD started once more, for phase 3 only; TiKV still never.
        restarted = restarted_between(rotation["after_phase_1"], starts(lab))
        assert restarted == {"pd1": 1, "pd2": 1, "pd3": 1}, (restarted, why(run))
        now = pids(lab)
        assert all(now[n] == rotation["pids"][n] for n in ("tikv1", "tikv2", "tikv3"))
        # The controller: the new CA is the pki role's CA now, the old one retired, the operator's certificate new.
        new_ca = cert_of(os.path.join(ctl, "ca", "ca.crt"))
        assert new_ca.subject != rotation["old_ca"].subject
        assert not os.path.exists(os.path.join(ctl, "ca-next")) and not os.path.exists(os.path.join(ctl, "rotation"))
        assert [cert_of(p) for p in glob.glob(os.path.join(ctl, "ca-retired", "*", "ca.crt"))] == [rotation["old_ca"]]
        assert certs_in(os.path.join(ctl, "ca.crt")) == [new_ca]
        operator = cert_of(os.path.join(ctl, "clients", "client.crt"))
        assert operator.issuer == new_ca.subject
        assert re.search(r"client certificate %s .*issued by %s, valid until" % (
            re.escape(os.path.join(ctl, "clients", "client.crt")), re.escape(new_ca.subject.rfc4514_string())), run.output)
        assert re.search(r"The old CA CN=tikvlab-ca\s+is no longer trusted anywhere \(checked \d{4}-\d\d-\d\dT", run.output)
        # Every instance: only the new CA trusted, a certificate from it.
        for inst in lab.handle.lab().instances:
            assert certs_in(os.path.join(tls_dir(inst), "ca.crt")) == [new_ca], inst.name
            assert cert_of(os.path.join(tls_dir(inst), inst.component + ".crt")).issuer == new_ca.subject, inst.name
        assert "TLS audit passed: cluster tls" in run.output
        lab.handle.wait_healthy(30)

    def test_an_audit_right_after_the_rotation_passes(self, tls_cluster, rotation):
        # The rotation's probes made the servers log refusals on purpose (a certificate from the old CA); it
        # records when it probed, so the audit's usual 15-minute log window does not count them.
        audit = run_playbook("tlsops.tikv.verify", tls_cluster.inventory, "-e", "tikv_tls_controller_dir=" + rotation["ctl"],
                             "-e", "tikv_tls_report_dir=" + os.path.join(rotation["ctl"], "report"),
                             "-e", "tikv_tls_verify_require_tls=true", timeout=1200)
        audit.assert_ok()
        assert "TLS audit passed: cluster tls" in audit.output

    # Last: these probes make every server log a refusal on purpose, which an audit right after would count.
    def test_a_certificate_of_the_old_ca_is_refused_everywhere(self, tls_cluster, rotation):
        lab, ctl = tls_cluster, rotation["ctl"]
        # A client certificate from the old CA (the lab's own operator certificate) is refused on every port;
        # the new operator certificate is accepted on the same ports.
        old = [os.path.join(ctl, "ca.crt"), os.path.join(lab.root, "client-tls", "client.crt"),
               os.path.join(lab.root, "client-tls", "client.pem")]
        new = [os.path.join(ctl, "ca.crt"), os.path.join(ctl, "clients", "client.crt"),
               os.path.join(ctl, "clients", "client.pem")]
        for inst in lab.handle.lab().instances:
            if inst.component == "pd":
                for port in ("client", "peer"):
                    assert not tls_accepts(inst.host, inst.ports[port], *old), (inst.name, port)
                    assert tls_accepts(inst.host, inst.ports[port], *new), (inst.name, port)
            else:
                assert not grpc_accepts(inst.address, *old), inst.name
                assert grpc_accepts(inst.address, *new), inst.name
                assert not tls_accepts(inst.host, inst.ports["status"], *old), inst.name
                assert tls_accepts(inst.host, inst.ports["status"], *new), inst.name

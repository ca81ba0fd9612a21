"""The verify playbook against the lab: the "before" picture of a plaintext cluster, an all-green TLS
cluster, and faults it must name (instance, channel and source) from the controller and from the peers.

Assertions read the JSON report (what machines consume), not only the exit code.
"""

from __future__ import annotations

import json
import os
import re
import time

import pytest

from playbook_runner import PlaybookRun, run_playbook
from tikvlab import certs

pytestmark = pytest.mark.timeout(900)

CHANNELS = {"pd": ("pd_client", "pd_peer"), "tikv": ("tikv_grpc", "tikv_status")}
INSTANCES = {"pd1": "pd", "pd2": "pd", "pd3": "pd", "tikv1": "tikv", "tikv2": "tikv", "tikv3": "tikv"}


def audit(lab, tmp_path, name, *args, tls=True):
    """Run tlsops.tikv.verify; returns (run, report dict or None)."""
    report_dir = str(tmp_path / name)
    extra = ["-f", "10", "-e", "tikv_tls_report_dir=" + report_dir]
    if tls:
        extra += ["-e", "tikv_tls_operator_ca_path=%s/client-tls/ca.crt" % lab.root,
                  "-e", "tikv_tls_operator_cert_path=%s/client-tls/client.crt" % lab.root,
                  "-e", "tikv_tls_operator_key_path=%s/client-tls/client.pem" % lab.root]
    run = run_playbook("tlsops.tikv.verify", lab.inventory, *extra, *args)
    path = os.path.join(report_dir, "verify.json")
    report = None
    if os.path.exists(path):
        with open(path, encoding="utf-8") as fh:
            report = json.load(fh)
        assert os.path.exists(os.path.join(report_dir, "verify.md"))
    return run, report


def rows(report, **match):
    return [r for r in report["rows"] if all(r[k] == v for k, v in match.items())]


def cluster_check(report, name):
    return [c for c in report["cluster_checks"] if c["name"] == name][0]


def assert_read_only(run: PlaybookRun):
    assert run.changed() == {}, "the audit reported changes: %s" % run.changed()


def recertify(lab, name, ca, cn):
    """Give an instance a new leaf (CN `cn`, signed by `ca`), keeping the cluster's ca.crt."""
    inst = lab.handle.instance(name)
    with open(os.path.join(lab.root, "ca", "ca.crt"), "rb") as fh:
        cluster_ca = fh.read()
    leaf = certs.make_leaf(ca, cn, ["127.0.0.1", "localhost"])
    certs.write_tls_dir(os.path.join(inst.deploy_dir, "tls"), inst.component, certs.Issued(cluster_ca, b""), leaf)


def cluster_ca(lab):
    with open(os.path.join(lab.root, "ca", "ca.crt"), "rb") as crt, open(os.path.join(lab.root, "ca", "ca.key"), "rb") as key:
        return certs.Issued(crt.read(), key.read())


class TestPlaintextCluster:
    def test_the_before_picture_lists_every_channel_as_plaintext_and_passes(self, plaintext_cluster, tmp_path):
        run, report = audit(plaintext_cluster, tmp_path, "plain", tls=False)
        run.assert_ok()
        assert_read_only(run)
        assert report["verdict"] == "pass" and report["cluster_state"] == "plaintext"
        seen = {(r["instance"], r["channel"]) for r in report["rows"]}
        assert seen == {(i, c) for i, comp in INSTANCES.items() for c in CHANNELS[comp]}
        assert {(r["source"], r["result"]) for r in report["rows"]} == {("controller", "plaintext")}
        assert all(r["protocol"] is None and r["plaintext_refused"] is False for r in report["rows"])
        assert cluster_check(report, "pd_urls")["result"] == "plaintext"
        assert cluster_check(report, "config_security")["result"] == "plaintext"
        for name in ("pd_members", "pd_health", "stores_up", "pd_peer_links", "log_tls_errors"):
            assert cluster_check(report, name)["result"] == "ok", cluster_check(report, name)
        # The table is printed too.
        assert "| pd1 | PD peer |" in run.output and "plaintext" in run.output

    def test_require_tls_fails_on_every_channel_even_in_check_mode(self, plaintext_cluster, tmp_path):
        run, report = audit(plaintext_cluster, tmp_path, "plain-required", "--check",
                            "-e", "tikv_tls_verify_require_tls=true", "-e", "tikv_tls_verify_print_table=false",
                            tls=False)
        assert run.returncode != 0
        assert_read_only(run)
        assert report["verdict"] == "fail" and report["summary"]["fail"] == 12
        expected = ("tikv2 tikv_status (127.0.0.1:%d) from controller: tls: serves plaintext and "
                    "tikv_tls_verify_require_tls is true" % plaintext_cluster.handle.instance("tikv2").ports["status"])
        assert expected in report["failures"]
        assert "TLS audit FAILED" in run.output


class TestTLSClusterThenForeignCA:
    def test_a_tls_cluster_is_all_green(self, tls_cluster, tmp_path):
        run, report = audit(tls_cluster, tmp_path, "tls")
        run.assert_ok()
        assert_read_only(run)
        assert report["verdict"] == "pass" and report["cluster_state"] == "tls", report["failures"]
        assert report["summary"]["fail"] == 0 and report["summary"]["not_checked"] == 0
        for instance, component in INSTANCES.items():
            for channel in CHANNELS[component]:
                controller = rows(report, instance=instance, channel=channel, source="controller")
                assert len(controller) == 1 and controller[0]["result"] == "ok"
                assert controller[0]["protocol"] in ("TLSv1.2", "TLSv1.3") and controller[0]["cipher"]
                assert controller[0]["cert_days_left"] >= 28 and controller[0]["plaintext_refused"] is True
                expected_mtls = channel != "tikv_status"  # the status port: only with cert-allowed-cn
                assert controller[0]["mtls_enforced"] is expected_mtls
                peers = [r for r in rows(report, instance=instance, channel=channel) if r["source_kind"] == "peer"]
                assert peers and all(r["result"] == "ok" and r["client_cert_accepted"] for r in peers)
        # TiKV->PD and PD->PD on the client port, PD->PD on the peer port, TiKV->TiKV with a real call.
        assert {r["source"][:2] for r in rows(report, instance="pd1", channel="pd_client")} == {"co", "ti", "pd"}
        assert all(r["call"]["grpc_status_name"] == "OK"
                   for r in rows(report, channel="tikv_grpc", source_kind="peer"))
        for check in report["cluster_checks"]:
            assert check["result"] == ("not_checked" if check["name"] == "cn_allow_lists" else "ok"), check
        assert "TLS audit passed" in run.output

    def test_a_tikv_with_a_certificate_from_another_ca_is_named_from_controller_and_peers(self, tls_cluster, tmp_path):
        recertify(tls_cluster, "tikv3", certs.make_ca("rogue-ca"), "tikv")
        tls_cluster.handle.ok("service", "tikv3", "restart")
        time.sleep(2)
        run, report = audit(tls_cluster, tmp_path, "foreign-ca", "-e", "tikv_tls_verify_print_table=false")
        assert run.returncode != 0
        assert_read_only(run)
        assert report["verdict"] == "fail"
        for channel in ("tikv_grpc", "tikv_status"):
            (controller,) = rows(report, instance="tikv3", channel=channel, source="controller")
            assert controller["result"] == "fail" and controller["reasons"][0].startswith("chain: certificate verify failed")
            (from_peer,) = rows(report, instance="tikv3", channel=channel, source="tikv1")
            assert from_peer["result"] == "fail" and from_peer["reasons"][0].startswith("chain:")
        # tikv3's certificate, as a client, is refused by the others too (TiKV->PD and TiKV->TiKV).
        from_tikv3 = [r for r in report["rows"] if r["source"] == "tikv3"]
        assert {(r["instance"], r["channel"]) for r in from_tikv3 if r["result"] == "fail"} >= {
            ("pd3", "pd_client"), ("tikv2", "tikv_grpc")}
        assert any(f.startswith("tikv3 tikv_grpc (") and "from controller: chain" in f for f in report["failures"])
        assert any(f.startswith("tikv3 tikv_grpc (") and "from tikv1: chain" in f for f in report["failures"])
        # Every other instance's own channels are still fine from the controller.
        assert all(r["result"] == "ok" for r in report["rows"]
                   if r["source"] == "controller" and r["instance"] != "tikv3")
        assert cluster_check(report, "log_tls_errors")["result"] == "fail"


class TestAllowListAndPeerLinkFaults:
    def test_a_cn_outside_the_allow_list_and_a_broken_peer_link_behind_green_health(self, tls_cluster, tmp_path):
        lab = tls_cluster
        # Every TiKV admits tikv, pd and the operator; tikv3 gets a CN outside that list (same CA).
        for name in ("tikv1", "tikv2", "tikv3"):
            path = lab.handle.instance(name).config_path
            with open(path, encoding="utf-8") as fh:
                text = fh.read()
            assert text.rstrip().splitlines()[-4].strip() == "[security]"  # the lab's last table
            with open(path, "a", encoding="utf-8") as fh:
                fh.write('cert-allowed-cn = ["tikv", "pd", "client"]\n')
        recertify(lab, "tikv3", cluster_ca(lab), "tikv-rogue")
        # pd3's peer listener goes back to http while etcd's membership says https: every member stays
        # "healthy" (health pings client URLs) while the raft links to pd3 fail their TLS handshake.
        inst = lab.handle.instance("pd3")
        with open(inst.run_script, encoding="utf-8") as fh:
            script = fh.read()
        script, count = re.subn(r'--peer-urls="https://', '--peer-urls="http://', script)
        assert count == 1
        with open(inst.run_script, "w", encoding="utf-8") as fh:
            fh.write(script)
        for name in ("pd3", "tikv1", "tikv2", "tikv3"):
            lab.handle.ok("service", name, "restart")
        lab.handle.wait_healthy(60)
        time.sleep(3)

        run, report = audit(lab, tmp_path, "faults", "-e", "tikv_tls_verify_print_table=false")
        assert run.returncode != 0
        assert_read_only(run)

        # The allow-list: the peers' gRPC call names it, and the controller's cross-check names tikv3.
        (call_row,) = rows(report, instance="tikv2", channel="tikv_grpc", source="tikv3")
        assert call_row["result"] == "fail" and call_row["call"]["grpc_status_name"] == "UNAUTHENTICATED"
        assert "Common name check fail" in call_row["reasons"][0]
        assert call_row["client_cert_accepted"] is True  # the handshake alone passes: only the call shows it
        allow = cluster_check(report, "cn_allow_lists")
        assert allow["result"] == "fail"
        assert any("does not admit tikv3's CN 'tikv-rogue'" in p for p in allow["problems"])
        # With cert-allowed-cn the status ports now require a client certificate, and do.
        for name in ("tikv1", "tikv2", "tikv3"):
            (status,) = rows(report, instance=name, channel="tikv_status", source="controller")
            assert status["result"] == "ok" and status["mtls_enforced"] is True

        # Health lies, the peer links do not.
        assert cluster_check(report, "pd_health")["result"] == "ok"
        links = cluster_check(report, "pd_peer_links")
        assert links["result"] == "fail"
        assert any("-> pd-127.0.0.1-%d" % inst.ports["client"] in p for p in links["problems"])
        (peer_port,) = rows(report, instance="pd3", channel="pd_peer", source="controller")
        assert peer_port["result"] == "fail" and "serves plaintext while the cluster runs TLS" in peer_port["reasons"][0]
        assert cluster_check(report, "log_tls_errors")["result"] == "fail"

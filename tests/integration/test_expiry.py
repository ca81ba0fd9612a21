"""The check_expiry playbook against the lab: metrics for every certificate on disk and on every port,
the threshold gate, a renewed certificate a port has not picked up yet, and a plaintext cluster."""

from __future__ import annotations

import os
import re

import pytest
from cryptography import x509

from playbook_runner import run_playbook
from tikvlab import certs

pytestmark = pytest.mark.timeout(600)

INSTANCES = ("pd1", "pd2", "pd3", "tikv1", "tikv2", "tikv3")
SAMPLE = re.compile(r'^(?P<metric>[a-z_]+)\{(?P<labels>.*)\} (?P<value>-?\d+)$')


def check(lab, tmp_path, *args, tls=True):
    textfile = str(tmp_path / "tikv_tls.prom")
    extra = ["-f", "10", "-e", "tikv_tls_expiry_textfile=" + textfile]
    if tls:
        extra += ["-e", "tikv_tls_operator_ca_path=%s/client-tls/ca.crt" % lab.root,
                  "-e", "tikv_tls_operator_cert_path=%s/client-tls/client.crt" % lab.root,
                  "-e", "tikv_tls_operator_key_path=%s/client-tls/client.pem" % lab.root]
    run = run_playbook("tlsops.tikv.check_expiry", lab.inventory, *extra, *args)
    samples = []
    if os.path.exists(textfile):
        with open(textfile, encoding="utf-8") as fh:
            for line in fh:
                match = SAMPLE.match(line.strip())
                if match:
                    labels = dict(re.findall(r'([a-z_]+)="((?:[^"\\]|\\.)*)"', match.group("labels")))
                    samples.append((match.group("metric"), labels, int(match.group("value"))))
    return run, samples


def file_cert(path):
    with open(path, "rb") as fh:
        return x509.load_pem_x509_certificate(fh.read())


def not_after(samples, **labels):
    found = [value for metric, have, value in samples if metric == "tikv_tls_certificate_not_after_timestamp_seconds"
             and all(have.get(k) == v for k, v in labels.items())]
    assert len(found) == 1, "expected one sample for %s, got %s" % (labels, found)
    return found[0]


def serial(samples, **labels):
    found = [have["serial"] for metric, have, dummy in samples
             if metric == "tikv_tls_certificate_not_after_timestamp_seconds"
             and all(have.get(k) == v for k, v in labels.items())]
    assert len(found) == 1
    return found[0]


class TestTLSCluster:
    def test_every_file_and_port_of_every_instance_is_in_the_metrics(self, tls_cluster, tmp_path):
        run, samples = check(tls_cluster, tmp_path)
        run.assert_ok()
        assert run.changed() == {}, "the check reported changes: %s" % run.changed()
        for name in INSTANCES:
            inst = tls_cluster.handle.instance(name)
            tls_dir = os.path.join(inst.deploy_dir, "tls")
            leaf = file_cert(os.path.join(tls_dir, inst.component + ".crt"))
            ca = file_cert(os.path.join(tls_dir, "ca.crt"))
            expected = int(leaf.not_valid_after_utc.timestamp())
            assert not_after(samples, instance=name, source="file", path=os.path.join(tls_dir, inst.component + ".crt"),
                             index="0") == expected
            assert not_after(samples, instance=name, source="file", path=os.path.join(tls_dir, "ca.crt"),
                             ca="true") == int(ca.not_valid_after_utc.timestamp())
            ports = [sample for sample in samples if sample[1].get("instance") == name and sample[1]["source"] == "port"
                     and sample[0] == "tikv_tls_certificate_not_after_timestamp_seconds"]
            assert len(ports) == 2, ports
            for dummy, labels, value in ports:
                assert value == expected and labels["serial"] == "%X" % leaf.serial_number
        assert all(value == 1 for metric, dummy, value in samples if metric == "tikv_tls_certificate_readable")

    def test_a_threshold_beyond_the_validity_fails_naming_every_certificate(self, tls_cluster, tmp_path):
        # The lab's leaves are valid for 30 days.
        run, samples = check(tls_cluster, tmp_path, "-e", "tikv_tls_expiry_fail_days=40",
                             "-e", "tikv_tls_expiry_warn_days=60")
        assert run.returncode != 0
        assert "Certificate expiry check FAILED (18 problem(s), threshold 40 days)" in run.output
        for name in INSTANCES:
            assert re.search(r"%s port 127\.0\.0\.1:\d+: CN=(pd|tikv) serial \w+ expires" % name, run.output)
        assert samples, "the metrics are written before the gate"

    def test_a_renewed_certificate_the_status_port_has_not_loaded_is_a_warning(self, tls_cluster, tmp_path):
        # TiKV's gRPC port reloads its certificate when the file's mtime changes; its status port keeps
        # serving the old one (see docs/tls-facts.md), so the check must say a restart is pending.
        inst = tls_cluster.handle.instance("tikv2")
        with open(os.path.join(tls_cluster.root, "ca", "ca.crt"), "rb") as crt, \
                open(os.path.join(tls_cluster.root, "ca", "ca.key"), "rb") as key:
            ca = certs.Issued(crt.read(), key.read())
        old = "%X" % file_cert(os.path.join(inst.deploy_dir, "tls", "tikv.crt")).serial_number
        certs.write_tls_dir(os.path.join(inst.deploy_dir, "tls"), "tikv", ca,
                            certs.make_leaf(ca, "tikv", ["127.0.0.1", "localhost"]))
        new = "%X" % file_cert(os.path.join(inst.deploy_dir, "tls", "tikv.crt")).serial_number
        run, samples = check(tls_cluster, tmp_path)
        run.assert_ok()
        grpc = "127.0.0.1:%d" % inst.ports["grpc"]
        status = "127.0.0.1:%d" % inst.ports["status"]
        assert serial(samples, instance="tikv2", source="port", path=grpc) == new
        assert serial(samples, instance="tikv2", source="port", path=status) == old
        assert "tikv2 port %s serves serial %s but the certificate file holds a newer one" % (status, old) in run.output


class TestPlaintextCluster:
    def test_a_plaintext_cluster_fails_naming_missing_files_and_plaintext_ports(self, plaintext_cluster, tmp_path):
        run, samples = check(plaintext_cluster, tmp_path, tls=False)
        assert run.returncode != 0
        for name in INSTANCES:
            assert re.search(r"%s file \S+/tls/ca\.crt: the file does not exist" % name, run.output)
            assert re.search(r"%s port 127\.0\.0\.1:\d+: the port serves plaintext, not TLS" % name, run.output)
        readable = [value for metric, dummy, value in samples if metric == "tikv_tls_certificate_readable"]
        assert len(readable) == 24 and set(readable) == {0}

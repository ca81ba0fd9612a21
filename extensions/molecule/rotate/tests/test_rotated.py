"""After enable_tls, rotate_certs and rotate_ca: every instance holds a new certificate from the new CA,
trusts only the new CA, and the hosts still verify each other."""

from __future__ import annotations

import json
import os

import pytest


@pytest.fixture(scope="module")
def before() -> dict:
    path = os.path.join(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"], "rotate-before.json")
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


@pytest.fixture(scope="module")
def controller_ca(inventory) -> str:
    """The CA the collection signs with now (the controller's copy), as PEM."""
    hostvars = next(iter(inventory["_meta"]["hostvars"].values()))
    with open(os.path.join(hostvars["tikv_tls_controller_dir"], "ca.crt"), encoding="utf-8") as fh:
        return fh.read()


def test_the_certificate_is_new_and_from_the_new_ca(host, instance, before):
    serial_before, ca_before = before["instances"][instance.name]
    serial_now = host.check_output(f"openssl x509 -in {instance.cert_path} -noout -serial").split("=")[1]
    assert serial_now != serial_before, "rotate_certs / rotate_ca left the certificate as it was"
    count = int(host.check_output(f"grep -c 'BEGIN CERTIFICATE' {instance.ca_path}"))
    assert count == 1, f"ca.crt should hold the new CA only, holds {count} certificates"
    ca_now = host.check_output(f"openssl x509 -in {instance.ca_path} -noout -fingerprint -sha256").split("=")[1]
    assert ca_now != ca_before, "the old CA is still the one trusted"
    verify = host.run(f"openssl verify -CAfile {instance.ca_path} {instance.cert_path}")
    assert verify.rc == 0, verify.stdout + verify.stderr
    sans = host.check_output(f"openssl x509 -in {instance.cert_path} -noout -ext subjectAltName")
    assert f"IP Address:{instance.address}" in sans


def test_the_new_ca_is_the_controllers(host, instance, controller_ca):
    on_host = host.file(instance.ca_path).content_string
    assert on_host.strip() == controller_ca.strip()


def test_key_stays_private_to_the_service_user(host, instance, service_user):
    out = host.check_output(f"stat -c '%U %G %a' {instance.key_path}")
    assert out.split() == [service_user, service_user, "600"]


def test_hosts_verify_each_other_with_the_new_material(host, instance, instances, handshake):
    peers = [p for p in instances.values() if p.address != instance.address and p.component == "pd"]
    failed = {}
    for peer in peers:
        result = handshake(host, instance, peer.address, peer.ports["client"])
        if "Verification: OK" not in result.stderr:
            failed[peer.name] = result.stderr.strip()
    assert not failed, failed


def test_the_cluster_is_healthy_with_tls_on_everywhere(lab_status):
    code, status = lab_status()
    assert code == 0, status["problems"]
    assert {row["tls"] for row in status["instances"]} == {"on"}

"""After tlsops.tikv.enable_tls: what an operator checks on each instance's host, and on the cluster.

Every test with the `host` fixture runs once per instance (inventory host), on that instance's lab
host over SSH. Checks are batched into few commands per test: each is an SSH round trip.
"""

from __future__ import annotations


def test_tls_files_belong_to_the_service_user_and_the_key_is_private(host, instance, service_user):
    out = host.check_output(f"stat -c '%n %U %G %a' {instance.tls_dir} {instance.key_path} "
                            f"{instance.cert_path} {instance.ca_path}")
    found = {path: (user, group, int(mode, 8)) for path, user, group, mode in (line.split() for line in out.splitlines())}
    assert found[instance.tls_dir] == (service_user, service_user, 0o700)
    assert found[instance.key_path] == (service_user, service_user, 0o600)
    for path in (instance.cert_path, instance.ca_path):
        user, _group, mode = found[path]
        assert user == service_user, path
        assert not mode & 0o022, f"{path}: writable by others ({oct(mode)})"


def test_the_certificate_is_for_this_host_and_chains_to_the_ca(host, instance):
    sans = host.check_output(f"openssl x509 -in {instance.cert_path} -noout -ext subjectAltName")
    assert f"IP Address:{instance.address}" in sans, sans
    verify = host.run(f"openssl verify -CAfile {instance.ca_path} {instance.cert_path} && "
                      f"test \"$(openssl x509 -in {instance.cert_path} -noout -pubkey)\" = "
                      f"\"$(openssl pkey -in {instance.key_path} -pubout)\" && echo key matches")
    assert verify.rc == 0 and "key matches" in verify.stdout, verify.stdout + verify.stderr


def test_the_config_turns_tls_on_with_these_files(host, instance, read_toml):
    security = read_toml(host, instance.config_path).get("security", {})
    ca_key = "cacert-path" if instance.component == "pd" else "ca-path"
    assert (security.get(ca_key), security.get("cert-path"), security.get("key-path")) == \
        (instance.ca_path, instance.cert_path, instance.key_path)
    if instance.component == "pd":
        script = host.file(instance.run_script).content_string
        for flag in ("client-urls", "advertise-client-urls", "peer-urls", "advertise-peer-urls"):
            assert f'--{flag}="https://' in script, f"{flag} is not https in {instance.run_script}"
        assert "http://" not in script


def test_the_ports_listen_and_the_service_runs(host, instance):
    listening = host.socket.get_listening_sockets()
    for port in instance.ports.values():
        assert f"tcp://0.0.0.0:{port}" in listening, f"nothing listens on 0.0.0.0:{port}: {listening}"
    assert host.run(f"service {instance.service} status").rc == 0


def test_handshakes_from_this_host_to_the_other_hosts_with_its_own_certificate(host, instance, instances, handshake):
    """What this instance dials, dialled from its host with its certificate: PD client ports (both
    components), PD peer ports (PD), TiKV gRPC ports (TiKV). The certificate served must name the
    address dialled."""
    targets = [(peer, peer.ports["client"]) for peer in instances.values() if peer.component == "pd"]
    if instance.component == "pd":
        targets += [(peer, peer.ports["peer"]) for peer in instances.values() if peer.component == "pd"]
    else:
        targets += [(peer, peer.ports["grpc"]) for peer in instances.values() if peer.component == "tikv"]
    remote = [(peer, port) for peer, port in targets if peer.address != instance.address]
    assert remote, "no instance on another host to dial"
    failed = {}
    for peer, port in remote:
        result = handshake(host, instance, peer.address, port)
        if "Verification: OK" not in result.stderr:
            failed[f"{peer.name} {peer.address}:{port}"] = result.stderr.strip()
    assert not failed, f"{instance.name} could not verify: {failed}"


def test_plaintext_is_refused_where_tls_is_on(host, instance):
    port = instance.ports["client"] if instance.component == "pd" else instance.ports["status"]
    answer = host.run(f"timeout 5 bash -c 'exec 3<>/dev/tcp/{instance.address}/{port}; "
                      f"printf \"GET /status HTTP/1.0\\r\\n\\r\\n\" >&3; head -c 12 <&3'")
    assert not answer.stdout.startswith("HTTP/"), f"{instance.name}:{port} answered plaintext: {answer.stdout!r}"


def test_the_cluster_is_healthy_with_tls_on_everywhere(lab_status):
    code, status = lab_status()
    assert code == 0, status["problems"]
    assert {row["name"]: row["tls"] for row in status["instances"]} == \
        {row["name"]: "on" for row in status["instances"]}
    assert all(url.startswith("https://") for member in status["members"] for url in member["peer_urls"])

"""The tikv-server stand-in behaves as TiKV does, for everything TLS (lab/DESIGN.md, tikv-server).

Every test starts real stand-in processes against an in-test fake PD (tikv_helpers.FakePD) and kills
what it started. What is asserted is what a client can observe: what a port serves or refuses, the
metrics, the log lines, the exit status.
"""

from __future__ import annotations

import os
import signal
import socket
import ssl
from typing import Callable, Iterator

import grpc
import pytest
from tikv_helpers import (HOST, FakePD, Registry, StandIn, TlsFiles, free_ports, issue, kv_get, read,
                          run_tikv_server, serial_of, served_serial, wait_until, write_atomically)

from tikvlab import certs

PARTIAL_TEXT = "invalid configuration: ca, cert and private key should be all configured."


@pytest.fixture(scope="module")
def ca() -> certs.Issued:
    return certs.make_ca("tikvlab-test-ca")


@pytest.fixture(scope="module")
def other_ca() -> certs.Issued:
    return certs.make_ca("some-other-ca")


@pytest.fixture
def started() -> Iterator[list[StandIn | FakePD]]:
    """Everything a test starts goes in here and is stopped at the end, pass or fail."""
    things: list[StandIn | FakePD] = []
    yield things
    for thing in reversed(things):
        if isinstance(thing, StandIn):
            thing.kill()
        else:
            thing.stop()


@pytest.fixture
def spawn(tmp_path, started) -> Callable[..., StandIn]:
    """spawn(name, pd=[...], tls=..., cert_allowed_cn=[...]) -> a started, serving stand-in."""
    def _spawn(name: str, pd: list[str], tls: TlsFiles | None = None,
               cert_allowed_cn: list[str] | None = None) -> StandIn:
        store = StandIn(str(tmp_path), name, pd, tls, cert_allowed_cn)
        started.append(store)
        store.start()
        store.wait_ready()
        return store
    return _spawn


@pytest.fixture
def fake_pd(started) -> Callable[..., FakePD]:
    def _fake_pd(registry: Registry, tls: TlsFiles | None = None) -> FakePD:
        pd = FakePD(registry, tls)
        started.append(pd)
        return pd
    return _fake_pd


def closed_port_endpoint() -> list[str]:
    """A PD endpoint nothing listens on, for tests about the store's own ports."""
    return [f"{HOST}:{free_ports(1)[0]}"]


# ---------------------------------------------------------------------------------------------
# Plaintext: registration, metrics, store ident, faults read at runtime


@pytest.mark.timeout(60)
def test_plaintext_store_registers_and_reports_leaders_from_pd(tmp_path, spawn, fake_pd):
    registry = Registry(leader_count=7, region_count=21)
    pd = fake_pd(registry)
    store = spawn("tikv-a", [f"http://{pd.address}"])  # the scheme is stripped, as TiKV does

    wait_until(lambda: store.metrics().get('tikv_raftstore_region_count{type="leader"}') == 7, 15,
               "leader count from the heartbeat answer")
    metrics = store.metrics()
    assert metrics['tikv_raftstore_region_count{type="region"}'] == 21
    assert metrics["tikv_lab_pd_heartbeat_up"] == 1
    first = registry.received()[0]
    assert first == {"store_id": 0, "address": store.addr, "status_address": store.status_addr,
                     "version": "8.5.0", "pinned": False}
    with open(os.path.join(store.data_dir, "store_ident.json"), encoding="utf-8") as fh:
        assert fh.read() == '{"store_id": 1}'
    assert kv_get(store.grpc_port, None) == b"ok"
    status, config = store.get("/config")
    assert status == 200
    assert config["security"] == {"ca-path": "", "cert-path": "", "key-path": "", "cert-allowed-cn": [],
                                  "redact-info-log": False}
    assert store.get("/status")[0] == 200
    start_line = next(line for line in store.log().splitlines() if "TiKV is ready to serve" in line)
    assert "[version=8.5.0]" in start_line and "[tls=off]" in start_line
    assert f"[addr={store.addr}]" in start_line and f"[status_addr={store.status_addr}]" in start_line

    # lab-fault-pin-leaders is read on every heartbeat, from the deploy dir (parent of conf/).
    with open(os.path.join(store.deploy_dir, "lab-fault-pin-leaders"), "w", encoding="utf-8"):
        pass
    wait_until(lambda: registry.received()[-1]["pinned"] is True, 10, "a heartbeat saying pinned")


@pytest.mark.timeout(60)
def test_store_id_persists_across_a_restart(tmp_path, spawn, fake_pd):
    registry = Registry()
    pd = fake_pd(registry)
    store = spawn("tikv-a", [pd.address])
    wait_until(lambda: os.path.exists(os.path.join(store.data_dir, "store_ident.json")), 15, "the store ident")
    assert store.stop() == 0, "SIGTERM must be a graceful stop with exit 0"
    assert "TiKV stopped" in store.log()

    registry.forget_heartbeats()
    store.start()
    store.wait_ready()
    heartbeats = wait_until(registry.received, 15, "a heartbeat after the restart")
    assert heartbeats[0]["store_id"] == 1, "the restarted store must send its persisted id"
    assert registry.next_id == 2, "PD must not have allocated a second id"


# ---------------------------------------------------------------------------------------------
# Configuration strictness


@pytest.mark.timeout(60)
def test_partial_security_is_refused_with_tikvs_text(tmp_path, ca):
    tls = issue(ca, str(tmp_path / "tls"), "tikv")
    store = StandIn(str(tmp_path), "tikv-a", closed_port_endpoint())
    store.write_config({"ca-path": tls.ca, "cert-path": tls.cert}, [])

    result = store.run_to_exit()

    assert result.returncode == 1
    assert result.stderr.strip() == PARTIAL_TEXT
    assert '[FATAL] [tikv_server.py' in store.log() and f'["{PARTIAL_TEXT}"]' in store.log()


@pytest.mark.timeout(60)
def test_unreadable_tls_file_is_refused_naming_the_path(tmp_path, ca):
    tls = issue(ca, str(tmp_path / "tls"), "tikv")
    missing = str(tmp_path / "tls" / "nope.crt")
    store = StandIn(str(tmp_path), "tikv-a", closed_port_endpoint())
    store.write_config({"ca-path": missing, "cert-path": tls.cert, "key-path": tls.key}, [])

    result = store.run_to_exit()

    assert result.returncode == 1
    assert result.stderr.strip() == (f"invalid configuration: failed to open {missing} to load ca key: "
                                     'Os { code: 2, kind: NotFound, message: "No such file or directory" }')


@pytest.mark.timeout(60)
def test_pd_endpoint_with_another_scheme_is_refused(tmp_path):
    store = StandIn(str(tmp_path), "tikv-a", ["unix://127.0.0.1:2379"])
    result = store.run_to_exit()
    assert result.returncode == 1
    assert "unix://127.0.0.1:2379" in result.stderr and "unsupported scheme" in result.stderr


@pytest.mark.timeout(60)
def test_crash_on_tls_fault_exits_1_only_with_tls(tmp_path, ca):
    tls = issue(ca, str(tmp_path / "tls"), "tikv")
    store = StandIn(str(tmp_path), "tikv-a", closed_port_endpoint(), tls)
    with open(os.path.join(store.deploy_dir, "lab-fault-crash-on-tls"), "w", encoding="utf-8"):
        pass
    result = store.run_to_exit()
    assert result.returncode == 1
    assert "lab-fault-crash-on-tls" in result.stderr and "lab-fault-crash-on-tls" in store.log()


def test_version_flag_prints_tikvs_release_lines(tmp_path):
    result = run_tikv_server(["-V"], str(tmp_path))
    assert result.returncode == 0
    assert result.stdout.splitlines()[:2] == ["TiKV", "Release Version:   8.5.0"]


# ---------------------------------------------------------------------------------------------
# gRPC port: client certificates and cert-allowed-cn


@pytest.fixture(scope="module")
def guarded(tmp_path_factory, ca, other_ca) -> Iterator[tuple[StandIn, dict[str, TlsFiles]]]:
    """One TLS stand-in with cert-allowed-cn = [tikv, client] and a set of client identities."""
    base = tmp_path_factory.mktemp("guarded")
    clients = {"client": issue(ca, str(base / "client"), "client"),
               "intruder": issue(ca, str(base / "intruder"), "intruder"),
               "foreign": issue(other_ca, str(base / "foreign"), "client")}
    # The foreign client still trusts the right CA, so only the server side can refuse it.
    write_atomically(clients["foreign"].ca, ca.cert_pem)
    store = StandIn(str(base), "tikv-guarded", closed_port_endpoint(), issue(ca, str(base / "tls"), "tikv"),
                    cert_allowed_cn=["tikv", "client"])
    store.start()
    try:
        store.wait_ready()
        yield store, clients
    finally:
        store.kill()


@pytest.mark.timeout(60)
def test_grpc_accepts_a_client_certificate_from_the_ca(guarded):
    store, clients = guarded
    assert kv_get(store.grpc_port, clients["client"].grpc_credentials()) == b"ok"


@pytest.mark.timeout(60)
def test_grpc_refuses_a_client_without_certificate(guarded):
    store, clients = guarded
    no_cert = grpc.ssl_channel_credentials(root_certificates=read(clients["client"].ca))
    with pytest.raises(grpc.RpcError) as refused:
        kv_get(store.grpc_port, no_cert)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


@pytest.mark.timeout(60)
def test_grpc_refuses_a_certificate_from_another_ca(guarded):
    store, clients = guarded
    with pytest.raises(grpc.RpcError) as refused:
        kv_get(store.grpc_port, clients["foreign"].grpc_credentials())
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


@pytest.mark.timeout(60)
def test_grpc_refuses_a_common_name_outside_cert_allowed_cn(guarded):
    store, clients = guarded
    with pytest.raises(grpc.RpcError) as refused:
        kv_get(store.grpc_port, clients["intruder"].grpc_credentials())
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert refused.value.details() == "Common name check fail"
    wait_until(lambda: "x509_common_name from peer is intruder" in store.log(), 5, "the CN refusal in the log")


@pytest.mark.timeout(60)
def test_status_port_requires_a_ca_signed_cert_but_no_cn_when_cert_allowed_cn_is_set(guarded, ca):
    store, clients = guarded
    no_cert = ssl.create_default_context(cafile=clients["client"].ca)
    with pytest.raises(OSError):
        store.get("/status", no_cert)
    with pytest.raises(OSError):
        store.get("/status", clients["foreign"].client_context())
    # The status port checks no CN: a CA-signed cert outside the allow-list may read /metrics.
    assert store.get("/metrics", clients["intruder"].client_context())[0] == 200


# ---------------------------------------------------------------------------------------------
# Certificate reload rules


@pytest.mark.timeout(90)
def test_grpc_reloads_only_when_the_cert_file_changes(tmp_path, spawn, ca, other_ca):
    tls = issue(ca, str(tmp_path / "tls"), "tikv")
    client = issue(ca, str(tmp_path / "client"), "client")
    store = spawn("tikv-a", closed_port_endpoint(), tls)
    original = served_serial(store.grpc_port, client.client_context(), alpn=["h2"])
    assert original == serial_of(read(tls.cert))

    # A new CA, the cert file untouched: TiKV re-reads nothing, so the old CA is still the trust root.
    write_atomically(tls.ca, other_ca.cert_pem)
    assert kv_get(store.grpc_port, client.grpc_credentials()) == b"ok", "the old CA must still be trusted"
    # A new key as well, the cert file still untouched: still nothing re-read, the old pair is served.
    rotated = certs.make_leaf(ca, "tikv")
    write_atomically(tls.key, rotated.key_pem)
    for attempt in range(3):
        assert served_serial(store.grpc_port, client.client_context(), alpn=["h2"]) == original, attempt
    assert kv_get(store.grpc_port, client.grpc_credentials()) == b"ok"

    # Writing the cert file (last, as the facts say) reloads all three on the next connection.
    write_atomically(tls.ca, ca.cert_pem)
    write_atomically(tls.cert, rotated.cert_pem)
    assert served_serial(store.grpc_port, client.client_context(), alpn=["h2"]) == serial_of(rotated.cert_pem)
    assert kv_get(store.grpc_port, client.grpc_credentials()) == b"ok"


@pytest.mark.timeout(90)
def test_status_port_keeps_the_old_cert_until_a_handshake_fails(tmp_path, spawn, ca):
    tls = issue(ca, str(tmp_path / "tls"), "tikv")
    store = spawn("tikv-a", closed_port_endpoint(), tls)
    trust_only = ssl.create_default_context(cafile=tls.ca)
    assert store.get("/status", trust_only)[0] == 200, "no client cert needed without cert-allowed-cn"
    original = served_serial(store.status_port, trust_only)

    rotated = certs.make_leaf(ca, "tikv")
    write_atomically(tls.key, rotated.key_pem)
    write_atomically(tls.cert, rotated.cert_pem)
    for attempt in range(3):
        assert served_serial(store.status_port, trust_only) == original, attempt

    fail_one_handshake(store.status_port)
    wait_until(lambda: "Status server error: TLS handshake error" in store.log(), 5, "the handshake error logged")
    wait_until(lambda: served_serial(store.status_port, trust_only) == serial_of(rotated.cert_pem), 5,
               "the rotated certificate after a failed handshake")


def fail_one_handshake(port: int) -> None:
    """Speak plaintext HTTP to a TLS port: the server's handshake fails."""
    with socket.create_connection((HOST, port), timeout=5) as sock:
        sock.sendall(b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            while sock.recv(4096):
                pass
        except OSError:
            pass


# ---------------------------------------------------------------------------------------------
# Links: TiKV -> PD and TiKV -> TiKV


@pytest.mark.timeout(60)
def test_tls_store_against_plaintext_pd_fails_heartbeats_with_the_cause(tmp_path, spawn, fake_pd, ca):
    registry = Registry()
    pd = fake_pd(registry)
    # An https:// endpoint changes nothing: TLS follows ca-path, and this PD speaks plaintext.
    store = spawn("tikv-a", [f"https://{pd.address}"], issue(ca, str(tmp_path / "tls"), "tikv"))

    line = wait_until(lambda: next((ln for ln in store.log().splitlines() if "failed to send heartbeat" in ln), None),
                      15, "a heartbeat failure in the log")
    assert f"[endpoint={pd.address}]" in line and "SSLError" in line, line
    assert store.metrics()["tikv_lab_pd_heartbeat_up"] == 0
    assert not any(hb.get("address") == store.addr for hb in registry.received())


@pytest.mark.timeout(120)
def test_peer_links_up_within_a_ca_and_down_both_ways_across_cas(tmp_path, spawn, fake_pd, ca, other_ca):
    # Two PDs sharing one registry, one per CA, so every store learns of every other one.
    registry = Registry()
    pd_one = fake_pd(registry, issue(ca, str(tmp_path / "pd-one"), "pd"))
    pd_two = fake_pd(registry, issue(other_ca, str(tmp_path / "pd-two"), "pd"))
    store_a = spawn("tikv-a", [pd_one.address], issue(ca, str(tmp_path / "a"), "tikv"))
    store_b = spawn("tikv-b", [pd_one.address], issue(ca, str(tmp_path / "b"), "tikv"))
    stranger = spawn("tikv-c", [pd_two.address], issue(other_ca, str(tmp_path / "c"), "tikv"))

    wait_until(lambda: store_a.link_to(store_b) == 1 and store_b.link_to(store_a) == 1, 30,
               "the link between the two stores of one CA")
    wait_until(lambda: store_a.link_to(stranger) == 0 and stranger.link_to(store_a) == 0, 30,
               "the link to the other CA's store down on both sides")
    assert stranger.link_to(store_b) == 0
    abort = next(ln for ln in store_a.log().splitlines()
                 if "connection abort" in ln and f"[addr={stranger.addr}]" in ln)
    stranger_id = next(sid for sid, addr in registry.stores.items() if addr == stranger.addr)
    assert f"[store_id={stranger_id}]" in abort and "handshake" in abort.lower(), abort


@pytest.mark.timeout(90)
def test_hung_peer_shows_link_down_then_up_again_when_it_resumes(tmp_path, spawn, fake_pd):
    registry = Registry()
    pd = fake_pd(registry)
    store_a = spawn("tikv-a", [pd.address])
    store_b = spawn("tikv-b", [pd.address])
    wait_until(lambda: store_a.link_to(store_b) == 1, 20, "the link up before the hang")

    os.kill(store_b.proc.pid, signal.SIGSTOP)  # `tikv-lab fault hang`: connects, never answers
    try:
        wait_until(lambda: store_a.link_to(store_b) == 0, 10, "the link to the hung peer down")
        assert "DEADLINE_EXCEEDED" in store_a.log(), "the ping deadline, not a stuck call, must end the probe"
    finally:
        os.kill(store_b.proc.pid, signal.SIGCONT)
    wait_until(lambda: store_a.link_to(store_b) == 1, 15, "the link back up after the peer resumed")

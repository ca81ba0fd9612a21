"""Unit tests for plugins/module_utils/_tls_probe.py against loopback TLS servers (tls_servers.py)."""

from __future__ import annotations

import datetime
import hashlib
import socket
import ssl
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from ansible_collections.tlsops.tikv.plugins.module_utils import _tls_probe as probe
from tls_servers import PKI, H2_SETTINGS, PlainHTTPServer, SilentServer, TLSServer, closed_port

pytestmark = pytest.mark.timeout(120)

TLS12 = ("TLSv1_2", "TLSv1_2")
TLS13 = ("TLSv1_3", "TLSv1_3")


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return PKI(tmp_path_factory.mktemp("pki"))


def target(pki, port, with_cert=True, **kw):
    kw.setdefault("ca_path", pki.ca_path)
    if with_cert:
        kw.setdefault("client_cert_path", pki.client_cert)
        kw.setdefault("client_key_path", pki.client_key)
    kw.setdefault("timeout", 2.0)
    return probe.Target("127.0.0.1", port, **kw)


def mtls_server(pki, versions, client_auth="required", **kw):
    return TLSServer(pki.server_cert, pki.server_key, ca=pki.ca_path, client_auth=client_auth, versions=versions, **kw)


def checks(failures):
    """The check names out of '<host:port>: <check>: <text>' messages."""
    return [f.split(": ", 2)[1] for f in failures]


# --- mutual TLS -----------------------------------------------------------------------------------


@pytest.mark.parametrize("versions,protocol", [(TLS12, "TLSv1.2"), (TLS13, "TLSv1.3")])
def test_mtls_required_passes_with_client_cert(pki, versions, protocol):
    with mtls_server(pki, versions) as srv:
        result, notes = probe.run_checks(target(pki, srv.port), require_client_cert=True,
                                         require_plaintext_refused=True, min_protocol="TLSv1.2", min_days_valid=7)
    assert result["failures"] == []
    assert result["protocol"] == protocol
    assert result["chain_verified"] is True and result["hostname_verified"] is True
    assert result["client_cert_required"] is True
    assert result["plaintext_refused"] is True
    assert result["weak_protocols_accepted"] == [] and result["untested_protocols"] == []
    assert result["handshake_ms"] > 0
    assert result["peer_cert"]["subject_cn"] == "server"
    assert result["peer_cert"]["sans"] == ["IP:127.0.0.1", "DNS:localhost"]
    assert result["peer_cert"]["issuer"] == "CN=test-ca"
    assert result["peer_cert"]["key_type"] == "ECDSA P-256"
    assert 28 <= result["peer_cert"]["days_left"] <= 30
    assert notes == []
    # The server saw our certificate (it required one) and, over TLS 1.3, the request we sent after the handshake.
    if protocol == "TLSv1.3":
        assert any(r.startswith(b"PRI * HTTP/2.0") or r.startswith(b"GET / HTTP/1.1") for r in srv.requests)


@pytest.mark.parametrize("versions", [TLS12, TLS13], ids=["tls12", "tls13"])
@pytest.mark.parametrize("client_auth", ["none", "optional"])
def test_client_cert_not_required_is_a_failure(pki, versions, client_auth):
    with mtls_server(pki, versions, client_auth=client_auth) as srv:
        result, dummy_notes = probe.run_checks(target(pki, srv.port), require_client_cert=True)
    assert result["client_cert_required"] is False
    assert checks(result["failures"]) == ["require_client_cert"]
    assert "accepted a client without a certificate" in result["failures"][0] or \
        "completed a TLSv1.2 handshake with a client presenting no certificate" in result["failures"][0]
    assert result["failures"][0].startswith("127.0.0.1:%d: require_client_cert: " % srv.port)


@pytest.mark.parametrize("versions", [TLS12, TLS13], ids=["tls12", "tls13"])
def test_client_cert_required_probe_alone(pki, versions):
    with mtls_server(pki, versions) as srv:
        required, detail, hs = probe.probe_client_cert_required(target(pki, srv.port))
    assert required is True
    assert "client certificate" in detail
    if versions == TLS13:
        # The rejection arrived after the client's side of the handshake had finished.
        assert hs.stage == "after_handshake" and hs.reason == "TLSV13_ALERT_CERTIFICATE_REQUIRED"
    else:
        assert hs.stage == "handshake" and hs.cert_requested is True


def test_tls13_rejection_alert_is_seen_every_time(pki):
    """The alert must be read before our request can hit the closed socket (which would turn it
    into a bare reset/EOF): 40 probes in a row, every one sees 'certificate required'."""
    with mtls_server(pki, TLS13) as srv:
        details = [probe.probe_client_cert_required(target(pki, srv.port))[1] for dummy in range(40)]
    assert all("tlsv13 alert certificate required" in d for d in details), set(details)


@pytest.mark.parametrize("versions", [TLS12, TLS13], ids=["tls12", "tls13"])
def test_missing_client_cert_is_a_distinct_failure(pki, versions):
    with mtls_server(pki, versions) as srv:
        result, dummy_notes = probe.run_checks(target(pki, srv.port, with_cert=False))
    assert checks(result["failures"]) == ["client_cert"]
    assert "requires a client certificate and none was presented" in result["failures"][0]
    # Our side verified the server before it turned us down, and we still show what it serves.
    assert result["chain_verified"] is True and result["hostname_verified"] is True
    assert result["peer_cert"]["subject_cn"] == "server"


@pytest.mark.parametrize("versions", [TLS12, TLS13], ids=["tls12", "tls13"])
def test_foreign_client_cert_is_rejected(pki, versions):
    with mtls_server(pki, versions) as srv:
        result, dummy_notes = probe.run_checks(target(pki, srv.port, client_cert_path=pki.foreign_client_cert,
                                                      client_key_path=pki.foreign_client_key))
    assert checks(result["failures"]) == ["client_cert"]
    assert "rejected our client certificate %s" % pki.foreign_client_cert in result["failures"][0]
    assert "unknown ca" in result["failures"][0]


@pytest.mark.parametrize("versions", [TLS12, TLS13], ids=["tls12", "tls13"])
def test_wrong_ca_and_rejected_client_cert_both_reported(pki, versions):
    with mtls_server(pki, versions) as srv:
        result, dummy_notes = probe.run_checks(target(pki, srv.port, ca_path=pki.foreign_ca_path,
                                                      client_cert_path=pki.foreign_client_cert,
                                                      client_key_path=pki.foreign_client_key))
    assert checks(result["failures"]) == ["chain", "client_cert"]
    assert result["peer_cert"]["subject_cn"] == "server"


# --- certificate checks ---------------------------------------------------------------------------


def test_expired_certificate_and_min_days_valid(pki):
    cert, key = pki.leaf("expired", "old-server", ["127.0.0.1"], days=-2)
    with TLSServer(cert, key, versions=TLS13) as srv:
        result, dummy_notes = probe.run_checks(target(pki, srv.port), min_days_valid=1)
    assert result["chain_verified"] is False
    assert checks(result["failures"]) == ["chain", "min_days_valid"]
    assert "certificate verify failed: certificate has expired (CA %s)" % pki.ca_path in result["failures"][0]
    assert "expired on" in result["failures"][1]
    assert result["peer_cert"]["subject_cn"] == "old-server"
    assert result["peer_cert"]["days_left"] < 0
    # The certificate was read by an unverified second handshake.
    assert result["protocol"] == "TLSv1.3"


@pytest.mark.parametrize("min_days,fails", [(10, True), (3, False)])
def test_min_days_valid_on_a_valid_certificate(pki, min_days, fails):
    cert, key = pki.leaf("short", "short-lived", ["127.0.0.1"], days=5)
    with TLSServer(cert, key, versions=TLS12) as srv:
        result, dummy_notes = probe.run_checks(target(pki, srv.port), min_days_valid=min_days)
    assert result["chain_verified"] is True
    assert checks(result["failures"]) == (["min_days_valid"] if fails else [])
    if fails:
        assert "expires on %s, in 4 days, sooner than 10 days" % result["peer_cert"]["not_after"] in result["failures"][0]


def test_wrong_ca(pki):
    with TLSServer(pki.server_cert, pki.server_key, versions=TLS12) as srv:
        result, dummy_notes = probe.run_checks(target(pki, srv.port, ca_path=pki.foreign_ca_path))
    assert result["chain_verified"] is False
    assert result["hostname_verified"] is True  # computed from the served SANs
    assert result["failures"] == [
        "127.0.0.1:%d: chain: certificate verify failed: unable to get local issuer certificate (CA %s)"
        % (srv.port, pki.foreign_ca_path)]
    assert result["peer_cert"]["issuer"] == "CN=test-ca"
    assert result["protocol"] == "TLSv1.2" and result["cipher"]


def test_system_trust_store_does_not_know_a_private_ca(pki):
    with TLSServer(pki.server_cert, pki.server_key, versions=TLS13) as srv:
        result, dummy_notes = probe.run_checks(target(pki, srv.port, ca_path=None))
    assert checks(result["failures"]) == ["chain"]
    assert "(CA system default)" in result["failures"][0]


@pytest.mark.parametrize("server_name,fragment", [
    ("127.0.0.2", "IP address mismatch"),
    ("pd-1.example.com", "Hostname mismatch"),
])
def test_hostname_mismatch(pki, server_name, fragment):
    with TLSServer(pki.server_cert, pki.server_key, versions=TLS13) as srv:
        result, dummy_notes = probe.run_checks(target(pki, srv.port, server_name=server_name))
    assert result["chain_verified"] is True
    assert result["hostname_verified"] is False
    assert checks(result["failures"]) == ["hostname"]
    text = result["failures"][0]
    assert "does not match %s" % server_name in text and fragment in text
    assert "served SANs: IP:127.0.0.1, DNS:localhost" in text
    assert result["peer_cert"]["subject_cn"] == "server"


def test_hostname_and_chain_both_wrong(pki):
    with TLSServer(pki.server_cert, pki.server_key, versions=TLS12) as srv:
        result, dummy_notes = probe.run_checks(target(pki, srv.port, server_name="10.9.9.9", ca_path=pki.foreign_ca_path))
    assert result["chain_verified"] is False and result["hostname_verified"] is False
    assert sorted(checks(result["failures"])) == ["chain", "hostname"]


@pytest.mark.parametrize("server_name", ["localhost", "127.0.0.1"])
def test_hostname_match_by_dns_and_ip(pki, server_name):
    with TLSServer(pki.server_cert, pki.server_key, versions=TLS13) as srv:
        result, dummy_notes = probe.run_checks(target(pki, srv.port, server_name=server_name))
    assert result["failures"] == [] and result["hostname_verified"] is True


def test_cn_is_not_used_for_the_name_check(pki):
    # CN says 127.0.0.1 but no SAN does: Go (PD, etcd) would refuse; so do we.
    cert, key = pki.leaf("cn-only", "127.0.0.1", ["other.example"])
    with TLSServer(cert, key, versions=TLS13) as srv:
        result, dummy_notes = probe.run_checks(target(pki, srv.port))
    assert checks(result["failures"]) == ["hostname"]


# --- protocol versions ----------------------------------------------------------------------------


def test_tls13_only_server_meets_min_protocol(pki):
    with TLSServer(pki.server_cert, pki.server_key, versions=TLS13, seclevel0=True) as srv:
        for minimum in ("TLSv1.2", "TLSv1.3"):
            result, notes = probe.run_checks(target(pki, srv.port), min_protocol=minimum)
            assert result["failures"] == [], minimum
            assert result["weak_protocols_accepted"] == []
            assert result["protocol"] == "TLSv1.3"


def test_tls12_only_server_fails_min_protocol_13(pki):
    with TLSServer(pki.server_cert, pki.server_key, versions=TLS12) as srv:
        result, dummy_notes = probe.run_checks(target(pki, srv.port), min_protocol="TLSv1.3")
        assert result["weak_protocols_accepted"] == ["TLSv1.2"]
        assert result["failures"] == ["127.0.0.1:%d: min_protocol: the server accepts TLSv1.2 (below TLSv1.3)" % srv.port]
        result, dummy_notes = probe.run_checks(target(pki, srv.port), min_protocol="TLSv1.2")
        assert result["failures"] == []


def test_old_protocols_are_found(pki):
    with TLSServer(pki.server_cert, pki.server_key, versions=("TLSv1", "TLSv1_3"), seclevel0=True) as srv:
        result, dummy_notes = probe.run_checks(target(pki, srv.port), min_protocol="TLSv1.2")
    assert result["weak_protocols_accepted"] == ["TLSv1", "TLSv1.1"]
    assert checks(result["failures"]) == ["min_protocol"]
    assert "accepts TLSv1, TLSv1.1 (below TLSv1.2)" in result["failures"][0]


def test_weak_version_counts_when_only_the_client_cert_is_missing(pki):
    # TLS 1.2-only server that requires a client certificate we do not have: the ServerHello still
    # selects TLS 1.2, so the version is accepted even though the handshake then fails.
    with mtls_server(pki, TLS12) as srv:
        accepted, untested, dummy_notes = probe.probe_weak_protocols(target(pki, srv.port, with_cert=False), "TLSv1.3")
    assert accepted == ["TLSv1.2"] and untested == []


def test_versions_the_local_openssl_cannot_offer_are_reported(pki, monkeypatch):
    monkeypatch.setitem(probe._HAS_PROTOCOL, "TLSv1", False)
    with TLSServer(pki.server_cert, pki.server_key, versions=TLS13) as srv:
        result, notes = probe.run_checks(target(pki, srv.port), min_protocol="TLSv1.3")
    assert result["untested_protocols"] == ["TLSv1"]
    assert result["weak_protocols_accepted"] == []
    assert result["failures"] == []
    assert notes == ["min_protocol: TLSv1 not tried: the local OpenSSL (%s) was built without TLSv1" % ssl.OPENSSL_VERSION]


# --- plaintext ------------------------------------------------------------------------------------


def test_plaintext_http_server(pki):
    with PlainHTTPServer() as srv:
        result, dummy_notes = probe.run_checks(target(pki, srv.port), require_plaintext_refused=True)
    assert result["plaintext_refused"] is False
    assert checks(result["failures"]) == ["handshake", "require_plaintext_refused"]
    assert "did not answer with TLS (wrong version number)" in result["failures"][0]
    assert "answered a plaintext HTTP/1.1 GET with HTTP/1.1 200 OK" in result["failures"][1]
    assert result["chain_verified"] is None and result["peer_cert"] is None


def test_plaintext_h2c_server_counts_as_answering(pki):
    # A plaintext gRPC server (TiKV with TLS off) answers with HTTP/2 frames, not HTTP/1.1.
    with PlainHTTPServer(answer=H2_SETTINGS + b"\x00\x00\x08\x07\x00\x00\x00\x00\x00" + b"\x00" * 8) as srv:
        refused, detail = probe.probe_plaintext_refused(target(pki, srv.port))
    assert refused is False
    assert detail == "the server answered a plaintext HTTP/1.1 GET with an HTTP/2 SETTINGS frame"


@pytest.mark.parametrize("answer,refused", [
    (b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n", True),
    (b"\x15\x03\x03\x00\x02\x02\x46", True),  # TLS alert record
    (b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", False),
    (b"+OK hello\r\n", False),
])
def test_plaintext_answers(pki, answer, refused):
    with PlainHTTPServer(answer=answer) as srv:
        got, detail = probe.probe_plaintext_refused(target(pki, srv.port))
    assert got is refused, detail


def test_plaintext_refused_by_tls_server_tries_h2_preface_too(pki):
    with TLSServer(pki.server_cert, pki.server_key, versions=TLS13) as srv:
        refused, detail = probe.probe_plaintext_refused(target(pki, srv.port))
        assert srv.connections == 2
    assert refused is True
    assert "plaintext HTTP/1.1 GET" in detail and "plaintext HTTP/2 preface" in detail


# --- network failures -----------------------------------------------------------------------------


def test_connection_refused(pki):
    port = closed_port()
    result, notes = probe.run_checks(target(pki, port), require_client_cert=True, require_plaintext_refused=True,
                                     min_protocol="TLSv1.3", min_days_valid=30)
    assert result["failures"] == ["127.0.0.1:%d: connect: connection refused (nothing listening on this port?)" % port]
    for key in ("protocol", "chain_verified", "hostname_verified", "client_cert_required", "plaintext_refused",
                "peer_cert", "handshake_ms"):
        assert result[key] is None, key
    assert result["untested_protocols"] == ["TLSv1", "TLSv1.1", "TLSv1.2"]
    assert notes and notes[0].startswith("min_protocol: TLSv1, TLSv1.1, TLSv1.2 not tried")


def test_server_that_never_answers_times_out(pki):
    with SilentServer() as srv:
        started = time.monotonic()
        result, dummy_notes = probe.run_checks(target(pki, srv.port, timeout=0.5))
        elapsed = time.monotonic() - started
    assert checks(result["failures"]) == ["connect"]
    assert "no TLS answer within 0.5s" in result["failures"][0]
    assert elapsed < 3


def test_tls13_server_silent_after_handshake(pki):
    # The verified handshake completes; the post-handshake wait ends at the timeout without a rejection.
    with TLSServer(pki.server_cert, pki.server_key, ca=pki.ca_path, client_auth="optional", versions=TLS13,
                   mode="silent") as srv:
        result, dummy_notes = probe.run_checks(target(pki, srv.port, timeout=0.5), require_client_cert=True)
    assert result["protocol"] == "TLSv1.3" and result["chain_verified"] is True
    # Without an answer and without a rejection the server did accept the certificate-less client.
    assert result["client_cert_required"] is False
    assert checks(result["failures"]) == ["require_client_cert"]
    assert "no answer and no rejection within 0.5s" in result["failures"][0]


def test_tls13_server_closing_after_asking_for_a_certificate_counts_as_refusing(pki):
    # Some servers drop a certificate-less TLS 1.3 client without an alert: closed = not accepted.
    with TLSServer(pki.server_cert, pki.server_key, ca=pki.ca_path, client_auth="optional", versions=TLS13,
                   mode="close") as srv:
        required, detail, hs = probe.probe_client_cert_required(target(pki, srv.port))
    assert required is True
    assert detail == "the server closed the connection right after the handshake without answering"


def test_tls13_server_closing_without_asking_for_a_certificate_does_not_require_one(pki):
    # Hanging up is only a certificate check when the server asked for a certificate at all.
    with TLSServer(pki.server_cert, pki.server_key, versions=TLS13, mode="close") as srv:
        result, dummy_notes = probe.run_checks(target(pki, srv.port), require_client_cert=True)
    assert result["client_cert_required"] is False
    assert checks(result["failures"]) == ["require_client_cert"]
    assert "never asked for a client certificate" in result["failures"][0]


def _has_ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback")
def test_ipv6_server(pki):
    cert, key = pki.leaf("v6", "v6-server", ["::1"])
    with TLSServer(cert, key, versions=TLS13, host="::1") as srv:
        result, dummy_notes = probe.run_checks(probe.Target("::1", srv.port, ca_path=pki.ca_path, timeout=2),
                                               require_plaintext_refused=True)
        assert result["failures"] == [] and result["peer_cert"]["sans"] == ["IP:::1"]
        result, dummy_notes = probe.run_checks(probe.Target("::1", srv.port, ca_path=pki.ca_path, timeout=2,
                                                            server_name="::2"))
    assert result["failures"] == ["[::1]:%d: hostname: the certificate does not match ::2 (IP address mismatch, "
                                  "certificate is not valid for '::2'; served SANs: IP:::1)" % srv.port]


def test_unresolvable_host(pki):
    result, dummy_notes = probe.run_checks(probe.Target("no-such-host.invalid", 443, timeout=2))
    assert checks(result["failures"]) == ["connect"]
    assert "cannot resolve host no-such-host.invalid" in result["failures"][0]


# --- local material -------------------------------------------------------------------------------


def test_missing_ca_file(pki, tmp_path):
    result, dummy_notes = probe.run_checks(target(pki, closed_port(), ca_path=str(tmp_path / "nope.crt")))
    assert checks(result["failures"]) == ["local"]
    assert "ca_path %s: cannot load CA certificates" % (tmp_path / "nope.crt") in result["failures"][0]


def test_client_key_that_does_not_match(pki):
    result, dummy_notes = probe.run_checks(target(pki, closed_port(), client_key_path=pki.server_key))
    assert checks(result["failures"]) == ["local"]
    assert "cannot load the client certificate and key" in result["failures"][0]
    assert "KEY_VALUES_MISMATCH" in result["failures"][0]


def test_combined_cert_and_key_file(pki, tmp_path):
    combined = tmp_path / "combined.pem"
    combined.write_bytes(open(pki.client_cert, "rb").read() + open(pki.client_key, "rb").read())
    with mtls_server(pki, TLS13) as srv:
        result, dummy_notes = probe.run_checks(target(pki, srv.port, client_cert_path=str(combined), client_key_path=None))
    assert result["failures"] == []


# --- ALPN -----------------------------------------------------------------------------------------


def test_alpn_h2_selected_and_h2_preface_sent(pki):
    with mtls_server(pki, TLS13, alpn=["h2"]) as srv:
        result, dummy_notes = probe.run_checks(target(pki, srv.port), require_client_cert=True)
    assert result["alpn"] == "h2"
    assert result["failures"] == []
    assert srv.requests and all(r.startswith(b"PRI * HTTP/2.0") for r in srv.requests)


def test_no_alpn_offered(pki):
    with TLSServer(pki.server_cert, pki.server_key, versions=TLS13, alpn=["h2"]) as srv:
        result, dummy_notes = probe.run_checks(target(pki, srv.port, alpn_protocols=[]))
    assert result["alpn"] is None and result["failures"] == []


# --- certificate description ----------------------------------------------------------------------


def _self_signed_der(key, cn="k"):
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime.datetime(2030, 1, 1, tzinfo=datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(0xABCDEF).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=10))
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.DER)


@pytest.mark.parametrize("key,expected", [
    (lambda: rsa.generate_private_key(65537, 2048), "RSA 2048"),
    (lambda: ec.generate_private_key(ec.SECP384R1()), "ECDSA P-384"),
    (lambda: ec.generate_private_key(ec.SECP256R1()), "ECDSA P-256"),
])
def test_describe_certificate(key, expected):
    der = _self_signed_der(key())
    now = datetime.datetime(2030, 1, 4, 12, tzinfo=datetime.timezone.utc)
    info = probe.describe_certificate(der, now=now)
    assert info["key_type"] == expected
    assert info["serial"] == "ABCDEF"
    assert info["not_before"] == "2030-01-01T00:00:00Z" and info["not_after"] == "2030-01-11T00:00:00Z"
    assert info["days_left"] == 6
    assert info["fingerprint_sha256"] == ":".join(
        "%02x" % b for b in hashlib.sha256(der).digest())
    assert info["sans"] == [] and info["subject_cn"] == "k" and "details" not in info


def test_describe_certificate_without_cryptography(pki, monkeypatch):
    with TLSServer(pki.server_cert, pki.server_key, versions=TLS13) as srv:
        hs = probe.probe_handshake(target(pki, srv.port))
    monkeypatch.setattr(probe, "HAS_CRYPTOGRAPHY", False)
    full = probe.describe_certificate(hs.peer_der, hs.peer_dict)
    assert full["subject_cn"] == "server"
    assert full["sans"] == ["IP:127.0.0.1", "DNS:localhost"]
    assert full["not_after"] and full["days_left"] >= 28 and full["key_type"] is None
    assert full["details"].startswith("partial: the Python library cryptography is not installed")
    bare = probe.describe_certificate(hs.peer_der, None)
    assert bare["fingerprint_sha256"] == full["fingerprint_sha256"] and bare["subject_cn"] is None
    assert "only the fingerprint" in bare["details"]
    assert probe.certificate_matches(hs.peer_der, "127.0.0.1") is None


@pytest.mark.parametrize("name,expected", [
    ("pd-1.example.com", True), ("PD-1.Example.COM.", True), ("a.b.example.com", False),
    ("example.com", False), ("tikv.internal", True), ("10.0.0.5", True), ("10.0.0.6", False),
    ("::1", True), ("[::1]", True),
])
def test_certificate_matches(pki, name, expected):
    issued = probe.x509.load_pem_x509_certificate(
        open(pki.leaf("wild", "w", ["*.example.com", "tikv.internal", "10.0.0.5", "::1"])[0], "rb").read())
    assert probe.certificate_matches(issued.public_bytes(serialization.Encoding.DER), name) is expected


def test_describe_answer():
    assert probe.describe_answer(b"HTTP/1.1 200 OK\r\nx: y\r\n\r\n") == "HTTP/1.1 200 OK"
    assert probe.describe_answer(H2_SETTINGS) == "an HTTP/2 SETTINGS frame"
    assert probe.describe_answer(b"\x15\x03\x03\x00\x02\x02\x46") == "a TLS alert record"
    assert probe.describe_answer(b"") == "nothing"


def test_target_address_formats_ipv6():
    assert probe.Target("::1", 2379).address == "[::1]:2379"
    assert probe.Target("pd-1", 2379).address == "pd-1:2379"
    assert probe.Target("::1", 2379).server_name == "::1"

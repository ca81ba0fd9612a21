"""What the rotation tests check on a lab, the way an operator would: which certificate every port
serves, which client certificates it accepts, the instances' PIDs, and a lab made TLS by `up --tls`
adopted by the collection's PKI (its CA and operator files copied to the controller directory, as if
the pki role had made them)."""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import threading
import time

import grpc
from cryptography import x509

from tikvlab import common

CHANNELS = {"pd": (("pd_client", "client"), ("pd_peer", "peer")),
            "tikv": (("tikv_grpc", "grpc"), ("tikv_status", "status"))}


def adopt_lab_pki(lab, ctl: str) -> None:
    """The lab's CA becomes the collection's generate-mode CA (<ctl>/ca) and the lab's operator
    certificate the operator's client certificate (<ctl>/clients/client.*), trust bundle <ctl>/ca.crt."""
    for sub in ("", "ca", "clients"):
        os.makedirs(os.path.join(ctl, sub), mode=0o700, exist_ok=True)
    for source, dest in (("ca/ca.crt", "ca/ca.crt"), ("ca/ca.key", "ca/ca.key"), ("ca/ca.crt", "ca.crt"),
                         ("client-tls/client.crt", "clients/client.crt"), ("client-tls/client.pem", "clients/client.pem")):
        shutil.copyfile(os.path.join(lab.root, source), os.path.join(ctl, dest))
    for key in ("ca/ca.key", "clients/client.pem"):
        os.chmod(os.path.join(ctl, key), 0o600)


def instances(lab):
    return lab.handle.lab().instances


def pids(lab) -> dict[str, int | None]:
    return {inst.name: inst.pid for inst in instances(lab)}


def starts(lab) -> dict[str, int]:
    """How often each instance has started: PD and TiKV log a "Welcome to ..." line at every start."""
    out = {}
    for inst in instances(lab):
        with open(inst.log_path, encoding="utf-8", errors="replace") as fh:
            out[inst.name] = sum(1 for line in fh if '["Welcome to ' in line)
    return out


def restarted_between(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """Instances that started again between two starts() readings, with how many times."""
    return {name: after[name] - before[name] for name in before if after[name] != before[name]}


def cert_of(path: str) -> x509.Certificate:
    with open(path, "rb") as fh:
        return x509.load_pem_x509_certificate(fh.read())


def file_serials(lab) -> dict[str, int]:
    return {inst.name: cert_of(os.path.join(inst.deploy_dir, "tls", inst.component + ".crt")).serial_number
            for inst in instances(lab)}


def served(host: str, port: int, ctl: str, timeout: float = 5.0) -> x509.Certificate:
    """The certificate a port presents (not verified here). The operator's certificate is presented:
    with TLS 1.2 (etcd's peer port) a server refuses a client without one inside the handshake."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.load_cert_chain(os.path.join(ctl, "clients", "client.crt"), os.path.join(ctl, "clients", "client.pem"))
    with socket.create_connection((host, port), timeout=timeout) as sock:
        with ctx.wrap_socket(sock) as tls:
            return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))


def served_serials(lab, ctl: str) -> dict[tuple[str, str], int]:
    out = {}
    for inst in instances(lab):
        for channel, port_name in CHANNELS[inst.component]:
            out[(inst.name, channel)] = served(inst.host, inst.ports[port_name], ctl).serial_number
    return out


def tls_accepts(host: str, port: int, ca: str, cert: str, key: str) -> bool:
    """Whether a TLS port completes a handshake and a request with this client certificate (the
    server may refuse it after the TLS 1.3 handshake, so something is sent and read)."""
    ctx = common.client_context(ca, cert, key, check_hostname=False)
    try:
        with socket.create_connection((host, port), timeout=5) as sock:
            with ctx.wrap_socket(sock) as tls:
                tls.sendall(b"GET /pd/api/v1/version HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                return bool(tls.recv(1))
    except (ssl.SSLError, OSError):
        return False


def grpc_accepts(address: str, ca: str, cert: str, key: str) -> bool:
    """Whether TiKV runs a KvGet for this client certificate (a fresh channel: a fresh handshake)."""
    with open(ca, "rb") as a, open(cert, "rb") as c, open(key, "rb") as k:
        creds = grpc.ssl_channel_credentials(a.read(), k.read(), c.read())
    channel = grpc.secure_channel(address, creds, options=[("grpc.use_local_subchannel_pool", 1)])
    try:
        channel.unary_unary("/tikvpb.Tikv/KvGet")(b"", timeout=5)
        return True
    except grpc.RpcError:
        return False
    finally:
        channel.close()


class Client:
    """An application using the operator's files in the controller directory, re-read for every request
    (as TiKV and PD re-read theirs): every 0.5 s a PD API call (any member; the next one when a member
    is down, as PD clients do) and a KvGet on every TiKV. Counts requests and failures, with causes."""

    def __init__(self, lab, ctl: str):
        self.lab = lab.handle.lab()
        self.files = (os.path.join(ctl, "ca.crt"), os.path.join(ctl, "clients", "client.crt"),
                      os.path.join(ctl, "clients", "client.pem"))
        self.requests = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _pd(self) -> None:
        errors = []
        for inst in self.lab.of("pd"):
            try:
                status, _data = common.http_json("GET", inst.address, "/pd/api/v1/stores", None,
                                                 common.client_context(*self.files), 3.0)
                if status == 200:
                    return
                errors.append("%s: HTTP %s" % (inst.name, status))
            except (OSError, ValueError) as exc:
                errors.append("%s: %s" % (inst.name, exc))
        self.failures.append("PD: no member answered: " + "; ".join(errors))

    def _tikv(self) -> None:
        for inst in self.lab.of("tikv"):
            if not grpc_accepts(inst.address, *self.files):
                self.failures.append("%s KvGet failed at %s" % (inst.name, time.strftime("%H:%M:%S")))

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._pd()
            self._tikv()
            self.requests += 1 + len(self.lab.of("tikv"))
            self._stop.wait(0.5)

    def __enter__(self) -> "Client":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


class PlaintextPoker:
    """A client that speaks plaintext HTTP to a TLS port every 0.3 s (a misconfigured health checker):
    each attempt is a failed TLS handshake on the server."""

    def __init__(self, host: str, port: int):
        self.address = (host, port)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                with socket.create_connection(self.address, timeout=2) as sock:
                    sock.sendall(b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n")
                    sock.recv(64)
            except OSError:
                pass
            self._stop.wait(0.3)

    def __enter__(self) -> "PlaintextPoker":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

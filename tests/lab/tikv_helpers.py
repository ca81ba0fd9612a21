"""Helpers for the tikv-server stand-in's tests: free ports, TLS material, a fake PD, the process itself.

The fake PD implements only `POST /pd/api/v1/lab/store/heartbeat` (lab/DESIGN.md), so these tests do
not depend on the PD stand-in. Several fake PDs can share one Registry, which lets stores that trust
different CAs still learn about each other.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, TypeVar

import grpc
from cryptography import x509

from tikvlab import certs
from tikvlab.common import http_json

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LAB_DIR = os.path.join(REPO, "lab")
HEARTBEAT_PATH = "/pd/api/v1/lab/store/heartbeat"
HOST = "127.0.0.1"
T = TypeVar("T")

_handed_out: set[int] = set()
_ports_lock = threading.Lock()


def free_ports(count: int) -> list[int]:
    """`count` ports nobody listens on, from a random base in 40000-50000, never handed out twice."""
    ports: list[int] = []
    with _ports_lock:
        candidate = random.randrange(40000, 49000)
        while len(ports) < count:
            candidate = candidate + 1 if candidate < 49999 else 40000
            if candidate in _handed_out or not _bindable(candidate):
                continue
            _handed_out.add(candidate)
            ports.append(candidate)
    return ports


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def wait_until(probe: Callable[[], T], timeout: float, what: str, interval: float = 0.2) -> T:
    """Poll `probe` until it returns something truthy; fail naming `what` and the last value seen."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = probe()
        except (OSError, ValueError, grpc.RpcError) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


# ---------------------------------------------------------------------------------------------
# TLS material


@dataclass
class TlsFiles:
    ca: str
    cert: str
    key: str

    def as_security(self) -> dict[str, str]:
        return {"ca-path": self.ca, "cert-path": self.cert, "key-path": self.key}

    def client_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=self.ca)
        ctx.load_cert_chain(self.cert, self.key)
        return ctx

    def grpc_credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(root_certificates=read(self.ca), private_key=read(self.key),
                                            certificate_chain=read(self.cert))


def read(path: str) -> bytes:
    with open(path, "rb") as fh:
        return fh.read()


def write_atomically(path: str, data: bytes) -> None:
    """Write a temporary file and rename it over `path`: no reader ever sees half a PEM file."""
    tmp = path + ".new"
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def issue(ca: certs.Issued, directory: str, cn: str) -> TlsFiles:
    """A leaf with CN `cn` signed by `ca`, in TiUP's file names under `directory`."""
    paths = certs.write_tls_dir(directory, cn, ca, certs.make_leaf(ca, cn))
    return TlsFiles(paths["ca"], paths["cert"], paths["key"])


def serial_of(pem_or_der: bytes) -> int:
    if pem_or_der.startswith(b"-----"):
        return x509.load_pem_x509_certificate(pem_or_der).serial_number
    return x509.load_der_x509_certificate(pem_or_der).serial_number


def served_serial(port: int, client: ssl.SSLContext, alpn: list[str] | None = None) -> int:
    """Serial number of the certificate a TLS port presents to a NEW connection."""
    if alpn:
        client.set_alpn_protocols(alpn)
    with socket.create_connection((HOST, port), timeout=5) as raw:
        with client.wrap_socket(raw, server_hostname=HOST) as tls:
            der = tls.getpeercert(binary_form=True)
    assert der, "the server presented no certificate"
    return serial_of(der)


def kv_get(port: int, credentials: grpc.ChannelCredentials | None, timeout: float = 5.0) -> bytes:
    """One `/tikvpb.Tikv/KvGet` on a fresh channel (fresh connection, fresh handshake)."""
    target = f"{HOST}:{port}"
    options = [("grpc.use_local_subchannel_pool", 1)]
    channel = (grpc.secure_channel(target, credentials, options=options) if credentials
               else grpc.insecure_channel(target, options=options))
    try:
        return channel.unary_unary("/tikvpb.Tikv/KvGet")(b"", timeout=timeout)
    finally:
        channel.close()


# ---------------------------------------------------------------------------------------------
# Fake PD


@dataclass
class Registry:
    """The cluster as the fake PDs see it: store ids by address, every heartbeat received."""

    leader_count: int = 7
    region_count: int = 21
    stores: dict[int, str] = field(default_factory=dict)
    heartbeats: list[dict[str, Any]] = field(default_factory=list)
    next_id: int = 1
    lock: threading.Lock = field(default_factory=threading.Lock)

    def heartbeat(self, body: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            self.heartbeats.append(body)
            store_id = int(body.get("store_id") or 0)
            if store_id == 0:  # a store without an ident gets a new id, as PD's AllocID would
                store_id = self.next_id
                self.next_id += 1
            self.stores[store_id] = body["address"]
            return {"store_id": store_id, "leader_count": self.leader_count, "region_count": self.region_count,
                    "stores": [{"id": sid, "address": addr} for sid, addr in sorted(self.stores.items())]}

    def received(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.heartbeats)

    def forget_heartbeats(self) -> None:
        with self.lock:
            self.heartbeats.clear()


class _PDHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _PDServer

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = json.loads(self.rfile.read(length) or b"{}")
        if self.path != HEARTBEAT_PATH:
            self._reply(404, {"error": "not found"})
            return
        self._reply(200, self.server.registry.heartbeat(body))

    def _reply(self, code: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _PDServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int, registry: Registry, tls: ssl.SSLContext | None):
        self.registry = registry
        self.tls = tls
        super().__init__((HOST, port), _PDHandler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        if self.tls is None:
            super().finish_request(request, client_address)
            return
        request.settimeout(5)
        try:
            conn = self.tls.wrap_socket(request, server_side=True)
        except OSError:  # refused handshake (no/foreign client cert): PD just drops the connection
            return
        try:
            super().finish_request(conn, client_address)
        finally:
            conn.close()


class FakePD:
    """A PD that only takes store heartbeats; with `tls` it requires a CA-signed client certificate."""

    def __init__(self, registry: Registry, tls: TlsFiles | None = None):
        context = None
        if tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(tls.cert, tls.key)
            context.load_verify_locations(tls.ca)
            context.verify_mode = ssl.CERT_REQUIRED
        self.port = free_ports(1)[0]
        self._server = _PDServer(self.port, registry, context)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


# ---------------------------------------------------------------------------------------------
# The stand-in process


def run_tikv_server(args: list[str], cwd: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """`tikv-server <args>` to completion, output captured."""
    return subprocess.run([sys.executable, "-m", "tikvlab.tikv_server", *args], cwd=cwd, check=False,
                          env=dict(os.environ, PYTHONPATH=LAB_DIR), capture_output=True, text=True, timeout=timeout)


class StandIn:
    """One tikv-server stand-in in a TiUP-shaped deploy dir under `base`, started as TiUP's run script
    would (cwd = deploy dir, `--config conf/tikv.toml`)."""

    def __init__(self, base: str, name: str, pd: list[str], tls: TlsFiles | None = None,
                 cert_allowed_cn: list[str] | None = None):
        self.name = name
        self.tls = tls
        self.grpc_port, self.status_port = free_ports(2)
        self.deploy_dir = os.path.join(base, "tidb-deploy", name)
        self.data_dir = os.path.join(base, "tidb-data", name)
        self.log_path = os.path.join(self.deploy_dir, "log", "tikv.log")
        self.stderr_path = os.path.join(self.deploy_dir, "log", "tikv_stderr.log")
        self.pd = pd
        self.proc: subprocess.Popen[bytes] | None = None
        os.makedirs(os.path.join(self.deploy_dir, "conf"), exist_ok=True)
        os.makedirs(os.path.dirname(self.log_path), exist_ok=True)
        self.write_config(tls.as_security() if tls else None, cert_allowed_cn or [])

    @property
    def addr(self) -> str:
        return f"{HOST}:{self.grpc_port}"

    @property
    def status_addr(self) -> str:
        return f"{HOST}:{self.status_port}"

    def write_config(self, security: dict[str, str] | None, cert_allowed_cn: list[str]) -> None:
        lines = ["# tikv.toml of a test", "[server]", "grpc-concurrency = 4", ""]
        if security is not None:
            lines.append("[security]")
            lines += [f"{key} = {json.dumps(value)}" for key, value in security.items()]
            lines.append(f"cert-allowed-cn = {json.dumps(cert_allowed_cn)}")
        with open(os.path.join(self.deploy_dir, "conf", "tikv.toml"), "w", encoding="utf-8") as fh:
            fh.write("\n".join(lines) + "\n")

    def command(self) -> list[str]:
        return [sys.executable, "-m", "tikvlab.tikv_server",
                "--addr", self.addr, "--advertise-addr", self.addr,
                "--status-addr", self.status_addr, "--advertise-status-addr", self.status_addr,
                "--pd", ",".join(self.pd), "--data-dir", self.data_dir,
                "--config", "conf/tikv.toml", "--log-file", self.log_path]

    def start(self) -> None:
        env = dict(os.environ, PYTHONPATH=LAB_DIR)
        with open(self.stderr_path, "ab") as err:
            self.proc = subprocess.Popen(self.command(), cwd=self.deploy_dir, env=env, stdout=err, stderr=err,
                                         start_new_session=True)

    def run_to_exit(self) -> subprocess.CompletedProcess[str]:
        """Run in the foreground (for refusals); stdout/stderr captured."""
        return run_tikv_server(self.command()[3:], self.deploy_dir)

    def wait_ready(self, timeout: float = 30) -> None:
        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            return "TiKV is ready to serve" in self.log()
        wait_until(ready, timeout, f"{self.name} to serve")

    def stop(self, timeout: float = 15) -> int:
        """SIGTERM and wait; SIGKILL if it does not go. Returns the exit status."""
        assert self.proc is not None
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def log(self) -> str:
        try:
            with open(self.log_path, encoding="utf-8") as fh:
                return fh.read()
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def get(self, path: str, client: ssl.SSLContext | None = None) -> tuple[int, Any]:
        """GET on the status port; with TLS the store's own certificate unless `client` is given."""
        if client is None and self.tls:
            client = self.tls.client_context()
        return http_json("GET", self.status_addr, path, tls=client)

    def metrics(self) -> dict[str, float]:
        """`name{labels}` -> value from /metrics."""
        status, text = self.get("/metrics")
        assert status == 200, (status, text)
        samples = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                samples[name] = float(value)
        return samples

    def link_to(self, other: StandIn) -> float | None:
        return self.metrics().get(f'tikv_lab_peer_link_up{{to="{other.addr}"}}')

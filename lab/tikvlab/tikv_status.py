"""TiKV's status port: GET /status, /metrics, /config over HTTP/1.1, with TiKV's TLS rules.

* TLS iff ca, cert and key are all set; rust-openssl's `mozilla_modern` acceptor (TLS 1.2 only,
  its ECDHE cipher list, server preference).
* A client certificate is requested (and required, CA-verified) only when cert-allowed-cn is
  non-empty; the CN itself is not checked on this port.
* Reload (TiKV >= 6.1, components/server/src/status_server): the context built at start is kept;
  only after a failed TLS handshake is the cert mtime compared with the last one seen (none at start,
  so the first failure always rebuilds) and the context rebuilt. A rotated certificate is therefore
  NOT served until some handshake has failed.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

from .common import Logger
from .tikv_config import SecurityConfig

HANDSHAKE_TIMEOUT = 5.0
IDLE_TIMEOUT = 30.0
MOZILLA_MODERN_CIPHERS = (
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:"
    "ECDHE-RSA-CHACHA20-POLY1305:ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-SHA384:ECDHE-RSA-AES256-SHA384:ECDHE-ECDSA-AES128-SHA256:ECDHE-RSA-AES128-SHA256")


def status_tls_context(security: SecurityConfig) -> ssl.SSLContext:
    """TiKV's `tls_acceptor`: CA, cert and key from the files; peer verification only with an allow-list."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(MOZILLA_MODERN_CIPHERS)
    ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    ctx.load_verify_locations(cafile=security.ca_path)
    ctx.load_cert_chain(security.cert_path, security.key_path)
    if security.cert_allowed_cn:
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


class ReloadOnErrorTls:
    """The status port's TLS context and TiKV's rebuild-after-a-failed-handshake rule."""

    def __init__(self, security: SecurityConfig, logger: Logger):
        self._security = security
        self._logger = logger
        self._lock = threading.Lock()
        self._context = status_tls_context(security)
        self._last_mtime: int | None = None

    def wrap(self, sock: socket.socket) -> ssl.SSLSocket:
        """Server-side handshake on an accepted socket; raises ssl.SSLError/OSError when it fails."""
        with self._lock:
            context = self._context
        return context.wrap_socket(sock, server_side=True)

    def handshake_failed(self) -> None:
        """TiKV's `handle_ssl_error`: rebuild the context if the cert file's mtime moved."""
        with self._lock:
            try:
                mtime = os.stat(self._security.cert_path).st_mtime_ns
            except OSError as exc:
                self._logger.error(f"Failed to load certificate file metadata: {exc}")
                return
            if mtime == self._last_mtime:
                return
            self._last_mtime = mtime
            try:
                self._context = status_tls_context(self._security)
            except (OSError, ssl.SSLError) as exc:
                self._logger.error(f"Failed to reload TLS certificate: {exc}")


class StatusHandler(BaseHTTPRequestHandler):
    """GET /status, /metrics, /config. The server object carries the callables that produce them."""

    protocol_version = "HTTP/1.1"
    timeout = IDLE_TIMEOUT
    server: StatusServer

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._reply(200, "text/plain; version=0.0.4", self.server.metrics().encode())
        elif path == "/status":
            self._reply(200, "application/json", json.dumps(self.server.status()).encode())
        elif path == "/config":
            self._reply(200, "application/json", json.dumps(self.server.config()).encode())
        else:
            self._reply(404, "text/plain", b"not found\n")

    def _reply(self, code: int, content_type: str, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """TiKV does not log every status request; neither does the lab."""


class StatusServer(ThreadingHTTPServer):
    """Threaded HTTP/1.1 server; with TLS the handshake runs in the connection's own thread so a slow
    or broken client never holds up the accept loop."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], tls: ReloadOnErrorTls | None, logger: Logger,
                 metrics: Callable[[], str], status: Callable[[], dict[str, Any]],
                 config: Callable[[], dict[str, Any]]):
        self.tls = tls
        self.logger = logger
        self.metrics = metrics
        self.status = status
        self.config = config
        super().__init__(address, StatusHandler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        if self.tls is None:
            super().finish_request(request, client_address)
            return
        request.settimeout(HANDSHAKE_TIMEOUT)
        try:
            conn = self.tls.wrap(request)
        except (ssl.SSLError, OSError) as exc:
            self.logger.error("Status server error: TLS handshake error",
                              remote_addr=f"{client_address[0]}:{client_address[1]}", err=str(exc))
            self.tls.handshake_failed()
            return
        try:
            super().finish_request(conn, client_address)
        finally:
            conn.close()


def split_hostport(addr: str) -> tuple[str, int]:
    host, port = addr.rsplit(":", 1)
    return host.strip("[]"), int(port)


def start_status_server(addr: str, security: SecurityConfig, logger: Logger, metrics: Callable[[], str],
                        status: Callable[[], dict[str, Any]], config: Callable[[], dict[str, Any]]) -> StatusServer:
    """Bind the status port and serve it on a daemon thread; raises OSError when it cannot bind."""
    tls = ReloadOnErrorTls(security, logger) if security.tls else None
    server = StatusServer(split_hostport(addr), tls, logger, metrics, status, config)
    threading.Thread(target=server.serve_forever, name="status-server", daemon=True).start()
    return server

"""PD's client port: a threaded HTTP/1.1 server (TLS per pd_tls) routing /pd/api/v1, /metrics and
etcd's /v3/ JSON gateway to the PD service.

Answers are JSON like PD's (plain messages are JSON strings, as PD renders them). Errors carry the
reason: 400 bad request, 404 not found, 500 operation failed, 503 no quorum / etcd not answering.
"""

from __future__ import annotations

import json
import re
import socket
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from tikvlab.pd_etcd import EtcdUnavailable
from tikvlab.pd_service import OperationFailed, PDService
from tikvlab.pd_state import BadRequest, NotFound
from tikvlab.pd_tls import ClientPortTLS

API = "/pd/api/v1"
IDLE_CONNECTION_TIMEOUT = 60.0


@dataclass
class Reply:
    status: int
    body: Any = None
    content_type: str = "application/json; charset=UTF-8"

    def payload(self) -> bytes:
        if isinstance(self.body, bytes):
            return self.body
        if isinstance(self.body, str) and not self.content_type.startswith("application/json"):
            return self.body.encode()
        return (json.dumps(self.body, indent=2) + "\n").encode()


Route = Callable[[PDService, re.Match[str], bytes], Reply]


def _json_body(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw or b"{}")
    except ValueError as err:
        raise BadRequest(f"request body is not JSON: {err}") from err
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    return body


def _ping(_svc: PDService, _m: re.Match[str], _b: bytes) -> Reply:
    return Reply(200, b"")


def _version(svc: PDService, _m: re.Match[str], _b: bytes) -> Reply:
    return Reply(200, {"version": svc.cfg.version})


def _health(svc: PDService, _m: re.Match[str], _b: bytes) -> Reply:
    return Reply(200, svc.health())


def _members(svc: PDService, _m: re.Match[str], _b: bytes) -> Reply:
    return Reply(200, svc.members())


def _leader(svc: PDService, _m: re.Match[str], _b: bytes) -> Reply:
    return Reply(200, svc.leader())


def _resign(svc: PDService, _m: re.Match[str], _b: bytes) -> Reply:
    return Reply(200, svc.resign_leader())


def _transfer(svc: PDService, match: re.Match[str], _b: bytes) -> Reply:
    return Reply(200, svc.transfer_leader(match["name"]))


def _stores(svc: PDService, _m: re.Match[str], _b: bytes) -> Reply:
    return Reply(200, svc.stores())


def _store(svc: PDService, match: re.Match[str], _b: bytes) -> Reply:
    return Reply(200, svc.store(int(match["id"])))


def _schedulers(svc: PDService, _m: re.Match[str], _b: bytes) -> Reply:
    return Reply(200, svc.schedulers())


def _add_scheduler(svc: PDService, _m: re.Match[str], body: bytes) -> Reply:
    return Reply(200, svc.add_scheduler(_json_body(body)))


def _remove_scheduler(svc: PDService, match: re.Match[str], _b: bytes) -> Reply:
    return Reply(200, svc.remove_scheduler(match["name"]))


def _config(svc: PDService, _m: re.Match[str], _b: bytes) -> Reply:
    return Reply(200, svc.cfg.as_api_dict())


def _metrics(svc: PDService, _m: re.Match[str], _b: bytes) -> Reply:
    return Reply(200, svc.metrics(), "text/plain; version=0.0.4; charset=utf-8")


def _heartbeat(svc: PDService, _m: re.Match[str], body: bytes) -> Reply:
    return Reply(200, svc.heartbeat(_json_body(body)))


def _etcd_move_leader(svc: PDService, _m: re.Match[str], body: bytes) -> Reply:
    target = _json_body(body).get("target_id")
    if not isinstance(target, int):
        raise BadRequest("target_id must be the target member's id (integer)")
    svc.move_local_leader(target)
    return Reply(200, "moved")


ROUTES: list[tuple[str, re.Pattern[str], Route]] = [
    (method, re.compile(pattern), route) for method, pattern, route in [
        ("GET", rf"{API}/ping", _ping),
        ("GET", rf"{API}/version", _version),
        ("GET", rf"{API}/health", _health),
        ("GET", rf"{API}/members", _members),
        ("GET", rf"{API}/leader", _leader),
        ("POST", rf"{API}/leader/resign", _resign),
        ("POST", rf"{API}/leader/transfer/(?P<name>[^/]+)", _transfer),
        ("GET", rf"{API}/stores", _stores),
        ("GET", rf"{API}/store/(?P<id>\d+)", _store),
        ("GET", rf"{API}/schedulers", _schedulers),
        ("POST", rf"{API}/schedulers", _add_scheduler),
        ("DELETE", rf"{API}/schedulers/(?P<name>[^/]+)", _remove_scheduler),
        ("GET", rf"{API}/config", _config),
        ("GET", r"/metrics", _metrics),          # where PD serves it
        ("GET", rf"{API}/metrics", _metrics),
        ("POST", rf"{API}/lab/store/heartbeat", _heartbeat),
        ("POST", rf"{API}/lab/etcd-move-leader", _etcd_move_leader),
    ]
]


def route_for(method: str, path: str) -> tuple[Route, re.Match[str]] | int:
    """The route and its match, or 404/405 when nothing serves that path/method."""
    path_matched = False
    for route_method, pattern, route in ROUTES:
        match = pattern.fullmatch(path)
        if match:
            if route_method == method:
                return route, match
            path_matched = True
    return 405 if path_matched else 404


class PDRequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "PD"
    timeout = IDLE_CONNECTION_TIMEOUT  # an idle keep-alive connection must not pin a thread forever
    server: ClientPortServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - signature of the base class
        """PD does not log each request; refusals and failures are logged where they happen."""

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _dispatch(self, method: str) -> None:
        body = self._read_body()
        path = urlsplit(self.path).path
        if path.startswith("/v3/"):
            self._send(self._proxy_to_etcd(method, path, body))
            return
        found = route_for(method, path)
        if isinstance(found, int):
            self._send(Reply(found, "404 page not found" if found == 404 else "method not allowed",
                             "text/plain; charset=utf-8"))
            return
        route, match = found
        self._send(self._run(route, match, body))

    def _run(self, route: Route, match: re.Match[str], body: bytes) -> Reply:
        service = self.server.service
        try:
            return route(service, match, body)
        except BadRequest as err:
            return Reply(400, str(err))
        except NotFound as err:
            return Reply(404, str(err))
        except OperationFailed as err:
            return Reply(500, str(err))
        except EtcdUnavailable as err:
            return Reply(503, str(err))
        except Exception as err:  # a bug must answer and leave a trace, not kill the connection silently
            service.logger.error("API request failed", path=self.path, error=repr(err),
                                 trace=traceback.format_exc(limit=5))
            return Reply(500, f"internal error: {err!r}")

    def _proxy_to_etcd(self, method: str, path: str, body: bytes) -> Reply:
        """etcd's v3 JSON gateway, as PD serves it on its client port (enable-grpc-gateway)."""
        try:
            status, answer, content_type = self.server.service.etcd.raw(method, path, body)
        except EtcdUnavailable as err:
            return Reply(503, str(err))
        return Reply(status, answer, content_type)

    def _send(self, reply: Reply) -> None:
        payload = reply.payload()
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


class ClientPortServer(ThreadingHTTPServer):
    """One client URL's listener. With TLS the handshake runs in the connection's own thread, so a slow
    or hostile client cannot block accept(), and every refusal is logged with its cause."""

    daemon_threads = True
    allow_reuse_address = True  # as Go's listeners do: a restart must not wait out TIME_WAIT

    def __init__(self, address: tuple[str, int], service: PDService, tls: ClientPortTLS | None):
        self.service = service
        self.tls = tls
        super().__init__(address, PDRequestHandler)

    def finish_request(self, request: socket.socket, client_address: tuple[str, int]) -> None:
        if self.tls is None:
            super().finish_request(request, client_address)
            return
        secured = self.tls.accept(request, client_address)
        if secured is None:
            return
        try:
            self.RequestHandlerClass(secured, client_address, self)
        finally:
            secured.close()

    def handle_error(self, request: Any, client_address: tuple[str, int]) -> None:
        """A connection that broke mid-request (client went away, timeout): one log line, no traceback."""
        error = traceback.format_exc(limit=0).strip().splitlines()[-1]
        self.service.logger.warn("client connection failed", remote=f"{client_address[0]}:{client_address[1]}",
                                 error=error)

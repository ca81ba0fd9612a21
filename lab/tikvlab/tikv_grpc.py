"""TiKV's gRPC port and the gRPC client a store uses towards its peers.

Server side, as TiKV (components/security/src/lib.rs) does it:
* TLS with `require_client_authentication=True`: every client must present a certificate signed by
  the CA;
* a certificate fetcher that re-reads CA, cert AND key only when the mtime of cert-path changed since
  the last load. Replacing only ca.crt or only the key changes nothing until the cert file is written;
* `cert-allowed-cn` checked on every call against the peer's Subject CN (`x509_common_name`):
  failure is UNAUTHENTICATED "Common name check fail".

Methods are generic handlers on raw bytes (no protobuf): `/tikvpb.Tikv/KvGet` answers b"ok" (what a
client such as TiDB or a probe calls), `/lab.Peer/Ping` is the TiKV->TiKV link.
"""

from __future__ import annotations

import os
import threading
from concurrent import futures
from dataclasses import dataclass
from typing import Callable

import grpc

from .common import Logger
from .tikv_config import SecurityConfig

KV_GET = "/tikvpb.Tikv/KvGet"
PEER_PING = "/lab.Peer/Ping"
CN_CHECK_FAILED = "Common name check fail"
GRPC_WORKERS = 8
SERVER_OPTIONS = [
    # grpc-core sets SO_REUSEPORT by default: a second stand-in on the same port would bind silently
    # and share the traffic. TiKV fails on a taken port; so must the lab.
    ("grpc.so_reuseport", 0),
]
CLIENT_OPTIONS = [
    # Each channel gets its own connection, so a fresh channel really does a fresh TLS handshake with
    # the files as they are now (the global subchannel pool would hand back an old connection).
    ("grpc.use_local_subchannel_pool", 1),
]


class GrpcStartError(Exception):
    """The gRPC port could not be bound."""


@dataclass(frozen=True)
class CredentialFiles:
    """The three TLS files of one process (TiKV uses one certificate for server and client roles)."""

    ca: str
    cert: str
    key: str

    @classmethod
    def of(cls, security: SecurityConfig) -> CredentialFiles:
        return cls(security.ca_path, security.cert_path, security.key_path)

    def read(self) -> tuple[bytes, bytes, bytes]:
        return read_bytes(self.ca), read_bytes(self.cert), read_bytes(self.key)

    def cert_mtime(self) -> int:
        return os.stat(self.cert).st_mtime_ns

    def signature(self) -> tuple[int, ...] | None:
        """mtimes of all three: a changed signature means a new channel must be built."""
        try:
            return tuple(os.stat(path).st_mtime_ns for path in (self.ca, self.cert, self.key))
        except OSError:
            return None


def read_bytes(path: str) -> bytes:
    with open(path, "rb") as fh:
        return fh.read()


# ---------------------------------------------------------------------------------------------
# Server


class CertificateFetcher:
    """grpc's certificate_configuration_fetcher with TiKV's rule: reload only on a new cert mtime.

    grpc-core calls it on every incoming connection; None means "keep what you have"."""

    def __init__(self, files: CredentialFiles, logger: Logger):
        self._files = files
        self._logger = logger
        self._lock = threading.Lock()
        self._last_mtime: int | None = None

    def initial(self) -> grpc.ServerCertificateConfiguration:
        """The configuration loaded at start (TiKV's first fetch happens when the server is built)."""
        with self._lock:
            self._last_mtime = self._files.cert_mtime()
            return self._configuration()

    def __call__(self) -> grpc.ServerCertificateConfiguration | None:
        with self._lock:
            try:
                mtime = self._files.cert_mtime()
            except OSError as exc:
                self._logger.error("failed to get cert file metadata", path=self._files.cert, err=str(exc))
                return None
            if mtime == self._last_mtime:
                return None
            # As in TiKV the new mtime is remembered before loading: a failed load is not retried
            # until the cert file changes again (so a half-written cert is a real outage, as there).
            self._last_mtime = mtime
            try:
                config = self._configuration()
            except (OSError, ValueError) as exc:
                self._logger.error("failed to reload TLS certificates for the gRPC server", err=str(exc))
                return None
            self._logger.info("gRPC server TLS certificates reloaded", cert_path=self._files.cert)
            return config

    def _configuration(self) -> grpc.ServerCertificateConfiguration:
        ca, cert, key = self._files.read()
        if not (ca and cert and key):
            raise ValueError("ca, cert and private key should be all configured.")
        return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=ca)


class CommonNameCheck(grpc.ServerInterceptor):
    """`cert-allowed-cn` on every call: the client's Subject CN must be in the list (exact match)."""

    def __init__(self, allowed: tuple[str, ...], logger: Logger):
        self._allowed = set(allowed)
        self._logger = logger

    def intercept_service(self, continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
                          handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        behaviour = handler.unary_unary
        method = handler_call_details.method

        # The servicer context (and with it the peer's certificate) only exists inside the call,
        # so the check wraps the method rather than deciding here.
        def checked(request: bytes, context: grpc.ServicerContext) -> bytes:
            reason = self.rejection(context.auth_context())
            if reason:
                self._logger.warn(CN_CHECK_FAILED, method=method, peer=context.peer(), reason=reason)
                context.abort(grpc.StatusCode.UNAUTHENTICATED, CN_CHECK_FAILED)
            return behaviour(request, context)

        return grpc.unary_unary_rpc_method_handler(checked)

    def rejection(self, auth_context: dict[str, list[bytes]]) -> str | None:
        """None when the peer may call; else TiKV's reason text."""
        names = auth_context.get("x509_common_name")
        if not names:
            return "x509_common_name doesn't exist"
        peer_cn = names[0].decode("utf-8", "replace")
        if peer_cn in self._allowed:
            return None
        return f"x509_common_name from peer is {peer_cn}"


def kv_get(request: bytes, context: grpc.ServicerContext) -> bytes:
    return b"ok"


def ping(request: bytes, context: grpc.ServicerContext) -> bytes:
    return b"pong"


def service_handlers() -> list[grpc.GenericRpcHandler]:
    return [
        grpc.method_handlers_generic_handler("tikvpb.Tikv", {"KvGet": grpc.unary_unary_rpc_method_handler(kv_get)}),
        grpc.method_handlers_generic_handler("lab.Peer", {"Ping": grpc.unary_unary_rpc_method_handler(ping)}),
    ]


def server_credentials(security: SecurityConfig, logger: Logger) -> grpc.ServerCredentials:
    fetcher = CertificateFetcher(CredentialFiles.of(security), logger)
    return grpc.dynamic_ssl_server_credentials(fetcher.initial(), fetcher, require_client_authentication=True)


def start_grpc_server(addr: str, security: SecurityConfig, logger: Logger) -> grpc.Server:
    """Bind and start the gRPC port; raises GrpcStartError when the address cannot be bound."""
    interceptors: list[grpc.ServerInterceptor] = []
    if security.tls and security.cert_allowed_cn:
        interceptors.append(CommonNameCheck(security.cert_allowed_cn, logger))
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=GRPC_WORKERS), handlers=service_handlers(),
                         interceptors=interceptors, options=SERVER_OPTIONS)
    try:
        credentials = server_credentials(security, logger) if security.tls else None
    except (OSError, ValueError) as exc:
        raise GrpcStartError(f"failed to load TLS certificates: {exc}") from None
    try:
        if credentials:
            port = server.add_secure_port(addr, credentials)
        else:
            port = server.add_insecure_port(addr)
    except RuntimeError as exc:  # newer grpcio raises instead of returning 0
        raise GrpcStartError(f"failed to bind {addr}: {exc}") from None
    if port == 0:
        raise GrpcStartError(f"failed to bind {addr}")
    server.start()
    return server


# ---------------------------------------------------------------------------------------------
# Client (store -> store)


def open_channel(addr: str, security: SecurityConfig) -> grpc.Channel:
    """A channel to a peer with this store's own certificate, files read now (as TiKV does when it
    creates a channel). The server name checked is the host part of `addr` (grpc's default)."""
    if not security.tls:
        return grpc.insecure_channel(addr, options=CLIENT_OPTIONS)
    ca, cert, key = CredentialFiles.of(security).read()
    credentials = grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)
    return grpc.secure_channel(addr, credentials, options=CLIENT_OPTIONS)


def rpc_error_text(exc: grpc.RpcError) -> str:
    """`UNAVAILABLE: <grpc's details>`: the details carry the TLS cause (e.g. CERTIFICATE_VERIFY_FAILED)."""
    if isinstance(exc, grpc.Call):
        return f"{exc.code().name}: {exc.details()}"
    return str(exc)

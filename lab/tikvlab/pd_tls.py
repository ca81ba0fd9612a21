"""TLS of PD's client port, with PD/etcd's reload semantics.

- RequireAndVerifyClientCert: no client certificate, or one from another CA, fails the handshake.
- The CA pool is read ONCE at start (a CA change needs a restart, as in PD).
- The certificate and key are re-read on EVERY handshake: the SNI callback (which OpenSSL calls for
  every ClientHello, SNI or not) swaps in a fresh context built from the files on disk and the
  start-time CA data. Rotation therefore needs no restart.
- PD >= v8.4 with more than one cert-allowed-cn checks the client's Subject CN on this port.

Outgoing calls (health pings, forwarding to the leader) present the same certificate, re-read per
connection, and trust the same start-time CA, as PD's own HTTP client does.
"""

from __future__ import annotations

import socket
import ssl
import threading
from typing import Any

from tikvlab.common import Logger
from tikvlab.pd_config import Security

HANDSHAKE_TIMEOUT = 10.0


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as fh:
        return fh.read()


def subject_cn(peer_cert: dict[str, Any]) -> str:
    for rdn in peer_cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return value
    return ""


class TLSMaterial:
    """[security] as PD holds it: the CA read once at start, cert and key paths read on every use."""

    def __init__(self, security: Security):
        self.cert_path = security.cert_path
        self.key_path = security.key_path
        self.ca_pem = _read(security.cacert_path)

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cadata=self.ca_pem)
        ctx.load_cert_chain(self.cert_path, self.key_path)
        return ctx

    def client_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=self.ca_pem)
        ctx.load_cert_chain(self.cert_path, self.key_path)
        return ctx


class ClientPortTLS:
    """The server side of an https client listener."""

    def __init__(self, material: TLSMaterial, logger: Logger, allowed_cn: list[str] | None):
        """`allowed_cn`: the CNs the client port accepts, or None when it does not check CNs."""
        self.material = material
        self.logger = logger
        self.allowed_cn = allowed_cn
        self.refused = 0
        self._refused_lock = threading.Lock()
        self.listener_context = material.server_context()
        self.listener_context.sni_callback = self._reload_certificate

    def _reload_certificate(self, sock: ssl.SSLObject, _server_name: str | None,
                            _ctx: ssl.SSLContext) -> int | None:
        try:
            sock.context = self.material.server_context()
        except (OSError, ssl.SSLError) as err:
            self.logger.error("failed to reload TLS certificate", cert=self.material.cert_path,
                              key=self.material.key_path, error=str(err))
            return ssl.ALERT_DESCRIPTION_INTERNAL_ERROR
        return None

    def _count_refusal(self) -> None:
        with self._refused_lock:
            self.refused += 1

    def accept(self, raw: socket.socket, remote: tuple[str, int]) -> ssl.SSLSocket | None:
        """Handshake on an accepted connection; None (connection closed, cause logged) when refused."""
        peer = f"{remote[0]}:{remote[1]}"
        raw.settimeout(HANDSHAKE_TIMEOUT)
        tls = self.listener_context.wrap_socket(raw, server_side=True, do_handshake_on_connect=False)
        try:
            tls.do_handshake()
        except (OSError, ssl.SSLError) as err:
            self._count_refusal()
            self.logger.warn("TLS handshake error", remote=peer, error=str(err) or type(err).__name__)
            tls.close()
            return None
        if self.allowed_cn is not None:
            cn = subject_cn(tls.getpeercert() or {})
            if cn not in self.allowed_cn:
                self._count_refusal()
                self.logger.warn("client certificate CN check failed", remote=peer, cn=cn,
                                 allowed=self.allowed_cn)
                tls.close()
                return None
        return tls


def outgoing_context(material: TLSMaterial | None, url_scheme: str) -> ssl.SSLContext | None:
    """The context for calling a member at a URL with `url_scheme` (as published; PD trusts the URL).
    A PD without TLS material dialling https gets a context that fails verification, as such a PD would."""
    if url_scheme != "https":
        return None
    if material is None:
        return ssl.create_default_context()
    return material.client_context()

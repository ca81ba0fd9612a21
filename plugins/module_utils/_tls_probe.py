# -*- coding: utf-8 -*-
# Copyright: tlsops.tikv contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""TLS probes for the tlsops.tikv collection (private: the leading underscore).

One function per probe, each opening its own TCP connection with the standard library only
(``ssl`` + ``socket``), so modules running on the controller or on any managed host can reuse them:

- ``probe_handshake``: one TLS handshake with a chosen verification/client-certificate/version setup;
  the building block of the others. Returns a ``Handshake`` (never raises for network or TLS errors).
- ``probe_server``: the verified handshake as a client would do it, plus the follow-ups needed to say
  separately whether the chain and the hostname verify and to read the served certificate even when
  verification fails.
- ``probe_client_cert_required``: does the server refuse a client that presents no certificate?
- ``probe_plaintext_refused``: does the port answer a plaintext HTTP request?
- ``probe_weak_protocols``: which protocol versions below a minimum does the server still accept?
- ``describe_certificate``: the served leaf as plain data (``cryptography`` if installed).
- ``run_checks``: everything above, with the expectations turned into ``failures`` messages.

Python 3.8+ compatible (modules run on managed hosts).
"""

from __future__ import absolute_import, division, print_function

import datetime
import hashlib
import ipaddress
import os
import socket
import ssl
import time
import traceback
import warnings

try:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
    from cryptography.x509.oid import NameOID
    HAS_CRYPTOGRAPHY = True
    CRYPTOGRAPHY_IMPORT_ERROR = None
except ImportError:
    HAS_CRYPTOGRAPHY = False
    CRYPTOGRAPHY_IMPORT_ERROR = traceback.format_exc()


PROTOCOLS = ("TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3")
_TLSVERSION_NAMES = {"TLSv1": "TLSv1", "TLSv1.1": "TLSv1_1", "TLSv1.2": "TLSv1_2", "TLSv1.3": "TLSv1_3"}
_HAS_PROTOCOL = {
    "TLSv1": getattr(ssl, "HAS_TLSv1", False),
    "TLSv1.1": getattr(ssl, "HAS_TLSv1_1", False),
    "TLSv1.2": getattr(ssl, "HAS_TLSv1_2", False),
    "TLSv1.3": getattr(ssl, "HAS_TLSv1_3", False),
}
_WIRE_VERSIONS = {0x0301: "TLSv1", 0x0302: "TLSv1.1", 0x0303: "TLSv1.2", 0x0304: "TLSv1.3"}

# TLS record content types / handshake message types seen through the message callback.
_CT_ALERT = 21
_CT_HANDSHAKE = 22
_HS_CLIENT_HELLO = 1
_HS_SERVER_HELLO = 2
_HS_CERTIFICATE = 11
_HS_CERTIFICATE_REQUEST = 13
_HS_CLIENT_KEY_EXCHANGE = 16
_HS_FINISHED = 20

# X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_EMAIL_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH
_HOSTNAME_VERIFY_CODES = (62, 63, 64)

# Alerts a server sends when it rejects (or misses) the client certificate.
_CLIENT_CERT_ALERTS = (
    "TLSV13_ALERT_CERTIFICATE_REQUIRED",
    "SSLV3_ALERT_BAD_CERTIFICATE",
    "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE",
    "SSLV3_ALERT_CERTIFICATE_REVOKED",
    "SSLV3_ALERT_CERTIFICATE_EXPIRED",
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN",
    "TLSV1_ALERT_UNKNOWN_CA",
    "TLSV1_ALERT_ACCESS_DENIED",
    "TLSV1_ALERT_DECRYPT_ERROR",
)
# What OpenSSL says when the peer does not speak TLS at all (e.g. a plaintext HTTP server).
_NOT_TLS_REASONS = (
    "WRONG_VERSION_NUMBER",
    "PACKET_LENGTH_TOO_LONG",
    "RECORD_LAYER_FAILURE",
    "UNKNOWN_PROTOCOL",
    "HTTP_REQUEST",
    "HTTPS_PROXY_REQUEST",
    "RECORD_TOO_LARGE",
    "ENCRYPTED_LENGTH_TOO_LONG",
)
_PROTOCOL_REASONS = ("TLSV1_ALERT_PROTOCOL_VERSION", "UNSUPPORTED_PROTOCOL", "VERSION_TOO_LOW",
                     "VERSION_TOO_HIGH")
# Local refusals: raised before anything reached the server.
_LOCAL_REASONS = ("NO_PROTOCOLS_AVAILABLE", "NO_CIPHERS_AVAILABLE", "NO_SUITABLE_SIGNATURE_ALGORITHM",
                  "UNSUPPORTED_SSL_VERSION")

# Plaintext answers of TLS servers that only tell the client to use TLS (Go net/http, nginx).
_USE_TLS_ANSWERS = (b"HTTP request to an HTTPS server", b"plain HTTP request was sent to HTTPS port")

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
H2_EMPTY_SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
_H2_FRAME_TYPES = {0: "DATA", 1: "HEADERS", 2: "PRIORITY", 3: "RST_STREAM", 4: "SETTINGS",
                   5: "PUSH_PROMISE", 6: "PING", 7: "GOAWAY", 8: "WINDOW_UPDATE", 9: "CONTINUATION"}

_READ_LIMIT = 16384


class ProbeConfigError(Exception):
    """Local material (CA file, client certificate or key) cannot be loaded: not a server problem."""


class Target(object):
    """Where and how to connect. ``server_name`` is the SNI and the name the certificate must match."""

    def __init__(self, host, port, server_name=None, ca_path=None, client_cert_path=None,
                 client_key_path=None, timeout=5.0, alpn_protocols=("h2", "http/1.1")):
        self.host = host
        self.port = int(port)
        self.server_name = server_name or host
        self.ca_path = ca_path
        self.client_cert_path = client_cert_path
        self.client_key_path = client_key_path
        self.timeout = float(timeout)
        self.alpn_protocols = list(alpn_protocols or [])

    @property
    def address(self):
        """``host:port`` as used in messages (IPv6 in brackets)."""
        host = self.host
        if ":" in host and not host.startswith("["):
            host = "[%s]" % host
        return "%s:%d" % (host, self.port)

    @property
    def http_host(self):
        name = self.server_name
        if ":" in name and not name.startswith("["):
            name = "[%s]" % name
        return name


class Handshake(object):
    """Outcome of one probe_handshake call.

    ``ok`` is True when the handshake completed. Otherwise ``stage`` says where it stopped
    (``connect``, ``handshake``, ``after_handshake``) and ``kind`` what happened:
    ``refused``, ``timeout``, ``resolve``, ``network``, ``chain``, ``hostname``, ``client_cert``,
    ``not_tls``, ``protocol``, ``alpn``, ``closed``, ``alert``, ``local``, ``tls``.
    ``message`` is readable text; ``reason`` the OpenSSL reason code when there is one.
    """

    def __init__(self):
        self.ok = False
        self.stage = None
        self.kind = None
        self.message = None
        self.reason = None
        self.verify_code = None
        self.protocol = None
        self.cipher = None
        self.alpn = None
        self.peer_der = None
        self.peer_dict = None
        self.handshake_ms = None
        # From the TLS message callback (None when the Python build lacks it):
        self.client_hello_sent = None
        self.server_hello_version = None
        self.cert_requested = None
        self.server_cert_accepted = None  # we went on past the server's certificate
        self.captured_leaf_der = None
        self.server_spoke = None  # any TLS record read from the server
        # Result of the request sent after the handshake (exchange=True):
        self.answer = None  # 'answered', 'closed', 'alert', 'timeout', 'reset'
        self.answer_detail = None

    def as_dict(self):
        return dict((k, v) for k, v in self.__dict__.items() if k not in ("peer_der", "captured_leaf_der"))


# ---------------------------------------------------------------------------------------------------
# Building blocks


def local_protocol_support(version):
    """True when the local OpenSSL can still offer ``version`` at all."""
    return bool(_HAS_PROTOCOL.get(version))


def _tls_version(name):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return getattr(ssl.TLSVersion, _TLSVERSION_NAMES[name])


def build_context(target, verify_chain=True, verify_hostname=True, client_cert=True, version=None):
    """An SSLContext for one probe. ``version`` pins min and max to one protocol and lowers the
    OpenSSL security level to 0 so old protocols/ciphers can be offered at all.

    Raises ProbeConfigError when the CA file or the client certificate/key cannot be loaded."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    # Match what Go (PD, etcd) does: names are checked against SANs only, never the CN.
    try:
        ctx.hostname_checks_common_name = False
    except (AttributeError, ValueError):
        pass
    if verify_chain:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.check_hostname = bool(verify_hostname)
        try:
            if target.ca_path:
                if os.path.isdir(target.ca_path):
                    ctx.load_verify_locations(capath=target.ca_path)
                else:
                    ctx.load_verify_locations(cafile=target.ca_path)
            else:
                ctx.load_default_certs()
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise ProbeConfigError("ca_path %s: cannot load CA certificates: %s" % (target.ca_path, _exc_text(exc)))
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if version is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            ctx.minimum_version = _tls_version(version)
            ctx.maximum_version = _tls_version(version)
        ctx.set_ciphers("ALL:@SECLEVEL=0")
    if client_cert and target.client_cert_path:
        try:
            ctx.load_cert_chain(target.client_cert_path, target.client_key_path or None)
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise ProbeConfigError("client_cert_path %s / client_key_path %s: cannot load the client certificate "
                                   "and key: %s" % (target.client_cert_path, target.client_key_path, _exc_text(exc)))
    if target.alpn_protocols:
        ctx.set_alpn_protocols(target.alpn_protocols)
    return ctx


def _exc_text(exc):
    if isinstance(exc, ssl.SSLError) and getattr(exc, "reason", None):
        return "%s (%s)" % (_ssl_text(exc), exc.reason)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or exc.__class__.__name__


def _ssl_text(exc):
    """'tlsv13 alert certificate required' out of '[SSL: X] tlsv13 alert certificate required (_ssl.c:1006)'."""
    text = str(exc.args[1]) if len(exc.args) > 1 else str(exc)
    if text.startswith("[") and "] " in text:
        text = text.split("] ", 1)[1]
    if text.endswith(")") and " (_ssl.c:" in text:
        text = text.rsplit(" (_ssl.c:", 1)[0]
    return text


def _is_timeout(exc):
    return isinstance(exc, socket.timeout) or "timed out" in str(exc)


def connect(target):
    """A TCP connection to target, or raises OSError subclasses (see _connect_failure)."""
    return socket.create_connection((target.host, target.port), timeout=target.timeout)


def _connect_failure(target, exc):
    hs = Handshake()
    hs.stage = "connect"
    if isinstance(exc, ConnectionRefusedError):
        hs.kind, hs.message = "refused", "connection refused (nothing listening on this port?)"
    elif _is_timeout(exc):
        hs.kind, hs.message = "timeout", "TCP connect timed out after %gs" % target.timeout
    elif isinstance(exc, socket.gaierror):
        hs.kind, hs.message = "resolve", "cannot resolve host %s: %s" % (target.host, exc.strerror or exc)
    else:
        hs.kind, hs.message = "network", _exc_text(exc)
    return hs


class _Recorder(object):
    """Message callback: what crossed the wire during the handshake (OpenSSL's msg_callback)."""

    def __init__(self, hs):
        self.hs = hs
        hs.client_hello_sent = False
        hs.cert_requested = False
        hs.server_cert_accepted = False
        hs.server_spoke = False

    def __call__(self, conn, direction, version, content_type, msg_type, data):
        try:
            if direction == "read":
                self.hs.server_spoke = True
            if int(content_type) != _CT_HANDSHAKE:
                return
            msg_type = int(msg_type)
            if direction == "write":
                if msg_type == _HS_CLIENT_HELLO:
                    self.hs.client_hello_sent = True
                elif msg_type in (_HS_CERTIFICATE, _HS_CLIENT_KEY_EXCHANGE, _HS_FINISHED):
                    # The client only gets this far after accepting the server's certificate.
                    self.hs.server_cert_accepted = True
            else:
                if msg_type == _HS_SERVER_HELLO:
                    self.hs.server_hello_version = _server_hello_version(data, int(version))
                elif msg_type == _HS_CERTIFICATE_REQUEST:
                    self.hs.cert_requested = True
                elif msg_type == _HS_CERTIFICATE and self.hs.captured_leaf_der is None:
                    self.hs.captured_leaf_der = _leaf_from_certificate_message(
                        data, self.hs.server_hello_version == "TLSv1.3")
        except Exception:  # never let a parsing problem break the probe itself
            pass


def _server_hello_version(data, fallback):
    """Negotiated version from a ServerHello message (header included): the supported_versions
    extension when present (TLS 1.3), else legacy_version. ``fallback`` (what OpenSSL passed to the
    callback) is only used when the message cannot be parsed."""
    try:
        pos = 4
        legacy = int.from_bytes(data[pos:pos + 2], "big")
        pos += 2 + 32
        pos += 1 + data[pos]  # session id
        pos += 2 + 1  # cipher suite, compression method
        if pos + 2 <= len(data):
            end = pos + 2 + int.from_bytes(data[pos:pos + 2], "big")
            pos += 2
            while pos + 4 <= end:
                ext_type = int.from_bytes(data[pos:pos + 2], "big")
                ext_len = int.from_bytes(data[pos + 2:pos + 4], "big")
                if ext_type == 0x002B and ext_len == 2:
                    return _WIRE_VERSIONS.get(int.from_bytes(data[pos + 4:pos + 6], "big"))
                pos += 4 + ext_len
        return _WIRE_VERSIONS.get(legacy)
    except (IndexError, TypeError, ValueError):
        return _WIRE_VERSIONS.get(fallback)


def _leaf_from_certificate_message(data, tls13):
    """DER of the first certificate in a Certificate handshake message (header included)."""
    pos = 4  # msg_type(1) + length(3)
    if tls13:
        ctx_len = data[pos]
        pos += 1 + ctx_len
    pos += 3  # certificate_list length
    cert_len = int.from_bytes(data[pos:pos + 3], "big")
    pos += 3
    der = bytes(data[pos:pos + cert_len])
    return der if len(der) == cert_len and cert_len > 0 else None


def _classify_ssl_error(hs, exc, target, used_client_cert):
    """Fill hs.kind/message from an exception raised during or after the handshake."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        hs.verify_code = exc.verify_code
        hs.message = (exc.verify_message or _ssl_text(exc)).rstrip(".")
        hs.kind = "hostname" if exc.verify_code in _HOSTNAME_VERIFY_CODES else "chain"
        return
    if isinstance(exc, (ssl.SSLEOFError, ssl.SSLZeroReturnError, ConnectionResetError)):
        how = "reset" if isinstance(exc, ConnectionResetError) else "closed"
        if hs.server_spoke is False:
            hs.kind = "closed"
            hs.message = ("the server %s the connection without answering our TLS ClientHello (is TLS enabled on "
                          "this port?)" % how)
        else:
            hs.kind, hs.message = "closed", "the server %s the connection during the handshake" % how
        return
    if isinstance(exc, ssl.SSLError):
        reason = getattr(exc, "reason", None) or ""
        hs.reason = reason
        text = _ssl_text(exc)
        if reason in _NOT_TLS_REASONS:
            hs.kind = "not_tls"
            hs.message = ("the server did not answer with TLS (%s): TLS is probably not enabled on this port "
                          "(plaintext?)" % text)
        elif reason in _LOCAL_REASONS:
            hs.kind, hs.message = "local", "the local OpenSSL refused to offer this setup (%s)" % text
        elif reason in _PROTOCOL_REASONS:
            hs.kind, hs.message = "protocol", "no protocol version in common with the server (%s)" % text
        elif reason == "TLSV1_ALERT_NO_APPLICATION_PROTOCOL":
            hs.kind = "alpn"
            hs.message = "the server accepts none of the offered ALPN protocols %s (%s)" % (
                ", ".join(target.alpn_protocols), text)
        elif reason in _CLIENT_CERT_ALERTS or (reason == "SSLV3_ALERT_HANDSHAKE_FAILURE" and hs.cert_requested
                                               and not used_client_cert):
            hs.kind = "client_cert"
            if not used_client_cert:
                hs.message = ("the server requires a client certificate and none was presented (%s); "
                              "set client_cert_path/client_key_path" % text)
            else:
                hs.message = "the server rejected our client certificate %s (%s)" % (target.client_cert_path, text)
        elif "ALERT" in reason:
            hs.kind, hs.message = "alert", "the server aborted with a TLS alert: %s" % text
        else:
            hs.kind, hs.message = "tls", text
        return
    if _is_timeout(exc):
        hs.kind = "timeout"
        hs.message = "no TLS answer within %gs (the server accepted the TCP connection and then said nothing)" % (
            target.timeout)
        return
    hs.kind, hs.message = "tls", _exc_text(exc)


def _request_bytes(target, alpn):
    if alpn == "h2":
        return H2_PREFACE + H2_EMPTY_SETTINGS
    return ("GET / HTTP/1.1\r\nHost: %s\r\nUser-Agent: tlsops.tikv.tls_handshake\r\nAccept: */*\r\n"
            "Connection: close\r\n\r\n" % target.http_host).encode("ascii")


def describe_answer(data):
    """Short human text for the first bytes a server sent back."""
    if not data:
        return "nothing"
    if data.startswith(b"HTTP/"):
        return data.split(b"\r\n", 1)[0].decode("latin-1")[:80]
    if len(data) >= 9 and data[3] in _H2_FRAME_TYPES and data[8] & 0x80 == 0:
        length = int.from_bytes(data[0:3], "big")
        if length <= 16384 * 64:
            return "an HTTP/2 %s frame" % _H2_FRAME_TYPES[data[3]]
    if len(data) >= 5 and 20 <= data[0] <= 24 and data[1] == 3:
        return "a TLS %s record" % {20: "change_cipher_spec", 21: "alert", 22: "handshake",
                                    23: "application_data", 24: "heartbeat"}[data[0]]
    return "%d bytes (%r...)" % (len(data), bytes(data[:16]))


def _exchange(tls, target, hs):
    """After the handshake: listen briefly, then send a small request (h2 preface or HTTP/1.1 GET)
    and read until the server answers, closes, alerts or the timeout expires.

    TLS 1.3 servers reject (or miss) a client certificate only after the client's side of the
    handshake has finished; the alert follows about one round trip later. Listening first (for a
    few handshake durations, at least 0.1 s) catches it before our request can hit a closed socket
    (which would turn the alert into a bare reset)."""
    grace = min(target.timeout, max(0.1, 3 * (hs.handshake_ms or 0) / 1000.0))
    if _read_answer(tls, hs, grace, target):
        return
    try:
        tls.sendall(_request_bytes(target, hs.alpn))
    except ssl.SSLError as exc:
        hs.answer, hs.answer_detail, hs.reason = "alert", _ssl_text(exc), getattr(exc, "reason", None)
        return
    except OSError as exc:
        hs.answer, hs.answer_detail = "reset", "the connection broke while sending a request (%s)" % _exc_text(exc)
        return
    if not _read_answer(tls, hs, target.timeout, target):
        hs.answer = "timeout"
        hs.answer_detail = "no answer and no rejection within %gs" % target.timeout


def _read_answer(tls, hs, wait, target):
    """One read with ``wait`` seconds; fills hs.answer and returns True unless the wait ran out."""
    tls.settimeout(wait)
    try:
        data = tls.recv(_READ_LIMIT)
    except (ssl.SSLEOFError, ssl.SSLZeroReturnError):
        hs.answer, hs.answer_detail = "closed", "the server closed the connection without answering"
        return True
    except ssl.SSLError as exc:
        hs.answer, hs.answer_detail, hs.reason = "alert", _ssl_text(exc), getattr(exc, "reason", None)
        return True
    except (ConnectionResetError, BrokenPipeError):
        hs.answer, hs.answer_detail = "reset", "the server reset the connection without answering"
        return True
    except OSError as exc:
        if _is_timeout(exc):
            return False
        hs.answer, hs.answer_detail = "reset", _exc_text(exc)
        return True
    finally:
        tls.settimeout(target.timeout)
    if data:
        hs.answer, hs.answer_detail = "answered", "it answered with %s" % describe_answer(data)
    else:
        hs.answer, hs.answer_detail = "closed", "the server closed the connection without answering"
    return True


# ---------------------------------------------------------------------------------------------------
# Probes


def probe_handshake(target, verify_chain=True, verify_hostname=True, client_cert=True, version=None,
                    exchange="tls13"):
    """One TCP connection and one TLS handshake; never raises for network/TLS trouble.

    exchange: 'never', 'always', or 'tls13' (send a request after the handshake only when TLS 1.3
    was negotiated, where client-certificate rejection arrives after the handshake).
    Raises ProbeConfigError for unusable local files."""
    ctx = build_context(target, verify_chain=verify_chain, verify_hostname=verify_hostname,
                        client_cert=client_cert, version=version)
    used_client_cert = bool(client_cert and target.client_cert_path)
    try:
        sock = connect(target)
    except OSError as exc:
        return _connect_failure(target, exc)
    hs = Handshake()
    try:
        ctx._msg_callback = _Recorder(hs)  # CPython >= 3.8 (private API, used for diagnostics only)
    except (AttributeError, TypeError):
        pass
    sock.settimeout(target.timeout)
    tls = None
    try:
        tls = ctx.wrap_socket(sock, server_hostname=target.server_name, do_handshake_on_connect=False)
        started = time.monotonic()
        try:
            tls.do_handshake()
        except (OSError, ValueError) as exc:
            hs.stage = "handshake"
            _classify_ssl_error(hs, exc, target, used_client_cert)
            return hs
        hs.handshake_ms = round((time.monotonic() - started) * 1000.0, 2)
        hs.protocol = tls.version()
        cipher = tls.cipher()
        hs.cipher = cipher[0] if cipher else None
        hs.alpn = tls.selected_alpn_protocol()
        hs.peer_der = tls.getpeercert(binary_form=True)
        if verify_chain:
            hs.peer_dict = tls.getpeercert()
        if exchange == "always" or (exchange == "tls13" and hs.protocol == "TLSv1.3"):
            _exchange(tls, target, hs)
            if hs.answer == "alert":
                hs.stage = "after_handshake"
                reason = hs.reason or ""
                if reason in _CLIENT_CERT_ALERTS or reason == "SSLV3_ALERT_HANDSHAKE_FAILURE":
                    hs.kind = "client_cert"
                    if used_client_cert:
                        hs.message = "the server rejected our client certificate %s after the handshake (%s)" % (
                            target.client_cert_path, hs.answer_detail)
                    else:
                        hs.message = ("the server requires a client certificate and none was presented (%s); "
                                      "set client_cert_path/client_key_path" % hs.answer_detail)
                else:
                    hs.kind = "alert"
                    hs.message = "the server sent a TLS alert after the handshake: %s" % hs.answer_detail
                return hs
        hs.ok = True
        return hs
    finally:
        for s in (tls, sock):
            if s is not None:
                try:
                    s.close()
                except OSError:
                    pass


def probe_server(target):
    """The handshake a correctly configured client would do (chain + hostname verified, client
    certificate presented when given), plus follow-ups so the answer says separately whether the
    chain and the hostname verify, and what certificate is served even when verification fails
    (a second handshake with verification off).

    Returns dict(handshake=<Handshake of the verified attempt>, unverified=<Handshake with verification
    off, when one was needed>, completed=<first Handshake whose
    TLS handshake completed, or None>, chain_verified, hostname_verified, peer_der, peer_dict);
    chain_verified/hostname_verified are None when no handshake got as far as the certificate."""
    out = dict(handshake=None, unverified=None, completed=None, chain_verified=None, hostname_verified=None,
               peer_der=None, peer_dict=None)

    def take(hs):
        if out["completed"] is None and hs.protocol:
            out["completed"] = hs
        if out["peer_der"] is None and (hs.peer_der or hs.captured_leaf_der):
            out["peer_der"] = hs.peer_der or hs.captured_leaf_der
            out["peer_dict"] = hs.peer_dict

    first = probe_handshake(target)
    out["handshake"] = first
    take(first)
    if first.ok or first.protocol or first.server_cert_accepted:
        # Our side verified chain and name before anything else went wrong (e.g. the server
        # rejecting our client certificate).
        out.update(chain_verified=True, hostname_verified=True)
    elif first.kind == "hostname":
        out["hostname_verified"] = False
        second = probe_handshake(target, verify_hostname=False)
        take(second)
        if second.protocol or second.server_cert_accepted:
            out["chain_verified"] = True
        elif second.kind == "chain":
            out["chain_verified"] = False
    elif first.kind == "chain":
        out["chain_verified"] = False
    if out["chain_verified"] is False or (out["peer_der"] is None and first.kind in ("client_cert", "alert")):
        out["unverified"] = probe_handshake(target, verify_chain=False)
        take(out["unverified"])
    if out["hostname_verified"] is None and out["chain_verified"] is False:
        out["hostname_verified"] = certificate_matches(out["peer_der"], target.server_name)
    return out


def probe_client_cert_required(target):
    """Connect WITHOUT a client certificate (server verification off: only the server's decision
    matters). Returns (required, detail, handshake); required is None when the question could not
    be asked (no TCP/TLS connection at all)."""
    hs = probe_handshake(target, verify_chain=False, client_cert=False, exchange="tls13")
    if hs.stage == "connect":
        return None, hs.message, hs
    if hs.ok:
        if hs.protocol == "TLSv1.3":
            if hs.answer == "answered":
                return False, "the server accepted a client without a certificate (%s; %s)" % (
                    hs.protocol, hs.answer_detail), hs
            how = "reset" if hs.answer == "reset" else "closed"
            if hs.answer in ("closed", "reset") and hs.cert_requested:
                # A TLS 1.3 server that asked for a certificate and hangs up on a client without one
                # (some send no alert) has refused it.
                return True, "the server %s the connection right after the handshake without answering" % how, hs
            if hs.answer in ("closed", "reset"):
                # It never asked for a certificate, so hanging up is not a certificate check.
                return False, ("the server never asked for a client certificate (it %s the connection after "
                               "a %s handshake without one)" % (how, hs.protocol)), hs
            return False, ("the server did not reject a client without a certificate (%s; %s)"
                           % (hs.protocol, hs.answer_detail)), hs
        return False, "the server completed a %s handshake with a client presenting no certificate" % (
            hs.protocol), hs
    if hs.kind == "client_cert" or hs.cert_requested:
        return True, hs.message, hs
    if hs.kind in ("not_tls", "timeout", "protocol", "local", "alpn") or (
            hs.kind == "closed" and hs.server_spoke is False):
        return None, hs.message, hs
    # Handshake refused for a reason we cannot attribute to the missing certificate.
    return True, hs.message, hs


def probe_plaintext_refused(target, retry_h2=True):
    """Send a plaintext HTTP/1.1 request. Returns (refused, detail); refused is None when the TCP
    connection could not be made.

    "Answered in plaintext" = any bytes back that are not a TLS record (HTTP/1.x status line,
    HTTP/2 frames from an h2c/gRPC server, anything else). Refused = closed, reset, silent until the
    timeout, a TLS alert, or the fixed "use HTTPS" 400 of Go/nginx TLS servers (which serve nothing).
    If the server closes without a word and h2 is among the ALPN protocols, an HTTP/2 preface is
    tried as well (some h2c servers check the preface before they speak)."""
    payloads = [("HTTP/1.1 GET", _request_bytes(target, "http/1.1"))]
    if retry_h2 and "h2" in target.alpn_protocols:
        payloads.append(("HTTP/2 preface", H2_PREFACE + H2_EMPTY_SETTINGS))
    details = []
    for label, payload in payloads:
        try:
            sock = connect(target)
        except OSError as exc:
            return None, _connect_failure(target, exc).message
        try:
            data, how = _send_and_read(sock, payload, target.timeout)
        finally:
            sock.close()
        if data:
            if len(data) >= 5 and 20 <= data[0] <= 24 and data[1] == 3 and data[2] <= 4:
                return True, "the server answered the plaintext %s with %s" % (label, describe_answer(data))
            if data.startswith(b"HTTP/") and any(text in data for text in _USE_TLS_ANSWERS):
                return True, "the server answered the plaintext %s with %s telling the client to use TLS" % (
                    label, describe_answer(data))
            return False, "the server answered a plaintext %s with %s" % (label, describe_answer(data))
        details.append("the server %s the plaintext %s%s" % (
            how, label, " within %gs" % target.timeout if how == "did not answer" else ""))
        if how == "did not answer":
            break
    return True, "; ".join(details)


def _send_and_read(sock, payload, timeout, grace=0.3):
    """Send payload, read the answer. Returns (bytes, how) where how describes an empty answer.
    Reads until the server closes, the timeout expires, or (once something arrived) it pauses
    for ``grace`` seconds."""
    data = b""
    deadline = time.monotonic() + timeout
    try:
        sock.settimeout(timeout)
        sock.sendall(payload)
        while len(data) < _READ_LIMIT:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            sock.settimeout(min(remaining, grace) if data else remaining)
            chunk = sock.recv(_READ_LIMIT)
            if not chunk:
                return data, "closed the connection on"
            data += chunk
    except (ConnectionResetError, BrokenPipeError):
        return data, "reset the connection on"
    except OSError as exc:
        if _is_timeout(exc):
            return data, "did not answer"
        return data, "failed (%s) on" % _exc_text(exc)
    return data, "did not answer"


def probe_weak_protocols(target, min_protocol):
    """Try every protocol version below ``min_protocol`` (security level 0, verification off, client
    certificate presented when given). A version counts as accepted when the server's ServerHello
    selects it (even if the handshake then fails, e.g. for a missing client certificate) or the
    handshake completes. Returns (accepted, untested, notes) where notes maps each untested
    version to why."""
    accepted, untested, notes = [], [], {}
    for version in PROTOCOLS[:PROTOCOLS.index(min_protocol)]:
        if not local_protocol_support(version):
            untested.append(version)
            notes[version] = "the local OpenSSL (%s) was built without %s" % (ssl.OPENSSL_VERSION, version)
            continue
        try:
            hs = probe_handshake(target, verify_chain=False, version=version, exchange="never")
        except (ssl.SSLError, ValueError) as exc:
            untested.append(version)
            notes[version] = "the local OpenSSL cannot offer it: %s" % _exc_text(exc)
            continue
        if hs.ok or hs.server_hello_version == version:
            accepted.append(version)
        elif hs.stage == "connect" or hs.kind in ("timeout", "not_tls"):
            untested.append(version)
            notes[version] = hs.message
        elif hs.kind == "local" or hs.client_hello_sent is False:
            untested.append(version)
            notes[version] = "the local OpenSSL (%s) would not offer it: %s" % (ssl.OPENSSL_VERSION, hs.message)
    return accepted, untested, notes


# ---------------------------------------------------------------------------------------------------
# Certificates


def _utc(dt):
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=datetime.timezone.utc)
    return dt.astimezone(datetime.timezone.utc)


def _iso(dt):
    return _utc(dt).strftime("%Y-%m-%dT%H:%M:%SZ")


def _days_left(not_after, now):
    return int((_utc(not_after) - now).total_seconds() // 86400)


def _fingerprint(der):
    digest = hashlib.sha256(der).hexdigest()
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))


_CURVES = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521", "prime256v1": "P-256"}


def _key_type(public_key):
    if isinstance(public_key, rsa.RSAPublicKey):
        return "RSA %d" % public_key.key_size
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return "ECDSA %s" % _CURVES.get(public_key.curve.name, public_key.curve.name)
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return "Ed25519"
    if isinstance(public_key, ed448.Ed448PublicKey):
        return "Ed448"
    if isinstance(public_key, dsa.DSAPublicKey):
        return "DSA %d" % public_key.key_size
    return public_key.__class__.__name__


def _general_name(name):
    if isinstance(name, x509.DNSName):
        return "DNS:%s" % name.value
    if isinstance(name, x509.IPAddress):
        return "IP:%s" % name.value
    if isinstance(name, x509.RFC822Name):
        return "email:%s" % name.value
    if isinstance(name, x509.UniformResourceIdentifier):
        return "URI:%s" % name.value
    return "%s:%s" % (name.__class__.__name__, getattr(name, "value", ""))


def _sans(cert):
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return list(ext.value)


def describe_certificate(der, peer_dict=None, now=None):
    """The served leaf as a dict (the module's ``peer_cert``).

    With ``cryptography`` every field is filled. Without it only what Python's ssl exposes: the
    fingerprint always, the rest from ``peer_dict`` (ssl's getpeercert(), only available after a
    verified handshake); missing fields are None and ``details`` says why."""
    if der is None:
        return None
    now = now or datetime.datetime.now(datetime.timezone.utc)
    info = dict(subject_cn=None, sans=[], issuer=None, serial=None, not_before=None, not_after=None,
                days_left=None, fingerprint_sha256=_fingerprint(der), key_type=None)
    cert = None
    if HAS_CRYPTOGRAPHY:
        try:
            cert = x509.load_der_x509_certificate(der)
        except ValueError as exc:
            info["details"] = "only the fingerprint: cryptography cannot parse the certificate: %s" % exc
            return info
    if cert is not None:
        cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        info["subject_cn"] = cns[0].value if cns else None
        info["sans"] = [_general_name(n) for n in _sans(cert)]
        info["issuer"] = cert.issuer.rfc4514_string()
        info["serial"] = "%X" % cert.serial_number
        not_before = getattr(cert, "not_valid_before_utc", None) or cert.not_valid_before
        not_after = getattr(cert, "not_valid_after_utc", None) or cert.not_valid_after
        info["not_before"] = _iso(not_before)
        info["not_after"] = _iso(not_after)
        info["days_left"] = _days_left(not_after, now)
        try:
            info["key_type"] = _key_type(cert.public_key())
        except Exception as exc:  # unsupported key algorithm
            info["key_type"] = "unknown (%s)" % exc
        return info
    if peer_dict:
        for rdn in peer_dict.get("subject", ()):
            for key, value in rdn:
                if key == "commonName" and info["subject_cn"] is None:
                    info["subject_cn"] = value
        kinds = {"DNS": "DNS", "IP Address": "IP", "email": "email", "URI": "URI"}
        info["sans"] = ["%s:%s" % (kinds.get(k, k), v.strip()) for k, v in peer_dict.get("subjectAltName", ())]
        info["issuer"] = ",".join("%s=%s" % (k, v) for rdn in reversed(peer_dict.get("issuer", ())) for k, v in rdn)
        info["serial"] = peer_dict.get("serialNumber")
        for key, field in (("notBefore", "not_before"), ("notAfter", "not_after")):
            if peer_dict.get(key):
                stamp = datetime.datetime.fromtimestamp(ssl.cert_time_to_seconds(peer_dict[key]),
                                                        datetime.timezone.utc)
                info[field] = _iso(stamp)
                if field == "not_after":
                    info["days_left"] = _days_left(stamp, now)
        info["details"] = "partial: the Python library cryptography is not installed (key_type unknown)"
    else:
        info["details"] = ("only the fingerprint: the Python library cryptography is not installed and the "
                           "certificate did not verify")
    return info


def certificate_matches(der, server_name):
    """Does the certificate's SAN list cover server_name (IP SAN for an IP, DNS SAN with a
    left-most wildcard label otherwise; the CN is ignored, as Go does)? None without cryptography."""
    if not HAS_CRYPTOGRAPHY or der is None:
        return None
    sans = _sans(x509.load_der_x509_certificate(der))
    name = server_name.strip("[]")
    try:
        ip = ipaddress.ip_address(name)
    except ValueError:
        ip = None
    if ip is not None:
        return any(isinstance(n, x509.IPAddress) and n.value == ip for n in sans)
    name = name.rstrip(".").lower()
    for entry in sans:
        if not isinstance(entry, x509.DNSName):
            continue
        pattern = entry.value.rstrip(".").lower()
        if pattern == name:
            return True
        if pattern.startswith("*.") and "." in name:
            if name.split(".", 1)[1] == pattern[2:] and name.split(".", 1)[0]:
                return True
    return False


# ---------------------------------------------------------------------------------------------------
# Everything together


_CHECK_BY_KIND = {"refused": "connect", "timeout": "connect", "resolve": "connect", "network": "connect",
                  "chain": "chain", "hostname": "hostname", "client_cert": "client_cert", "alpn": "alpn",
                  "not_tls": "handshake", "protocol": "handshake", "closed": "handshake",
                  "alert": "handshake", "tls": "handshake", "local": "handshake"}


def _empty_result():
    return dict(protocol=None, cipher=None, alpn=None, chain_verified=None, hostname_verified=None,
                client_cert_required=None, plaintext_refused=None, weak_protocols_accepted=[],
                untested_protocols=[], handshake_ms=None, peer_cert=None, failures=[])


def run_checks(target, require_client_cert=False, require_plaintext_refused=False, min_protocol=None,
               min_days_valid=None, now=None):
    """Run the probes the expectations call for. Returns (result, warnings); result has the module's
    return keys, ``failures`` holding one "<host:port>: <check>: <what>" message per unmet
    expectation."""
    result = _empty_result()
    notes = []
    failures = result["failures"]

    def fail(check, text):
        failures.append("%s: %s: %s" % (target.address, check, text))

    try:
        main = probe_server(target)
    except ProbeConfigError as exc:
        fail("local", str(exc))
        return result, notes
    first = main["handshake"]
    completed = main["completed"]
    result["chain_verified"] = main["chain_verified"]
    result["hostname_verified"] = main["hostname_verified"]
    if completed is not None:
        result["protocol"] = completed.protocol
        result["cipher"] = completed.cipher
        result["alpn"] = completed.alpn
        result["handshake_ms"] = completed.handshake_ms
    peer = describe_certificate(main["peer_der"], main["peer_dict"], now=now)
    result["peer_cert"] = peer
    if peer is not None and peer.get("details"):
        notes.append("peer_cert: %s" % peer["details"])

    if not first.ok:
        check = _CHECK_BY_KIND.get(first.kind, "handshake")
        text = first.message
        if first.kind == "chain":
            text = "certificate verify failed: %s (CA %s)" % (first.message, target.ca_path or "system default")
        elif first.kind == "hostname":
            served = ", ".join(peer["sans"]) if peer and peer.get("sans") else "unknown"
            text = "the certificate does not match %s (%s; served SANs: %s)" % (
                target.server_name, first.message, served)
        fail(check, text)
        if first.kind == "hostname" and main["chain_verified"] is False:
            fail("chain", "certificate verify failed (CA %s)" % (target.ca_path or "system default"))
        if first.kind == "chain" and main["hostname_verified"] is False:
            served = ", ".join(peer["sans"]) if peer and peer.get("sans") else "unknown"
            fail("hostname", "the certificate does not match %s (served SANs: %s)" % (
                target.server_name, served))
        unverified = main["unverified"]
        if first.kind in ("chain", "hostname") and unverified is not None and unverified.kind == "client_cert":
            fail("client_cert", unverified.message)
    reachable = first.stage != "connect"

    if min_days_valid is not None and peer is not None:
        if peer.get("not_after") is None:
            fail("min_days_valid", "cannot read the certificate's expiry date (%s)" % peer.get("details"))
        else:
            moment = now or datetime.datetime.now(datetime.timezone.utc)
            not_after = datetime.datetime.strptime(peer["not_after"], "%Y-%m-%dT%H:%M:%SZ").replace(
                tzinfo=datetime.timezone.utc)
            if not_after < moment + datetime.timedelta(days=min_days_valid):
                if not_after < moment:
                    what = "the served certificate expired on %s" % peer["not_after"]
                else:
                    what = "the served certificate expires on %s, in %d days" % (peer["not_after"], peer["days_left"])
                fail("min_days_valid", "%s, sooner than %d days (CN %s, serial %s)" % (
                    what, min_days_valid, peer.get("subject_cn"), peer.get("serial")))

    if require_client_cert and reachable:
        required, detail, _hs = probe_client_cert_required(target)
        result["client_cert_required"] = required
        if required is False:
            fail("require_client_cert", "%s" % detail)
        elif required is None:
            fail("require_client_cert", "could not tell: %s" % detail)

    if require_plaintext_refused and reachable:
        refused, detail = probe_plaintext_refused(target)
        result["plaintext_refused"] = refused
        if refused is False:
            fail("require_plaintext_refused", detail)
        elif refused is None:
            fail("require_plaintext_refused", "could not tell: %s" % detail)

    if min_protocol is not None:
        lower = list(PROTOCOLS[:PROTOCOLS.index(min_protocol)])
        if not reachable:
            result["untested_protocols"] = lower
            if lower:
                notes.append("min_protocol: %s not tried: %s" % (", ".join(lower), first.message))
        else:
            accepted, untested, why = probe_weak_protocols(target, min_protocol)
            result["weak_protocols_accepted"] = accepted
            result["untested_protocols"] = untested
            for version in untested:
                notes.append("min_protocol: %s not tried: %s" % (version, why[version]))
            if accepted:
                fail("min_protocol", "the server accepts %s (below %s)" % (", ".join(accepted), min_protocol))
    return result, notes

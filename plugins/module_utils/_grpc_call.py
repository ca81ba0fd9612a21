# -*- coding: utf-8 -*-
# Copyright: tlsops.tikv contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""One unary gRPC call over HTTP/2 with the standard library only (private to the collection).

Why: TiKV checks ``cert-allowed-cn`` on every gRPC CALL, not in the TLS handshake, so a handshake
that succeeds proves nothing about the allow-list. A real call does. grpcio is not installed on
managed hosts as a rule, so this speaks just enough HTTP/2 (RFC 9113) and HPACK (RFC 7541) for one
call: connection preface, SETTINGS (and their ACK), one HEADERS + DATA request, then the response
headers, data and trailers (``grpc-status``, ``grpc-message``). No flow control is needed for a
call this small. HPACK strings sent with Huffman coding (gRPC-core never does; Go can) cannot be
decoded here: such a value comes back as None and the caller reports "could not tell".

Python 3.8+ and the standard library only.
"""

from __future__ import absolute_import, division, print_function

import socket
import ssl
import struct
import time

from ansible_collections.tlsops.tikv.plugins.module_utils._tls_probe import (
    ProbeConfigError,
    build_context,
    connect,
)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = 0, 1, 3, 4, 6, 7, 8, 9
FLAG_END_STREAM, FLAG_ACK, FLAG_END_HEADERS, FLAG_PADDED, FLAG_PRIORITY = 0x1, 0x1, 0x4, 0x8, 0x20

GRPC_STATUS = {0: "OK", 1: "CANCELLED", 2: "UNKNOWN", 3: "INVALID_ARGUMENT", 4: "DEADLINE_EXCEEDED",
               5: "NOT_FOUND", 6: "ALREADY_EXISTS", 7: "PERMISSION_DENIED", 8: "RESOURCE_EXHAUSTED",
               9: "FAILED_PRECONDITION", 10: "ABORTED", 11: "OUT_OF_RANGE", 12: "UNIMPLEMENTED",
               13: "INTERNAL", 14: "UNAVAILABLE", 15: "DATA_LOSS", 16: "UNAUTHENTICATED"}
H2_ERRORS = {0: "NO_ERROR", 1: "PROTOCOL_ERROR", 2: "INTERNAL_ERROR", 3: "FLOW_CONTROL_ERROR",
             4: "SETTINGS_TIMEOUT", 5: "STREAM_CLOSED", 6: "FRAME_SIZE_ERROR", 7: "REFUSED_STREAM",
             8: "CANCEL", 9: "COMPRESSION_ERROR", 10: "CONNECT_ERROR", 11: "ENHANCE_YOUR_CALM",
             12: "INADEQUATE_SECURITY", 13: "HTTP_1_1_REQUIRED"}

# RFC 7541 Appendix A.
STATIC_TABLE = (
    (":authority", ""), (":method", "GET"), (":method", "POST"), (":path", "/"), (":path", "/index.html"),
    (":scheme", "http"), (":scheme", "https"), (":status", "200"), (":status", "204"), (":status", "206"),
    (":status", "304"), (":status", "400"), (":status", "404"), (":status", "500"), ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"), ("accept-language", ""), ("accept-ranges", ""), ("accept", ""),
    ("access-control-allow-origin", ""), ("age", ""), ("allow", ""), ("authorization", ""),
    ("cache-control", ""), ("content-disposition", ""), ("content-encoding", ""), ("content-language", ""),
    ("content-length", ""), ("content-location", ""), ("content-range", ""), ("content-type", ""),
    ("cookie", ""), ("date", ""), ("etag", ""), ("expect", ""), ("expires", ""), ("from", ""), ("host", ""),
    ("if-match", ""), ("if-modified-since", ""), ("if-none-match", ""), ("if-range", ""),
    ("if-unmodified-since", ""), ("last-modified", ""), ("link", ""), ("location", ""), ("max-forwards", ""),
    ("proxy-authenticate", ""), ("proxy-authorization", ""), ("range", ""), ("referer", ""), ("refresh", ""),
    ("retry-after", ""), ("server", ""), ("set-cookie", ""), ("strict-transport-security", ""),
    ("transfer-encoding", ""), ("user-agent", ""), ("vary", ""), ("via", ""), ("www-authenticate", ""),
)


class HpackError(ValueError):
    """A header block that does not decode (not a Huffman string: those decode to None)."""


def encode_int(value, prefix_bits, first_byte=0):
    """RFC 7541 5.1 integer with an N-bit prefix; ``first_byte`` holds the flag bits above the prefix."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first_byte | value])
    out = [first_byte | limit]
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def decode_int(data, pos, prefix_bits):
    """(value, new position) of the integer at ``pos``."""
    if pos >= len(data):
        raise HpackError("header block ends inside an integer")
    limit = (1 << prefix_bits) - 1
    value = data[pos] & limit
    pos += 1
    if value < limit:
        return value, pos
    shift = 0
    while True:
        if pos >= len(data):
            raise HpackError("header block ends inside an integer")
        byte = data[pos]
        pos += 1
        value += (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos
        if shift > 56:
            raise HpackError("integer too large in header block")


def encode_string(text):
    raw = text.encode("utf-8") if not isinstance(text, bytes) else text
    return encode_int(len(raw), 7) + raw


def encode_headers(headers):
    """A header block of literals without indexing, raw (not Huffman) strings: valid for every decoder."""
    out = b""
    for name, value in headers:
        out += b"\x00" + encode_string(name) + encode_string(value)
    return out


class HpackDecoder(object):
    """Header block decoder with a dynamic table; Huffman-coded strings decode to None."""

    def __init__(self, max_size=4096):
        self.dynamic = []  # newest first
        self.max_size = max_size
        self.size = 0

    def _entry(self, index):
        if index <= 0:
            raise HpackError("header index 0")
        if index <= len(STATIC_TABLE):
            return STATIC_TABLE[index - 1]
        dyn = index - len(STATIC_TABLE) - 1
        if dyn >= len(self.dynamic):
            raise HpackError("header index %d is outside the table" % index)
        return self.dynamic[dyn]

    def _add(self, name, value):
        entry_size = 32 + len((name or "").encode("utf-8")) + len((value or "").encode("utf-8"))
        self.dynamic.insert(0, (name, value))
        self.size += entry_size
        self._evict()

    def _evict(self):
        while self.size > self.max_size and self.dynamic:
            name, value = self.dynamic.pop()
            self.size -= 32 + len((name or "").encode("utf-8")) + len((value or "").encode("utf-8"))

    @staticmethod
    def _string(data, pos):
        if pos >= len(data):
            raise HpackError("header block ends inside a string")
        huffman = bool(data[pos] & 0x80)
        length, pos = decode_int(data, pos, 7)
        if pos + length > len(data):
            raise HpackError("header block ends inside a string")
        raw = data[pos:pos + length]
        pos += length
        if huffman:
            return None, pos
        return raw.decode("utf-8", "replace"), pos

    def decode(self, data):
        headers = []
        pos = 0
        while pos < len(data):
            byte = data[pos]
            if byte & 0x80:  # indexed field
                index, pos = decode_int(data, pos, 7)
                headers.append(self._entry(index))
            elif byte & 0x40:  # literal with incremental indexing
                index, pos = decode_int(data, pos, 6)
                name, pos = (self._entry(index)[0], pos) if index else self._string(data, pos)
                value, pos = self._string(data, pos)
                self._add(name, value)
                headers.append((name, value))
            elif byte & 0x20:  # dynamic table size update
                self.max_size, pos = decode_int(data, pos, 5)
                self._evict()
            else:  # literal without indexing (0000) or never indexed (0001)
                index, pos = decode_int(data, pos, 4)
                name, pos = (self._entry(index)[0], pos) if index else self._string(data, pos)
                value, pos = self._string(data, pos)
                headers.append((name, value))
        return headers


def frame(kind, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream & 0x7FFFFFFF) + payload


def percent_decode(text):
    """grpc-message is percent-encoded (gRPC over HTTP/2 spec)."""
    if text is None or "%" not in text:
        return text
    raw = text.encode("utf-8")
    out = bytearray()
    i = 0
    while i < len(raw):
        pair = raw[i + 1:i + 3]
        if raw[i:i + 1] == b"%" and len(pair) == 2 and all(c in b"0123456789abcdefABCDEF" for c in pair):
            out.append(int(pair, 16))
            i += 3
        else:
            out.append(raw[i])
            i += 1
    return out.decode("utf-8", "replace")


class CallResult(object):
    """What one call found. ``stage`` is where it stopped: connect, handshake, call, done."""

    def __init__(self):
        self.stage = None
        self.error = None
        self.protocol = None
        self.cipher = None
        self.alpn = None
        self.http_status = None
        self.grpc_status = None
        self.grpc_message = None
        self.response_bytes = 0
        self.headers = []
        self.trailers = []
        self.undecodable = []

    @property
    def grpc_status_name(self):
        if self.grpc_status is None:
            return None
        return GRPC_STATUS.get(self.grpc_status, "CODE_%d" % self.grpc_status)

    def verdict(self):
        """(accepted, why): accepted is True when the server ran the call past its authentication
        (any status but UNAUTHENTICATED / PERMISSION_DENIED / UNIMPLEMENTED), False when it refused
        the caller, None when the answer does not tell."""
        if self.grpc_status is None:
            return None, self.error or "no grpc-status in the answer"
        name = self.grpc_status_name
        message = (" %r" % self.grpc_message) if self.grpc_message else ""
        if self.grpc_status in (16, 7):
            return False, "the server refused the call: %s%s" % (name, message)
        if self.grpc_status == 12:
            return None, ("the server does not implement the method (UNIMPLEMENTED%s): a server may answer that "
                          "before checking the caller, so it proves nothing" % message)
        return True, "the server ran the call and answered %s%s" % (name, message)

    def as_dict(self):
        accepted, why = self.verdict()
        return dict(stage=self.stage, error=self.error, protocol=self.protocol, cipher=self.cipher,
                    alpn=self.alpn, http_status=self.http_status, grpc_status=self.grpc_status,
                    grpc_status_name=self.grpc_status_name, grpc_message=self.grpc_message,
                    response_bytes=self.response_bytes, call_accepted=accepted, verdict=why,
                    undecodable_headers=self.undecodable)


def _ssl_reason(exc):
    reason = getattr(exc, "reason", None)
    text = str(exc)
    return "%s%s" % (text, "" if not reason or reason in text else " (%s)" % reason)


def _grpc_message(text):
    """Length-prefixed gRPC messages -> total payload bytes."""
    total, pos = 0, 0
    while pos + 5 <= len(text):
        length = struct.unpack(">I", text[pos + 1:pos + 5])[0]
        total += length
        pos += 5 + length
    return total


def call(target, method, tls=True, payload=b"", now=time.monotonic):
    """Make one unary call of ``method`` with ``payload`` (a serialized protobuf message; empty is
    every field at its default). Never raises for network, TLS or protocol trouble: the result says
    where it stopped. Raises ProbeConfigError when local TLS files cannot be loaded."""
    result = CallResult()
    ctx = None
    if tls:
        ctx = build_context(target, verify_chain=True, verify_hostname=True, client_cert=True)
    result.stage = "connect"
    try:
        sock = connect(target)
    except (OSError, socket.error) as exc:
        result.error = "cannot connect to %s: %s" % (target.address, getattr(exc, "strerror", None) or exc)
        return result
    try:
        if tls:
            result.stage = "handshake"
            try:
                sock = ctx.wrap_socket(sock, server_hostname=target.server_name)
            except ssl.SSLError as exc:
                result.error = "TLS handshake with %s failed: %s" % (target.address, _ssl_reason(exc))
                return result
            except (OSError, socket.error) as exc:
                result.error = "TLS handshake with %s failed: %s" % (target.address, exc)
                return result
            result.protocol = sock.version()
            result.cipher = (sock.cipher() or (None,))[0]
            result.alpn = sock.selected_alpn_protocol()
        result.stage = "call"
        _exchange(sock, target, method, payload, tls, result, now)
    finally:
        try:
            sock.close()
        except (OSError, socket.error):
            pass
    return result


def is_method(method):
    """Whether ``method`` is a full gRPC method name, /<package>.<service>/<method>."""
    return method.startswith("/") and method.count("/") == 2 and "" not in method[1:].split("/")


def checked_call(target, method, tls=True, require_accepted=True):
    """call() as a module reports it: its return values plus ``failures`` (a local file that cannot be
    loaded, or, with ``require_accepted``, a call the server did not run). Shared by the grpc_call
    module and tls_handshake's O(grpc_method)."""
    try:
        result = call(target, method, tls=tls).as_dict()
    except ProbeConfigError as exc:
        # A local file that cannot be loaded: no call was made.
        result = CallResult().as_dict()
        result.update(stage="connect", error="local: %s" % exc)
        result["failures"] = ["%s: local: %s" % (target.address, exc)]
        return result
    failures = []
    if require_accepted and result["call_accepted"] is not True:
        check = "call_refused" if result["call_accepted"] is False else "call"
        failures.append("%s: %s: %s %s" % (target.address, check, method, result["verdict"]))
    result["failures"] = failures
    return result


def _exchange(sock, target, method, payload, tls, result, now):
    request = [(":method", "POST"), (":scheme", "https" if tls else "http"), (":path", method),
               (":authority", "%s:%d" % (target.http_host, target.port)),
               ("content-type", "application/grpc"), ("te", "trailers"), ("user-agent", "tlsops.tikv-grpc-call")]
    body = b"\x00" + struct.pack(">I", len(payload)) + payload
    deadline = now() + target.timeout
    try:
        sock.settimeout(target.timeout)
        sock.sendall(PREFACE + frame(SETTINGS, 0, 0) + frame(HEADERS, FLAG_END_HEADERS, 1, encode_headers(request))
                     + frame(DATA, FLAG_END_STREAM, 1, body))
    except ssl.SSLError as exc:
        result.error = "the server refused the connection after the handshake: %s" % _ssl_reason(exc)
        return
    except (OSError, socket.error) as exc:
        result.error = "sending the call failed: %s" % exc
        return
    decoder = HpackDecoder()
    buf = b""
    block = None  # (flags, fragments) of a header block waiting for CONTINUATION
    data = b""
    seen_headers = False
    while True:
        while len(buf) >= 9:
            length = struct.unpack(">I", b"\x00" + buf[:3])[0]
            if len(buf) < 9 + length:
                break
            kind, flags = buf[3], buf[4]
            stream = struct.unpack(">I", buf[5:9])[0] & 0x7FFFFFFF
            body_bytes = buf[9:9 + length]
            buf = buf[9 + length:]
            if kind == SETTINGS and not flags & FLAG_ACK:
                _send(sock, frame(SETTINGS, FLAG_ACK, 0))
            elif kind == PING and not flags & FLAG_ACK:
                _send(sock, frame(PING, FLAG_ACK, 0, body_bytes))
            elif kind == GOAWAY:
                code = struct.unpack(">I", body_bytes[4:8])[0] if len(body_bytes) >= 8 else None
                if result.grpc_status is None:
                    result.error = "the server closed the connection (GOAWAY %s%s)" % (
                        H2_ERRORS.get(code, code), (": %s" % body_bytes[8:].decode("utf-8", "replace")) if body_bytes[8:] else "")
                    return
            elif stream == 1 and kind == RST_STREAM:
                code = struct.unpack(">I", body_bytes[:4])[0] if len(body_bytes) >= 4 else None
                result.error = "the server reset the call (RST_STREAM %s)" % H2_ERRORS.get(code, code)
                return
            elif stream == 1 and kind in (HEADERS, CONTINUATION):
                fragment = body_bytes
                if kind == HEADERS:
                    fragment = _strip_headers_padding(fragment, flags)
                    block = (flags, [fragment])
                elif block is not None:
                    block[1].append(fragment)
                if block is not None and flags & FLAG_END_HEADERS:
                    first_flags, fragments = block
                    block = None
                    try:
                        fields = decoder.decode(b"".join(fragments))
                    except HpackError as exc:
                        result.error = "cannot decode the answer's headers: %s" % exc
                        return
                    done = _take_headers(result, fields, seen_headers)
                    seen_headers = True
                    if done or first_flags & FLAG_END_STREAM:
                        result.response_bytes = _grpc_message(data)
                        result.stage = "done"
                        if result.grpc_status is None and not result.error:
                            result.error = "the call ended without grpc-status (HTTP status %s)" % result.http_status
                        return
            elif stream == 1 and kind == DATA:
                if flags & FLAG_PADDED and body_bytes:
                    body_bytes = body_bytes[1:len(body_bytes) - body_bytes[0]]
                data += body_bytes
        remaining = deadline - now()
        if remaining <= 0:
            result.error = "no complete answer within %gs" % target.timeout
            return
        try:
            sock.settimeout(remaining)
            chunk = sock.recv(65536)
        except ssl.SSLError as exc:
            result.error = "the server refused the connection after the handshake: %s" % _ssl_reason(exc)
            return
        except socket.timeout:
            result.error = "no complete answer within %gs" % target.timeout
            return
        except (OSError, socket.error) as exc:
            result.error = "reading the answer failed: %s" % exc
            return
        if not chunk:
            result.error = "the server closed the connection before answering the call"
            return
        buf += chunk


def _send(sock, data):
    try:
        sock.sendall(data)
    except (OSError, socket.error):
        pass


def _strip_headers_padding(fragment, flags):
    pad = 0
    if flags & FLAG_PADDED and fragment:
        pad = fragment[0]
        fragment = fragment[1:]
    if flags & FLAG_PRIORITY:
        fragment = fragment[5:]
    return fragment[:len(fragment) - pad] if pad else fragment


def _take_headers(result, fields, seen_headers):
    """Record response headers or trailers; True when grpc-status arrived."""
    done = False
    for name, value in fields:
        if name is None or value is None:
            result.undecodable.append(name or "?")
            continue
        if name == ":status":
            try:
                result.http_status = int(value)
            except ValueError:
                pass
        elif name == "grpc-status":
            try:
                result.grpc_status = int(value)
                done = True
            except ValueError:
                result.error = "grpc-status %r is not a number" % value
        elif name == "grpc-message":
            result.grpc_message = percent_decode(value)
    (result.trailers if seen_headers else result.headers).extend(
        (n, v) for n, v in fields if n is not None)
    if not done and "grpc-status" in result.undecodable:
        result.error = "grpc-status came Huffman-coded, which this client does not decode"
    return done


__all__ = ["call", "CallResult", "HpackDecoder", "encode_headers", "encode_int", "decode_int",
           "percent_decode", "ProbeConfigError"]

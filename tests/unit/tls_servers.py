"""Small loopback servers for the TLS probe tests (threads, Python ssl).

Each server binds 127.0.0.1 on a free port chosen by the kernel (port 0), serves every connection
in its own thread and stops on ``close()`` / context exit. Handshake errors on the server side are
recorded in ``errors`` (tests use them to prove which side gave up).
"""

from __future__ import annotations

import socket
import ssl
import threading
import warnings

from tikvlab.certs import make_ca, make_leaf

H2_SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


def _version(name):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return getattr(ssl.TLSVersion, name)


class _Base:
    def __init__(self, host="127.0.0.1"):
        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, 0))
        self.sock.listen(16)
        self.host = host
        self.port = self.sock.getsockname()[1]
        self.errors = []
        self.connections = 0
        self._stop = threading.Event()
        self._conns = []
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()

    def _accept_loop(self):
        while not self._stop.is_set():
            try:
                conn = self.sock.accept()[0]
            except OSError:
                return
            self.connections += 1
            self._conns.append(conn)
            threading.Thread(target=self._serve_guarded, args=(conn,), daemon=True).start()

    def _serve_guarded(self, conn):
        try:
            self.serve(conn)
        except Exception as exc:  # recorded for the tests, never raised in a thread
            self.errors.append(exc)
        finally:
            try:
                conn.close()
            except OSError:
                pass

    def serve(self, conn):
        raise NotImplementedError

    def close(self):
        self._stop.set()
        try:
            self.sock.close()
        except OSError:
            pass
        for conn in self._conns:
            try:
                conn.close()
            except OSError:
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class TLSServer(_Base):
    """A TLS server. ``client_auth``: 'none', 'optional' (asks), 'required'.
    ``versions``: (min, max) as ssl.TLSVersion names, e.g. ("TLSv1_2", "TLSv1_2").
    ``mode``: 'http' answers an HTTP/1.1 200 (or an h2 SETTINGS frame when h2 was negotiated),
    'silent' completes the handshake and then never says anything, 'close' completes it and closes
    the TCP connection at once (no alert, no close_notify)."""

    def __init__(self, cert, key, ca=None, client_auth="none", versions=None, mode="http", alpn=None,
                 seclevel0=False, host="127.0.0.1"):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        if ca:
            ctx.load_verify_locations(ca)
        ctx.verify_mode = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL,
                           "required": ssl.CERT_REQUIRED}[client_auth]
        if seclevel0:
            ctx.set_ciphers("ALL:@SECLEVEL=0")
        if versions:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                ctx.minimum_version = _version(versions[0])
                ctx.maximum_version = _version(versions[1])
        if alpn:
            ctx.set_alpn_protocols(alpn)
        self.ctx = ctx
        self.mode = mode
        self.requests = []
        super().__init__(host)

    def serve(self, conn):
        conn.settimeout(10)
        tls = self.ctx.wrap_socket(conn, server_side=True)
        if self.mode == "silent":
            self._stop.wait(30)
            return
        if self.mode == "close":
            tls.shutdown(socket.SHUT_RDWR)  # raw TCP shutdown: no alert, no close_notify
            return
        data = tls.recv(4096)
        self.requests.append(data)
        if tls.selected_alpn_protocol() == "h2":
            tls.sendall(H2_SETTINGS)
        else:
            tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        try:
            tls.unwrap()
        except (OSError, ValueError):
            pass


class PlainHTTPServer(_Base):
    """Plaintext: reads whatever comes, answers ``answer`` (default an HTTP/1.1 200) and closes."""

    def __init__(self, answer=b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"):
        self.answer = answer
        super().__init__()

    def serve(self, conn):
        conn.settimeout(10)
        conn.recv(4096)
        conn.sendall(self.answer)


class SilentServer(_Base):
    """Accepts TCP connections and never sends a byte."""

    def serve(self, conn):
        self._stop.wait(30)


def closed_port():
    """A loopback port with nothing listening (bound, then released)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class PKI:
    """Files for the tests: a CA, a server leaf (127.0.0.1, localhost), a client leaf, a foreign CA
    with its own client leaf, and odd server leaves made on demand."""

    def __init__(self, directory):
        self.dir = directory
        self.ca = make_ca("test-ca")
        self.foreign_ca = make_ca("foreign-ca")
        self.ca_path = self._write("ca.crt", self.ca.cert_pem)
        self.foreign_ca_path = self._write("foreign-ca.crt", self.foreign_ca.cert_pem)
        self.server_cert, self.server_key = self.leaf("server", "server", ["127.0.0.1", "localhost"])
        self.client_cert, self.client_key = self.leaf("client", "tikv-client", ["127.0.0.1"])
        self.foreign_client_cert, self.foreign_client_key = self.leaf(
            "foreign-client", "intruder", ["127.0.0.1"], ca=self.foreign_ca)

    def _write(self, name, data):
        path = str(self.dir / name)
        with open(path, "wb") as fh:
            fh.write(data)
        return path

    def leaf(self, name, cn, sans, ca=None, **kwargs):
        issued = make_leaf(ca or self.ca, cn, sans, **kwargs)
        return self._write(name + ".crt", issued.cert_pem), self._write(name + ".pem", issued.key_pem)


def start_grpc(pki=None, allowed=()):
    """A grpcio server (gRPC-core, as TiKV uses) on loopback answering /tikvpb.Tikv/KvGet, with mTLS when
    ``pki`` is given and, with ``allowed``, TiKV's cert-allowed-cn rule: the client's Subject CN must be in
    the list, checked on every call. Returns (server, port); stop it with ``server.stop(None)``."""
    from concurrent import futures  # pylint: disable=import-outside-toplevel

    import grpc  # pylint: disable=import-outside-toplevel

    class AllowList(grpc.ServerInterceptor):
        def __init__(self, names):
            self.allowed = set(names)

        def intercept_service(self, continuation, details):
            handler = continuation(details)
            if handler is None:
                return None
            inner = handler.unary_unary

            def checked(request, context):
                names = context.auth_context().get("x509_common_name") or [b""]
                if names[0].decode() not in self.allowed:
                    context.abort(grpc.StatusCode.UNAUTHENTICATED, "Common name check fail")
                return inner(request, context)

            return grpc.unary_unary_rpc_method_handler(checked)

    handler = grpc.method_handlers_generic_handler(
        "tikvpb.Tikv", {"KvGet": grpc.unary_unary_rpc_method_handler(lambda request, context: b"value")})
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), handlers=[handler],
                         interceptors=[AllowList(allowed)] if allowed else [])
    if pki is None:
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        with open(pki.server_cert, "rb") as cert, open(pki.server_key, "rb") as key, open(pki.ca_path, "rb") as ca:
            credentials = grpc.ssl_server_credentials([(key.read(), cert.read())], root_certificates=ca.read(),
                                                      require_client_auth=True)
        port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    return server, port

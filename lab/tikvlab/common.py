"""Pieces shared by the lab's stand-ins and its CLI.

Kept small on purpose: log lines in the format TiKV and PD write, TOML loading, and a tiny HTTP(S)
client that presents a client certificate, as PD and TiKV do when they talk to each other.
"""

from __future__ import annotations

import datetime as _dt
import http.client
import inspect
import json
import os
import ssl
import sys
import threading
import tomllib
from typing import Any


class Logger:
    """Writes log lines shaped like TiKV's and PD's:

    ``[2026/11/24 15:00:00.123 +00:00] [INFO] [server.go:123] ["message"] [key=value]``

    The file/line tag names the caller in the lab's own source, which is as useful to a reader of the
    lab's logs as the Go/Rust file names are in a real cluster's.
    """

    def __init__(self, path: str | None, component: str):
        self.component = component
        self._lock = threading.Lock()
        self._fh = open(path, "a", encoding="utf-8", buffering=1) if path else sys.stderr

    def _write(self, level: str, message: str, fields: dict[str, Any]) -> None:
        now = _dt.datetime.now(_dt.timezone.utc)
        stamp = now.strftime("%Y/%m/%d %H:%M:%S.") + f"{now.microsecond // 1000:03d} +00:00"
        # _write <- info/warn/... <- the caller: walk two frames up (cheap, unlike inspect.stack()).
        frame = inspect.currentframe()
        for _level in range(2):
            frame = frame.f_back if frame is not None and frame.f_back is not None else frame
        where = f"{os.path.basename(frame.f_code.co_filename)}:{frame.f_lineno}" if frame else "?"
        parts = [f"[{stamp}]", f"[{level}]", f"[{where}]", f"[{json.dumps(message)}]"]
        for key, value in fields.items():
            text = value if isinstance(value, str) else json.dumps(value)
            if any(c in text for c in ' []"='):
                text = json.dumps(text)
            parts.append(f"[{key}={text}]")
        with self._lock:
            self._fh.write(" ".join(parts) + "\n")
            self._fh.flush()

    def info(self, message: str, **fields: Any) -> None:
        self._write("INFO", message, fields)

    def warn(self, message: str, **fields: Any) -> None:
        self._write("WARN", message, fields)

    def error(self, message: str, **fields: Any) -> None:
        self._write("ERROR", message, fields)

    def fatal(self, message: str, **fields: Any) -> None:
        self._write("FATAL", message, fields)


def load_toml(path: str | None) -> dict[str, Any]:
    """Parse a TOML config file; a missing path means an empty config (as with no --config)."""
    if not path:
        return {}
    with open(path, "rb") as fh:
        return tomllib.load(fh)


def client_context(ca_path: str | None, cert_path: str | None, key_path: str | None,
                   check_hostname: bool = True) -> ssl.SSLContext | None:
    """A TLS client context presenting cert/key and trusting ca_path; None when TLS is off."""
    if not ca_path:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_path)
    ctx.check_hostname = check_hostname
    if cert_path and key_path:
        ctx.load_cert_chain(cert_path, key_path)
    return ctx


def http_json(method: str, hostport: str, path: str, body: Any = None, tls: ssl.SSLContext | None = None,
              timeout: float = 3.0) -> tuple[int, Any]:
    """One HTTP(S) request; returns (status, parsed JSON or text). Raises OSError/ssl.SSLError on
    connection or handshake failure so callers can log the real cause."""
    host, _sep, port = hostport.rpartition(":")
    host = host.strip("[]")
    if tls is not None:
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(host, int(port), timeout=timeout,
                                                                       context=tls)
    else:
        conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        payload = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        conn.request(method, path, body=payload, headers=headers)
        resp = conn.getresponse()
        raw = resp.read()
        try:
            return resp.status, json.loads(raw) if raw else None
        except ValueError:
            return resp.status, raw.decode("utf-8", "replace")
    finally:
        conn.close()


def strip_scheme(url: str) -> str:
    """`https://h:p` -> `h:p`; TiKV accepts endpoints with or without http(s) and decides TLS by ca-path."""
    for prefix in ("http://", "https://"):
        if url.startswith(prefix):
            return url[len(prefix):].rstrip("/")
    return url.rstrip("/")


def url_scheme(url: str) -> str:
    return url.split("://", 1)[0] if "://" in url else ""

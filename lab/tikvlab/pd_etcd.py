"""The real etcd behind the PD stand-in: the child process, and a client for its v3 JSON gateway.

etcd owns membership, leader election, peer URLs and peer TLS. The stand-in talks to it only through
the private plaintext client listener, with short timeouts: without quorum etcd would hold a write for
its own request timeout (seconds), and a PD API call must answer 503 quickly instead.
"""

from __future__ import annotations

import base64
import ctypes
import http.client
import json
import os
import signal
import subprocess
from typing import IO, Any

PR_SET_PDEATHSIG = 1
REQUEST_TIMEOUT = 3.0
# A last member without quorum needs several seconds to stop; stay under the 10 s `tikv-lab service
# stop` allows the whole stand-in before it SIGKILLs the process group.
STOP_GRACE = 8.0


class EtcdUnavailable(Exception):
    """etcd did not answer in time or refused the request (member down, no quorum, not leader)."""


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _unb64(text: str) -> str:
    return base64.b64decode(text).decode()


def _prefix_end(prefix: str) -> str:
    """etcd's range_end for "every key starting with prefix": the prefix with its last byte + 1."""
    raw = prefix.encode()
    return base64.b64encode(raw[:-1] + bytes([raw[-1] + 1])).decode()


class EtcdClient:
    """etcd's v3 JSON gateway on the private listener. Keys and values are base64 on the wire;
    uint64 fields (IDs, revisions) are decimal strings."""

    def __init__(self, port: int, timeout: float = REQUEST_TIMEOUT):
        self.port = port
        self.timeout = timeout

    def raw(self, method: str, path: str, body: bytes | None = None,
            timeout: float | None = None) -> tuple[int, bytes, str]:
        """One request as is (the /v3/ proxy and /metrics): status, body, content type."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout or self.timeout)
        try:
            headers = {"Content-Type": "application/json"} if body is not None else {}
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            return resp.status, resp.read(), resp.getheader("Content-Type", "application/json")
        except OSError as err:
            raise EtcdUnavailable(f"etcd at 127.0.0.1:{self.port} did not answer {path}: "
                                  f"{err or type(err).__name__}") from err
        finally:
            conn.close()

    def call(self, path: str, body: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
        status, raw, _content_type = self.raw("POST", path, json.dumps(body).encode(), timeout)
        try:
            answer = json.loads(raw) if raw else {}
        except ValueError:
            answer = {"error": raw.decode("utf-8", "replace")}
        if status != 200 or "error" in answer:
            raise EtcdUnavailable(f"etcd {path}: {answer.get('message') or answer.get('error') or status}")
        return answer

    def status(self) -> dict[str, Any]:
        """This member's view (answered locally, even without quorum): `leader` is 0 when it has none."""
        return self.call("/v3/maintenance/status", {})

    def member_list(self) -> dict[str, Any]:
        """`header.cluster_id` and `members` [{ID, name, peerURLs, clientURLs}]; served locally."""
        return self.call("/v3/cluster/member/list", {})

    def move_leader(self, target_id: int, timeout: float) -> None:
        """etcd MoveLeader; only the current leader accepts it, and it returns once leadership moved."""
        self.call("/v3/maintenance/transfer-leadership", {"targetID": str(target_id)}, timeout=timeout)

    def get(self, key: str) -> tuple[str | None, int]:
        """(value, mod_revision); an absent key reads (None, 0), which is what a txn compares against."""
        answer = self.call("/v3/kv/range", {"key": _b64(key)})
        kvs = answer.get("kvs", [])
        if not kvs:
            return None, 0
        return _unb64(kvs[0].get("value", "")), int(kvs[0]["mod_revision"])

    def get_prefix(self, prefix: str) -> dict[str, str]:
        answer = self.call("/v3/kv/range", {"key": _b64(prefix), "range_end": _prefix_end(prefix)})
        return {_unb64(kv["key"]): _unb64(kv.get("value", "")) for kv in answer.get("kvs", [])}

    def put(self, key: str, value: str) -> None:
        self.call("/v3/kv/put", {"key": _b64(key), "value": _b64(value)})

    def delete(self, key: str) -> int:
        """Number of keys deleted (0 when it was absent)."""
        return int(self.call("/v3/kv/deleterange", {"key": _b64(key)}).get("deleted", 0))

    def put_if_unchanged(self, key: str, value: str, mod_revision: int) -> bool:
        """Compare-and-swap on the key's mod_revision (0 = the key must not exist)."""
        answer = self.call("/v3/kv/txn", {
            "compare": [{"key": _b64(key), "target": "MOD", "result": "EQUAL", "mod_revision": str(mod_revision)}],
            "success": [{"request_put": {"key": _b64(key), "value": _b64(value)}}]})
        return bool(answer.get("succeeded"))

    def add_member(self, peer_urls: list[str]) -> dict[str, Any]:
        return self.call("/v3/cluster/member/add", {"peerURLs": peer_urls})


def _die_with_parent(parent_pid: int) -> None:
    """Runs in the forked child before exec: ask the kernel to SIGKILL etcd when the stand-in dies
    (even by SIGKILL), so an etcd child can never outlive it and keep a member of the cluster alive."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died between fork and prctl
        os.kill(os.getpid(), signal.SIGKILL)


class EtcdChild:
    """The etcd process. Start it from the main thread: PDEATHSIG fires when the forking THREAD exits."""

    def __init__(self, command: list[str], log_path: str):
        self.command = command
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> int:
        parent = os.getpid()
        # etcd's zap lines go into PD's log: they are the real causes operators grep for.
        sink: IO[bytes] | None = open(self.log_path, "ab") if self.log_path else None
        try:
            self.process = subprocess.Popen(self.command, stdin=subprocess.DEVNULL, stdout=sink,
                                            stderr=subprocess.STDOUT if sink else None,
                                            preexec_fn=lambda: _die_with_parent(parent))
        finally:
            if sink:
                sink.close()
        return self.process.pid

    def wait(self) -> int:
        assert self.process is not None
        return self.process.wait()

    def stop(self, grace: float = STOP_GRACE) -> int | None:
        """SIGTERM, wait up to `grace` seconds, then SIGKILL; returns etcd's exit status."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.terminate()
            try:
                return self.process.wait(grace)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.process.wait()

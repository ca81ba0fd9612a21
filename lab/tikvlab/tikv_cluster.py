"""What a store does towards the rest of the cluster: heartbeats to PD and links to its peers.

* Heartbeat every 0.5 s: POST /pd/api/v1/lab/store/heartbeat with the store's OWN certificate (TLS
  iff ca-path is set, whatever scheme the endpoint was written with). Endpoints are tried in order;
  the one that answered last is tried first next time, as TiKV sticks to the PD it is connected to.
  The first store id PD hands out is persisted in `<data-dir>/store_ident.json`.
* Peer links every 1 s: `/lab.Peer/Ping` to every other store PD listed, all in parallel with a short
  deadline so a dead or hung peer never stalls the round. A failed channel is closed and a channel is
  rebuilt when the TLS files changed (TiKV re-reads its files when it creates a channel).

Both report the real cause in the log (rate-limited) and their state in /metrics.
"""

from __future__ import annotations

import http.client
import json
import os
import ssl
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import grpc

from .common import Logger, client_context, http_json
from .tikv_config import SecurityConfig, TikvConfig
from .tikv_grpc import PEER_PING, CredentialFiles, open_channel, rpc_error_text

HEARTBEAT_PATH = "/pd/api/v1/lab/store/heartbeat"
HEARTBEAT_INTERVAL = 0.5
# Shorter than PD's 3 s "Disconnected" window, so one hung PD cannot make the store look gone.
HEARTBEAT_TIMEOUT = 1.5
PEER_INTERVAL = 1.0
PEER_PING_TIMEOUT = 1.0
REPEAT_LOG_EVERY = 5.0
IDENT_FILE = "store_ident.json"


class RepeatLimiter:
    """At most one log line per key per period, so a failure that lasts does not flood the log."""

    def __init__(self, period: float):
        self._period = period
        self._last: dict[Any, float] = {}

    def allow(self, key: Any, force: bool = False) -> bool:
        now = time.monotonic()
        if force or now - self._last.get(key, -self._period) >= self._period:
            self._last[key] = now
            return True
        return False


# ---------------------------------------------------------------------------------------------
# Store ident


def ident_path(data_dir: str) -> str:
    return os.path.join(data_dir, IDENT_FILE)


def load_store_id(data_dir: str) -> int:
    """The persisted store id, 0 when the store has never registered. A corrupt file raises ValueError."""
    try:
        with open(ident_path(data_dir), encoding="utf-8") as fh:
            return int(json.load(fh)["store_id"])
    except FileNotFoundError:
        return 0
    except (KeyError, TypeError, json.JSONDecodeError) as exc:
        raise ValueError(f"corrupt store ident {ident_path(data_dir)}: {exc}") from None


def save_store_id(data_dir: str, store_id: int) -> None:
    """Written to a temporary file and renamed, so a crash never leaves half an ident."""
    path = ident_path(data_dir)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump({"store_id": store_id}, fh)
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------
# State


@dataclass(frozen=True)
class HeartbeatAnswer:
    store_id: int
    leader_count: int
    region_count: int
    stores: tuple[tuple[int, str], ...]


class StoreState:
    """What the store knows; written by the loops, read by the status port."""

    def __init__(self, store_id: int, own_address: str):
        self._lock = threading.Lock()
        self._own_address = own_address
        self.store_id = store_id
        self.leader_count = 0
        self.region_count = 0
        self.heartbeat_up = False
        self._peers: dict[str, int] = {}
        self._links: dict[str, bool] = {}

    def register(self, store_id: int) -> None:
        with self._lock:
            self.store_id = store_id

    def apply_heartbeat(self, answer: HeartbeatAnswer) -> None:
        with self._lock:
            self.heartbeat_up = True
            self.leader_count = answer.leader_count
            self.region_count = answer.region_count
            self._peers = {addr: sid for sid, addr in answer.stores
                           if sid != self.store_id and addr != self._own_address}
            # A store PD no longer lists is no longer a peer: its gauge goes away.
            self._links = {addr: up for addr, up in self._links.items() if addr in self._peers}

    def heartbeat_failed(self) -> None:
        with self._lock:
            self.heartbeat_up = False

    def peers(self) -> dict[str, int]:
        with self._lock:
            return dict(self._peers)

    def set_link(self, addr: str, up: bool) -> bool | None:
        """Record a probe result; returns the previous state (None: first probe)."""
        with self._lock:
            previous = self._links.get(addr)
            if addr in self._peers:
                self._links[addr] = up
            return previous

    def metrics_text(self) -> str:
        with self._lock:
            lines = [
                "# HELP tikv_raftstore_region_count Number of regions collected in region_collection_worker",
                "# TYPE tikv_raftstore_region_count gauge",
                f'tikv_raftstore_region_count{{type="leader"}} {self.leader_count}',
                f'tikv_raftstore_region_count{{type="region"}} {self.region_count}',
                "# HELP tikv_lab_peer_link_up Whether the last Ping to the peer store succeeded",
                "# TYPE tikv_lab_peer_link_up gauge",
            ]
            lines += [f'tikv_lab_peer_link_up{{to="{addr}"}} {int(up)}' for addr, up in sorted(self._links.items())]
            lines += [
                "# HELP tikv_lab_pd_heartbeat_up Whether the last store heartbeat reached PD",
                "# TYPE tikv_lab_pd_heartbeat_up gauge",
                f"tikv_lab_pd_heartbeat_up {int(self.heartbeat_up)}",
            ]
        return "\n".join(lines) + "\n"

    def status(self) -> dict[str, Any]:
        with self._lock:
            return {"store_id": self.store_id, "address": self._own_address,
                    "pd_heartbeat_up": self.heartbeat_up, "leader_count": self.leader_count}


# ---------------------------------------------------------------------------------------------
# Heartbeat


class HeartbeatError(Exception):
    """One endpoint did not take the heartbeat; str() is the real cause."""


def parse_answer(answer: Any) -> HeartbeatAnswer:
    try:
        stores = tuple((int(s["id"]), str(s["address"])) for s in answer.get("stores", []))
        return HeartbeatAnswer(store_id=int(answer["store_id"]), leader_count=int(answer.get("leader_count", 0)),
                               region_count=int(answer.get("region_count", 0)), stores=stores)
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise HeartbeatError(f"malformed heartbeat answer {answer!r}: {exc}") from None


def describe(exc: BaseException) -> str:
    """`SSLError: [SSL: ...] ...`: the exception class says as much as the message."""
    return f"{type(exc).__name__}: {exc}"


class Heartbeater:
    """The store -> PD heartbeat loop (registration, leader/region counts, the peer list)."""

    def __init__(self, config: TikvConfig, state: StoreState, logger: Logger, pinned: Callable[[], bool],
                 version: str):
        self._config = config
        self._state = state
        self._logger = logger
        self._pinned = pinned
        self._version = version
        self._preferred: str | None = None
        self._limiter = RepeatLimiter(REPEAT_LOG_EVERY)

    def run(self, stop: threading.Event) -> None:
        while True:
            self.beat()
            if stop.wait(HEARTBEAT_INTERVAL):
                return

    def beat(self) -> None:
        security = self._config.security
        try:
            # Files read on every round: a rotated client certificate is used from the next heartbeat.
            tls = client_context(security.ca_path, security.cert_path, security.key_path) if security.tls else None
        except OSError as exc:  # ssl.SSLError included
            self._failed("(all)", f"failed to load TLS files: {describe(exc)}")
            return
        for endpoint in self._endpoint_order():
            try:
                answer = self._send(endpoint, tls)
            except HeartbeatError as exc:
                self._report_failure(endpoint, str(exc))
                continue
            self._accept(endpoint, answer)
            return
        self._state.heartbeat_failed()

    def _endpoint_order(self) -> list[str]:
        endpoints = list(self._config.pd_endpoints)
        if self._preferred in endpoints:
            endpoints.remove(self._preferred)
            endpoints.insert(0, self._preferred)
        return endpoints

    def _body(self) -> dict[str, Any]:
        return {"store_id": self._state.store_id, "address": self._config.advertise_addr,
                "status_address": self._config.advertise_status_addr, "version": self._version,
                "pinned": self._pinned()}

    def _send(self, endpoint: str, tls: ssl.SSLContext | None) -> HeartbeatAnswer:
        try:
            status, answer = http_json("POST", endpoint, HEARTBEAT_PATH, self._body(), tls=tls,
                                       timeout=HEARTBEAT_TIMEOUT)
        except (OSError, http.client.HTTPException, ValueError) as exc:
            raise HeartbeatError(describe(exc)) from None
        if status != 200:
            raise HeartbeatError(f"PD answered HTTP {status}: {answer}")
        return parse_answer(answer)

    def _accept(self, endpoint: str, answer: HeartbeatAnswer) -> None:
        if self._state.store_id == 0:
            try:
                save_store_id(self._config.data_dir, answer.store_id)
            except OSError as exc:  # not registered then: the next heartbeat tries again
                self._logger.error("failed to persist store ident", path=ident_path(self._config.data_dir),
                                   err=describe(exc))
                return
            self._state.register(answer.store_id)
            self._logger.info("store registered, ident persisted", store_id=answer.store_id,
                              path=ident_path(self._config.data_dir))
        if endpoint != self._preferred or not self._state.heartbeat_up:
            self._logger.info("connected to PD", endpoint=endpoint, store_id=self._state.store_id)
        self._preferred = endpoint
        self._state.apply_heartbeat(answer)

    def _report_failure(self, endpoint: str, cause: str) -> None:
        if self._limiter.allow((endpoint, cause)):
            self._logger.error("failed to send heartbeat", endpoint=endpoint, err=cause)

    def _failed(self, endpoint: str, cause: str) -> None:
        self._report_failure(endpoint, cause)
        self._state.heartbeat_failed()


# ---------------------------------------------------------------------------------------------
# Peer links


class PeerLinks:
    """The store -> store link loop: one Ping per peer per round, state into StoreState and the log."""

    def __init__(self, security: SecurityConfig, state: StoreState, logger: Logger):
        self._security = security
        self._state = state
        self._logger = logger
        self._channels: dict[str, tuple[tuple[int, ...] | None, grpc.Channel]] = {}
        self._limiter = RepeatLimiter(REPEAT_LOG_EVERY)

    def run(self, stop: threading.Event) -> None:
        try:
            while not stop.wait(PEER_INTERVAL):
                self.probe_all()
        finally:
            for addr in list(self._channels):
                self._close(addr)

    def probe_all(self) -> None:
        peers = self._state.peers()
        for addr in set(self._channels) - set(peers):
            self._close(addr)
        pending: dict[str, grpc.Future] = {}
        for addr in peers:
            try:
                channel = self._channel(addr)
            except OSError as exc:
                self._record(addr, peers[addr], f"failed to load TLS files: {describe(exc)}")
                continue
            pending[addr] = channel.unary_unary(PEER_PING).future(b"", timeout=PEER_PING_TIMEOUT)
        for addr, call in pending.items():
            try:
                call.result()
            except grpc.RpcError as exc:
                self._close(addr)  # the next round dials afresh instead of waiting out grpc's backoff
                self._record(addr, peers[addr], rpc_error_text(exc))
            else:
                self._record(addr, peers[addr], None)

    def _channel(self, addr: str) -> grpc.Channel:
        signature = CredentialFiles.of(self._security).signature() if self._security.tls else None
        cached = self._channels.get(addr)
        if cached and cached[0] == signature:
            return cached[1]
        self._close(addr)
        channel = open_channel(addr, self._security)
        self._channels[addr] = (signature, channel)
        return channel

    def _close(self, addr: str) -> None:
        cached = self._channels.pop(addr, None)
        if cached:
            cached[1].close()

    def _record(self, addr: str, store_id: int, err: str | None) -> None:
        up = err is None
        previous = self._state.set_link(addr, up)
        changed = previous is not up
        if up and changed:
            self._logger.info("connection established", store_id=store_id, addr=addr)
        elif not up and self._limiter.allow(addr, force=changed):
            self._logger.error("connection abort", store_id=store_id, addr=addr, err=err)

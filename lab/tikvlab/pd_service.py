"""What PD's HTTP API does, independent of HTTP: members and leadership from etcd, health by pinging
each member's client URL with this PD's own certificate, stores and schedulers from the shared model.

Anything that needs the cluster first checks that this member sees an etcd leader, so a member without
quorum answers at once (503) instead of waiting for etcd's own request timeout.
"""

from __future__ import annotations

import http.client
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tikvlab.common import Logger, http_json, strip_scheme, url_scheme
from tikvlab.pd_config import PDConfig
from tikvlab.pd_etcd import EtcdClient, EtcdUnavailable
from tikvlab.pd_state import (BUILTIN_SCHEDULERS, EVICT_LEADER, BadRequest, ClusterState, NotFound,
                              region_count, store_entry, store_state)
from tikvlab.pd_tls import ClientPortTLS, TLSMaterial, outgoing_context

# What a call to another member can fail with: refused/reset/timeout, TLS refusal, a garbled answer.
CALL_ERRORS = (OSError, ValueError, http.client.HTTPException)
PING_TIMEOUT = 2.0
MOVE_LEADER_TIMEOUT = 10.0
LEADER_POLL_INTERVAL = 0.1


class OperationFailed(Exception):
    """The request was valid but could not be carried out (500 with the reason)."""


class PDService:
    def __init__(self, cfg: PDConfig, etcd: EtcdClient, material: TLSMaterial | None, logger: Logger):
        self.cfg = cfg
        self.etcd = etcd
        self.state = ClusterState(etcd)
        self.material = material
        self.logger = logger
        self.client_tls: list[ClientPortTLS] = []  # filled in as the https listeners are built
        self._published = False
        self._last_leader: int | None = None

    # --- leadership -------------------------------------------------------------------------------

    def require_leader(self) -> tuple[int, int]:
        """(leader id, own id) as this member's etcd sees them; EtcdUnavailable when it sees no leader."""
        status = self.etcd.status()
        leader = int(status.get("leader", 0))
        if not leader:
            raise EtcdUnavailable("no PD leader: this member's etcd has no raft leader "
                                  "(quorum lost or an election in progress)")
        return leader, int(status["header"]["member_id"])

    def _member_view(self, member: dict[str, Any], builds: dict[str, dict[str, str]]) -> dict[str, Any]:
        build = builds.get(member.get("name", ""), {})
        return {"name": member.get("name", ""), "member_id": int(member["ID"]),
                "peer_urls": member.get("peerURLs", []), "client_urls": member.get("clientURLs", []),
                "leader_priority": 0, "deploy_path": build.get("deploy_path", ""),
                "binary_version": build.get("binary_version", ""), "git_hash": build.get("git_hash", "")}

    def members(self) -> dict[str, Any]:
        leader_id, _own_id = self.require_leader()
        listing = self.etcd.member_list()
        builds = self.state.member_builds()
        members = [self._member_view(m, builds) for m in listing.get("members", [])]
        leader = next((m for m in members if m["member_id"] == leader_id), None)
        return {"header": {"cluster_id": int(listing["header"]["cluster_id"])}, "members": members,
                "leader": leader, "etcd_leader": leader}

    def leader(self) -> dict[str, Any]:
        leader = self.members()["leader"]
        if leader is None:
            raise EtcdUnavailable("the etcd leader is not in this member's member list yet")
        return leader

    def _first_member(self, wanted: Callable[[dict[str, Any]], bool], missing: str) -> dict[str, Any]:
        for member in self.etcd.member_list().get("members", []):
            if wanted(member):
                return member
        raise NotFound(missing)

    def _member_named(self, name: str) -> dict[str, Any]:
        return self._first_member(lambda m: m.get("name") == name, f"no PD member named {name}")

    def _member_with_id(self, member_id: int) -> dict[str, Any]:
        return self._first_member(lambda m: int(m["ID"]) == member_id, f"no PD member with id {member_id}")

    def _ask_leader_to_move(self, leader_id: int, target_id: int) -> None:
        """MoveLeader must reach the current leader's etcd, which is private to that PD: go through
        the leader PD's client URL."""
        leader = self._member_with_id(leader_id)
        url = (leader.get("clientURLs") or [""])[0]
        try:
            status, answer = http_json("POST", strip_scheme(url), "/pd/api/v1/lab/etcd-move-leader",
                                       {"target_id": target_id},
                                       tls=outgoing_context(self.material, url_scheme(url)),
                                       timeout=MOVE_LEADER_TIMEOUT)
        except CALL_ERRORS as err:
            raise OperationFailed(f"cannot reach the PD leader {leader.get('name')} at {url}: {err}") from err
        if status != 200:
            raise OperationFailed(f"the PD leader {leader.get('name')} did not move leadership: {answer}")

    def _wait_for_leader(self, target_id: int, name: str) -> None:
        deadline = time.monotonic() + MOVE_LEADER_TIMEOUT
        while time.monotonic() < deadline:
            if int(self.etcd.status().get("leader", 0)) == target_id:
                return
            time.sleep(LEADER_POLL_INTERVAL)
        raise OperationFailed(f"the etcd leader did not move to {name} within {MOVE_LEADER_TIMEOUT:.0f}s")

    def move_local_leader(self, target_id: int) -> None:
        """/lab/etcd-move-leader: this member must be the etcd leader."""
        leader_id, own_id = self.require_leader()
        if leader_id != own_id:
            raise OperationFailed(f"{self.cfg.name} is not the etcd leader any more")
        try:
            self.etcd.move_leader(target_id, timeout=MOVE_LEADER_TIMEOUT)
        except EtcdUnavailable as err:
            raise OperationFailed(str(err)) from err

    def transfer_leader(self, name: str) -> str:
        """Move the etcd (= PD) leader to `name`; returns once this member sees it there."""
        leader_id, own_id = self.require_leader()
        target_id = int(self._member_named(name)["ID"])
        if target_id != leader_id:
            if leader_id == own_id:
                self.move_local_leader(target_id)
            else:
                self._ask_leader_to_move(leader_id, target_id)
            self._wait_for_leader(target_id, name)
        return "The transfer command is submitted."

    def resign_leader(self) -> str:
        leader_id, _own_id = self.require_leader()
        others = [m for m in self.etcd.member_list()["members"] if int(m["ID"]) != leader_id and m.get("name")]
        healthy = [m for m, ok in zip(others, self._ping_all(others)) if ok]
        if not healthy:
            raise OperationFailed("no other healthy PD member to hand leadership to")
        self.transfer_leader(sorted(m["name"] for m in healthy)[0])
        return "The resign command is submitted."

    # --- health -----------------------------------------------------------------------------------

    def _ping(self, member: dict[str, Any]) -> bool:
        """GET <first client URL>/pd/api/v1/ping with this PD's own certificate, as real PD does."""
        urls = member.get("clientURLs") or []
        if not urls:
            return False
        try:
            status, _answer = http_json("GET", strip_scheme(urls[0]), "/pd/api/v1/ping",
                                        tls=outgoing_context(self.material, url_scheme(urls[0])),
                                        timeout=PING_TIMEOUT)
        except CALL_ERRORS:
            return False
        return status == 200

    def _ping_all(self, members: list[dict[str, Any]]) -> list[bool]:
        if not members:
            return []
        with ThreadPoolExecutor(max_workers=len(members)) as pool:
            return list(pool.map(self._ping, members))

    def health(self) -> list[dict[str, Any]]:
        """Needs no quorum: the member list is local and the pings go to client URLs."""
        members = self.etcd.member_list().get("members", [])
        return [{"name": m.get("name", ""), "member_id": int(m["ID"]), "client_urls": m.get("clientURLs", []),
                 "health": ok} for m, ok in zip(members, self._ping_all(members))]

    # --- stores and schedulers --------------------------------------------------------------------

    def stores(self) -> dict[str, Any]:
        self.require_leader()
        now = time.time()
        stores = self.state.stores()
        leaders = self.state.leaders()
        entries = [store_entry(s, leaders.get(s.id, 0), len(stores), now) for s in stores]
        return {"count": len(entries), "stores": entries}

    def store(self, store_id: int) -> dict[str, Any]:
        for entry in self.stores()["stores"]:
            if entry["store"]["id"] == store_id:
                return entry
        raise NotFound(f"[PD:core:ErrStoreNotFound]store id {store_id} not found")

    def heartbeat(self, beat: dict[str, Any]) -> dict[str, Any]:
        self.require_leader()
        store, stores = self.state.record_heartbeat(beat, time.time())
        return {"store_id": store.id, "leader_count": self.state.leaders().get(store.id, 0),
                "region_count": region_count(len(stores)),
                "stores": [{"id": s.id, "address": s.address} for s in stores]}

    def schedulers(self) -> list[str]:
        self.require_leader()
        return BUILTIN_SCHEDULERS + self.state.schedulers()

    def add_scheduler(self, body: dict[str, Any]) -> str:
        if body.get("name") != EVICT_LEADER:
            raise BadRequest(f"the lab supports only {EVICT_LEADER}, not {body.get('name')!r}")
        store_id = body.get("store_id")
        if not isinstance(store_id, int) or store_id <= 0:
            raise BadRequest(f"{EVICT_LEADER} needs a positive integer store_id")
        self.require_leader()
        self.state.add_evict_leader(store_id)
        return "The scheduler is created."

    def remove_scheduler(self, name: str) -> str:
        self.require_leader()
        self.state.remove_scheduler(name)
        return "The scheduler is removed."

    # --- metrics ----------------------------------------------------------------------------------

    def _pd_gauges(self) -> list[str]:
        try:
            leader, own = self.require_leader()
        except EtcdUnavailable:
            leader, own = 0, -1
        lines = ["# HELP pd_lab_is_leader 1 when this member is the PD (= etcd) leader.",
                 "# TYPE pd_lab_is_leader gauge", f"pd_lab_is_leader {int(leader == own)}",
                 "# HELP pd_lab_tls_handshake_refused_total Client-port connections refused during TLS.",
                 "# TYPE pd_lab_tls_handshake_refused_total counter",
                 f"pd_lab_tls_handshake_refused_total {sum(t.refused for t in self.client_tls)}"]
        if leader:
            now = time.time()
            states = [store_state(now - s.last_heartbeat) for s in self.state.stores()]
            lines += ["# HELP pd_cluster_status Store counts by state, as PD's leader reports them.",
                      "# TYPE pd_cluster_status gauge"]
            lines += [f'pd_cluster_status{{type="store_{state.lower()}_count"}} {states.count(state)}'
                      for state in ("Up", "Disconnected", "Down")]
        return lines

    def metrics(self) -> str:
        """etcd's own metrics (the real peer-link counters) plus a few pd_* gauges."""
        status, body, _content_type = self.etcd.raw("GET", "/metrics")
        if status != 200:
            raise EtcdUnavailable(f"etcd /metrics answered {status}")
        return body.decode() + "\n".join(self._pd_gauges()) + "\n"

    # --- the leader's background work ---------------------------------------------------------------

    def _log_leader_change(self, leader_id: int, own_id: int) -> None:
        names = {int(m["ID"]): m.get("name", "") for m in self.etcd.member_list().get("members", [])}
        self.logger.info("PD leader changed", leader=names.get(leader_id, "") if leader_id else "none",
                         leader_id=str(leader_id), is_self=leader_id == own_id)
        self._last_leader = leader_id

    def _publish_build(self) -> None:
        self.state.publish_member(self.cfg.name, {"binary_version": self.cfg.version,
                                                  "git_hash": self.cfg.git_hash, "deploy_path": os.getcwd()})
        self._published = True

    def maintenance_tick(self) -> None:
        """Every 0.5 s: notice leader changes; once there is a leader publish this member's build info;
        on the leader, run one tick of leader scheduling."""
        status = self.etcd.status()
        leader_id, own_id = int(status.get("leader", 0)), int(status["header"]["member_id"])
        if leader_id != self._last_leader:
            self._log_leader_change(leader_id, own_id)
        if not leader_id:
            return
        if not self._published:
            self._publish_build()
        if leader_id == own_id:
            self.state.distribute_leaders_once(time.time())

"""The cluster state every PD member shares, kept in etcd under /tikvlab/: stores and their heartbeats,
schedulers, the leader model, and each member's build info.

Timings are lab-scaled: a store is Disconnected after 3 s without a heartbeat (real PD: 20 s) and Down
after 30 s (real PD: max-store-down-time, 30 min).
"""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from tikvlab.pd_etcd import EtcdClient, EtcdUnavailable

STORES = "/tikvlab/stores/"
SCHEDULERS = "/tikvlab/schedulers/"
MEMBERS = "/tikvlab/pd/member/"
LEADERS = "/tikvlab/leaders"
NEXT_STORE_ID = "/tikvlab/next_store_id"

DISCONNECTED_AFTER = 3.0
DOWN_AFTER = 30.0
REGIONS_PER_STORE = 10
REPLICAS = 3
MAX_DRAIN_PER_TICK = 5
EVICT_LEADER = "evict-leader-scheduler"
BUILTIN_SCHEDULERS = ["balance-leader-scheduler", "balance-region-scheduler"]
ID_ALLOCATION_ATTEMPTS = 20


class BadRequest(ValueError):
    """The caller sent something PD would refuse (400)."""


class NotFound(LookupError):
    """The thing named in the request does not exist (404)."""


@dataclass
class Store:
    id: int
    address: str
    status_address: str = ""
    version: str = ""
    labels: list[dict[str, str]] = field(default_factory=list)
    last_heartbeat: float = 0.0
    pinned: bool = False

    @classmethod
    def from_json(cls, text: str) -> Store:
        data = json.loads(text)
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


def store_state(heartbeat_age: float) -> str:
    if heartbeat_age > DOWN_AFTER:
        return "Down"
    if heartbeat_age >= DISCONNECTED_AFTER:
        return "Disconnected"
    return "Up"


def region_count(store_count: int) -> int:
    """Regions on each store: R = 10 x stores regions, 3 replicas spread evenly, at most R per store."""
    total = REGIONS_PER_STORE * store_count
    return min(total, total * REPLICAS // store_count) if store_count else 0


def evicted_store(scheduler_name: str) -> int | None:
    prefix = f"{EVICT_LEADER}-"
    if scheduler_name.startswith(prefix) and scheduler_name[len(prefix):].isdigit():
        return int(scheduler_name[len(prefix):])
    return None


def _least_loaded(candidates: list[int], counts: dict[int, int]) -> int:
    return min(candidates, key=lambda sid: (counts[sid], sid))


def rebalance(leaders: dict[int, int], stores: list[Store], evicted: set[int], now: float) -> dict[int, int]:
    """One tick of the PD leader's leader scheduling over the region model; returns new counts.

    Eligible stores are Up and not evicted. Leaderless regions (a store joined the model) go to the
    least loaded eligible stores; stores that are not Up, or evicted and not pinned, lose up to 5
    leaders each; then 1 leader moves from the most to the least loaded eligible store when they differ
    by more than 1. A pinned store (lab fault) is never a source while it is Up. No eligible store:
    nothing moves.
    """
    counts = {store.id: leaders.get(store.id, 0) for store in stores}
    up = {s.id for s in stores if store_state(now - s.last_heartbeat) == "Up"}
    eligible = sorted(sid for sid in up if sid not in evicted)
    if not eligible:
        return counts
    pinned = {s.id for s in stores if s.pinned and s.id in up}
    for _added in range(REGIONS_PER_STORE * len(stores) - sum(counts.values())):
        counts[_least_loaded(eligible, counts)] += 1
    for sid in sorted(counts):
        if sid in eligible or sid in pinned:
            continue
        for _moved in range(min(MAX_DRAIN_PER_TICK, counts[sid])):
            counts[sid] -= 1
            counts[_least_loaded(eligible, counts)] += 1
    sources = [sid for sid in eligible if sid not in pinned]
    if sources:
        busiest = max(sources, key=lambda sid: (counts[sid], -sid))
        idlest = _least_loaded(eligible, counts)
        if counts[busiest] - counts[idlest] > 1:
            counts[busiest] -= 1
            counts[idlest] += 1
    return counts


def store_entry(store: Store, leader_count: int, store_count: int, now: float) -> dict[str, Any]:
    """One element of GET /stores in PD's shape."""
    state = store_state(now - store.last_heartbeat)
    beat = _dt.datetime.fromtimestamp(store.last_heartbeat, _dt.timezone.utc)
    return {
        "store": {"id": store.id, "address": store.address, "state": 0, "state_name": state,
                  "version": store.version, "status_address": store.status_address, "labels": store.labels},
        "status": {"leader_count": leader_count, "region_count": region_count(store_count),
                   "last_heartbeat_ts": beat.isoformat()},
    }


class ClusterState:
    """Reads and writes the shared model through this member's etcd (linearizable, so a member without
    quorum fails with EtcdUnavailable instead of answering stale data)."""

    def __init__(self, etcd: EtcdClient):
        self.etcd = etcd

    def stores(self) -> list[Store]:
        return sorted((Store.from_json(v) for v in self.etcd.get_prefix(STORES).values()), key=lambda s: s.id)

    def leaders(self) -> dict[int, int]:
        raw, _revision = self.etcd.get(LEADERS)
        return {int(k): v for k, v in json.loads(raw).items()} if raw else {}

    def schedulers(self) -> list[str]:
        return sorted(key[len(SCHEDULERS):] for key in self.etcd.get_prefix(SCHEDULERS))

    def add_evict_leader(self, store_id: int) -> None:
        if store_id not in {s.id for s in self.stores()}:
            raise NotFound(f"[PD:core:ErrStoreNotFound]store id {store_id} not found")
        self.etcd.put(f"{SCHEDULERS}{EVICT_LEADER}-{store_id}", json.dumps({"store_id": store_id}))

    def remove_scheduler(self, name: str) -> None:
        if name in BUILTIN_SCHEDULERS:
            raise BadRequest(f"the lab keeps {name} always on")
        if self.etcd.delete(f"{SCHEDULERS}{name}") == 0:
            raise NotFound("[PD:scheduler:ErrSchedulerNotFound]scheduler not found")

    def publish_member(self, name: str, build: dict[str, str]) -> None:
        self.etcd.put(f"{MEMBERS}{name}", json.dumps(build))

    def member_builds(self) -> dict[str, dict[str, str]]:
        return {key[len(MEMBERS):]: json.loads(value) for key, value in self.etcd.get_prefix(MEMBERS).items()}

    def _allocate_store_id(self, taken: set[int]) -> int:
        for _attempt in range(ID_ALLOCATION_ATTEMPTS):
            raw, revision = self.etcd.get(NEXT_STORE_ID)
            candidate = int(raw or 1)
            while candidate in taken:  # a store that kept its id across a wiped PD keeps it
                candidate += 1
            if self.etcd.put_if_unchanged(NEXT_STORE_ID, str(candidate + 1), revision):
                return candidate
        raise EtcdUnavailable("could not allocate a store id: the counter kept changing under us")

    def record_heartbeat(self, beat: dict[str, Any], now: float) -> tuple[Store, list[Store]]:
        """Register or refresh a store; returns it and every known store (its peers)."""
        store_id, address = beat.get("store_id", 0), beat.get("address")
        if not isinstance(store_id, int) or store_id < 0 or not isinstance(address, str) or not address:
            raise BadRequest("heartbeat needs an integer store_id (0 = new store) and an address")
        stores = self.stores()
        if store_id == 0:
            # A store whose store_ident.json was lost comes back at the same address: same store.
            same_address = [s.id for s in stores if s.address == address]
            store_id = same_address[0] if same_address else self._allocate_store_id({s.id for s in stores})
        store = Store(id=store_id, address=address, status_address=str(beat.get("status_address", "")),
                      version=str(beat.get("version", "")), labels=list(beat.get("labels", [])),
                      last_heartbeat=now, pinned=bool(beat.get("pinned", False)))
        self.etcd.put(f"{STORES}{store_id}", json.dumps(asdict(store)))
        others = [s for s in stores if s.id != store_id]
        return store, sorted(others + [store], key=lambda s: s.id)

    def distribute_leaders_once(self, now: float) -> None:
        """The PD leader's scheduling tick; writes /tikvlab/leaders only when something moved."""
        stores = self.stores()
        if not stores:
            return
        current = self.leaders()
        evicted = {sid for name in self.schedulers() if (sid := evicted_store(name)) is not None}
        updated = rebalance(current, stores, evicted, now)
        if updated != current:
            self.etcd.put(LEADERS, json.dumps({str(k): v for k, v in sorted(updated.items())}))

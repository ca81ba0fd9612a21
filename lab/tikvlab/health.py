"""How the CLI sees a running lab: each instance's TLS from its own config, PD asked with an
instance's own certificate (as pd-ctl on that host would be), and one health verdict.

Everything is read from the files a playbook may have changed (run_pd.sh, pd.toml, tikv.toml), never
from what `up` wrote, so `status` and `wait` tell the truth after the collection has been at work.
"""

from __future__ import annotations

import re
import ssl
import tomllib
from dataclasses import dataclass, field
from typing import Any

from . import common, services
from .layout import Instance, Lab

PD_API = "/pd/api/v1"
PD_TIMEOUT_SECONDS = 2.0


@dataclass
class Problem:
    """Why the lab is not healthy; `instance` (when known) is whose log tail explains it."""

    instance: str | None
    text: str

    def __str__(self) -> str:
        return f"{self.instance}: {self.text}" if self.instance else self.text


@dataclass
class Snapshot:
    """One look at the lab: processes, PD's view of members and stores, and what is wrong."""

    instances: list[dict[str, Any]] = field(default_factory=list)
    pd_asked: str | None = None
    leader: str | None = None
    members: list[dict[str, Any]] = field(default_factory=list)
    stores: list[dict[str, Any]] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {"healthy": self.healthy, "instances": self.instances, "pd_asked": self.pd_asked,
                "leader": self.leader, "members": self.members, "stores": self.stores,
                "problems": [{"instance": p.instance, "text": p.text} for p in self.problems]}


class PdUnreachable(Exception):
    """No running PD answered; the message lists each PD's failure."""


# ---------------------------------------------------------------------------------------------
# What each instance's own files say


def read_config(inst: Instance) -> dict[str, Any]:
    with open(inst.config_path, "rb") as fh:
        return tomllib.load(fh)


def security_paths(inst: Instance) -> dict[str, str]:
    """ca/cert/key from the instance's [security] (PD says cacert-path, TiKV ca-path); empty if unset."""
    security = read_config(inst).get("security", {})
    ca_key = "cacert-path" if inst.component == "pd" else "ca-path"
    paths = {"ca": security.get(ca_key, ""), "cert": security.get("cert-path", ""),
             "key": security.get("key-path", "")}
    return {role: path for role, path in paths.items() if path}


def tls_state(inst: Instance) -> str:
    """`on` / `off` from the config; `partial` or `unreadable config` are states worth seeing."""
    try:
        paths = security_paths(inst)
    except (OSError, ValueError):
        return "unreadable config"
    if not paths:
        return "off"
    return "on" if len(paths) == 3 else "partial"


def pd_client_url(inst: Instance) -> str:
    """The URL PD's client port is reached at: advertised before listened-on (a listener may be
    0.0.0.0), and the run script's flags before pd.toml (flags win in PD)."""
    try:
        with open(inst.run_script, encoding="utf-8") as fh:
            script = fh.read()
        config = read_config(inst)
    except (OSError, ValueError):
        script, config = "", {}
    for key in ("advertise-client-urls", "client-urls"):
        match = re.search(rf'(?<![\w-])--{key}[= ]"?([^"\s\\]+)', script)
        urls = match.group(1) if match else config.get(key, "")
        if urls:
            return urls.split(",")[0]
    return f"http://{inst.address}"


def pd_endpoint(inst: Instance) -> tuple[str, ssl.SSLContext | None]:
    """host:port and the TLS context (this PD's own cert) to reach PD's client port."""
    url = pd_client_url(inst)
    if common.url_scheme(url) != "https":
        return common.strip_scheme(url), None
    paths = security_paths(inst)
    return common.strip_scheme(url), common.client_context(paths.get("ca"), paths.get("cert"), paths.get("key"))


def pd_request(lab: Lab, method: str, path: str, body: Any = None) -> tuple[str, int, Any]:
    """Ask the first running PD that answers; returns (instance name, HTTP status, body)."""
    failures = []
    for inst in lab.of("pd"):
        if not services.is_running(inst):
            continue
        try:
            hostport, tls = pd_endpoint(inst)
            status, data = common.http_json(method, hostport, PD_API + path, body, tls, PD_TIMEOUT_SECONDS)
            return inst.name, status, data
        except (OSError, ValueError) as exc:
            failures.append(f"{inst.name}: {exc}")
    raise PdUnreachable("no PD answered: " + ("; ".join(failures) or "no PD is running"))


def leader_instance(lab: Lab) -> str | None:
    """The lab instance name of the PD leader, or None when no PD says."""
    try:
        _asked, status, leader = pd_request(lab, "GET", "/leader")
    except PdUnreachable:
        return None
    if status != 200 or not isinstance(leader, dict):
        return None
    return {inst.pd_name: inst.name for inst in lab.of("pd")}.get(leader.get("name"))


# ---------------------------------------------------------------------------------------------
# The snapshot


def instance_rows(lab: Lab) -> list[dict[str, Any]]:
    rows = []
    for inst in lab.instances:
        running = services.is_running(inst)
        row = {"name": inst.name, "component": inst.component, "running": running,
               "pid": inst.pid if running else None, "ports": inst.ports, "tls": tls_state(inst),
               "deploy_dir": inst.deploy_dir}
        if inst.component == "pd":
            row["client_url"] = pd_client_url(inst)
        rows.append(row)
    return rows


def add_pd_view(lab: Lab, snap: Snapshot) -> None:
    """Leader and member health as PD reports them (GET /members and /health)."""
    by_pd_name = {inst.pd_name: inst.name for inst in lab.of("pd")}
    snap.pd_asked, status, members = pd_request(lab, "GET", "/members")
    if status != 200 or not isinstance(members, dict):
        snap.problems.append(Problem(snap.pd_asked, f"GET /members answered {status}: {members}"))
        return
    snap.leader = (members.get("leader") or {}).get("name")
    if not snap.leader:
        snap.problems.append(Problem(None, "PD has no leader"))
    _asked, status, health = pd_request(lab, "GET", "/health")
    healthy = {m.get("name"): m.get("health") for m in health} if status == 200 and isinstance(health, list) else {}
    for member in members.get("members", []):
        name = member.get("name")
        snap.members.append({"name": name, "instance": by_pd_name.get(name), "health": healthy.get(name, False),
                             "leader": name == snap.leader, "client_urls": member.get("client_urls", []),
                             "peer_urls": member.get("peer_urls", [])})
        if not healthy.get(name):
            snap.problems.append(Problem(by_pd_name.get(name), f"PD member {name} is not healthy"))
    missing = set(by_pd_name) - {m["name"] for m in snap.members}
    for name in sorted(missing):
        snap.problems.append(Problem(by_pd_name[name], f"{name} is not a member of the PD cluster"))


def add_store_view(lab: Lab, snap: Snapshot) -> None:
    """Every lab TiKV must be a store in state Up (GET /stores)."""
    by_address = {inst.address: inst.name for inst in lab.of("tikv")}
    _asked, status, data = pd_request(lab, "GET", "/stores")
    if status != 200 or not isinstance(data, dict):
        snap.problems.append(Problem(snap.pd_asked, f"GET /stores answered {status}: {data}"))
        return
    for entry in data.get("stores") or []:
        store, store_status = entry.get("store", {}), entry.get("status", {})
        name = by_address.get(store.get("address"))
        snap.stores.append({"id": store.get("id"), "address": store.get("address"), "instance": name,
                            "state_name": store.get("state_name"),
                            "leader_count": store_status.get("leader_count")})
        if store.get("state_name") != "Up":
            snap.problems.append(Problem(name, f"store {store.get('id')} ({store.get('address')}) is "
                                               f"{store.get('state_name')}"))
    registered = {s["address"] for s in snap.stores}
    for address, name in by_address.items():
        if address not in registered:
            snap.problems.append(Problem(name, f"no store registered for {address}"))


def snapshot(lab: Lab, with_stores: bool = True) -> Snapshot:
    """Health of the whole lab, or (with_stores=False) of the PD cluster alone."""
    snap = Snapshot(instances=instance_rows(lab))
    for row in snap.instances:
        if not row["running"] and (with_stores or row["component"] == "pd"):
            snap.problems.append(Problem(row["name"], "not running"))
    try:
        add_pd_view(lab, snap)
        if with_stores:
            add_store_view(lab, snap)
    except PdUnreachable as exc:
        snap.problems.append(Problem(None, str(exc)))
    return snap


def pd_leader_elected(lab: Lab) -> Snapshot:
    """What `up` waits for before starting TiKVs: every PD running, a leader, every member healthy."""
    return snapshot(lab, with_stores=False)

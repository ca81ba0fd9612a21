"""Health of a netns lab: each host looked at from inside, the views merged into one Snapshot.

An instance's files (config, run script, TLS material) exist only inside its host's mount
namespace, so `health` cannot read them from outside. Each host is probed from inside
(`python -m tikvlab.netns_health ROOT HOST`, entered with nsenter): its instances' rows and, from
one host with a running PD, PD's view of members and stores, asked with that PD's own certificate
as in local mode. Processes are checked by PID from outside (one PID namespace).

Run as a module inside a host, prints the host's view as JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
from typing import Any

from . import health, layout, netns, services
from .health import Problem, Snapshot
from .layout import Lab

PROBE_TIMEOUT_SECONDS = 30.0
# PD's /health pings every member; one behind a partition costs its connect timeout (~2.5 s with the
# stand-in), more than the 2 s local mode allows per request (where a stopped member refuses at once).
PD_TIMEOUT_SECONDS = 6.0


def host_view(root: str, host_name: str, pd_view: bool, with_stores: bool) -> dict[str, Any]:
    """Inside `host_name`: rows of its instances and, if asked, PD's view through its own PDs only
    (the other hosts' PDs are hidden by clearing their PIDs, so health asks only PDs whose
    certificates this host holds)."""
    lab = services.load_lab(root)
    state = netns.load_state(root)
    address = state.host(host_name).address
    local = [inst for inst in lab.instances if inst.host == address]
    view: dict[str, Any] = {"host": host_name, "rows": health.instance_rows(dataclasses.replace(lab, instances=local))}
    if pd_view:
        only_local = dataclasses.replace(lab, instances=[
            inst if inst.host == address or inst.component != "pd" else dataclasses.replace(inst, pid=None)
            for inst in lab.instances])
        snap = Snapshot()
        try:
            health.add_pd_view(only_local, snap)
            if with_stores:
                health.add_store_view(only_local, snap)
            view["pd"] = {"asked": snap.pd_asked, "leader": snap.leader, "members": snap.members,
                          "stores": snap.stores,
                          "problems": [{"instance": p.instance, "text": p.text} for p in snap.problems]}
        except health.PdUnreachable as exc:
            view["pd_error"] = str(exc)
    return view


def probe_argv(lab: Lab, state: netns.NetnsState, host: netns.Host, pd_view: bool, with_stores: bool) -> list[str]:
    args = [layout.venv_python(), "-m", "tikvlab.netns_health", lab.root, host.name]
    args += ["--pd-view"] if pd_view else []
    args += ["--with-stores"] if with_stores else []
    # env(1) because nsenter passes our environment on and PYTHONPATH must point at the lab.
    return netns.enter_argv(host, ["/usr/bin/env", f"PYTHONPATH={layout.LAB_DIR}", *args])


def probe(lab: Lab, state: netns.NetnsState, requests: list[tuple[netns.Host, bool]], with_stores: bool
          ) -> dict[str, dict[str, Any]]:
    """Probe several hosts at once; returns each host's view (or an `error`)."""
    running = []
    for host, pd_view in requests:
        if not netns.alive(host.holder):
            running.append((host, None))
            continue
        running.append((host, subprocess.Popen(probe_argv(lab, state, host, pd_view, with_stores),
                                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)))
    views = {}
    for host, child in running:
        if child is None:
            views[host.name] = {"error": f"{host.name} is gone (namespace holder not running)"}
            continue
        try:
            out, err = child.communicate(timeout=PROBE_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            child.kill()
            out, err = child.communicate()
        try:
            views[host.name] = json.loads(out)
        except ValueError:
            views[host.name] = {"error": f"probe of {host.name} failed: {err.strip() or out.strip()}"}
    return views


def snapshot(lab: Lab, with_stores: bool = True) -> Snapshot:
    """What health.snapshot says for a local lab, for a netns lab."""
    state = netns.load_state(lab.root)
    hosts = [h for h in state.hosts if any(inst.host == h.address for inst in lab.instances)]
    pd_hosts = [h for h in hosts if any(services.is_running(i) for i in lab.of("pd") if i.host == h.address)]
    first = pd_hosts[0].name if pd_hosts else None
    views = probe(lab, state, [(h, h.name == first) for h in hosts], with_stores)
    pd_view = views.get(first, {}) if first else {}
    errors = [pd_view["pd_error"]] if "pd_error" in pd_view else []
    for host in pd_hosts[1:]:
        if "pd" in pd_view:
            break
        pd_view = probe(lab, state, [(host, True)], with_stores)[host.name]
        errors += [pd_view["pd_error"]] if "pd_error" in pd_view else []
    rows = {row["name"]: row for view in views.values() for row in view.get("rows", [])}
    snap = Snapshot()
    for inst in lab.instances:
        row = rows.get(inst.name) or {"name": inst.name, "component": inst.component,
                                      "running": services.is_running(inst), "pid": inst.pid,
                                      "ports": inst.ports, "tls": "unknown", "deploy_dir": inst.deploy_dir}
        row["host"] = state.host_of_address(inst.host).name
        snap.instances.append(row)
        if not row["running"] and (with_stores or row["component"] == "pd"):
            snap.problems.append(Problem(row["name"], "not running"))
    for view in views.values():
        if "error" in view:
            snap.problems.append(Problem(None, view["error"]))
    if "pd" in pd_view:
        pd = pd_view["pd"]
        snap.pd_asked, snap.leader, snap.members, snap.stores = pd["asked"], pd["leader"], pd["members"], pd["stores"]
        snap.problems += [Problem(p["instance"], p["text"]) for p in pd["problems"]]
    else:
        snap.problems.append(Problem(None, "no PD answered: " + ("; ".join(errors) or "no PD is running")))
    return snap


def pd_leader_elected(lab: Lab) -> Snapshot:
    return snapshot(lab, with_stores=False)


def leader_instance(lab: Lab) -> str | None:
    snap = snapshot(lab, with_stores=False)
    return next((m["instance"] for m in snap.members if m["leader"]), None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tikvlab.netns_health",
                                     description="one lab host's view of itself (run inside the host)")
    parser.add_argument("root")
    parser.add_argument("host")
    parser.add_argument("--pd-view", action="store_true")
    parser.add_argument("--with-stores", action="store_true")
    args = parser.parse_args(argv)
    health.PD_TIMEOUT_SECONDS = PD_TIMEOUT_SECONDS
    json.dump(host_view(os.path.abspath(args.root), args.host, args.pd_view, args.with_stores), sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())

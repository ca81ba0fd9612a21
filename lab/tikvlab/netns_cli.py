"""The `tikv-lab` subcommands for a netns lab (cli.py dispatches here when the lab's mode is netns).

`up --mode netns` builds the hosts (netns.py), writes their files (netns_layout.py) and starts
every instance through its host's `service <name> start`, i.e. the init script the collection's
`ansible.builtin.service` tasks use too. Commands about one instance (`service`, `fault`) run inside
that instance's host (nsenter on the host's namespace holder), where its paths exist.

Run as a module (`python -m tikvlab.netns_cli watch ...`) it is the background watcher behind
`fault HOST partition --after-restart INSTANCE`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable

import yaml

from . import layout, netns, netns_health, netns_layout, services
from .health import Snapshot
from .layout import Instance, Lab
from .netns import NetnsError, NetnsState

SERVICE_USER = "tidb"
PD_LEADER_TIMEOUT = 45.0
WAIT_POLL_SECONDS = 1.0
WATCH_POLL_SECONDS = 0.2


def is_netns(root: str) -> bool:
    return os.path.exists(netns.state_path(root))


# ---------------------------------------------------------------------------------------------
# up / down


def up(args: argparse.Namespace, wait_until: Callable[[Callable[[], Snapshot], float], Snapshot]) -> int:
    """Everything is recorded before it is made; on failure the lab stays for inspection and `down`
    removes whatever was made."""
    began = time.monotonic()
    why = netns.why_impossible()
    if why:
        raise NetnsError(why)
    os.makedirs(args.root, exist_ok=True)
    state = netns.plan(args.root, args.hosts, args.subnet, SERVICE_USER)
    lab = Lab(root=args.root, base_port=netns_layout.PD_CLIENT_PORT, pd_version=args.pd_version,
              tikv_version=args.tikv_version, tls=args.tls, mode="netns")
    netns_layout.plan_instances(lab, state, args.pd, args.tikv)
    try:
        layout.etcd_binary(lab.pd_version)
    except layout.LayoutError as exc:
        raise NetnsError(str(exc)) from None
    netns.save_state(state)
    services.save_lab(lab)
    keep = f"(the lab is left as is for inspection; `tikv-lab --root {args.root} down` removes it)"
    try:
        build_hosts(lab, state)
        start_and_wait(lab, state, [i.name for i in lab.of("pd")], netns_health.pd_leader_elected,
                       PD_LEADER_TIMEOUT, "PD did not elect a leader", wait_until)
        start_and_wait(lab, state, [i.name for i in lab.of("tikv")], netns_health.snapshot, args.timeout,
                       "not every store came Up", wait_until)
    except NetnsError as exc:
        raise NetnsError(f"{exc}\n{keep}") from None
    mode = "TLS" if args.tls else "plaintext"
    print(f"lab up at {args.root}: {args.pd} PD + {args.tikv} TiKV on {len(state.hosts)} hosts "
          f"({state.subnet}, netns), {mode}, healthy in {time.monotonic() - began:.1f} s")
    for host in state.hosts:
        names = ", ".join(i.name for i in lab.instances if i.host == host.address)
        print(f"  {host.name} {host.address}: {names}")
    print(f"next: tikv-lab --root {args.root} inventory > inventory.yml   (Ansible over SSH as root)")
    return 0


def build_hosts(lab: Lab, state: NetnsState) -> None:
    netns_layout.write_lab(lab, state)
    netns.make_mountpoints(state)
    netns.make_bridge(state)
    for host in state.hosts:
        netns.make_host_network(state, host)
    needed = netns_layout.interpreter_paths(lab)
    for host in state.hosts:
        netns.start_holder(state, host)
        netns.save_state(state)
        netns.mount_host(state, host, netns.shadow_mounts(state, host, needed))
        netns.start_sshd(state, host, os.path.join(state.host_dir(host), "sshd_config"))
    netns.wait_sshd(state, state.hosts)


def service_in_host(lab: Lab, state: NetnsState, names: list[str], action: str) -> None:
    """`service <unit> <action>` inside each instance's host, all at once (PDs need each other)."""
    children = []
    for name in names:
        inst = lab.instance(name)
        argv = netns.enter_argv(netns_layout.host_of(state, inst),
                                [netns.tool("service"), netns_layout.service_name(inst), action])
        children.append((inst, subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)))
    failed = []
    for inst, child in children:
        out, _err = child.communicate()
        if child.returncode != 0:
            failed.append(f"{inst.name}: `service {netns_layout.service_name(inst)} {action}` on "
                          f"{netns_layout.host_of(state, inst).name} exited {child.returncode}\n{out.rstrip()}")
    if failed:
        raise NetnsError("\n".join(failed))


def start_and_wait(lab: Lab, state: NetnsState, names: list[str], check: Callable[[Lab], Snapshot], timeout: float,
                   what: str, wait_until: Callable[[Callable[[], Snapshot], float], Snapshot]) -> None:
    service_in_host(lab, state, names, "start")
    snap = wait_until(lambda: check(services.load_lab(lab.root)), timeout)
    if not snap.healthy:
        raise NetnsError(f"{what} within {timeout:.0f} s\n{explain(services.load_lab(lab.root), state, snap)}")


def log_tail(lab: Lab, state: NetnsState, inst: Instance, lines: int = 15) -> str:
    """The instance's logs, read from outside through its host's tree."""
    return services.log_tail(netns_layout.outside_instance(state, inst), lines)


def explain(lab: Lab, state: NetnsState, snap: Snapshot, lines: int = 15) -> str:
    text = ["problems:"] + [f"  {p}" for p in snap.problems]
    for name in sorted({p.instance for p in snap.problems if p.instance}):
        text.append(f"--- {name} log tail ---")
        text.append(log_tail(lab, state, lab.instance(name), lines))
    return "\n".join(text)


def down(root: str) -> int:
    """Instances first (by PID, the PD leader last, as in local mode), then every process left in the
    hosts' namespaces, the namespaces, the links, the mount points; then the root."""
    state = netns.load_state(root)
    stop_problem = None
    try:
        lab = services.load_lab(root)
        leader = None
        if any(netns.alive(h.holder) for h in state.hosts):
            try:
                leader = netns_health.leader_instance(lab)
            except (NetnsError, OSError, KeyError, ValueError):
                leader = None
        rest = [i.name for i in lab.instances if i.name != leader]
        for wave in ([rest, [leader]] if leader else [rest]):
            services.stop(root, wave)
    except services.NoLab:
        pass
    except services.ServiceError as exc:
        stop_problem = str(exc)
    with netns.locked_state(root) as locked:
        problems = netns.teardown(locked)
    if problems:
        raise NetnsError(f"could not remove everything: {'; '.join(problems)}; {root} is kept "
                         f"(netns.json lists what is left; run down again)")
    shutil.rmtree(root)
    note = f" (instances: {stop_problem}; killed with their hosts)" if stop_problem else ""
    print(f"lab at {root} stopped and removed: {len(state.hosts)} hosts, bridge {state.bridge}{note}")
    return 0


# ---------------------------------------------------------------------------------------------
# status / inventory


def status(root: str, as_json: bool, print_snapshot: Callable[[Lab, Snapshot], None]) -> int:
    lab = services.load_lab(root)
    state = netns.load_state(root)
    snap = netns_health.snapshot(lab)
    hosts = [{"name": h.name, "address": h.address, "netns": h.netns, "partitioned": h.partitioned,
              "sshd_running": netns.alive(h.sshd),
              "instances": [i.name for i in lab.instances if i.host == h.address]} for h in state.hosts]
    if as_json:
        print(json.dumps({**snap.to_json(), "hosts": hosts}, indent=2))
    else:
        print_snapshot(lab, snap)
        print(f"hosts (bridge {state.bridge}, {state.subnet}):")
        for row in hosts:
            flags = ("PARTITIONED" if row["partitioned"] else "linked") + ("" if row["sshd_running"] else ", sshd DOWN")
            print(f"  {row['name']:<7} {row['address']:<15} {flags:<12} {', '.join(row['instances'])}")
    return 0 if snap.healthy else 1


def wait(root: str, timeout: float, wait_until: Callable[[Callable[[], Snapshot], float], Snapshot]) -> int:
    snap = wait_until(lambda: netns_health.snapshot(services.load_lab(root)), timeout)
    if not snap.healthy:
        lab = services.load_lab(root)
        raise NetnsError(f"not healthy within {timeout:.0f} s\n{explain(lab, netns.load_state(root), snap)}")
    print("healthy")
    return 0


def print_inventory(root: str) -> int:
    lab = services.load_lab(root)
    state = netns.load_state(root)
    print(f"# tikv-lab inventory for {lab.root} (netns mode: Ansible over SSH as root)")
    print(yaml.safe_dump(netns_layout.inventory(lab, state), sort_keys=False, default_flow_style=False,
                         width=1000), end="")
    return 0


# ---------------------------------------------------------------------------------------------
# One instance: run the same CLI command inside its host


def in_host_or_here(root: str, inst: Instance, argv: list[str]) -> int | None:
    """None when this process already runs in the instance's host (go on here); else run `tikv-lab
    <argv>` there and return its exit code (its output goes straight through)."""
    state = netns.load_state(root)
    host = netns_layout.host_of(state, inst)
    if netns.inside(host):
        return None
    return subprocess.run(netns.enter_argv(host, [layout.CLI_PATH, "--root", root, *argv]), check=False).returncode


def logs(root: str, name: str, lines: int) -> int:
    lab = services.load_lab(root)
    print(log_tail(lab, netns.load_state(root), lab.instance(name), lines))
    return 0


# ---------------------------------------------------------------------------------------------
# Partition


def resolve_host(lab: Lab, state: NetnsState, name: str) -> netns.Host:
    """A host by its name (host2) or by an instance on it (tikv2)."""
    try:
        return state.host(name)
    except KeyError:
        pass
    try:
        return netns_layout.host_of(state, lab.instance(name))
    except KeyError:
        raise NetnsError(f"{name} is neither a host ({', '.join(h.name for h in state.hosts)}) nor an "
                         f"instance ({', '.join(i.name for i in lab.instances)})") from None


def partition(root: str, name: str, cut: bool, after_restart: str | None, timeout: float) -> int:
    lab = services.load_lab(root)
    state = netns.load_state(root)
    host = resolve_host(lab, state, name)
    names = ", ".join(i.name for i in lab.instances if i.host == host.address)
    if after_restart:
        watched = [n.strip() for n in after_restart.split(",") if n.strip()]
        for watched_name in watched:
            lab.instance(watched_name)
        argv = [layout.venv_python(), "-m", "tikvlab.netns_cli", "watch", root, host.name,
                "partition" if cut else "heal", ",".join(watched), str(timeout)]
        env = {**os.environ, "PYTHONPATH": layout.LAB_DIR}
        with open(os.path.join(root, "watchers.log"), "ab") as log:
            child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True, close_fds=True, env=env)
        with netns.locked_state(root) as locked:
            locked.watchers.append(netns.proc(child.pid))
        print(f"{host.name} ({names}): {'partition' if cut else 'heal'} as soon as {', '.join(watched)} "
              f"restarts (watcher pid {child.pid}, gives up after {timeout:.0f} s)")
        return 0
    with netns.locked_state(root) as locked:
        netns.set_partition(locked, locked.host(host.name), cut)
    print(f"{host.name} ({names}): link {'down: partitioned from every other host and the controller' if cut else 'up again'}")
    return 0


def watch(root: str, host_name: str, action: str, names: list[str], timeout: float) -> int:
    """Background: apply the partition (or heal) when any watched instance's PID changes."""
    deadline = time.monotonic() + timeout
    try:
        first = {n: services.load_lab(root).instance(n).pid for n in names}
        while time.monotonic() < deadline:
            lab = services.load_lab(root)
            changed = [n for n in names if lab.instance(n).pid not in (first[n], None)]
            if changed:
                with netns.locked_state(root) as locked:
                    netns.set_partition(locked, locked.host(host_name), action == "partition")
                print(f"{time.strftime('%H:%M:%S')} {changed[0]} restarted: {host_name} {action}", flush=True)
                return 0
            time.sleep(WATCH_POLL_SECONDS)
    except (services.NoLab, NetnsError, FileNotFoundError):
        return 1    # the lab went away
    print(f"{time.strftime('%H:%M:%S')} none of {names} restarted within {timeout:.0f} s: nothing done", flush=True)
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tikvlab.netns_cli")
    sub = parser.add_subparsers(dest="command", required=True)
    watcher = sub.add_parser("watch", help="(internal) apply a partition when an instance restarts")
    watcher.add_argument("root")
    watcher.add_argument("host")
    watcher.add_argument("action", choices=["partition", "heal"])
    watcher.add_argument("names")
    watcher.add_argument("timeout", type=float)
    args = parser.parse_args(argv)
    return watch(args.root, args.host, args.action, args.names.split(","), args.timeout)


if __name__ == "__main__":
    sys.exit(main())

"""`tikv-lab`: bring a local TiKV lab up and down, look at it, break it.

Exit codes: 0 success (healthy for status/wait, running for `service status`), 1 failure or
unhealthy, 2 usage error, 3 `service status` of a stopped instance (as init scripts answer).
"""

from __future__ import annotations

import argparse
import grp
import json
import os
import pwd
import shutil
import socket
import sys
import time
from collections.abc import Callable

import yaml

from . import health, layout, netns_cli, services
from .layout import Instance, Lab
from .netns import NetnsError

DEFAULT_BASE_PORT = 23000
DEFAULT_VERSION = "v8.5.0"
PD_LEADER_TIMEOUT = 30.0
WAIT_POLL_SECONDS = 0.5
EXIT_STOPPED = 3
MAX_PD = 10

DESCRIPTION = """\
A local TiKV cluster made of stand-ins for pd-server and tikv-server, laid out the way TiUP deploys
one (tidb-deploy/<component>-<port>/{bin,conf,scripts,log,tls}). PD runs a real etcd; TLS behaves as
in TiKV and PD, so a TLS mistake shows up as a Disconnected store, a refused handshake or a log line.
In local mode (the default) everything runs as the current user on 127.0.0.1; nothing needs root.
As root, `up --mode netns` spreads the instances over hosts made of network + mount namespaces, each
with its own address on a bridge, its own /tidb-deploy, /etc/init.d and sshd: Ansible goes over
SSH, restarts go through the hosts' `service` command, certificates meet real addresses, and a host
can be partitioned.

typical use:
  tikv-lab up                      3 PD + 3 TiKV, plaintext, healthy in seconds
  tikv-lab inventory > lab.yml     an Ansible inventory for the running lab
  tikv-lab status                  processes, PD leader and members, stores (exit 1 if unhealthy)
  tikv-lab service tikv2 restart   what the collection's `command` service manager calls
  tikv-lab down                    stop everything and delete the lab root
  tikv-lab up --mode netns         (root) 3 hosts 10.x.y.11-13, one PD + one TiKV on each, over SSH
  tikv-lab fault host3 partition   (netns) cut host3 off; `fault host3 heal` links it again
"""

EPILOG = """\
lab root: --root, else $TIKV_LAB_ROOT, else <repo>/.lab. State (instances, ports, PIDs) is in
<root>/lab.json. Ports from --base-port B: PD i client B+10i, peer B+10i+1 (its private etcd
client port B+10i+5); TiKV j gRPC B+100+10j, status B+100+10j+1. netns mode: TiUP's ports and
paths on every host (2379/2380, 20160/20180, /tidb-deploy/<component>-<port>); state also in
<root>/netns.json; hosts' private trees under <root>/hosts/<host>/.
"""


class LabError(Exception):
    """A user-facing failure: the message says which instance and why."""


# ---------------------------------------------------------------------------------------------
# Helpers


def default_root() -> str:
    return os.environ.get("TIKV_LAB_ROOT") or os.path.join(layout.REPO, ".lab")


def port_in_use(port: int) -> bool:
    """True when something listens on 127.0.0.1:port (SO_REUSEADDR, as servers bind, so TIME_WAIT
    connections left by a previous lab do not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((layout.LOCAL_HOST, port))
            return False
        except OSError:
            return True


def check_ports_free(lab: Lab) -> None:
    for inst in lab.instances:
        for role, port in inst.ports.items():
            if port_in_use(port):
                raise LabError(f"{inst.name}: port {port} ({role}) is already in use; "
                               f"pick another --base-port")


def wait_until(check: Callable[[], health.Snapshot], timeout: float) -> health.Snapshot:
    """Poll `check` until it reports healthy or `timeout` passes; returns the last snapshot."""
    deadline = time.monotonic() + timeout
    while True:
        snap = check()
        if snap.healthy or time.monotonic() >= deadline:
            return snap
        time.sleep(WAIT_POLL_SECONDS)


def explain(lab: Lab, snap: health.Snapshot, lines: int = 15) -> str:
    """The problems, then the log tail of every instance they name."""
    text = ["problems:"] + [f"  {p}" for p in snap.problems]
    named = sorted({p.instance for p in snap.problems if p.instance})
    for name in named:
        text.append(f"--- {name} log tail ---")
        text.append(services.log_tail(lab.instance(name), lines))
    return "\n".join(text)


def instance_or_error(lab: Lab, name: str) -> Instance:
    try:
        return lab.instance(name)
    except KeyError as exc:
        raise LabError(exc.args[0]) from None


# ---------------------------------------------------------------------------------------------
# up / down


def check_root_unused(root: str) -> None:
    """The root must be new or empty: `down` deletes it, so never adopt a directory with other files."""
    if os.path.exists(services.state_path(root)):
        raise LabError(f"a lab already exists at {root}; run `tikv-lab --root {root} down` first")
    if os.path.isdir(root) and os.listdir(root):
        raise LabError(f"{root} is not empty and holds no lab; choose an empty or new --root")


def check_counts(pd: int, tikv: int) -> None:
    """PD i uses ports B+10i..B+10i+5, so more than 10 PDs would run into the TiKV block at B+100."""
    if not 1 <= pd <= MAX_PD:
        raise LabError(f"--pd must be between 1 and {MAX_PD}")
    if tikv < 0:
        raise LabError("--tikv must not be negative")


def cmd_up(args: argparse.Namespace) -> int:
    began = time.monotonic()
    check_counts(args.pd, args.tikv)
    check_root_unused(args.root)
    if args.mode == "netns":
        return netns_cli.up(args, wait_until)
    lab = layout.plan(args.root, args.pd, args.tikv, args.base_port, args.pd_version,
                      args.tikv_version, args.tls)
    check_ports_free(lab)
    lay_out(lab)
    start_and_wait(lab, [i.name for i in lab.of("pd")], health.pd_leader_elected, PD_LEADER_TIMEOUT,
                   "PD did not elect a leader")
    start_and_wait(lab, [i.name for i in lab.of("tikv")], health.snapshot, args.timeout,
                   "not every store came Up")
    mode = "TLS" if args.tls else "plaintext"
    print(f"lab up at {args.root}: {args.pd} PD + {args.tikv} TiKV, {mode}, healthy in "
          f"{time.monotonic() - began:.1f} s")
    print(f"next: tikv-lab --root {args.root} inventory > inventory.yml")
    return 0


def lay_out(lab: Lab) -> None:
    """lab.json first, so whatever happens next `down` can clean up; the etcd binary is checked
    before anything is written, so a missing etcd leaves nothing behind."""
    try:
        layout.etcd_binary(lab.pd_version)
    except layout.LayoutError as exc:
        raise LabError(str(exc)) from None
    os.makedirs(lab.root, exist_ok=True)
    services.save_lab(lab)
    layout.write_lab(lab)


def start_and_wait(lab: Lab, names: list[str], check: Callable[[Lab], health.Snapshot],
                   timeout: float, what: str) -> None:
    """Start instances together, then wait for `check`; a failure keeps the lab for inspection."""
    keep = f"(the lab is left as is for inspection; `tikv-lab --root {lab.root} down` removes it)"
    try:
        services.start(lab.root, names)
    except services.ServiceError as exc:
        raise LabError(f"{exc}\n{keep}") from None
    snap = wait_until(lambda: check(services.load_lab(lab.root)), timeout)
    if not snap.healthy:
        details = explain(services.load_lab(lab.root), snap)
        raise LabError(f"{what} within {timeout:.0f} s\n{details}\n{keep}")


def shutdown_waves(lab: Lab) -> list[list[str]]:
    """Everything but the PD leader, then the leader. On SIGTERM etcd's leader hands leadership to
    its best-connected peer and waits up to 7 s when that peer is itself stopping; stopped last, it
    has no live peer and exits at once."""
    leader = health.leader_instance(lab)
    rest = [inst.name for inst in lab.instances if inst.name != leader]
    return [rest, [leader]] if leader else [rest]


def cmd_down(args: argparse.Namespace) -> int:
    if not os.path.exists(args.root):
        print(f"no lab at {args.root}; nothing to do")
        return 0
    if netns_cli.is_netns(args.root):
        return netns_cli.down(args.root)
    lab = services.load_lab(args.root)
    try:
        for wave in shutdown_waves(lab):
            services.stop(args.root, wave)
    except services.ServiceError as exc:
        raise LabError(f"{exc}; {args.root} is kept so its PIDs stay recorded") from None
    busy = [port for port in layout.all_ports(lab) if port_in_use(port)]
    if busy:
        print(f"warning: ports {busy} are still in use by processes the lab did not start", file=sys.stderr)
    shutil.rmtree(args.root)
    print(f"lab at {args.root} stopped and removed")
    return 0


# ---------------------------------------------------------------------------------------------
# status / wait / inventory / logs


def format_ports(ports: dict[str, int]) -> str:
    return " ".join(f"{role}={port}" for role, port in ports.items())


def print_snapshot(lab: Lab, snap: health.Snapshot) -> None:
    print(f"lab {lab.root} ({lab.mode} mode, PD {lab.pd_version}, TiKV {lab.tikv_version})")
    for row in snap.instances:
        state = f"running pid {row['pid']}" if row["running"] else "stopped"
        url = f" {row['client_url']}" if "client_url" in row else ""
        print(f"  {row['name']:<7} {state:<18} tls={row['tls']:<4} {format_ports(row['ports'])}{url}")
    if snap.pd_asked:
        print(f"PD (asked {snap.pd_asked}): leader {snap.leader or '-'}")
    for member in snap.members:
        flags = ("healthy" if member["health"] else "UNHEALTHY") + (", leader" if member["leader"] else "")
        print(f"  {member['name']:<22} {flags}  peer {','.join(member['peer_urls'])}")
    if snap.stores:
        print("stores:")
    for store in snap.stores:
        print(f"  {store['id']:<4} {store['address']:<18} {store['state_name']:<13} "
              f"{store['instance'] or '?':<7} leaders={store['leader_count']}")
    print("healthy" if snap.healthy else "UNHEALTHY:\n" + "\n".join(f"  {p}" for p in snap.problems))


def cmd_status(args: argparse.Namespace) -> int:
    lab = services.load_lab(args.root)
    if lab.mode == "netns":
        return netns_cli.status(args.root, args.json, print_snapshot)
    snap = health.snapshot(lab)
    if args.json:
        print(json.dumps(snap.to_json(), indent=2))
    else:
        print_snapshot(lab, snap)
    return 0 if snap.healthy else 1


def cmd_wait(args: argparse.Namespace) -> int:
    if services.load_lab(args.root).mode == "netns":
        return netns_cli.wait(args.root, args.timeout, wait_until)
    snap = wait_until(lambda: health.snapshot(services.load_lab(args.root)), args.timeout)
    if not snap.healthy:
        raise LabError(f"not healthy within {args.timeout:.0f} s\n{explain(services.load_lab(args.root), snap)}")
    print("healthy")
    return 0


def inventory(lab: Lab) -> dict:
    """The Ansible inventory for the lab (shape: lab/DESIGN.md), usable as is."""
    cli = f"{layout.CLI_PATH} --root {lab.root} service {{{{ inventory_hostname }}}}"
    pd_hosts = {inst.name: layout.inventory_hostvars(inst) for inst in lab.of("pd")}
    tikv_hosts = {inst.name: layout.inventory_hostvars(inst) for inst in lab.of("tikv")}
    return {"all": {
        "vars": {
            "ansible_connection": "local",
            "ansible_python_interpreter": layout.venv_python(),
            "tikv_tls_service_manager": "command",
            "tikv_tls_service_user": pwd.getpwuid(os.getuid()).pw_name,
            "tikv_tls_service_group": grp.getgrgid(os.getgid()).gr_name,
            "tikv_tls_service_commands": {action: f"{cli} {action}"
                                          for action in ("start", "stop", "restart", "status")},
            "tikv_tls_lab_root": lab.root,
        },
        "children": {"pd": {"hosts": pd_hosts}, "tikv": {"hosts": tikv_hosts}},
    }}


def cmd_inventory(args: argparse.Namespace) -> int:
    lab = services.load_lab(args.root)
    if lab.mode == "netns":
        return netns_cli.print_inventory(args.root)
    print(f"# tikv-lab inventory for {lab.root}")
    print(yaml.safe_dump(inventory(lab), sort_keys=False, default_flow_style=False, width=1000), end="")
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    lab = services.load_lab(args.root)
    inst = instance_or_error(lab, args.instance)
    if lab.mode == "netns":
        return netns_cli.logs(args.root, inst.name, args.lines)
    print(services.log_tail(inst, args.lines))
    return 0


# ---------------------------------------------------------------------------------------------
# service / fault


def cmd_service(args: argparse.Namespace) -> int:
    lab = services.load_lab(args.root)
    inst = instance_or_error(lab, args.instance)
    if lab.mode == "netns":
        # The instance's paths exist only on its host: run this same command there.
        elsewhere = netns_cli.in_host_or_here(args.root, inst, ["service", inst.name, args.action])
        if elsewhere is not None:
            return elsewhere
    try:
        if args.action == "status":
            running, inst = services.status(args.root, inst.name)
            print(f"{inst.name} running (pid {inst.pid})" if running else f"{inst.name} stopped")
            return 0 if running else EXIT_STOPPED
        if args.action in ("stop", "restart"):
            services.stop(args.root, [inst.name])
            print(f"{inst.name} stopped")
        if args.action in ("start", "restart"):
            already = services.start(args.root, [inst.name])
            inst = services.load_lab(args.root).instance(inst.name)
            print(f"{inst.name} {'already running' if already else 'started'} (pid {inst.pid})")
    except services.ServiceError as exc:
        raise LabError(str(exc)) from None
    return 0


def cmd_fault(args: argparse.Namespace) -> int:
    lab = services.load_lab(args.root)
    if args.fault in ("partition", "heal"):
        if lab.mode != "netns":
            raise LabError(f"{args.fault} needs netns mode (every host its own network namespace); "
                           "in local mode all instances share 127.0.0.1, so there is nothing to cut")
        return netns_cli.partition(args.root, args.instance, args.fault == "partition", args.after_restart,
                                   args.watch_timeout)
    if args.after_restart:
        raise LabError("--after-restart applies to partition and heal only")
    inst = instance_or_error(lab, args.instance)
    if lab.mode == "netns":
        argv = ["fault", inst.name, args.fault] + ([args.arg] if args.arg is not None else [])
        elsewhere = netns_cli.in_host_or_here(args.root, inst, argv)
        if elsewhere is not None:
            return elsewhere
    if args.fault in ("slow-start", "corrupt") and args.arg is None:
        raise LabError(f"fault {args.fault} needs an argument "
                       f"({'SECONDS' if args.fault == 'slow-start' else 'FILE relative to the deploy dir'})")
    try:
        print(services.fault(args.root, inst.name, args.fault, args.arg))
    except (services.ServiceError, ValueError) as exc:
        raise LabError(str(exc)) from None
    return 0


# ---------------------------------------------------------------------------------------------
# Parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tikv-lab", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=default_root(),
                        help="lab directory (default: $TIKV_LAB_ROOT or <repo>/.lab; now %(default)s)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = sub.add_parser("up", help="lay out and start a cluster, return when it is healthy")
    up.add_argument("--pd", type=int, default=3, help="number of PD instances (default 3)")
    up.add_argument("--tikv", type=int, default=3, help="number of TiKV instances (default 3)")
    up.add_argument("--base-port", type=int, default=DEFAULT_BASE_PORT, help="first port (default 23000)")
    up.add_argument("--pd-version", default=DEFAULT_VERSION,
                    help="PD version to behave as (default v8.5.0; <= v8.3 runs etcd 3.4, else 3.5)")
    up.add_argument("--tikv-version", default=DEFAULT_VERSION, help="TiKV version to behave as")
    up.add_argument("--tls", action="store_true",
                    help="bring it up with TLS already on: throwaway CA in <root>/ca, per-instance certs "
                         "in tls/, [security] in the configs, https in run_pd.sh, client cert in "
                         "<root>/client-tls")
    up.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for every store Up")
    up.add_argument("--mode", choices=["local", "netns"], default="local",
                    help="local (default): every instance on 127.0.0.1 with its own ports; netns (root): "
                         "hosts made of namespaces with their own addresses, sshd and init scripts, TiUP's "
                         "ports and paths; Ansible over SSH")
    up.add_argument("--hosts", type=int, default=3,
                    help="netns: number of hosts; instances are spread round-robin (default 3)")
    up.add_argument("--subnet", help="netns: the hosts' IPv4 network (default: a free 10.x.y.0/24)")
    up.set_defaults(func=cmd_up)

    sub.add_parser("down", help="stop every instance and remove the lab root").set_defaults(func=cmd_down)

    status = sub.add_parser("status", help="processes, TLS per instance, PD leader/members, stores; "
                                           "exit 1 if unhealthy")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(func=cmd_status)

    wait = sub.add_parser("wait", help="wait until healthy: a PD leader, all members healthy, all stores Up")
    wait.add_argument("--timeout", type=float, default=60.0, help="seconds (default 60)")
    wait.set_defaults(func=cmd_wait)

    sub.add_parser("inventory", help="print an Ansible YAML inventory for the lab").set_defaults(func=cmd_inventory)

    service = sub.add_parser("service", help="start/stop/restart/status one instance (like an init script)")
    service.add_argument("instance", help="pd1..pdN or tikv1..tikvM")
    service.add_argument("action", choices=["start", "stop", "restart", "status"])
    service.set_defaults(func=cmd_service)

    fault = sub.add_parser("fault", help="break an instance on purpose",
                           description="kill: SIGKILL the process group; hang / resume: SIGSTOP / SIGCONT; "
                                       "crash-on-tls: the next start exits 1 if TLS is configured; "
                                       "slow-start SECONDS: the next start waits before serving; "
                                       "pin-leaders: the store keeps its leaders; corrupt FILE: overwrite a "
                                       "file of the deploy dir with garbage; clear: remove fault files; "
                                       "partition / heal (netns mode): the host's link down / up again, "
                                       "INSTANCE may name the host (host2) or an instance on it")
    fault.add_argument("instance")
    fault.add_argument("fault", choices=["kill", "hang", "resume", "crash-on-tls", "slow-start",
                                         "pin-leaders", "corrupt", "clear", "partition", "heal"])
    fault.add_argument("arg", nargs="?", help="SECONDS for slow-start, FILE for corrupt")
    fault.add_argument("--after-restart", metavar="INSTANCE[,INSTANCE]",
                       help="partition/heal: return at once and act in the background as soon as one of "
                            "these instances restarts (its PID changes), e.g. in the middle of a playbook")
    fault.add_argument("--watch-timeout", type=float, default=600.0,
                       help="seconds the --after-restart watcher waits before giving up (default 600)")
    fault.set_defaults(func=cmd_fault)

    logs = sub.add_parser("logs", help="tail an instance's log and stderr log")
    logs.add_argument("instance")
    logs.add_argument("--lines", type=int, default=50, help="lines of each log (default 50)")
    logs.set_defaults(func=cmd_logs)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.root = os.path.abspath(args.root)
    try:
        return args.func(args)
    except (LabError, NetnsError, services.NoLab) as exc:
        print(f"tikv-lab: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

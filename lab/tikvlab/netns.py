"""Lab hosts as Linux namespaces (netns mode, root only): the network, the host processes, cleanup.

Each lab host is a network namespace with its own address on a bridge, plus a mount and UTS
namespace (own hostname, private bind mounts of every path the collection writes, a tmpfs /run) held
by one `sleep` process, and an sshd listening on the host's address. Ansible reaches the hosts over
SSH; the lab's own CLI enters them with `nsenter` on the holder's PID.

Everything made here is recorded in `<root>/netns.json` before (or as) it is made, so `down` can
remove exactly that even after a half-finished `up`: processes by PID (checked against their start
time) and by namespace membership (every process whose network namespace is one of the lab's), then
the namespaces, the links and the mount points. Nothing is ever found or killed by name.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from . import services

STATE_FILE = "netns.json"
NETNS_PREFIX = "tikvlab-"
SSH_PORT = 22
# Private ranges tried for the bridge (one /24 per lab); the first that overlaps no address or
# route of this machine is taken.
SUBNET_FIRST_OCTETS = (10,)
SUBNET_SECOND_OCTET_RANGE = range(200, 250)
HOST_OFFSET = 10              # host N gets .(10 + N); the bridge (the controller side) is .1
HOLDER_WAIT_SECONDS = 10.0
SSHD_WAIT_SECONDS = 15.0
KILL_WAIT_SECONDS = 10.0
LINK_GONE_WAIT_SECONDS = 10.0
POLL_SECONDS = 0.1
# Paths every lab host gets privately (bind mounts from <root>/hosts/<host>/...): what a TiUP host
# has and the collection writes to, plus what makes the host a host (users, init scripts, names).
DEPLOY_ROOT = "/tidb-deploy"
DATA_ROOT = "/tidb-data"
INIT_DIR = "/etc/init.d"
# The tools netns mode runs; `tikv-lab up --mode netns` checks them first.
REQUIRED_TOOLS = ("ip", "unshare", "nsenter", "sleep", "mount", "hostname", "setpriv", "service",
                  "sshd", "ssh", "ssh-keygen")
TOOL_PACKAGES = {"ip": "iproute2", "sshd": "openssh-server", "ssh": "openssh-client",
                 "ssh-keygen": "openssh-client", "service": "init-system-helpers",
                 "setpriv": "util-linux", "unshare": "util-linux", "nsenter": "util-linux",
                 "mount": "mount", "hostname": "hostname", "sleep": "coreutils"}


class NetnsError(Exception):
    """netns mode cannot do what was asked; the message says what and how to fix it."""


# ---------------------------------------------------------------------------------------------
# State: <root>/netns.json


@dataclass
class Proc:
    """A process the lab started, identified by PID and /proc start time (never by name)."""

    pid: int
    start: int


@dataclass
class Host:
    name: str
    address: str
    netns: str
    veth: str
    holder: Proc | None = None
    sshd: Proc | None = None
    partitioned: bool = False

    @property
    def hostname(self) -> str:
        return self.name


@dataclass
class NetnsState:
    """What netns mode made for a lab, so `down` removes exactly that."""

    root: str
    lab_id: str
    bridge: str
    subnet: str
    service_user: str
    uid: int
    gid: int
    hosts: list[Host] = field(default_factory=list)
    bridge_made: bool = False
    mountpoints_made: list[str] = field(default_factory=list)
    watchers: list[Proc] = field(default_factory=list)

    @property
    def gateway(self) -> str:
        return str(next(ipaddress.ip_network(self.subnet).hosts()))

    @property
    def prefix_len(self) -> int:
        return ipaddress.ip_network(self.subnet).prefixlen

    def host(self, name: str) -> Host:
        for host in self.hosts:
            if host.name == name:
                return host
        raise KeyError(f"no host {name!r} in this lab (hosts: {', '.join(h.name for h in self.hosts)})")

    def host_of_address(self, address: str) -> Host:
        for host in self.hosts:
            if host.address == address:
                return host
        raise KeyError(f"no lab host has address {address}")

    def host_dir(self, host: Host) -> str:
        return os.path.join(self.root, "hosts", host.name)

    def outside(self, host: Host, path: str) -> str:
        """Where a path of a lab host's private mounts lives on this machine (for writing from outside)."""
        for inside, sub in ((DEPLOY_ROOT, "tidb-deploy"), (DATA_ROOT, "tidb-data"), (INIT_DIR, "init.d")):
            if path == inside or path.startswith(inside + "/"):
                return os.path.join(self.host_dir(host), sub) + path[len(inside):]
        raise ValueError(f"{path} is not on a private mount of {host.name}")

    @property
    def ssh_dir(self) -> str:
        return os.path.join(self.root, "ssh")

    @property
    def client_key(self) -> str:
        return os.path.join(self.ssh_dir, "id_ed25519")

    @property
    def known_hosts(self) -> str:
        return os.path.join(self.ssh_dir, "known_hosts")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> NetnsState:
        hosts = []
        for raw in data.get("hosts", []):
            raw = dict(raw)
            for key in ("holder", "sshd"):
                raw[key] = Proc(**raw[key]) if raw.get(key) else None
            hosts.append(Host(**raw))
        values = {k: v for k, v in data.items() if k not in ("hosts", "watchers")}
        return cls(**values, hosts=hosts, watchers=[Proc(**w) for w in data.get("watchers", [])])


def state_path(root: str) -> str:
    return os.path.join(root, STATE_FILE)


def load_state(root: str) -> NetnsState:
    try:
        with open(state_path(root), encoding="utf-8") as fh:
            return NetnsState.from_json(json.load(fh))
    except FileNotFoundError:
        raise NetnsError(f"{root} has no {STATE_FILE}: not a netns lab") from None


def save_state(state: NetnsState) -> None:
    """Atomic (temp file + rename), like lab.json; readable by root only, as the file always was."""
    services.write_json_atomic(state_path(state.root), state.to_json(), 0o600)


def locked_state(root: str) -> contextlib.AbstractContextManager[NetnsState]:
    """netns.json for read-modify-write (a background fault watcher may update it concurrently)."""
    return services.locked_json(state_path(root), lambda: load_state(root), save_state)


# ---------------------------------------------------------------------------------------------
# Preconditions and planning


def why_impossible() -> str | None:
    """None when this machine can run netns hosts, else the reason (for errors and test skips)."""
    return unsupported() or missing_tools()


def unsupported() -> str | None:
    """Why this machine cannot have lab hosts at all (not root, no network namespaces), or None."""
    if os.geteuid() != 0:
        return "netns mode needs root (network and mount namespaces, a bridge, sshd on port 22)"
    if not shutil.which("ip", path=tool_path()):
        return None     # missing_tools() says what to install
    probe = f"{NETNS_PREFIX}probe-{os.getpid()}"
    result = run(["ip", "netns", "add", probe], check=False)
    if result.returncode != 0:
        return f"cannot create a network namespace here: {result.stderr.strip()}"
    run(["ip", "netns", "del", probe], check=False)
    return None


def missing_tools() -> str | None:
    """What to install when a tool netns mode runs is missing (a set-up problem, not a limitation)."""
    missing = [name for name in REQUIRED_TOOLS if not shutil.which(name, path=tool_path())]
    if not missing:
        return None
    packages = sorted({TOOL_PACKAGES.get(name, name) for name in missing})
    return (f"netns mode needs {', '.join(missing)}: install the Debian packages {' '.join(packages)} "
            f"(`make setup` does)")


def tool_path() -> str:
    """sbin directories are not on every user's PATH, and `ip`/`sshd` live there."""
    extra = ["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/local/bin", "/usr/bin", "/bin"]
    return os.pathsep.join([os.environ.get("PATH", "")] + extra)


def tool(name: str) -> str:
    found = shutil.which(name, path=tool_path())
    if not found:
        raise NetnsError(f"{name} not found; install {TOOL_PACKAGES.get(name, name)}")
    return found


def run(argv: list[str], check: bool = True, timeout: float = 60, **kwargs: Any) -> subprocess.CompletedProcess:
    """A system command; with check=True a failure raises NetnsError with the command and its stderr."""
    if not os.path.isabs(argv[0]):
        argv = [tool(argv[0]), *argv[1:]]
    result = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=timeout, **kwargs)
    if check and result.returncode != 0:
        raise NetnsError(f"`{shlex.join(argv)}` failed ({result.returncode}): "
                         f"{(result.stderr or result.stdout).strip()}")
    return result


def lab_id(root: str) -> str:
    """Six hex digits from the lab root: short enough for interface names (15 characters at most)."""
    return hashlib.sha256(root.encode()).hexdigest()[:6]


def used_networks() -> list[ipaddress.IPv4Network]:
    """Every IPv4 network this machine has an address or a route in (the default route excluded)."""
    networks = []
    for argv in (["ip", "-4", "-o", "addr", "show"], ["ip", "-4", "route", "show", "table", "all"]):
        for line in run(argv).stdout.splitlines():
            for word in line.split():
                if "/" in word or word[:1].isdigit():
                    with contextlib.suppress(ValueError):
                        net = ipaddress.ip_network(word, strict=False)
                        if isinstance(net, ipaddress.IPv4Network) and net.prefixlen > 0:
                            networks.append(net)
    return networks


def pick_subnet(root: str, wanted: str | None) -> ipaddress.IPv4Network:
    used = used_networks()
    if wanted:
        try:
            net = ipaddress.ip_network(wanted, strict=True)
        except ValueError as exc:
            raise NetnsError(f"--subnet {wanted}: {exc}") from None
        if not isinstance(net, ipaddress.IPv4Network) or net.prefixlen > 26:
            raise NetnsError(f"--subnet {wanted}: give an IPv4 network of /26 or larger")
        clash = [str(u) for u in used if u.overlaps(net)]
        if clash:
            raise NetnsError(f"--subnet {wanted} overlaps {', '.join(clash)} on this machine; pick another")
        return net
    seed = int(lab_id(root), 16)
    candidates = [ipaddress.ip_network(f"{first}.{second}.{third}.0/24")
                  for first in SUBNET_FIRST_OCTETS for second in SUBNET_SECOND_OCTET_RANGE
                  for third in range(256)]
    start = seed % len(candidates)
    for net in candidates[start:] + candidates[:start]:
        if not any(u.overlaps(net) for u in used):
            return net
    raise NetnsError("no free private /24 for the lab bridge; pass --subnet")


def service_ids(user: str) -> tuple[int, int]:
    """The service user's uid/gid on the lab hosts: this machine's own when it has the user (so files
    look the same from outside), else the first id from 2000 up that neither passwd nor group uses."""
    import grp  # pylint: disable=import-outside-toplevel
    import pwd  # pylint: disable=import-outside-toplevel
    with contextlib.suppress(KeyError):
        entry = pwd.getpwnam(user)
        return entry.pw_uid, entry.pw_gid
    uids = {p.pw_uid for p in pwd.getpwall()}
    gids = {g.gr_gid for g in grp.getgrall()}
    candidate = 2000
    while candidate in uids or candidate in gids:
        candidate += 1
    return candidate, candidate


def plan(root: str, host_count: int, subnet: str | None, service_user: str) -> NetnsState:
    ident = lab_id(root)
    net = pick_subnet(root, subnet)
    if host_count < 1 or host_count + HOST_OFFSET + 1 >= net.num_addresses:
        raise NetnsError(f"--hosts must be between 1 and {net.num_addresses - HOST_OFFSET - 2} for {net}")
    uid, gid = service_ids(service_user)
    state = NetnsState(root=root, lab_id=ident, bridge=f"tlb{ident}", subnet=str(net),
                       service_user=service_user, uid=uid, gid=gid)
    for n in range(1, host_count + 1):
        state.hosts.append(Host(name=f"host{n}", address=str(net.network_address + HOST_OFFSET + n),
                                netns=f"{NETNS_PREFIX}{ident}-host{n}", veth=f"tlv{ident}h{n}"))
    taken = [name for name in [state.bridge] + [h.veth for h in state.hosts] if link_exists(name)]
    taken += [h.netns for h in state.hosts if h.netns in netns_list()]
    if taken:
        raise NetnsError(f"{', '.join(taken)} already exist: a lab at {root} was not taken down; "
                         f"remove them (`ip link del` / `ip netns del`) or use another --root")
    return state


# ---------------------------------------------------------------------------------------------
# Processes


def proc(pid: int) -> Proc:
    start = services.process_start_time(pid)
    if start is None:
        raise NetnsError(f"process {pid} exited at once")
    return Proc(pid, start)


def alive(p: Proc | None) -> bool:
    return p is not None and services.pid_alive(p.pid) and services.process_start_time(p.pid) == p.start


def ns_inode(pid: int | str, kind: str) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/{kind}").st_ino
    except OSError:
        return None


def netns_inode(name: str) -> int | None:
    try:
        return os.stat(f"/run/netns/{name}").st_ino
    except OSError:
        return None


def pids_in_netns(inode: int) -> list[int]:
    """Every live process whose network namespace is `inode` (zombies have no namespaces)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid() and ns_inode(entry, "net") == inode:
            if services.pid_alive(int(entry)):
                found.append(int(entry))
    return found


def kill_all_in(inodes: list[int], timeout: float = KILL_WAIT_SECONDS) -> list[int]:
    """SIGKILL every process in these network namespaces until none is left; returns survivors."""
    deadline = time.monotonic() + timeout
    while True:
        left = [pid for inode in inodes for pid in pids_in_netns(inode)]
        if not left or time.monotonic() >= deadline:
            return left
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(POLL_SECONDS)


def spawn(argv: list[str], log_path: str) -> Proc:
    """A daemon in its own session, output to a log file, never a child we wait for."""
    with open(log_path, "ab") as log:
        child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                 start_new_session=True, close_fds=True)
    return proc(child.pid)


# ---------------------------------------------------------------------------------------------
# Network


def link_exists(name: str) -> bool:
    return os.path.exists(f"/sys/class/net/{name}")


def netns_list() -> list[str]:
    return [line.split()[0] for line in run(["ip", "netns", "list"]).stdout.splitlines() if line.strip()]


def make_bridge(state: NetnsState) -> None:
    run(["ip", "link", "add", state.bridge, "type", "bridge", "forward_delay", "0"])
    state.bridge_made = True
    save_state(state)
    run(["ip", "addr", "add", f"{state.gateway}/{state.prefix_len}", "dev", state.bridge])
    run(["ip", "link", "set", state.bridge, "up"])


def make_host_network(state: NetnsState, host: Host) -> None:
    """The namespace, a veth pair (eth0 inside, on the bridge outside), the address, lo up."""
    run(["ip", "netns", "add", host.netns])
    run(["ip", "link", "add", host.veth, "type", "veth", "peer", "name", "eth0", "netns", host.netns])
    run(["ip", "link", "set", host.veth, "master", state.bridge, "up"])
    run(["ip", "-n", host.netns, "addr", "add", f"{host.address}/{state.prefix_len}", "dev", "eth0"])
    run(["ip", "-n", host.netns, "link", "set", "eth0", "up"])
    run(["ip", "-n", host.netns, "link", "set", "lo", "up"])


def set_partition(state: NetnsState, host: Host, cut: bool) -> None:
    """Partition = the host's link down: it reaches nobody and nobody reaches it (SSH included)."""
    run(["ip", "link", "set", host.veth, "down" if cut else "up"])
    host.partitioned = cut


# ---------------------------------------------------------------------------------------------
# The host: holder, mounts, sshd


def start_holder(state: NetnsState, host: Host) -> None:
    """`sleep infinity` in the host's network namespace and in new mount + UTS namespaces (private
    propagation, so nothing mounted there shows outside): the namespaces live as long as it does."""
    log = os.path.join(state.host_dir(host), "holder.log")
    host.holder = spawn([tool("ip"), "netns", "exec", host.netns, tool("unshare"), "--mount", "--uts",
                         "--propagation", "private", tool("sleep"), "infinity"], log)
    save_state(state)
    own = ns_inode("self", "mnt")
    deadline = time.monotonic() + HOLDER_WAIT_SECONDS
    while time.monotonic() < deadline:
        inside = ns_inode(host.holder.pid, "mnt")
        if inside is not None and inside != own and _comm(host.holder.pid) == "sleep":
            host.holder = proc(host.holder.pid)   # the start time is the same across exec
            return
        if not alive(host.holder):
            break
        time.sleep(POLL_SECONDS)
    raise NetnsError(f"{host.name}: the namespace holder did not start; see {log}")


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm", encoding="utf-8") as fh:
            return fh.read().strip()
    except OSError:
        return ""


def enter_argv(host: Host, argv: list[str]) -> list[str]:
    """argv run inside the host's namespaces (network, mount, UTS), as a login over SSH would be."""
    if not alive(host.holder):
        raise NetnsError(f"{host.name} is gone (its namespace holder is not running); "
                         f"take the lab down and up again")
    return [tool("nsenter"), "--target", str(host.holder.pid), "--mount", "--uts", "--net", "--", *argv]


def inside(host: Host) -> bool:
    """True when this process already runs in the host's mount namespace."""
    return host.holder is not None and ns_inode("self", "mnt") == ns_inode(host.holder.pid, "mnt")


def host_mount_script(state: NetnsState, host: Host, shadows: list[tuple[str, str]]) -> str:
    """The shell run once inside a new host: tmpfs /run (sshd's /run/sshd, no trace of this machine's
    systemd, so `service` runs SysV scripts), the private bind mounts, the shadows, the hostname."""
    hdir = state.host_dir(host)
    binds = [(os.path.join(hdir, "tidb-deploy"), DEPLOY_ROOT), (os.path.join(hdir, "tidb-data"), DATA_ROOT),
             (os.path.join(hdir, "init.d"), INIT_DIR), (os.path.join(hdir, "etc", "passwd"), "/etc/passwd"),
             (os.path.join(hdir, "etc", "group"), "/etc/group"), (os.path.join(hdir, "etc", "hosts"), "/etc/hosts"),
             (os.path.join(hdir, "etc", "hostname"), "/etc/hostname")]
    lines = ["set -e", "mount -t tmpfs -o mode=0755,nosuid,nodev tikvlab-run /run",
             "mkdir -m 0755 /run/sshd /run/lock"]
    lines += [f"mount --bind {shlex.quote(src)} {shlex.quote(dst)}" for src, dst in binds]
    for shadow, target in shadows:
        lines.append(f"mount --rbind {shlex.quote(shadow)} {shlex.quote(target)}")
    lines.append(f"hostname {shlex.quote(host.hostname)}")
    return "\n".join(lines) + "\n"


def mount_host(state: NetnsState, host: Host, shadows: list[tuple[str, str]]) -> None:
    script = host_mount_script(state, host, shadows)
    result = run(enter_argv(host, ["/bin/sh", "-c", script]), check=False)
    if result.returncode != 0:
        raise NetnsError(f"{host.name}: setting up its mounts failed: {result.stderr.strip()}")


def start_sshd(state: NetnsState, host: Host, config_path: str) -> None:
    log = os.path.join(state.host_dir(host), "sshd.log")
    host.sshd = spawn(enter_argv(host, [tool("sshd"), "-D", "-e", "-f", config_path]), log)
    save_state(state)


def wait_sshd(state: NetnsState, hosts: list[Host]) -> None:
    deadline = time.monotonic() + SSHD_WAIT_SECONDS
    pending = list(hosts)
    while pending and time.monotonic() < deadline:
        pending = [h for h in pending if not _port_open(h.address, SSH_PORT)]
        dead = [h for h in pending if not alive(h.sshd)]
        if dead:
            break
        if pending:
            time.sleep(POLL_SECONDS * 2)
    if pending:
        logs = "\n".join(f"--- {h.name} sshd log ---\n{services.tail(os.path.join(state.host_dir(h), 'sshd.log'), 10)}"
                         for h in pending)
        raise NetnsError(f"sshd did not listen on {', '.join(h.address for h in pending)}\n{logs}")


def _port_open(address: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((address, port), timeout=1):
        return True
    return False


# ---------------------------------------------------------------------------------------------
# Shadows: a lab host's view of directories the service user could not search


def blocked_dirs(paths: list[str]) -> list[str]:
    """Directories on the way to `paths` that others may not search (mode without o+x), top first.

    The stand-ins run as the service user, like PD and TiKV under TiUP; this machine's Python or
    checkout may sit under a private directory (`/root`, 0700) that user cannot enter."""
    blocked: set[str] = set()
    for path in paths:
        real = os.path.realpath(path)
        parts = real.split(os.sep)
        for i in range(2, len(parts)):
            parent = os.sep.join(parts[:i])
            with contextlib.suppress(OSError):
                if os.path.isdir(parent) and not os.stat(parent).st_mode & 0o001:
                    blocked.add(parent)
    return sorted(blocked, key=lambda p: (p.count(os.sep), p))


def make_shadow(state: NetnsState, host: Host, directory: str) -> tuple[str, str]:
    """A stand-in for `directory` on the lab host: same entries (each bind-mounted from the real one
    by the mount script), mode plus o+x. Returns (shadow dir, target); the entries are bound by
    `shadow_script`."""
    shadow = os.path.join(state.host_dir(host), "shadow", directory.strip(os.sep).replace(os.sep, "%"))
    os.makedirs(shadow, exist_ok=True)
    os.chmod(shadow, (os.stat(directory).st_mode & 0o7777) | 0o011)
    return shadow, directory


def shadow_entries(directory: str, shadow: str) -> list[tuple[str, str]]:
    """Placeholders in the shadow for each entry of the real directory; returns the bind pairs."""
    pairs = []
    for entry in os.scandir(directory):
        target = os.path.join(shadow, entry.name)
        if entry.is_symlink():
            if not os.path.lexists(target):
                os.symlink(os.readlink(entry.path), target)
        elif entry.is_dir():
            os.makedirs(target, exist_ok=True)
            pairs.append((entry.path, target))
        elif entry.is_file():
            if not os.path.exists(target):
                with open(target, "wb"):
                    pass
            pairs.append((entry.path, target))
    return pairs


def shadow_mounts(state: NetnsState, host: Host, paths: list[str]) -> list[tuple[str, str]]:
    """(source, target) bind pairs, in mount order: each blocked directory's entries into its shadow,
    then the shadow over the directory. Nested blocked directories come after their parents."""
    mounts: list[tuple[str, str]] = []
    for directory in blocked_dirs(paths):
        shadow, target = make_shadow(state, host, directory)
        mounts += shadow_entries(directory, shadow)
        mounts.append((shadow, target))
    return mounts


# ---------------------------------------------------------------------------------------------
# Taking it all down


def stop_watchers(state: NetnsState) -> None:
    for watcher in state.watchers:
        if alive(watcher):
            with contextlib.suppress(ProcessLookupError):
                os.kill(watcher.pid, signal.SIGKILL)
    state.watchers = []


def teardown(state: NetnsState) -> list[str]:
    """Remove everything in netns.json: watchers, every process in the hosts' namespaces, the
    namespaces, the bridge, the mount points made. Returns what could not be removed."""
    problems = []
    stop_watchers(state)
    inodes = [i for i in (netns_inode(h.netns) for h in state.hosts) if i is not None]
    # A holder whose netns file is gone still pins its namespaces: kill it by its recorded PID.
    for host in state.hosts:
        for p in (host.sshd, host.holder):
            if alive(p):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, signal.SIGKILL)
    survivors = kill_all_in(inodes)
    if survivors:
        problems.append(f"processes {survivors} survived SIGKILL")
    for host in state.hosts:
        if host.netns in netns_list():
            result = run(["ip", "netns", "del", host.netns], check=False)
            if result.returncode != 0:
                problems.append(f"ip netns del {host.netns}: {result.stderr.strip()}")
    if state.bridge_made and link_exists(state.bridge):
        result = run(["ip", "link", "del", state.bridge], check=False)
        if result.returncode != 0:
            problems.append(f"ip link del {state.bridge}: {result.stderr.strip()}")
    # The kernel frees a namespace (and the veth in it) asynchronously after its last process.
    deadline = time.monotonic() + LINK_GONE_WAIT_SECONDS
    while any(link_exists(h.veth) for h in state.hosts) and time.monotonic() < deadline:
        time.sleep(POLL_SECONDS)
    for host in state.hosts:
        if link_exists(host.veth):
            result = run(["ip", "link", "del", host.veth], check=False)
            if result.returncode != 0 and link_exists(host.veth):
                problems.append(f"ip link del {host.veth}: {result.stderr.strip()}")
    problems += remove_mountpoints(state)
    return problems


def remove_mountpoints(state: NetnsState) -> list[str]:
    """The empty /tidb-deploy and /tidb-data this lab made on the machine, unless another netns lab
    still runs (its hosts mount over them)."""
    others = [n for n in netns_list() if n.startswith(NETNS_PREFIX) and not n.startswith(f"{NETNS_PREFIX}{state.lab_id}-")]
    if others:
        return []
    problems = []
    for path in state.mountpoints_made:
        try:
            os.rmdir(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            problems.append(f"could not remove mount point {path}: {exc}")
    return problems


def make_mountpoints(state: NetnsState) -> None:
    """Mount points must exist on the machine's filesystem; empty ones are made (and recorded)."""
    for path in (DEPLOY_ROOT, DATA_ROOT):
        if not os.path.isdir(path):
            os.makedirs(path, mode=0o755)
            state.mountpoints_made.append(path)
            save_state(state)


def leftovers(root: str, lab_ident: str | None = None) -> dict[str, list[str]]:
    """What the lab with this root (its id, unless given) has on the machine: its namespaces, its
    links, the processes in its namespaces. All empty once `down` is done (the tests check)."""
    ident = lab_ident if lab_ident is not None else lab_id(root)
    prefix = f"{NETNS_PREFIX}{ident}"
    namespaces = [n for n in netns_list() if n.startswith(prefix)]
    links = sorted(n for n in os.listdir("/sys/class/net") if n in (f"tlb{ident}",) or n.startswith(f"tlv{ident}"))
    processes = []
    for name in namespaces:
        inode = netns_inode(name)
        if inode is not None:
            processes += [str(p) for p in pids_in_netns(inode)]
    return {"namespaces": namespaces, "links": links, "processes": processes}

"""Start, stop and inspect lab instances; lab.json keeps their PIDs; faults.

What `tikv_tls_service_manager: command` drives, so it behaves like a service manager: `start` runs
TiUP's run script in its own session (the PID is the process group of the stand-in and, for PD, its
etcd child), `stop` is SIGTERM to that group then SIGKILL after a grace period, `status` is 0 / 3
like an init script. Processes are only ever found by their recorded PID (checked against the
process start time, so a recycled PID is never signalled), never by name.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from .layout import Instance, Lab

T = TypeVar("T")

STATE_FILE = "lab.json"
# How long `service start` watches a new process before calling it started, unless it listens on all
# its ports sooner (then it got past its config checks: start returns at once, as TiUP's start returns
# once the port is up). A stand-in that refuses its config exits within its Python start-up (0.2 s idle,
# up to ~0.8 s on a loaded 2-core box) without binding anything; 2 s leaves margin and stays below the 3 s
# the slow-start fault test uses (a slow start binds nothing before its delay, so start returns after 2 s).
START_SETTLE_SECONDS = 2.0
STOP_GRACE_SECONDS = 10.0
KILL_WAIT_SECONDS = 5.0
POLL_SECONDS = 0.1

# Fault files the stand-ins read (lab/DESIGN.md); `fault clear` removes exactly these.
FAULT_FILES = {
    "crash-on-tls": "lab-fault-crash-on-tls",
    "slow-start": "lab-fault-slow-start",
    "pin-leaders": "lab-fault-pin-leaders",
}


class ServiceError(Exception):
    """An instance did not start or stop; the message names it and carries its log tail."""


class NoLab(Exception):
    """There is no lab.json under the root."""


# ---------------------------------------------------------------------------------------------
# lab.json: read freely (writes are atomic), modify only under the lock


def state_path(root: str) -> str:
    return os.path.join(root, STATE_FILE)


def load_lab(root: str) -> Lab:
    try:
        with open(state_path(root), encoding="utf-8") as fh:
            return Lab.from_json(json.load(fh))
    except FileNotFoundError:
        raise NoLab(f"no lab at {root} (no {STATE_FILE}); bring one up with `tikv-lab up`") from None


def write_json_atomic(path: str, data: Any, mode: int) -> None:
    """Write `data` as JSON through a temp file + rename in the same directory, so a reader never sees
    half a file (lab.json, and netns.json of the netns mode)."""
    directory, name = os.path.split(path)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + name + ".")
    os.fchmod(fd, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2)
        fh.write("\n")
    os.replace(tmp, path)


@contextlib.contextmanager
def locked_json(path: str, load: Callable[[], T], save: Callable[[T], None]) -> Iterator[T]:
    """Read-modify-write of a JSON state file under an exclusive lock on `<path>.lock`: `load()` is
    yielded and `save(value)` written back when the block ends."""
    with open(path + ".lock", "a", encoding="utf-8") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        value = load()
        yield value
        save(value)


def save_lab(lab: Lab) -> None:
    """lab.json, atomically."""
    write_json_atomic(state_path(lab.root), lab.to_json(), 0o644)


def locked_lab(root: str) -> contextlib.AbstractContextManager[Lab]:
    """lab.json for read-modify-write; parallel `service` calls (Ansible forks) serialise here."""
    return locked_json(state_path(root), lambda: load_lab(root), save_lab)


# ---------------------------------------------------------------------------------------------
# Processes, by PID and process group only


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (which may contain spaces), or None."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            raw = fh.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return raw[raw.rindex(")") + 2:].split()


def _is_live(fields: list[str] | None) -> bool:
    # A zombie holds no port or file; this sandbox's init does not reap orphans, so they linger.
    return fields is not None and fields[0] not in ("Z", "X")


def pid_alive(pid: int) -> bool:
    return _is_live(_proc_stat(pid))


def process_start_time(pid: int) -> int | None:
    fields = _proc_stat(pid)
    return int(fields[19]) if fields else None


def is_running(inst: Instance) -> bool:
    """The recorded process is alive and is still the one we started (not a recycled PID)."""
    if not inst.pid:
        return False
    fields = _proc_stat(inst.pid)
    return _is_live(fields) and int(fields[19]) == inst.pid_start


def group_members(pgid: int, started_since: int = 0) -> list[int]:
    """Live processes in a process group (the stand-in and, for PD, its etcd) started no earlier
    than `started_since` (clock ticks since boot, as /proc reports)."""
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _proc_stat(int(entry))
            if _is_live(fields) and int(fields[2]) == pgid and int(fields[19]) >= started_since:
                members.append(int(entry))
    return members


def group_is_ours(inst: Instance) -> bool:
    """The recorded group still exists as ours: its leader is the process we started, or the leader
    is gone and members it started remain (an etcd outliving a crashed PD stand-in). A PID that now
    belongs to some other process is never ours."""
    if not inst.pid or inst.pid_start is None:
        return False
    leader_start = process_start_time(inst.pid)
    if leader_start is not None:
        return leader_start == inst.pid_start
    return bool(group_members(inst.pid, inst.pid_start))


def signal_group(inst: Instance, sig: signal.Signals) -> bool:
    """Signal the instance's process group; False when it is not ours or already gone."""
    if not group_is_ours(inst):
        return False
    try:
        os.killpg(inst.pid, sig)
        return True
    except ProcessLookupError:
        return False


def wait_group_gone(pgids: list[int], timeout: float) -> list[int]:
    """Poll until no live member of any of the groups remains; returns the groups still alive."""
    deadline = time.monotonic() + timeout
    while True:
        alive = [g for g in pgids if group_members(g)]
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(POLL_SECONDS)


def tail(path: str, lines: int) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return "".join(fh.readlines()[-lines:])
    except FileNotFoundError:
        return ""


def log_tail(inst: Instance, lines: int = 20) -> str:
    """The end of the instance's stderr log and log file, each headed by its path (as `tail` does)."""
    parts = []
    for path in (inst.stderr_log_path, inst.log_path):
        text = tail(path, lines)
        if text:
            parts.append(f"==> {path} <==\n{text.rstrip()}")
    return "\n".join(parts) if parts else f"(no log output in {os.path.dirname(inst.log_path)})"


# ---------------------------------------------------------------------------------------------
# start / stop / status


def spawn(inst: Instance) -> None:
    """Run TiUP's run script in a new session (as its systemd unit runs `bash run_*.sh`); record the PID.

    The run script and the wrapper `exec`, so the PID is the stand-in itself and the session leader,
    and the session's process group holds everything it starts."""
    os.makedirs(os.path.dirname(inst.stderr_log_path), exist_ok=True)
    with open(inst.stderr_log_path, "ab") as out:
        proc = subprocess.Popen(["/bin/bash", inst.run_script], cwd=inst.deploy_dir,
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, close_fds=True)
    inst.pid = proc.pid
    inst.pid_start = process_start_time(proc.pid)


def kill_leftovers(inst: Instance) -> None:
    """What a dead instance left in its group (an orphaned etcd holding the ports) goes first."""
    if signal_group(inst, signal.SIGKILL):
        wait_group_gone([inst.pid], KILL_WAIT_SECONDS)


def start(root: str, names: list[str], settle: float = START_SETTLE_SECONDS) -> list[str]:
    """Start the named instances together (PDs need each other for the first election).

    Returns the names that were already running, as soon as every started instance listens on all its
    ports, or after `settle` seconds. Raises ServiceError, with every failed instance's log tail, when one
    exited by then."""
    already: list[str] = []
    with locked_lab(root) as lab:
        for name in names:
            inst = lab.instance(name)
            if is_running(inst):
                already.append(name)
            else:
                kill_leftovers(inst)
                spawn(inst)
    if len(already) == len(names):
        return already
    started = [n for n in names if n not in already]
    deadline = time.monotonic() + settle
    while time.monotonic() < deadline:
        lab = load_lab(root)
        if any(not is_running(lab.instance(n)) for n in started):
            break
        listening = listening_ports()
        if all(set(lab.instance(n).ports.values()) <= listening for n in started):
            return already
        time.sleep(POLL_SECONDS / 2)
    lab = load_lab(root)
    dead = [lab.instance(n) for n in names if n not in already and not is_running(lab.instance(n))]
    if dead:
        raise ServiceError("\n".join(f"{inst.name}: exited during start\n{log_tail(inst)}" for inst in dead))
    return already


def listening_ports() -> set[int]:
    """TCP ports something listens on in this network namespace (/proc/net/tcp and tcp6, state 0A).
    Read, not probed: a connection to a TLS port would make the server log a failed handshake."""
    ports = set()
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            with open(path, encoding="ascii") as fh:
                for line in fh.readlines()[1:]:
                    fields = line.split()
                    if len(fields) > 3 and fields[3] == "0A":
                        ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def stop(root: str, names: list[str], grace: float = STOP_GRACE_SECONDS) -> None:
    """SIGTERM each instance's process group, wait up to `grace`, SIGKILL what is left.

    SIGCONT follows SIGTERM so a hung (SIGSTOPped) instance gets its chance to exit cleanly."""
    lab = load_lab(root)
    targets = [lab.instance(n) for n in names]
    signalled = [inst.pid for inst in targets if signal_group(inst, signal.SIGTERM)]
    for inst in targets:
        signal_group(inst, signal.SIGCONT)
    stragglers = wait_group_gone(signalled, grace)
    for inst in targets:
        if inst.pid in stragglers:
            signal_group(inst, signal.SIGKILL)
    left = wait_group_gone(stragglers, KILL_WAIT_SECONDS)
    if left:
        raise ServiceError(f"process groups {left} survived SIGKILL")


def restart(root: str, name: str) -> None:
    stop(root, [name])
    start(root, [name])


def status(root: str, name: str) -> tuple[bool, Instance]:
    inst = load_lab(root).instance(name)
    return is_running(inst), inst


# ---------------------------------------------------------------------------------------------
# Faults


def fault(root: str, name: str, kind: str, arg: str | None = None) -> str:
    """Apply one lab fault to an instance; returns what was done, for the user."""
    inst = load_lab(root).instance(name)
    signals = {"kill": signal.SIGKILL, "hang": signal.SIGSTOP, "resume": signal.SIGCONT}
    if kind in signals:
        if not signal_group(inst, signals[kind]):
            raise ServiceError(f"{name} is not running")
        return f"{name}: sent {signals[kind].name} to process group {inst.pid}"
    if kind in FAULT_FILES:
        content = f"{float(arg)}\n" if kind == "slow-start" else ""
        path = os.path.join(inst.deploy_dir, FAULT_FILES[kind])
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(content)
        return f"{name}: wrote {path} (read at the next start)" if kind != "pin-leaders" else \
            f"{name}: wrote {path} (leaders stay on this store)"
    if kind == "corrupt":
        return corrupt(inst, arg or "")
    if kind == "clear":
        return clear_faults(inst)
    raise ServiceError(f"unknown fault {kind!r}")


def corrupt(inst: Instance, relative: str) -> str:
    """Overwrite a file of the deploy dir with bytes no parser accepts (keeps its mode)."""
    path = os.path.normpath(os.path.join(inst.deploy_dir, relative))
    if not path.startswith(inst.deploy_dir + os.sep):
        raise ServiceError(f"{relative!r} is outside {inst.deploy_dir}")
    if not os.path.isfile(path):
        raise ServiceError(f"{path} does not exist")
    with open(path, "wb") as fh:
        fh.write(b"\x00\xff-----tikv-lab corrupted this file-----\xfe\x00\n")
    return f"{inst.name}: corrupted {path}"


def clear_faults(inst: Instance) -> str:
    removed = []
    for filename in FAULT_FILES.values():
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(inst.deploy_dir, filename))
            removed.append(filename)
    return f"{inst.name}: removed {', '.join(removed) or 'no fault files'}"

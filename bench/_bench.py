"""Shared pieces of the lab benchmarks (bench/*.py): labs under /tmp/bench-*, playbook runs with the
timing callback, the classification of tasks into "waiting on the cluster" and "controller", the
probing client, least squares, the machine description and the result files.

Not a test helper: nothing here imports tests/ (the benchmarks must run without pytest).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import platform
import random
import re
import shutil
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
RESULTS = os.path.join(HERE, "results")
TIKV_LAB = os.path.join(REPO, "lab", "bin", "tikv-lab")
ANSIBLE_PLAYBOOK = os.path.join(os.path.dirname(sys.executable), "ansible-playbook")
sys.path.insert(0, os.path.join(REPO, "lab"))
sys.path.insert(0, os.path.join(REPO, "tools"))

from collection_link import link_collection  # noqa: E402  pylint: disable=wrong-import-position
from tikvlab import cli, common, services  # noqa: E402  pylint: disable=wrong-import-position

COLLECTIONS = link_collection()

# ---------------------------------------------------------------------------------------------
# The machine and the result files


def machine() -> dict[str, Any]:
    """What the figures were measured on: they mean little without it."""
    def run(*cmd):
        try:
            return subprocess.run(list(cmd), capture_output=True, text=True, check=False).stdout.strip()
        except OSError:
            return ""
    cpu = ""
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            cpu = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), "")
    mem_gb = 0.0
    with contextlib.suppress(OSError, ValueError, StopIteration):
        with open("/proc/meminfo", encoding="utf-8") as handle:
            mem_gb = round(int(next(line for line in handle if line.startswith("MemTotal")).split()[1]) / 1024 / 1024, 1)
    ansible_version = run(ANSIBLE_PLAYBOOK, "--version").splitlines()
    return {"cpus": os.cpu_count(), "cpu_model": cpu, "memory_gb": mem_gb, "machine": platform.machine(),
            "kernel": platform.release(), "python": platform.python_version(),
            "ansible_core": re.sub(r"^.*\[core ([^\]]+)\].*$", r"\1", ansible_version[0]) if ansible_version else "",
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()]}


def now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def write_report(name: str, report: dict[str, Any], output: str | None = None) -> str:
    path = output or os.path.join(RESULTS, name + ".json")
    # Other work on a shared machine shows here: the figures are only comparable at similar loads.
    report.setdefault("machine", {})["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(report, handle, indent=2)
        handle.write("\n")
    print("wrote %s" % os.path.relpath(path))
    return path


def base_report(name: str, args) -> dict[str, Any]:
    return {"benchmark": name, "date": now_iso(), "command": "python bench/%s.py %s" % (name, " ".join(sys.argv[1:])),
            "settings": vars(args), "machine": machine()}


def least_squares(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """(slope, intercept) of the least-squares line through the points."""
    n = len(xs)
    if n < 2:
        return 0.0, ys[0] if ys else 0.0
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx else 0.0
    return slope, my - slope * mx


def median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def table(header: list[str], rows: list[list[Any]]) -> str:
    """A plain text table: the figures as printed, also pasted into docs/performance.md."""
    cells = [[str(c) for c in header]] + [[("%.2f" % c) if isinstance(c, float) else str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Labs


def free_base_port(tikv: int) -> int:
    """A base port whose block (PD at B.., TiKV at B+100 .. B+100+10*tikv) is free now; below Linux's
    ephemeral range, like the tests' labs."""
    span = 100 + 10 * tikv + 10
    choices = list(range(20000, 32000 - span, 100))
    for base in random.sample(choices, len(choices)):
        if not any(cli.port_in_use(p) for p in range(base, base + span)):
            return base
    raise RuntimeError("no free block of %d ports for a lab" % span)


class BenchLab:
    """A lab under /tmp/bench-<name>-*, with its inventory; always taken down (use as a context manager)."""

    def __init__(self, name: str, tikv: int = 3, pd: int = 3, tls: bool = False):
        self.base = tempfile.mkdtemp(prefix="bench-%s-" % name, dir="/tmp")
        self.root = os.path.join(self.base, "lab")
        self.ctl = os.path.join(self.base, "controller")
        self.report_dir = os.path.join(self.base, "report")
        self.inventory = os.path.join(self.base, "inventory.yml")
        self.tikv, self.pd, self.tls = tikv, pd, tls
        self.up_seconds = 0.0

    def cli(self, *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run([TIKV_LAB, "--root", self.root, *args], capture_output=True, text=True,
                              timeout=timeout, check=False)
        if check and proc.returncode != 0:
            raise RuntimeError("tikv-lab %s -> %d\n%s\n%s" % (" ".join(args), proc.returncode, proc.stdout, proc.stderr))
        return proc

    def __enter__(self) -> "BenchLab":
        try:
            began = time.monotonic()
            up = ["up", "--base-port", str(free_base_port(self.tikv)), "--pd", str(self.pd), "--tikv", str(self.tikv),
                  "--timeout", str(60 + 10 * self.tikv)]
            self.cli(*(up + (["--tls"] if self.tls else [])))
            self.up_seconds = time.monotonic() - began
            with open(self.inventory, "w", encoding="utf-8") as handle:
                handle.write(self.cli("inventory").stdout)
            if self.tls:
                self.adopt_pki()
        except BaseException:
            self.down()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.down()

    def down(self) -> None:
        if os.path.exists(os.path.join(self.root, services.STATE_FILE)):
            proc = self.cli("down", check=False, timeout=300)
            if proc.returncode != 0:
                with contextlib.suppress(services.NoLab):
                    for inst in services.load_lab(self.root).instances:
                        services.signal_group(inst, signal.SIGKILL)
        shutil.rmtree(self.base, ignore_errors=True)

    def lab(self):
        return services.load_lab(self.root)

    def instance_count(self) -> int:
        return self.pd + self.tikv

    def adopt_pki(self) -> None:
        """The lab's CA becomes the collection's generate-mode CA (<ctl>/ca) and its operator certificate
        the operator's client certificate (<ctl>/clients/client.*), as if the pki role had made them
        (the same adoption the rotation tests make)."""
        for sub in ("", "ca", "clients"):
            os.makedirs(os.path.join(self.ctl, sub), mode=0o700, exist_ok=True)
        for source, dest in (("ca/ca.crt", "ca/ca.crt"), ("ca/ca.key", "ca/ca.key"), ("ca/ca.crt", "ca.crt"),
                             ("client-tls/client.crt", "clients/client.crt"),
                             ("client-tls/client.pem", "clients/client.pem")):
            shutil.copyfile(os.path.join(self.root, source), os.path.join(self.ctl, dest))
        for key in ("ca/ca.key", "clients/client.pem"):
            os.chmod(os.path.join(self.ctl, key), 0o600)

    def playbook_args(self) -> list[str]:
        return ["-e", "tikv_tls_controller_dir=" + self.ctl, "-e", "tikv_tls_report_dir=" + self.report_dir]

    def service(self, names: list[str], action: str) -> None:
        """`tikv-lab service <name> <action>` for every name at once (as Ansible's forks would)."""
        procs = [subprocess.Popen([TIKV_LAB, "--root", self.root, "service", name, action],  # pylint: disable=consider-using-with
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for name in names]
        failed = []
        for name, proc in zip(names, procs):
            out = proc.communicate(timeout=120)[0]
            if proc.returncode != 0:
                failed.append("%s %s: %s" % (name, action, out[-500:]))
        if failed:
            raise RuntimeError("; ".join(failed))


# ---------------------------------------------------------------------------------------------
# Playbook runs with per-task timing


def playbook_env(timing_file: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "ANSIBLE_COLLECTIONS_PATH": COLLECTIONS,
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_LOCALHOST_WARNING": "0",
        "ANSIBLE_RETRY_FILES_ENABLED": "0",
        "ANSIBLE_HOST_KEY_CHECKING": "0",
        "ANSIBLE_CALLBACK_PLUGINS": os.path.join(HERE, "callback_plugins"),
        "ANSIBLE_CALLBACKS_ENABLED": "bench_timing",
        "BENCH_TIMING_FILE": timing_file,
    })
    env.update(extra or {})
    return env


class Run:
    """One ansible-playbook run: exit code, output, wall seconds and the timing callback's records."""

    def __init__(self, playbook: str, returncode: int, output: str, wall: float, timing: dict[str, Any]):
        self.playbook, self.returncode, self.output, self.wall, self.timing = playbook, returncode, output, wall, timing

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def excerpt(self, chars: int = 3000) -> str:
        """What failed (the fatal lines with their messages and the audit's failures, which come before the
        recap) and the end."""
        causes = [line for line in self.output.splitlines()
                  if line.startswith("fatal:") or "FAILED!" in line or '"msg":' in line
                  or line.lstrip().startswith(("- ", "\"failures"))]
        head = "\n".join(causes)[:chars]
        return (head + "\n...\n" if head else "") + self.output[-chars:]


def run_playbook(playbook: str, inventory: str, *args: str, extra_env: dict[str, str] | None = None,
                 timeout: float = 3600) -> Run:
    with tempfile.NamedTemporaryFile(prefix="bench-timing-", suffix=".json", delete=False) as handle:
        timing_file = handle.name
    try:
        began = time.monotonic()
        proc = subprocess.run([ANSIBLE_PLAYBOOK, "-i", inventory, playbook, *args], capture_output=True, text=True,
                              env=playbook_env(timing_file, extra_env), cwd=REPO, timeout=timeout, check=False)
        wall = time.monotonic() - began
        timing: dict[str, Any] = {}
        with contextlib.suppress(OSError, ValueError):
            with open(timing_file, encoding="utf-8") as fh:
                timing = json.load(fh)
    finally:
        os.unlink(timing_file)
    return Run(playbook, proc.returncode, proc.stdout + proc.stderr, wall, timing)


# What counts as waiting on the cluster (docs/performance.md says the same): a leaf task (not an
# include) that is one of
#   - a service action: the restart role's "Service action | ..." tasks (service or command module),
#     the lab's `tikv-lab service` start/stop/restart, which includes the lab's 2 s start check;
#   - a leadership move: the pd_leader (transfer) and store_leaders (evict, wait for 0 leaders) modules;
#   - ansible.builtin.wait_for / pause;
#   - a task whose name says it waits ("Wait ..."), or that was retried with until/retries (polling);
#   - pd_peer_links: it reads the members' metrics twice, tikv_tls_verify_peer_links_interval apart,
#     by design (a sleep between two readings of the cluster; every member at once since the audit reads
#     them in one run).
WAIT_ACTIONS = {"tlsops.tikv.pd_leader", "tlsops.tikv.store_leaders", "tlsops.tikv.pd_peer_links",
                "ansible.builtin.wait_for", "wait_for", "ansible.builtin.pause", "pause",
                "ansible.builtin.service", "service"}
INCLUDE_ACTIONS = {"ansible.builtin.include_tasks", "include_tasks", "ansible.builtin.include_role", "include_role",
                   "ansible.builtin.import_tasks", "ansible.builtin.import_role", "meta", "ansible.builtin.meta"}


# Tasks that run no module (the worker templates and decides on the controller).
LIGHT_ACTIONS = INCLUDE_ACTIONS | {"ansible.builtin.set_fact", "set_fact", "ansible.builtin.assert", "assert",
                                   "ansible.builtin.debug", "debug", "ansible.builtin.fail", "fail",
                                   "ansible.builtin.validate_argument_spec", "validate_argument_spec",
                                   "ansible.builtin.add_host", "add_host", "ansible.builtin.group_by", "group_by"}


def wait_reason(task: dict[str, Any]) -> str | None:
    """Why a task counts as waiting on the cluster, or None (controller time)."""
    action, name = task.get("action") or "", task.get("name") or ""
    if action in INCLUDE_ACTIONS:
        return None
    if "Service action |" in name:
        return "service action"
    if action in WAIT_ACTIONS:
        return "leader move" if "leader" in action else ("metrics interval" if "peer_links" in action else action)
    if re.search(r"\bwait", name, re.I):
        return "named wait"
    if task.get("retries"):
        return "polled (until/retries)"
    return None


def profile(run: Run, instances: int) -> dict[str, Any]:
    """The run's wall time split into waiting on the cluster and the controller's own time, with the
    tasks that cost most. A task's wall time runs from its start to the next task's start (linear
    strategy: tasks run one after the other), so the tasks' times add up to the run."""
    tasks = run.timing.get("tasks") or []
    ended = run.timing.get("ended") or 0.0
    began = run.timing.get("began") or 0.0
    rows = []
    for index, task in enumerate(tasks):
        stop = tasks[index + 1]["start"] if index + 1 < len(tasks) else ended
        hosts = task.get("hosts") or {}
        ran = [h for h in hosts.values() if h.get("status") and h.get("status") != "skipped"]
        host_seconds = sum(h["end"] - h["start"] for h in ran if "start" in h and "end" in h)
        rows.append({"name": task.get("name"), "action": task.get("action"), "role": task.get("role"),
                     "wall": max(0.0, stop - task["start"]), "hosts_ran": len(ran), "host_seconds": host_seconds,
                     "retries": task.get("retries", 0), "wait": wait_reason(task) if ran else None})
    wait = sum(r["wall"] for r in rows if r["wait"])
    startup = (tasks[0]["start"] - began) if tasks else 0.0
    # The callback starts inside ansible-playbook; what is before it (interpreter, collection loading) and
    # after its last record is in run.wall but not in the tasks.
    outside = max(0.0, run.wall - (ended - began)) if ended else 0.0
    overhead = run.wall - wait
    by_name: dict[str, dict[str, Any]] = {}
    for row in rows:
        entry = by_name.setdefault(row["name"], {"name": row["name"], "action": row["action"], "wall": 0.0, "count": 0,
                                                 "wait": row["wait"]})
        entry["wall"] += row["wall"]
        entry["count"] += 1
    top = sorted(by_name.values(), key=lambda e: -e["wall"])[:15]
    # What the controller's time is made of, by the kind of task (waiting tasks left out): a task that runs
    # a module on every host costs Ansible a module start per host, a light one (set_fact, assert, include)
    # a worker per host; once-per-run tasks cost that once (overhead.py compares this with a calibration).
    mix = {"per_host_module": 0, "per_host_module_host_runs": 0, "per_host_light": 0, "per_host_light_host_runs": 0,
           "once_module": 0, "once_light": 0}
    for row in rows:
        if row["wait"] or not row["hosts_ran"]:
            continue
        light = (row["action"] or "") in LIGHT_ACTIONS
        if row["hosts_ran"] > 1:
            key = "per_host_light" if light else "per_host_module"
            mix[key] += 1
            mix[key + "_host_runs"] += row["hosts_ran"]
        else:
            mix["once_light" if light else "once_module"] += 1
    wait_kinds: dict[str, float] = {}
    for row in rows:
        if row["wait"]:
            wait_kinds[row["wait"]] = wait_kinds.get(row["wait"], 0.0) + row["wall"]
    return {"wall": round(run.wall, 2), "wait": round(wait, 2), "overhead": round(overhead, 2),
            "instances": instances, "overhead_per_instance": round(overhead / instances, 3) if instances else None,
            "tasks": len(rows), "tasks_that_ran": sum(1 for r in rows if r["hosts_ran"]), "task_mix": mix,
            "startup": round(startup + outside, 2),
            "wait_by_kind": {k: round(v, 2) for k, v in sorted(wait_kinds.items(), key=lambda kv: -kv[1])},
            "top_tasks": [dict(e, wall=round(e["wall"], 2)) for e in top]}


def window(run: Run, first: str, last: str) -> list[dict[str, Any]]:
    """The tasks from the first whose name contains `first` to the first after it whose name contains
    `last` (inclusive), each with its wall time: what the cutover's outage is made of."""
    tasks = run.timing.get("tasks") or []
    out, inside = [], False
    for index, task in enumerate(tasks):
        inside = inside or first in (task.get("name") or "")
        if inside:
            stop = tasks[index + 1]["start"] if index + 1 < len(tasks) else run.timing.get("ended", task["start"])
            ran = [h for h in (task.get("hosts") or {}).values() if h.get("status") and h["status"] != "skipped"]
            out.append({"name": task.get("name"), "action": task.get("action"), "wall": round(stop - task["start"], 3),
                        "hosts_ran": len(ran), "wait": wait_reason(task) if ran else None})
            if last in (task.get("name") or ""):
                break
    return out


def playbook_outage(output: str) -> float | None:
    """The outage the enable_tls/disable_tls cutover prints (roles/restart/tasks/cutover_record.yml)."""
    match = re.search(r"The cutover's outage \([^)]*\): ([0-9.]+) s", output.replace("\n", " "))
    return float(match.group(1)) if match else None


# ---------------------------------------------------------------------------------------------
# The probing client


class Sample:
    __slots__ = ("at", "pd_ok", "pd_tls", "stores_up", "leaders", "kv_ok", "kv_tls")

    def __init__(self, at, pd_ok, pd_tls, stores_up, leaders, kv_ok, kv_tls):
        self.at, self.pd_ok, self.pd_tls, self.stores_up = at, pd_ok, pd_tls, stores_up
        self.leaders, self.kv_ok, self.kv_tls = leaders, kv_ok, kv_tls

    @property
    def ok(self) -> bool:
        """The whole cluster serves: PD answered, every store is Up, every TiKV ran a KvGet."""
        return self.pd_ok and self.stores_up and all(self.kv_ok)


class Probe:
    """An independent client, every `interval` seconds: PD's HTTP API (`GET /pd/api/v1/stores`, any
    member, the next one when a member does not answer, as PD clients do) and one gRPC KvGet on every
    TiKV, each over whichever works of plaintext and TLS with the operator's files in the controller
    directory (<ctl>/ca.crt, <ctl>/clients/client.crt and .pem; re-read when they change, so it follows
    a rotation the way a client that reloads its files does). gRPC channels are kept open with a
    reconnect backoff of 50-100 ms, so a restarted TiKV is seen within a sample or two."""

    GRPC_OPTIONS = [("grpc.initial_reconnect_backoff_ms", 50), ("grpc.min_reconnect_backoff_ms", 50),
                    ("grpc.max_reconnect_backoff_ms", 100), ("grpc.use_local_subchannel_pool", 1)]

    def __init__(self, lab_root: str, ctl: str, interval: float = 0.05, timeout: float = 1.0):
        import grpc  # pylint: disable=import-outside-toplevel
        self.grpc = grpc
        lab = services.load_lab(lab_root)
        self.pds = [inst.address for inst in lab.of("pd")]
        self.tikvs = [inst.address for inst in lab.of("tikv")]
        self.files = (os.path.join(ctl, "ca.crt"), os.path.join(ctl, "clients", "client.crt"),
                      os.path.join(ctl, "clients", "client.pem"))
        self.interval, self.timeout = interval, timeout
        self.samples: list[Sample] = []
        self._stamp: tuple | None = None
        self._ssl: ssl.SSLContext | None = None
        self._creds = None
        self._channels: dict[tuple[str, bool], Any] = {}
        self._pd_first = 0
        self._pd_tls = False
        self._kv_tls = dict.fromkeys(self.tikvs, False)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    # TLS material, re-read when a file changes (a half-written pair keeps the previous one)
    def _refresh_tls(self) -> None:
        try:
            stamp = tuple(os.stat(p).st_mtime_ns for p in self.files)
        except OSError:
            return
        if stamp == self._stamp:
            return
        try:
            context = common.client_context(*self.files)
            with open(self.files[0], "rb") as ca, open(self.files[1], "rb") as cert, open(self.files[2], "rb") as key:
                creds = self.grpc.ssl_channel_credentials(ca.read(), key.read(), cert.read())
        except (OSError, ssl.SSLError, ValueError):
            return
        self._stamp, self._ssl, self._creds = stamp, context, creds
        for (address, tls), channel in list(self._channels.items()):
            if tls:
                channel.close()
                del self._channels[(address, tls)]

    def _modes(self, current: bool) -> list[bool]:
        return [current, not current] if self._ssl is not None else [False]

    def _pd(self) -> tuple[bool, bool, list[dict[str, Any]]]:
        order = self.pds[self._pd_first:] + self.pds[:self._pd_first]
        for address in order:
            for tls in self._modes(self._pd_tls):
                try:
                    status, data = common.http_json("GET", address, "/pd/api/v1/stores", None,
                                                    self._ssl if tls else None, self.timeout)
                except (OSError, ValueError, ssl.SSLError):
                    continue
                if status == 200 and isinstance(data, dict):
                    self._pd_first, self._pd_tls = self.pds.index(address), tls
                    return True, tls, data.get("stores") or []
        return False, self._pd_tls, []

    def _channel(self, address: str, tls: bool):
        key = (address, tls)
        if key not in self._channels:
            if tls:
                self._channels[key] = self.grpc.secure_channel(address, self._creds, options=self.GRPC_OPTIONS)
            else:
                self._channels[key] = self.grpc.insecure_channel(address, options=self.GRPC_OPTIONS)
        return self._channels[key]

    def _kv(self, address: str) -> tuple[bool, bool]:
        for tls in self._modes(self._kv_tls[address]):
            try:
                self._channel(address, tls).unary_unary("/tikvpb.Tikv/KvGet")(b"", timeout=self.timeout)
            except self.grpc.RpcError:
                continue
            self._kv_tls[address] = tls
            return True, tls
        return False, self._kv_tls[address]

    def sample(self) -> Sample:
        at = time.monotonic()
        self._refresh_tls()
        pd_ok, pd_tls, stores = self._pd()
        by_address = {s["store"]["address"]: s for s in stores}
        up = pd_ok and all(by_address.get(a, {}).get("store", {}).get("state_name") == "Up" for a in self.tikvs)
        leaders = [by_address.get(a, {}).get("status", {}).get("leader_count", 0) for a in self.tikvs]
        kv = [self._kv(a) for a in self.tikvs]
        return Sample(at, pd_ok, pd_tls, up, leaders, [k[0] for k in kv], [k[1] for k in kv])

    def _loop(self) -> None:
        while not self._stop.is_set():
            began = time.monotonic()
            self.samples.append(self.sample())
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - began)))

    def __enter__(self) -> "Probe":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        for channel in self._channels.values():
            channel.close()

    def wait_ok(self, timeout: float, since: float = 0.0) -> float | None:
        """Block until a sample taken after `since` is ok; the time of the first such sample, or None after
        `timeout`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            good = next((s.at for s in list(self.samples) if s.at >= since and s.ok), None)
            if good is not None:
                return good
            time.sleep(self.interval / 2)
        return None

    # ----- what the samples say
    def outage(self, since: float = 0.0) -> dict[str, Any] | None:
        """The first outage after `since`: from the first sample that was not ok to the first ok one after
        it (resolution: the sampling interval). Also whether the cluster came back over TLS."""
        samples = [s for s in self.samples if s.at >= since]
        first_bad = next((i for i, s in enumerate(samples) if not s.ok), None)
        if first_bad is None:
            return None
        back = next((i for i in range(first_bad, len(samples)) if samples[i].ok), None)
        began = samples[first_bad].at
        result = {"began": began, "seconds": None, "back_over_tls": None, "pd_gap": None, "tikv_gap": None}
        if back is not None:
            result["seconds"] = round(samples[back].at - began, 3)
            result["back_over_tls"] = bool(samples[back].pd_tls and all(samples[back].kv_tls))
            window = samples[first_bad:back + 1]
            result["pd_gap"] = round(_longest_gap([(s.at, s.pd_ok) for s in window]), 3)
            result["tikv_gap"] = round(max(_longest_gap([(s.at, s.kv_ok[j]) for s in window])
                                           for j in range(len(self.tikvs))), 3)
            result["ended"] = samples[back].at
        return result

    def availability(self, since: float = 0.0, until: float | None = None) -> dict[str, Any]:
        """Requests and failures in [since, until]: one PD request per sample (failed when no member
        answered) and one KvGet per TiKV per sample. `tikv_failed_with_leaders` counts the KvGet failures
        on a store that PD said held region leaders at that moment (a region-aware client sends its
        requests to leaders only; a store whose leaders were evicted first gets none)."""
        samples = [s for s in self.samples if s.at >= since and (until is None or s.at <= until)]
        pd_failed = sum(1 for s in samples if not s.pd_ok)
        kv_failed = sum(1 for s in samples for ok in s.kv_ok if not ok)
        kv_with_leaders = sum(1 for s in samples for ok, leaders in zip(s.kv_ok, s.leaders) if not ok and leaders)
        stranded = max((sum(count for count, up in zip(s.leaders, s.kv_ok) if not up) for s in samples), default=0)
        gaps = {"pd": _longest_gap([(s.at, s.pd_ok) for s in samples])}
        for j, address in enumerate(self.tikvs):
            gaps[address] = _longest_gap([(s.at, s.kv_ok[j]) for s in samples])
        spacing = [b.at - a.at for a, b in zip(samples, samples[1:])]
        return {"samples": len(samples), "requests": len(samples) * (1 + len(self.tikvs)),
                "failed": pd_failed + kv_failed, "pd_failed": pd_failed, "tikv_failed": kv_failed,
                "tikv_failed_with_leaders": kv_with_leaders, "max_leaders_on_unanswering_store": stranded,
                "longest_gap_pd": round(gaps["pd"], 3),
                "longest_gap_tikv": round(max(v for k, v in gaps.items() if k != "pd") if self.tikvs else 0.0, 3),
                "longest_gap": round(max(gaps.values()), 3),
                "sample_spacing_median": round(median(spacing), 3), "sample_spacing_max": round(max(spacing, default=0), 3)}


def _longest_gap(series: list[tuple[float, bool]]) -> float:
    """Longest stretch from a failed sample to the next good one (an unanswered tail counts to its end)."""
    longest, began = 0.0, None
    for at, good in series:
        if not good and began is None:
            began = at
        elif good and began is not None:
            longest, began = max(longest, at - began), None
    if began is not None and series:
        longest = max(longest, series[-1][0] - began)
    return longest


@contextlib.contextmanager
def stopwatch() -> Iterator[dict[str, float]]:
    out = {"began": time.monotonic()}
    try:
        yield out
    finally:
        out["seconds"] = time.monotonic() - out["began"]

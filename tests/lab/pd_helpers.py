"""Start, query and stop pd-server stand-ins for the lab's tests.

Every process is started in its own session (PD and its etcd child share a process group) and is
stopped by PID / process group id, never by name.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509

from tikvlab import certs
from tikvlab.common import client_context, http_json

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LAB = os.path.join(REPO, "lab")
PORTS_PER_MEMBER = 10
STOP_GRACE = 20.0
ETCD_EXIT_WAIT = 5.0


def ports_free(ports: list[int]) -> bool:
    for port in ports:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def free_base(members: int) -> int:
    """A base port in 30000-40000 whose client/peer/etcd ports (+0, +1, +5 per member) are all free."""
    for _attempt in range(200):
        base = random.randrange(30000, 40000 - PORTS_PER_MEMBER * members, PORTS_PER_MEMBER)
        wanted = [base + PORTS_PER_MEMBER * i + off for i in range(members) for off in (0, 1, 5)]
        if ports_free(wanted):
            return base
    raise RuntimeError("no free port range in 30000-40000")


@dataclass
class TLSFiles:
    ca: str
    cert: str
    key: str

    def client(self) -> ssl.SSLContext:
        ctx = client_context(self.ca, self.cert, self.key)
        assert ctx is not None
        return ctx


def issue(directory: str, ca: certs.Issued, cn: str, component: str = "client") -> TLSFiles:
    paths = certs.write_tls_dir(directory, component, ca, certs.make_leaf(ca, cn))
    return TLSFiles(paths["ca"], paths["cert"], paths["key"])


@dataclass
class PKI:
    """The TLS cluster's CA, another CA, and client certificates that PD must accept or refuse."""
    ca: certs.Issued
    other_ca: certs.Issued
    allowed: TLSFiles   # CN "x", signed by the cluster's CA
    other_cn: TLSFiles  # CN "other", signed by the cluster's CA
    foreign: TLSFiles   # trusts the cluster's CA but presents a cert signed by the other CA

    @classmethod
    def create(cls, root: str) -> PKI:
        ca, other_ca = certs.make_ca("tikvlab-ca"), certs.make_ca("someone-elses-ca")
        allowed = issue(os.path.join(root, "allowed"), ca, "x")
        foreign = issue(os.path.join(root, "foreign"), other_ca, "x")
        foreign.ca = allowed.ca
        return cls(ca, other_ca, allowed, issue(os.path.join(root, "other-cn"), ca, "other"), foreign)


@dataclass
class PD:
    name: str
    directory: str
    client_port: int
    peer_port: int
    etcd_port: int
    client_scheme: str = "http"
    peer_scheme: str = "http"
    tls: TLSFiles | None = None
    process: subprocess.Popen[bytes] | None = None
    etcd_pid: int | None = None
    extra_flags: list[str] = field(default_factory=list)

    @property
    def client_url(self) -> str:
        return f"{self.client_scheme}://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"{self.peer_scheme}://127.0.0.1:{self.peer_port}"

    @property
    def hostport(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    @property
    def log_path(self) -> str:
        return os.path.join(self.directory, "log", "pd.log")

    @property
    def stderr_path(self) -> str:
        return os.path.join(self.directory, "log", "pd_stderr.log")

    @property
    def data_dir(self) -> str:
        return os.path.join(self.directory, "data")

    def log(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as fh:
            return fh.read()

    def api(self, method: str, path: str, body: Any = None, tls: ssl.SSLContext | None = None,
            timeout: float = 15.0) -> tuple[int, Any]:
        """Call this member as a client would: with the member's own cert when its client port is https."""
        if tls is None and self.client_scheme == "https" and self.tls:
            tls = self.tls.client()
        return http_json(method, self.hostport, path, body, tls=tls, timeout=timeout)

    def flags(self, initial_cluster: str) -> list[str]:
        return [f"--name={self.name}", f"--client-urls={self.client_url}", f"--peer-urls={self.peer_url}",
                f"--data-dir={self.data_dir}", f"--initial-cluster={initial_cluster}",
                f"--log-file={self.log_path}", f"--lab-etcd-client-port={self.etcd_port}",
                f"--config={os.path.join(self.directory, 'conf', 'pd.toml')}", *self.extra_flags]


def write_pd_toml(pd: PD, security: str = "") -> None:
    """pd.toml as TiUP writes it (unrelated tables), plus an optional [security] table."""
    os.makedirs(os.path.join(pd.directory, "conf"), exist_ok=True)
    os.makedirs(os.path.join(pd.directory, "log"), exist_ok=True)
    with open(os.path.join(pd.directory, "conf", "pd.toml"), "w", encoding="utf-8") as fh:
        fh.write("# WARNING: This file is auto-generated. Do not edit!\n"
                 "[log]\nlevel = \"info\"\n[replication]\nmax-replicas = 3\n[schedule]\nleader-schedule-limit = 4\n")
        fh.write(security)


def security_toml(tls: TLSFiles, allowed_cn: list[str] | None = None) -> str:
    text = f'[security]\ncacert-path = "{tls.ca}"\ncert-path = "{tls.cert}"\nkey-path = "{tls.key}"\n'
    if allowed_cn is not None:
        text += "cert-allowed-cn = [" + ", ".join(f'"{cn}"' for cn in allowed_cn) + "]\n"
    return text


def lab_env(version: str = "v8.5.0") -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIKVLAB_")}
    env["PYTHONPATH"] = LAB
    env["TIKVLAB_PD_VERSION"] = version
    return env


def start(pd: PD, initial_cluster: str, version: str = "v8.5.0") -> None:
    with open(pd.stderr_path, "ab") as err:
        pd.process = subprocess.Popen([sys.executable, "-m", "tikvlab.pd_server", *pd.flags(initial_cluster)],
                                      cwd=pd.directory, env=lab_env(version), stdin=subprocess.DEVNULL,
                                      stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)


def child_pids(pid: int) -> list[int]:
    children: list[int] = []
    task_dir = f"/proc/{pid}/task"
    for task in os.listdir(task_dir) if os.path.isdir(task_dir) else []:
        try:
            with open(f"{task_dir}/{task}/children", encoding="ascii") as fh:
                children += [int(p) for p in fh.read().split()]
        except OSError:
            continue
    return children


def alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_until(predicate, timeout: float, interval: float = 0.2, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except (OSError, ValueError, KeyError, TypeError) as err:
            last = err
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


def record_etcd_pid(pd: PD, timeout: float = 10.0) -> int:
    assert pd.process is not None
    pd.etcd_pid = wait_until(lambda: (child_pids(pd.process.pid) or [None])[0], timeout, what=f"{pd.name}'s etcd")
    return pd.etcd_pid


def leader_name(pd: PD) -> str | None:
    status, body = pd.api("GET", "/pd/api/v1/leader", timeout=5)
    return body["name"] if status == 200 else None


def wait_for_leader(pds: list[PD], timeout: float = 40.0) -> str:
    return wait_until(lambda: leader_name(pds[0]), timeout, what="a PD leader")


def every_member_published(pd: PD) -> bool:
    """Members publish their build info (binary_version, git_hash) once they first see a leader."""
    status, members = pd.api("GET", "/pd/api/v1/members", timeout=5)
    return status == 200 and all(m["binary_version"] for m in members["members"])


def wait_for_cluster(pds: list[PD], timeout: float = 40.0) -> None:
    wait_for_leader(pds, timeout)
    wait_until(lambda: every_member_published(pds[0]), 10, what="every member's build info")


def start_cluster(root: str, count: int, *, client_scheme: str = "http", peer_scheme: str = "http",
                  ca: certs.Issued | None = None, allowed_cn: list[str] | None = None,
                  version: str = "v8.5.0", cn: str = "pd") -> list[PD]:
    base = free_base(count)
    pds = [PD(name=f"pd-127.0.0.1-{base + PORTS_PER_MEMBER * i}",
              directory=os.path.join(root, f"pd-{base + PORTS_PER_MEMBER * i}"),
              client_port=base + PORTS_PER_MEMBER * i, peer_port=base + PORTS_PER_MEMBER * i + 1,
              etcd_port=base + PORTS_PER_MEMBER * i + 5, client_scheme=client_scheme, peer_scheme=peer_scheme)
           for i in range(count)]
    initial_cluster = ",".join(f"{pd.name}={pd.peer_url}" for pd in pds)
    for pd in pds:
        if ca is not None:
            pd.tls = issue(os.path.join(pd.directory, "tls"), ca, cn, component="pd")
        write_pd_toml(pd, security_toml(pd.tls, allowed_cn) if pd.tls else "")
        start(pd, initial_cluster, version)
    for pd in pds:
        record_etcd_pid(pd)
    return pds


def _assert_etcd_gone(pd: PD) -> None:
    """The stand-in is gone; its etcd must be too (killed here if not, so nothing leaks either way)."""
    if pd.etcd_pid is None:
        return
    deadline = time.monotonic() + ETCD_EXIT_WAIT
    while alive(pd.etcd_pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if alive(pd.etcd_pid):
        os.kill(pd.etcd_pid, signal.SIGKILL)
        raise AssertionError(f"{pd.name}'s etcd (pid {pd.etcd_pid}) outlived the stand-in")


def stop(pd: PD) -> int | None:
    """SIGTERM one stand-in (resuming it first if a test froze it), SIGKILL its group after a grace
    period, and check its etcd went with it. Returns the stand-in's exit code."""
    if pd.process is None:
        return None
    if pd.process.poll() is None:
        os.killpg(pd.process.pid, signal.SIGCONT)
        pd.process.terminate()
        try:
            pd.process.wait(STOP_GRACE)
        except subprocess.TimeoutExpired:
            os.killpg(pd.process.pid, signal.SIGKILL)
            pd.process.wait()
    _assert_etcd_gone(pd)
    return pd.process.returncode


def stop_all(pds: list[PD]) -> None:
    for pd in pds:  # signal every member first: they stop faster together than one by one
        if pd.process is not None and pd.process.poll() is None:
            os.killpg(pd.process.pid, signal.SIGCONT)
            pd.process.terminate()
    failures = []
    for pd in pds:
        try:
            stop(pd)
        except AssertionError as err:
            failures.append(str(err))
    assert not failures, failures


def serving_serial(pd: PD, tls: TLSFiles) -> int:
    """The serial number of the certificate the member's client port presents right now."""
    with socket.create_connection(("127.0.0.1", pd.client_port), timeout=5) as raw:
        with tls.client().wrap_socket(raw, server_hostname="127.0.0.1") as conn:
            der = conn.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def serial_of(cert_path: str) -> int:
    with open(cert_path, "rb") as fh:
        return x509.load_pem_x509_certificate(fh.read()).serial_number


def run_refused(tmp: str, flags: list[str], toml: str = "", version: str = "v8.5.0") -> tuple[int, str]:
    """Start a stand-in expected to refuse its config: (exit code, stderr + log)."""
    base = free_base(1)
    pd = PD(name="refused", directory=tmp, client_port=base, peer_port=base + 1, etcd_port=base + 5)
    write_pd_toml(pd, toml)
    proc = subprocess.run([sys.executable, "-m", "tikvlab.pd_server",
                           f"--log-file={pd.log_path}", f"--data-dir={pd.data_dir}",
                           f"--config={os.path.join(tmp, 'conf', 'pd.toml')}",
                           f"--lab-etcd-client-port={pd.etcd_port}",
                           f"--client-urls=http://127.0.0.1:{base}", f"--peer-urls=http://127.0.0.1:{base + 1}",
                           *flags], cwd=tmp, env=lab_env(version), capture_output=True, text=True, check=False, timeout=30)
    log = pd.log() if os.path.exists(pd.log_path) else ""
    return proc.returncode, proc.stderr + log

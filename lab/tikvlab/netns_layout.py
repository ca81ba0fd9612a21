"""netns mode's files: instances spread over lab hosts, each host's private tree, SSH, inventory.

The instances are TiUP's defaults on each host (`/tidb-deploy/pd-2379`, ports 2379/2380 and
20160/20180; a second instance of a component on the same host takes the next ports, as TiUP
topologies do). Trees are written from outside through `<root>/hosts/<host>/...`, which each host
mounts privately at `/tidb-deploy`, `/tidb-data`, `/etc/init.d`; the texts (run scripts, configs)
carry the paths the host sees. TiUP's run scripts listen on 0.0.0.0 and advertise the host address.
"""

from __future__ import annotations

import os
import shlex
import subprocess

from . import certs, layout
from .layout import Instance, Lab
from .netns import DATA_ROOT, DEPLOY_ROOT, INIT_DIR, Host, NetnsError, NetnsState, tool

PD_CLIENT_PORT = 2379
PD_PORT_STEP = 2               # second PD on a host: 2381/2382
PD_ETCD_CLIENT_PORT = 12379    # the stand-in's private etcd listener, on the host's loopback
TIKV_PORT = 20160
TIKV_STATUS_PORT = 20180
MAX_PER_HOST = 10
LISTEN_ALL = "0.0.0.0"


def plan_instances(lab: Lab, state: NetnsState, pd_count: int, tikv_count: int) -> None:
    """Instances round-robin over the hosts (pd1 and tikv1 on host1, ...), TiUP ports and paths."""
    slots: dict[tuple[str, str], int] = {}

    def slot(host: Host, component: str) -> int:
        key = (host.name, component)
        slots[key] = slots.get(key, -1) + 1
        if slots[key] >= MAX_PER_HOST:
            raise NetnsError(f"more than {MAX_PER_HOST} {component} instances on {host.name}; add --hosts")
        return slots[key]

    for i in range(pd_count):
        host = state.hosts[i % len(state.hosts)]
        k = slot(host, "pd")
        client = PD_CLIENT_PORT + PD_PORT_STEP * k
        lab.instances.append(Instance(
            name=f"pd{i + 1}", component="pd", host=host.address,
            ports={"client": client, "peer": client + 1, "etcd_client": PD_ETCD_CLIENT_PORT + k},
            deploy_dir=f"{DEPLOY_ROOT}/pd-{client}", data_dir=f"{DATA_ROOT}/pd-{client}", version=lab.pd_version))
    for j in range(tikv_count):
        host = state.hosts[j % len(state.hosts)]
        k = slot(host, "tikv")
        lab.instances.append(Instance(
            name=f"tikv{j + 1}", component="tikv", host=host.address,
            ports={"grpc": TIKV_PORT + k, "status": TIKV_STATUS_PORT + k},
            deploy_dir=f"{DEPLOY_ROOT}/tikv-{TIKV_PORT + k}", data_dir=f"{DATA_ROOT}/tikv-{TIKV_PORT + k}",
            version=lab.tikv_version))


def service_name(inst: Instance) -> str:
    """TiUP's unit name, which the collection's roles use: `pd-2379`, `tikv-20160`."""
    return f"{inst.component}-{inst.main_port}"


def host_of(state: NetnsState, inst: Instance) -> Host:
    return state.host_of_address(inst.host)


# ---------------------------------------------------------------------------------------------
# Texts


def run_script_text(lab: Lab, inst: Instance) -> str:
    """TiUP's run script for a multi-host deployment: listen on 0.0.0.0, advertise the host address."""
    if inst.component == "pd":
        text = layout.run_pd_text(lab, inst)
        for flag in ("client-urls", "peer-urls"):
            port = inst.ports["client" if flag == "client-urls" else "peer"]
            for scheme in ("http", "https"):
                text = text.replace(f'--{flag}="{scheme}://{inst.host}:{port}"',
                                    f'--{flag}="{scheme}://{LISTEN_ALL}:{port}"')
        return text
    text = layout.run_tikv_text(lab, inst)
    for flag, port in (("addr", inst.ports["grpc"]), ("status-addr", inst.ports["status"])):
        text = text.replace(f'--{flag} "{inst.host}:{port}"', f'--{flag} "{LISTEN_ALL}:{port}"')
    return text


def wrapper_text(inst: Instance, user: str) -> str:
    """bin/pd-server or bin/tikv-server: the stand-in as the service user (TiUP's units say User=tidb),
    so a key the service user cannot read stops it as it stops the real server."""
    module = "tikvlab.pd_server" if inst.component == "pd" else "tikvlab.tikv_server"
    return ("#!/bin/sh\n"
            f"# tikv-lab stand-in for {inst.component}-server (netns mode): same flags, same files, runs as {user}.\n"
            '. "$(dirname "$0")/lab.env"\n'
            f"exec {shlex.quote(tool('setpriv'))} --reuid={user} --regid={user} --init-groups -- "
            f"{shlex.quote(layout.venv_python())} -m {module} \"$@\"\n")


def init_script_text(lab: Lab, inst: Instance) -> str:
    """/etc/init.d/<service> on the instance's host: what `service pd-2379 restart` (and so
    ansible.builtin.service) runs where there is no systemd. The lab's CLI keeps the PID."""
    name = service_name(inst)
    cli = f"{shlex.quote(layout.CLI_PATH)} --root {shlex.quote(lab.root)} service {inst.name}"
    return f"""#!/bin/sh
### BEGIN INIT INFO
# Provides:          {name}
# Required-Start:    $network $remote_fs
# Required-Stop:     $network $remote_fs
# Default-Start:     2 3 4 5
# Default-Stop:      0 1 6
# Short-Description: {inst.component.upper()} {inst.address} (tikv-lab {inst.name})
# Description:       What TiUP's {name}.service does, as a SysV script: runs
#                    {inst.run_script} in its own session; the PID is kept in {lab.root}/lab.json.
### END INIT INFO
case "$1" in
    start|stop|restart|status) exec {cli} "$1" ;;
    force-reload|reload) exec {cli} restart ;;
    *) echo "Usage: {INIT_DIR}/{name} {{start|stop|restart|force-reload|status}}" >&2; exit 2 ;;
esac
"""


def sshd_config_text(state: NetnsState, host: Host) -> str:
    return f"""# tikv-lab: sshd of lab host {host.name} ({host.address}), netns mode
ListenAddress {host.address}:22
HostKey {state.ssh_dir}/host_{host.name}
PidFile none
UsePAM no
# The lab root may sit under a directory that sshd's StrictModes would refuse.
StrictModes no
AuthorizedKeysFile {state.ssh_dir}/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
PrintMotd no
PrintLastLog no
UseDNS no
# Several inventory hosts (instances) share one lab host, so one connection carries many sessions.
MaxSessions 64
MaxStartups 64:30:128
Subsystem sftp internal-sftp
"""


# ---------------------------------------------------------------------------------------------
# Writing


def outside_instance(state: NetnsState, inst: Instance) -> Instance:
    host = host_of(state, inst)
    return Instance(name=inst.name, component=inst.component, host=inst.host, ports=inst.ports,
                    deploy_dir=state.outside(host, inst.deploy_dir), data_dir=state.outside(host, inst.data_dir),
                    version=inst.version)


def write_instance(lab: Lab, state: NetnsState, inst: Instance, security: dict[str, str] | None) -> None:
    """The instance's TiUP tree (layout's texts, netns run script and wrapper), written from outside."""
    out = outside_instance(state, inst)
    layout.make_dirs(out)
    binary = "pd-server" if inst.component == "pd" else "tikv-server"
    layout.write_file(os.path.join(out.deploy_dir, "bin", "lab.env"), layout.lab_env_text(lab, inst))
    layout.write_file(os.path.join(out.deploy_dir, "bin", binary), wrapper_text(inst, state.service_user), 0o755)
    config = layout.pd_toml_text(security) if inst.component == "pd" else layout.tikv_toml_text(security)
    layout.write_file(out.config_path, config)
    layout.write_file(out.run_script, run_script_text(lab, inst), 0o755)
    host = host_of(state, inst)
    layout.write_file(state.outside(host, f"{INIT_DIR}/{service_name(inst)}"), init_script_text(lab, inst), 0o755)


def issue_tls(lab: Lab, state: NetnsState) -> dict[str, dict[str, str]]:
    """`up --tls`: as in local mode (CA in <root>/ca, client cert in <root>/client-tls), each leaf for
    its host's address; returns each instance's ca/cert/key paths as its host sees them."""
    ca = certs.make_ca()
    os.makedirs(lab.ca_dir, mode=0o700, exist_ok=True)
    layout.write_file(os.path.join(lab.ca_dir, "ca.crt"), ca.cert_pem.decode())
    layout.write_file(os.path.join(lab.ca_dir, "ca.key"), ca.key_pem.decode(), 0o600)
    paths = {}
    for inst in lab.instances:
        leaf = certs.make_leaf(ca, inst.component, sans=[inst.host, "localhost"])
        certs.write_tls_dir(state.outside(host_of(state, inst), inst.tls_dir), inst.component, ca, leaf)
        paths[inst.name] = {"ca": f"{inst.tls_dir}/ca.crt", "cert": f"{inst.tls_dir}/{inst.component}.crt",
                            "key": f"{inst.tls_dir}/{inst.component}.pem"}
    certs.write_tls_dir(lab.client_tls_dir, "client", ca, certs.make_leaf(ca, "client"))
    return paths


def write_host_files(state: NetnsState, host: Host) -> None:
    """What makes the host a host: passwd/group with the service user, hosts, hostname, sshd config,
    empty deploy/data/init.d trees."""
    hdir = state.host_dir(host)
    for sub in ("tidb-deploy", "tidb-data", "init.d", "etc"):
        os.makedirs(os.path.join(hdir, sub), exist_ok=True)
    user = state.service_user
    with open("/etc/passwd", encoding="utf-8") as fh:
        passwd = fh.read()
    if not any(line.split(":")[0] == user for line in passwd.splitlines()):
        passwd = passwd.rstrip("\n") + f"\n{user}:x:{state.uid}:{state.gid}:TiDB service user (tikv-lab):/home/{user}:/bin/bash\n"
    with open("/etc/group", encoding="utf-8") as fh:
        group = fh.read()
    if not any(line.split(":")[0] == user for line in group.splitlines()):
        group = group.rstrip("\n") + f"\n{user}:x:{state.gid}:\n"
    layout.write_file(os.path.join(hdir, "etc", "passwd"), passwd)
    layout.write_file(os.path.join(hdir, "etc", "group"), group)
    hosts = "127.0.0.1\tlocalhost\n" + "".join(f"{h.address}\t{h.hostname}\n" for h in state.hosts)
    layout.write_file(os.path.join(hdir, "etc", "hosts"), hosts)
    layout.write_file(os.path.join(hdir, "etc", "hostname"), host.hostname + "\n")
    layout.write_file(os.path.join(hdir, "sshd_config"), sshd_config_text(state, host), 0o600)


def make_ssh_keys(state: NetnsState) -> None:
    """The operator's key (Ansible logs in as root with it) and one host key per host, pinned in
    known_hosts: host key checking stays on."""
    os.makedirs(state.ssh_dir, mode=0o700, exist_ok=True)
    keygen = tool("ssh-keygen")
    subprocess.run([keygen, "-q", "-t", "ed25519", "-N", "", "-C", "tikv-lab operator", "-f", state.client_key],
                   check=True, capture_output=True)
    with open(state.client_key + ".pub", encoding="utf-8") as fh:
        layout.write_file(os.path.join(state.ssh_dir, "authorized_keys"), fh.read(), 0o600)
    known = []
    for host in state.hosts:
        key = os.path.join(state.ssh_dir, f"host_{host.name}")
        subprocess.run([keygen, "-q", "-t", "ed25519", "-N", "", "-C", host.name, "-f", key],
                       check=True, capture_output=True)
        with open(key + ".pub", encoding="utf-8") as fh:
            kind, blob = fh.read().split()[:2]
        known.append(f"{host.address} {kind} {blob}\n")
    layout.write_file(state.known_hosts, "".join(known))


def chown_tree(path: str, uid: int, gid: int) -> None:
    os.chown(path, uid, gid)
    for parent, dirs, files in os.walk(path):
        for name in dirs + files:
            os.chown(os.path.join(parent, name), uid, gid, follow_symlinks=False)


def write_lab(lab: Lab, state: NetnsState) -> None:
    """Every host's files and every instance's tree; deploy and data trees owned by the service user."""
    for host in state.hosts:
        write_host_files(state, host)
    make_ssh_keys(state)
    tls_paths = issue_tls(lab, state) if lab.tls else {}
    for inst in lab.instances:
        write_instance(lab, state, inst, tls_paths.get(inst.name))
    for host in state.hosts:
        for sub in ("tidb-deploy", "tidb-data"):
            chown_tree(os.path.join(state.host_dir(host), sub), state.uid, state.gid)


def interpreter_paths(lab: Lab) -> list[str]:
    """What the service user must reach to run a stand-in: the Python, the venv, the lab, etcd."""
    return [os.path.realpath(layout.venv_python()), os.path.join(layout.REPO, ".venv"), layout.LAB_DIR,
            layout.etcd_binary(lab.pd_version)]


# ---------------------------------------------------------------------------------------------
# Inventory


def inventory(lab: Lab, state: NetnsState) -> dict:
    """An Ansible inventory over SSH: one host per instance (several per lab host, as TiUP deploys),
    TiUP's defaults, the service manager left at the roles' default (`service`)."""
    ssh_args = (f"-o UserKnownHostsFile={state.known_hosts} -o StrictHostKeyChecking=yes "
                f"-o IdentitiesOnly=yes -o ConnectTimeout=5")

    def hostvars(inst: Instance) -> dict:
        return {**layout.inventory_hostvars(inst), "tikv_tls_lab_host": host_of(state, inst).name}

    pd_hosts = {inst.name: hostvars(inst) for inst in lab.of("pd")}
    tikv_hosts = {inst.name: hostvars(inst) for inst in lab.of("tikv")}
    return {"all": {
        "vars": {
            "ansible_connection": "ssh",
            "ansible_user": "root",
            "ansible_ssh_private_key_file": state.client_key,
            "ansible_ssh_common_args": ssh_args,
            "ansible_pipelining": True,
            "ansible_python_interpreter": layout.venv_python(),
            "tikv_tls_service_user": state.service_user,
            "tikv_tls_service_group": state.service_user,
            "tikv_tls_lab_root": lab.root,
            # The collection's CA and operator certificate, and the verify reports, go with the lab.
            "tikv_tls_controller_dir": os.path.join(lab.root, "controller"),
            "tikv_tls_report_dir": os.path.join(lab.root, "report"),
        },
        "children": {"pd": {"hosts": pd_hosts}, "tikv": {"hosts": tikv_hosts}},
    }}

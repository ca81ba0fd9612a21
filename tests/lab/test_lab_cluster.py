"""The lab as a whole, driven through `tikv-lab` as a user or a playbook drives it.

These are the lab's acceptance tests: a TLS mistake that breaks a real cluster must break the lab in
the same visible way (a Disconnected store, a refused handshake, a log line naming the cause), and the
plumbing the collection relies on (inventory, `service`, `down`) must do exactly what it says.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator

import grpc
import pytest
import tomlkit
import yaml
from cryptography import x509

from tikvlab import certs, common, health, services
from tikvlab.layout import CLI_PATH, DEBIAN_ETCD, Instance, venv_python

from lab_harness import LabHandle, port_free, running_lab, wait_for

pytestmark = pytest.mark.timeout(300)

KV_GET = "/tikvpb.Tikv/KvGet"
PD_PING = "/pd/api/v1/ping"


# ---------------------------------------------------------------------------------------------
# Helpers: what an operator does to one instance, and clients that present chosen certificates


def set_security(inst: Instance, security: dict[str, object] | None) -> None:
    """Replace (or drop) the [security] table of the instance's config, keeping everything else."""
    with open(inst.config_path, encoding="utf-8") as fh:
        doc = tomlkit.parse(fh.read())
    doc.pop("security", None)
    if security is not None:
        table = tomlkit.table()
        for key, value in security.items():
            table.add(key, value)
        doc.add("security", table)
    with open(inst.config_path, "w", encoding="utf-8") as fh:
        fh.write(tomlkit.dumps(doc))


def tikv_security(paths: dict[str, str], **extra: object) -> dict[str, object]:
    return {"ca-path": paths["ca"], "cert-path": paths["cert"], "key-path": paths["key"], **extra}


def pd_security(paths: dict[str, str], **extra: object) -> dict[str, object]:
    return {"cacert-path": paths["ca"], "cert-path": paths["cert"], "key-path": paths["key"], **extra}


def lab_ca(handle: LabHandle) -> certs.Issued:
    """The throwaway CA `up --tls` wrote, so tests can issue more leaves from it."""
    lab = handle.lab()
    with open(os.path.join(lab.ca_dir, "ca.crt"), "rb") as c, open(os.path.join(lab.ca_dir, "ca.key"), "rb") as k:
        return certs.Issued(c.read(), k.read())


def read(path: str) -> bytes:
    with open(path, "rb") as fh:
        return fh.read()


def grpc_kv_get(port: int, ca: str, cert: str | None = None, key: str | None = None) -> bytes:
    """One TiKV gRPC call presenting cert/key (or none) and trusting `ca`."""
    creds = grpc.ssl_channel_credentials(read(ca), read(key) if key else None, read(cert) if cert else None)
    with grpc.secure_channel(f"127.0.0.1:{port}", creds) as channel:
        return channel.unary_unary(KV_GET)(b"", timeout=5)


def grpc_error(port: int, ca: str, cert: str | None = None, key: str | None = None) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        grpc_kv_get(port, ca, cert, key)
    return caught.value


def tls_client(ca: str, cert: str | None = None, key: str | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=ca)
    if cert and key:
        ctx.load_cert_chain(cert, key)
    return ctx


def https_get(port: int, path: str, ctx: ssl.SSLContext) -> int:
    """GET over TLS; the status code, or an OSError (ssl.SSLError, reset, EOF) when refused."""
    conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=5, context=ctx)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    finally:
        conn.close()


def served_certificate(port: int, ctx: ssl.SSLContext) -> x509.Certificate:
    """The certificate a TLS port presents to a new connection (ALPN h2, as a gRPC client asks)."""
    ctx.set_alpn_protocols(["h2"])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))


def bump_mtime(path: str) -> None:
    """Touch a file with a clearly later mtime (what an rsync/copy of the same content does)."""
    later = time.time() + 5
    os.utime(path, (later, later))


# ---------------------------------------------------------------------------------------------
# A plaintext cluster


@pytest.mark.usefixtures("plaintext_lab")
class TestPlaintextCluster:

    def test_up_is_healthy_and_quick(self, plaintext_lab: LabHandle) -> None:
        assert plaintext_lab.up_seconds < 60
        members = plaintext_lab.pd("GET", "/members")
        assert members["leader"]["name"] in {m["name"] for m in members["members"]}
        assert members["etcd_leader"]["name"] == members["leader"]["name"]
        health_rows = plaintext_lab.pd("GET", "/health")
        assert len(health_rows) == 3 and all(row["health"] for row in health_rows)
        stores = plaintext_lab.pd("GET", "/stores")["stores"]
        assert sorted(s["store"]["address"] for s in stores) == sorted(
            i.address for i in plaintext_lab.lab().of("tikv"))
        assert {s["store"]["state_name"] for s in stores} == {"Up"}
        status = json.loads(plaintext_lab.ok("status", "--json"))
        assert status["healthy"] and {row["tls"] for row in status["instances"]} == {"off"}

    def test_layout_is_tiup_shaped(self, plaintext_lab: LabHandle) -> None:
        pd1, tikv1 = plaintext_lab.instance("pd1"), plaintext_lab.instance("tikv1")
        assert os.path.basename(pd1.deploy_dir) == f"pd-{pd1.ports['client']}"
        run_pd = read(pd1.run_script).decode()
        assert f'--client-urls="http://127.0.0.1:{pd1.ports["client"]}"' in run_pd
        assert '--initial-cluster="pd-127.0.0.1-' in run_pd and "exec bin/pd-server" in run_pd
        assert f'--pd "{pd1.address},' in read(tikv1.run_script).decode()
        pd_toml = read(pd1.config_path).decode()
        assert pd_toml.startswith("# WARNING: This file is auto-generated. Do not edit!")
        assert "[replication]" in pd_toml and "[security]" not in pd_toml
        assert os.stat(tikv1.tls_dir).st_mode & 0o777 == 0o700 and not os.listdir(tikv1.tls_dir)
        version = subprocess.run([os.path.join(pd1.deploy_dir, "bin", "pd-server"), "-V"],
                                 capture_output=True, text=True, check=False, timeout=30)
        assert "Release Version: v8.5.0" in version.stdout

    def test_inventory_is_usable_as_is(self, plaintext_lab: LabHandle) -> None:
        inventory = yaml.safe_load(plaintext_lab.ok("inventory"))["all"]
        lab = plaintext_lab.lab()
        shared = inventory["vars"]
        assert shared["ansible_connection"] == "local"
        assert shared["ansible_python_interpreter"] == venv_python()
        assert shared["tikv_tls_service_manager"] == "command"
        assert shared["tikv_tls_lab_root"] == lab.root
        assert shared["tikv_tls_service_user"] and shared["tikv_tls_service_group"]
        for action in ("start", "stop", "restart", "status"):
            assert shared["tikv_tls_service_commands"][action] == (
                f"{CLI_PATH} --root {lab.root} service {{{{ inventory_hostname }}}} {action}")
        pd1 = inventory["children"]["pd"]["hosts"]["pd1"]
        assert pd1 == {"ansible_host": "127.0.0.1", "pd_name": f"pd-127.0.0.1-{plaintext_lab.base_port}",
                       "pd_client_port": plaintext_lab.base_port, "pd_peer_port": plaintext_lab.base_port + 1,
                       "deploy_dir": lab.instance("pd1").deploy_dir, "data_dir": lab.instance("pd1").data_dir,
                       "tikv_tls_version": "v8.5.0"}
        assert sorted(inventory["children"]["pd"]["hosts"]) == ["pd1", "pd2", "pd3"]
        assert sorted(inventory["children"]["tikv"]["hosts"]) == ["tikv1", "tikv2", "tikv3"]
        tikv2 = inventory["children"]["tikv"]["hosts"]["tikv2"]
        assert (tikv2["tikv_port"], tikv2["tikv_status_port"]) == (plaintext_lab.base_port + 110,
                                                                   plaintext_lab.base_port + 111)
        # The status command, rendered as Ansible would, runs from a shell without the venv.
        command = shared["tikv_tls_service_commands"]["status"].replace("{{ inventory_hostname }}", "tikv2")
        env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
        env["PATH"] = "/usr/bin:/bin"
        assert subprocess.run(command.split(), env=env, capture_output=True, check=False, timeout=60).returncode == 0

    def test_pd_leader_transfer_moves_the_etcd_leader(self, plaintext_lab: LabHandle) -> None:
        members = plaintext_lab.pd("GET", "/members")
        target = next(m for m in members["members"] if m["name"] != members["leader"]["name"])
        plaintext_lab.pd("POST", f"/leader/transfer/{target['name']}")
        assert plaintext_lab.pd("GET", "/members")["etcd_leader"]["name"] == target["name"]
        # etcd's own answer, through the JSON gateway on PD's client port.
        pd1 = plaintext_lab.instance("pd1")
        status, answer = common.http_json("POST", pd1.address, "/v3/maintenance/status", {})
        assert status == 200 and int(answer["leader"]) == int(target["member_id"])
        plaintext_lab.wait_healthy()

    def test_service_stop_start_and_a_stopped_tikv_is_disconnected(self, plaintext_lab: LabHandle) -> None:
        plaintext_lab.ok("service", "tikv2", "stop")
        assert plaintext_lab.run("service", "tikv2", "status").returncode == 3
        assert not port_free(plaintext_lab.instance("tikv1").ports["grpc"])
        assert port_free(plaintext_lab.instance("tikv2").ports["grpc"])
        wait_for(lambda: plaintext_lab.store_state("tikv2") == "Disconnected", timeout=10)
        assert plaintext_lab.run("status").returncode == 1
        assert "started" in plaintext_lab.ok("service", "tikv2", "start")
        assert plaintext_lab.run("service", "tikv2", "status").returncode == 0
        wait_for(lambda: plaintext_lab.store_state("tikv2") == "Up", timeout=10)

    def test_partial_security_makes_start_fail_with_tikvs_message(self, plaintext_lab: LabHandle) -> None:
        tikv2 = plaintext_lab.instance("tikv2")
        ca = certs.make_ca()
        paths = certs.write_tls_dir(tikv2.tls_dir, "tikv", ca, certs.make_leaf(ca, "tikv"))
        # Readable files, only one of them configured: TiKV checks each file first, then the set.
        set_security(tikv2, {"ca-path": paths["ca"]})
        try:
            result = plaintext_lab.run("service", "tikv2", "restart")
            assert result.returncode == 1
            assert "tikv2" in result.stderr
            assert "invalid configuration: ca, cert and private key should be all configured." in result.stderr
            assert plaintext_lab.run("service", "tikv2", "status").returncode == 3
        finally:
            set_security(tikv2, None)
        plaintext_lab.ok("service", "tikv2", "start")
        plaintext_lab.wait_healthy()

    def test_a_tikv_alone_on_tls_goes_disconnected_and_says_why(self, plaintext_lab: LabHandle) -> None:
        tikv3 = plaintext_lab.instance("tikv3")
        ca = certs.make_ca()
        paths = certs.write_tls_dir(tikv3.tls_dir, "tikv", ca, certs.make_leaf(ca, "tikv"))
        set_security(tikv3, tikv_security(paths))
        try:
            plaintext_lab.ok("service", "tikv3", "restart")
            wait_for(lambda: plaintext_lab.store_state("tikv3") == "Disconnected", timeout=10)
            log = wait_for(lambda: "failed to send heartbeat" in plaintext_lab.log("tikv3")
                           and plaintext_lab.log("tikv3"), timeout=10)
            cause = [line for line in log.splitlines() if "failed to send heartbeat" in line][-1]
            assert "SSL" in cause or "ssl" in cause, cause
        finally:
            set_security(tikv3, None)
            plaintext_lab.ok("service", "tikv3", "restart")
        plaintext_lab.wait_healthy()

    def test_faults_kill_and_partition(self, plaintext_lab: LabHandle) -> None:
        plaintext_lab.ok("fault", "tikv1", "kill")
        wait_for(lambda: plaintext_lab.run("service", "tikv1", "status").returncode == 3, timeout=5)
        partition = plaintext_lab.run("fault", "pd1", "partition")
        assert partition.returncode == 1 and "netns mode" in partition.stderr
        plaintext_lab.ok("service", "tikv1", "start")
        plaintext_lab.wait_healthy()

    def test_down_leaves_no_process_port_or_file(self, plaintext_lab: LabHandle) -> None:
        lab = plaintext_lab.lab()
        groups = {inst.pid: services.group_members(inst.pid) for inst in lab.instances}
        assert all(groups.values()), groups
        pids = {pid for members in groups.values() for pid in members}
        plaintext_lab.ok("down")
        assert not os.path.exists(lab.root)
        assert not [pid for pid in pids if services.pid_alive(pid)]
        assert not any(services.group_members(pgid) for pgid in groups)
        busy = [port for inst in lab.instances for port in inst.ports.values() if not port_free(port)]
        assert not busy


# ---------------------------------------------------------------------------------------------
# PD <= v8.3: etcd 3.4


def test_a_pd_v83_lab_runs_on_debian_etcd_34(tmp_path) -> None:
    with running_lab(str(tmp_path / "lab"), "--pd-version", "v8.3.0", "--tikv", "1", "--tls") as lab:
        assert {m["binary_version"] for m in lab.pd("GET", "/members")["members"]} == {"v8.3.0"}
        pd1 = lab.instance("pd1")
        binaries = {os.readlink(f"/proc/{pid}/exe") for pid in services.group_members(pd1.pid)}
        assert DEBIAN_ETCD in binaries
        assert lab.store_state("tikv1") == "Up"


# ---------------------------------------------------------------------------------------------
# A cluster brought up with TLS


@pytest.fixture(scope="class")
def clients(tls_lab: LabHandle, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, str]]:
    """Client material: the lab's operator cert, one from another CA, one of the lab's CA with a CN
    no allow-list names."""
    directory = str(tmp_path_factory.mktemp("clients"))
    lab_ca_cert = lab_ca(tls_lab)
    other_ca = certs.make_ca("some-other-ca")
    lab = tls_lab.lab()
    return {
        "operator": {"ca": os.path.join(lab.client_tls_dir, "ca.crt"),
                     "cert": os.path.join(lab.client_tls_dir, "client.crt"),
                     "key": os.path.join(lab.client_tls_dir, "client.pem")},
        "foreign": certs.write_tls_dir(os.path.join(directory, "foreign"), "client", other_ca,
                                       certs.make_leaf(other_ca, "client")),
        "intruder": certs.write_tls_dir(os.path.join(directory, "intruder"), "intruder", lab_ca_cert,
                                        certs.make_leaf(lab_ca_cert, "intruder")),
    }


@pytest.fixture(scope="class")
def allow_lists(tls_lab: LabHandle) -> Iterator[None]:
    """tikv1 with cert-allowed-cn = ["tikv", "client"], pd1 with ["pd", "tikv", "client"] (PD >= v8.4
    checks the client port only with more than one CN), each applied by a restart."""
    tikv1, pd1 = tls_lab.instance("tikv1"), tls_lab.instance("pd1")
    tikv_paths = health.security_paths(tikv1)
    pd_paths = health.security_paths(pd1)
    set_security(tikv1, tikv_security(tikv_paths, **{"cert-allowed-cn": ["tikv", "client"]}))
    set_security(pd1, pd_security(pd_paths, **{"cert-allowed-cn": ["pd", "tikv", "client"]}))
    tls_lab.ok("service", "tikv1", "restart")
    tls_lab.ok("service", "pd1", "restart")
    tls_lab.wait_healthy()
    yield


@pytest.mark.usefixtures("tls_lab")
class TestTLSCluster:

    def test_up_tls_is_healthy_with_every_store_up(self, tls_lab: LabHandle) -> None:
        assert tls_lab.up_seconds < 60
        status = json.loads(tls_lab.ok("status", "--json"))
        assert status["healthy"]
        assert {row["tls"] for row in status["instances"]} == {"on"}
        assert all(row["client_url"].startswith("https://") for row in status["instances"] if "client_url" in row)
        assert {s["state_name"] for s in status["stores"]} == {"Up"} and len(status["stores"]) == 3
        assert len(status["members"]) == 3 and all(m["health"] for m in status["members"])
        assert all(url.startswith("https://") for m in status["members"] for url in m["peer_urls"])

    @pytest.mark.usefixtures("allow_lists")
    def test_pd_client_port_refuses_wrong_clients(self, tls_lab: LabHandle,
                                                  clients: dict[str, dict[str, str]]) -> None:
        port = tls_lab.instance("pd1").ports["client"]
        operator, foreign, intruder = clients["operator"], clients["foreign"], clients["intruder"]
        assert https_get(port, PD_PING, tls_client(operator["ca"], operator["cert"], operator["key"])) == 200
        with pytest.raises(OSError):
            https_get(port, PD_PING, tls_client(operator["ca"]))
        with pytest.raises(OSError):
            https_get(port, PD_PING, tls_client(operator["ca"], foreign["cert"], foreign["key"]))
        with pytest.raises(OSError):
            https_get(port, PD_PING, tls_client(operator["ca"], intruder["cert"], intruder["key"]))
        assert "client certificate CN check failed" in tls_lab.log("pd1")

    @pytest.mark.usefixtures("allow_lists")
    def test_tikv_grpc_port_refuses_wrong_clients(self, tls_lab: LabHandle,
                                                  clients: dict[str, dict[str, str]]) -> None:
        port = tls_lab.instance("tikv1").ports["grpc"]
        operator, foreign, intruder = clients["operator"], clients["foreign"], clients["intruder"]
        assert grpc_kv_get(port, operator["ca"], operator["cert"], operator["key"]) == b"ok"
        assert grpc_error(port, operator["ca"]).code() == grpc.StatusCode.UNAVAILABLE
        assert grpc_error(port, operator["ca"], foreign["cert"], foreign["key"]).code() == grpc.StatusCode.UNAVAILABLE
        refused = grpc_error(port, operator["ca"], intruder["cert"], intruder["key"])
        assert refused.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "Common name check fail" in refused.details()

    @pytest.mark.usefixtures("allow_lists")
    def test_tikv_status_port_needs_a_cert_only_with_an_allow_list(self, tls_lab: LabHandle,
                                                                   clients: dict[str, dict[str, str]]) -> None:
        with_list = tls_lab.instance("tikv1").ports["status"]
        without_list = tls_lab.instance("tikv2").ports["status"]
        operator, foreign, intruder = clients["operator"], clients["foreign"], clients["intruder"]
        assert https_get(without_list, "/status", tls_client(operator["ca"])) == 200
        with pytest.raises(OSError):
            https_get(with_list, "/status", tls_client(operator["ca"]))
        with pytest.raises(OSError):
            https_get(with_list, "/status", tls_client(operator["ca"], foreign["cert"], foreign["key"]))
        # The real status server checks the CA only, never the CN.
        assert https_get(with_list, "/status", tls_client(operator["ca"], intruder["cert"], intruder["key"])) == 200

    def test_tikv_grpc_reloads_only_when_the_cert_changes(self, tls_lab: LabHandle,
                                                          clients: dict[str, dict[str, str]]) -> None:
        tikv3 = tls_lab.instance("tikv3")
        port = tikv3.ports["grpc"]
        paths = health.security_paths(tikv3)
        operator = clients["operator"]
        original_ca = read(paths["ca"])
        original = served_certificate(port, tls_client(operator["ca"], operator["cert"], operator["key"]))
        other_ca = certs.make_ca("replacement-ca")
        try:
            # Only ca.crt replaced: the port keeps its start-time CA, so the operator still gets in.
            with open(paths["ca"], "wb") as fh:
                fh.write(other_ca.cert_pem)
            assert grpc_kv_get(port, operator["ca"], operator["cert"], operator["key"]) == b"ok"
            # Touching the cert makes it re-read all three: now only the other CA is trusted.
            bump_mtime(paths["cert"])
            refused = grpc_error(port, operator["ca"], operator["cert"], operator["key"])
            assert refused.code() == grpc.StatusCode.UNAVAILABLE
        finally:
            with open(paths["ca"], "wb") as fh:
                fh.write(original_ca)
            bump_mtime(paths["cert"])
        assert grpc_kv_get(port, operator["ca"], operator["cert"], operator["key"]) == b"ok"
        # Rewriting key then cert (new leaf, same CA): the port serves the new certificate.
        renewed = certs.make_leaf(lab_ca(tls_lab), "tikv")
        certs.write_tls_dir(tikv3.tls_dir, "tikv", lab_ca(tls_lab), renewed)
        served = served_certificate(port, tls_client(operator["ca"], operator["cert"], operator["key"]))
        assert served.serial_number == x509.load_pem_x509_certificate(renewed.cert_pem).serial_number
        assert served.serial_number != original.serial_number
        tls_lab.wait_healthy()

    def test_faults_crash_on_tls_and_slow_start(self, tls_lab: LabHandle) -> None:
        tls_lab.ok("fault", "tikv2", "crash-on-tls")
        crashed = tls_lab.run("service", "tikv2", "restart")
        assert crashed.returncode == 1 and "tikv2: exited during start" in crashed.stderr
        assert "lab-fault-crash-on-tls" in crashed.stderr
        tls_lab.ok("fault", "tikv2", "clear")
        tls_lab.ok("fault", "tikv2", "slow-start", "3")
        began = time.monotonic()
        tls_lab.ok("service", "tikv2", "start")
        grpc_port = tls_lab.instance("tikv2").ports["grpc"]
        assert port_free(grpc_port), "a slow start must not serve before its delay"
        wait_for(lambda: not port_free(grpc_port), timeout=15)
        assert time.monotonic() - began >= 3
        tls_lab.ok("fault", "tikv2", "clear")
        tls_lab.wait_healthy()

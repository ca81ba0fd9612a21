"""The tiup_topology inventory plugin: TiUP topology files -> the hosts and variables the roles read.

The rules are checked on topology files modelled on the ones TiUP documents (tests/unit/fixtures/tiup/),
first through the parser (every variable, exactly), then through `ansible-inventory` with a plugin
configuration file, as a user runs it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from ansible_collections.tlsops.tikv.plugins.plugin_utils import _tiup_topology as T

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "tiup")
ANSIBLE_INVENTORY = os.path.join(os.path.dirname(sys.executable), "ansible-inventory")


def fixture(name: str) -> str:
    return os.path.join(FIXTURES, name)


def hosts_of(topology: T.Topology) -> dict[str, T.Instance]:
    return {inst.name: inst for inst in topology.instances}


# ---------------------------------------------------------------------------------------------
# The documented topologies


def test_minimal_topology_gives_one_host_per_instance_with_tiup_defaults():
    topo = T.read(fixture("minimal.yaml"))
    assert topo.hosts("pd") == ["pd-10.0.1.11-2379", "pd-10.0.1.12-2379", "pd-10.0.1.13-2379"]
    assert topo.hosts("tikv") == ["tikv-10.0.1.17-20160", "tikv-10.0.1.18-20160", "tikv-10.0.1.19-20160"]
    hosts = hosts_of(topo)
    assert hosts["pd-10.0.1.12-2379"].vars == {
        "ansible_host": "10.0.1.12",
        "pd_name": "pd-10.0.1.12-2379",
        "pd_client_port": 2379,
        "pd_peer_port": 2380,
        "deploy_dir": "/tidb-deploy/pd-2379",
        "data_dir": "/tidb-data/pd-2379",
        "log_dir": "/tidb-deploy/pd-2379/log",
        "tiup_host": "10.0.1.12",
        "tiup_service_name": "pd-2379.service",
    }
    assert hosts["tikv-10.0.1.18-20160"].vars == {
        "ansible_host": "10.0.1.18",
        "tikv_port": 20160,
        "tikv_status_port": 20180,
        "deploy_dir": "/tidb-deploy/tikv-20160",
        "data_dir": "/tidb-data/tikv-20160",
        "log_dir": "/tidb-deploy/tikv-20160/log",
        "tiup_host": "10.0.1.18",
        "tiup_service_name": "tikv-20160.service",
        "tikv_labels": {},
    }
    assert topo.group_vars == {
        "ansible_user": "tidb",
        "ansible_port": 22,
        "tikv_tls_service_user": "tidb",
        "tikv_tls_service_group": "tidb",
        "tiup_enable_tls": False,
    }


def test_minimal_topology_exposes_the_other_sections_as_groups():
    topo = T.read(fixture("minimal.yaml"))
    assert topo.hosts("tidb") == ["tidb-10.0.1.14-4000", "tidb-10.0.1.15-4000", "tidb-10.0.1.16-4000"]
    assert topo.hosts("tiflash") == ["tiflash-10.0.1.20-9000", "tiflash-10.0.1.21-9000"]
    assert topo.hosts("monitoring") == ["prometheus-10.0.1.22-9090"]
    assert topo.hosts("grafana") == ["grafana-10.0.1.22-3000"]
    assert topo.hosts("alertmanager") == ["alertmanager-10.0.1.22-9093"]
    grafana = hosts_of(topo)["grafana-10.0.1.22-3000"].vars
    assert grafana["deploy_dir"] == "/tidb-deploy/grafana-3000"
    assert grafana["tiup_service_name"] == "grafana-3000.service"
    # Left out on request: only PD and TiKV remain, the sections are still accepted.
    only = T.read(fixture("minimal.yaml"), include_others=False)
    assert {inst.component for inst in only.instances} == {"pd", "tikv"}


def test_multi_instance_hosts_keep_their_own_ports_dirs_and_names():
    hosts = hosts_of(T.read(fixture("multi-instance.yaml")))
    assert sorted(n for n in hosts if n.startswith("tikv-")) == [
        "tikv-10.0.1.7-20160", "tikv-10.0.1.7-20161", "tikv-10.0.1.8-20160", "tikv-10.0.1.8-20161"]
    first, second = hosts["tikv-10.0.1.7-20160"].vars, hosts["tikv-10.0.1.7-20161"].vars
    assert (first["tikv_port"], first["tikv_status_port"]) == (20160, 20180)
    assert (second["tikv_port"], second["tikv_status_port"]) == (20161, 20181)
    assert second["deploy_dir"] == "/data2/tidb-deploy/tikv-20161"
    assert second["data_dir"] == "/data2/tidb-data/tikv-20161"
    assert second["tiup_service_name"] == "tikv-20161.service"
    assert second["tikv_labels"] == {"host": "tikv1"}
    # No dirs given: TiUP's defaults under the global dirs, per port.
    assert hosts["tikv-10.0.1.8-20161"].vars["deploy_dir"] == "/tidb-deploy/tikv-20161"
    assert hosts["tikv-10.0.1.8-20161"].vars["data_dir"] == "/tidb-data/tikv-20161"
    # The log dir given is the one the verify role must scan; the default is left to the role.
    assert "tikv_tls_verify_log_paths" not in first
    assert [hosts[n].vars["pd_name"] for n in ("pd-10.0.1.4-2379", "pd-10.0.1.5-2379", "pd-10.0.1.6-2379")] == [
        "pd-1", "pd-2", "pd-3"]
    assert hosts["tidb-10.0.1.1-4001"].groups == ["tidb"]


def test_custom_ports_dirs_user_and_addresses_follow_tiup_rules():
    topo = T.read(fixture("custom-ports-dirs.yaml"))
    hosts = hosts_of(topo)
    assert topo.group_vars["ansible_user"] == "tikvops"
    assert topo.group_vars["tikv_tls_service_user"] == "tikvops"
    assert topo.group_vars["tikv_tls_service_group"] == "dbadmins"
    assert topo.group_vars["ansible_port"] == 2222

    pd1 = hosts["pd-pd1.db.example.internal-12379"].vars
    # global.deploy_dir defaults to the relative "deploy": under the deploy user's home.
    assert pd1["deploy_dir"] == "/home/tikvops/deploy/pd-12379"
    assert pd1["data_dir"] == "/home/tikvops/deploy/pd-12379/data"
    # An absolute global log_dir gets a <component>-<port> directory per instance...
    assert pd1["log_dir"] == "/var/log/tidb/pd-12379"
    # ...which is where the verify role must look for the logs.
    assert pd1["tikv_tls_verify_log_paths"] == ["/var/log/tidb/pd-12379/pd.log", "/var/log/tidb/pd-12379/pd_stderr.log"]
    assert pd1["pd_name"] == "pd-pd1.db.example.internal-12379"
    assert (pd1["pd_client_port"], pd1["pd_peer_port"]) == (12379, 12380)
    assert pd1["ansible_host"] == "pd1.db.example.internal"
    assert "ansible_port" not in pd1  # the global one applies

    pd2 = hosts["pd-pd2.db.example.internal-12379"].vars
    # Relative per-instance dirs: deploy under /home/<user>, data and log under the deploy dir.
    assert pd2["deploy_dir"] == "/home/tikvops/pd-custom"
    assert pd2["data_dir"] == "/home/tikvops/pd-custom/pd-data"
    assert pd2["log_dir"] == "/home/tikvops/pd-custom/pd-log"
    assert pd2["ansible_port"] == 22

    pd3 = hosts["pd-10.0.2.3-12379"].vars
    assert pd3["ansible_host"] == "192.168.100.3"  # manage_host: how TiUP (and Ansible) reach it
    assert pd3["tiup_host"] == "10.0.2.3"
    assert pd3["pd_name"] == "pd-10.0.2.3-12379"
    # The cluster still dials `host`: it stays among the addresses the certificates must cover.
    assert pd3["advertise_client_addr"] == "http://10.0.2.3:12379"
    assert pd3["advertise_peer_addr"] == "http://pd3.db.example.internal:12380"

    tikv1 = hosts["tikv-tikv1.db.example.internal-30160"].vars
    assert tikv1["deploy_dir"] == "/home/tikvops/deploy/tikv-30160"
    assert tikv1["data_dir"] == "/ssd0/tikv"
    assert tikv1["tikv_tls_version"] == "v8.5.1"  # component_versions.tikv
    assert (tikv1["tikv_port"], tikv1["tikv_status_port"]) == (30160, 30180)
    tikv2 = hosts["tikv-10.0.2.5-30160"].vars
    assert tikv2["advertise_addr"] == "tikv2.db.example.internal:30160"
    assert tikv2["advertise_status_addr"] == "tikv2.db.example.internal:30180"
    assert tikv2["deploy_dir"] == "/opt/tikv/tikv-30160"
    assert tikv2["data_dir"] == "/opt/tikv/tikv-30160/data"
    assert tikv2["log_dir"] == "/opt/tikv/logs"
    assert "tikv_tls_version" not in hosts["pd-10.0.2.3-12379"].vars


def test_multi_dc_labels_dotted_or_nested():
    hosts = hosts_of(T.read(fixture("multi-dc.yaml")))
    labels = {name: inst.vars["tikv_labels"] for name, inst in hosts.items() if inst.component == "tikv"}
    assert labels == {
        "tikv-10.0.1.19-20160": {"zone": "bj", "dc": "bja", "rack": "rack1", "host": "host1"},
        "tikv-10.0.1.20-20160": {"zone": "bj", "dc": "bja", "rack": "rack1", "host": "host2"},
        "tikv-10.0.1.21-20160": {"zone": "bj", "dc": "bjb", "rack": "rack1", "host": "host1"},
        "tikv-10.0.1.22-20160": {"zone": "bj", "dc": "bjb", "rack": "rack1", "host": "host2"},
        "tikv-10.0.1.23-20160": {"zone": "sh", "dc": "sha", "rack": "rack1", "host": "host1"},
    }


def test_meta_yaml_of_a_deployed_cluster_gives_version_name_and_ssh_key(tmp_path):
    cluster = tmp_path / "clusters" / "prod"
    (cluster / "ssh").mkdir(parents=True)
    shutil.copy(fixture("meta.yaml"), cluster / "meta.yaml")
    (cluster / "ssh" / "id_rsa").write_text("not a real key\n", encoding="utf-8")
    topo = T.read(str(cluster / "meta.yaml"))
    assert topo.hosts("pd") == ["pd-10.0.1.11-2379"]
    assert topo.hosts("tikv") == ["tikv-10.0.1.17-20160"]
    assert topo.group_vars["tikv_tls_version"] == "v8.5.0"
    assert topo.group_vars["tikv_tls_cluster_name"] == "prod"
    assert topo.group_vars["ansible_ssh_private_key_file"] == str(cluster / "ssh" / "id_rsa")


@pytest.mark.parametrize("global_dirs, spec, expected", [
    # (global deploy_dir, global data_dir), instance dirs -> (deploy_dir, data_dir); TiUP's own test cases.
    ((None, None), {"deploy_dir": "my-deploy"}, ("/home/tidb/my-deploy", "/home/tidb/my-deploy/data")),
    ((None, None), {"deploy_dir": "my-deploy", "data_dir": "my-data"},
     ("/home/tidb/my-deploy", "/home/tidb/my-deploy/my-data")),
    (("my-deploy", None), {}, ("/home/tidb/my-deploy/tikv-20160", "/home/tidb/my-deploy/tikv-20160/data")),
    (("my-deploy", "my-data"), {}, ("/home/tidb/my-deploy/tikv-20160", "/home/tidb/my-deploy/tikv-20160/my-data")),
    (("/d", "/data"), {}, ("/d/tikv-20160", "/data/tikv-20160")),
    (("/d", "/data"), {"data_dir": "/ssd,rel"}, ("/d/tikv-20160", "/ssd,/d/tikv-20160/rel")),
    (("/d/", None), {"deploy_dir": "//x/../y/"}, ("/y", "/y/data")),
])
def test_directory_resolution_matches_tiup(global_dirs, spec, expected):
    glob = {key: value for key, value in zip(("deploy_dir", "data_dir"), global_dirs) if value}
    topo = T.parse({"global": glob, "tikv_servers": [dict(host="10.0.0.1", **spec)]})
    got = topo.instances[0].vars
    assert (got["deploy_dir"], got["data_dir"]) == expected


def test_ipv6_hosts_get_pattern_safe_names_and_bracketed_addresses():
    topo = T.parse({"pd_servers": [{"host": "fd00::11", "manage_host": "fd00:1::11"}]})
    inst = topo.instances[0]
    assert inst.name == "pd-fd00__11-2379"
    assert inst.vars["pd_name"] == "pd-fd00::11-2379"
    assert inst.vars["advertise_client_addr"] == "http://[fd00::11]:2379"


def test_enable_tls_and_zero_ports_as_tiup_reads_them():
    topo = T.parse({"global": {"enable_tls": True}, "pd_servers": [{"host": "a", "client_port": 0}],
                    "tikv_servers": [{"host": "a", "port": 0, "status_port": 0}]})
    assert topo.group_vars["tiup_enable_tls"] is True
    assert [inst.name for inst in topo.instances] == ["pd-a-2379", "tikv-a-20160"]


# ---------------------------------------------------------------------------------------------
# Malformed files: one clear error, every problem and where it is


def write(tmp_path, text: str) -> str:
    path = tmp_path / "topology.yaml"
    path.write_text(text, encoding="utf-8")
    return str(path)


@pytest.mark.parametrize("text, expected", [
    ("pd_servers: [\n", "is not valid YAML"),
    ("", "got an empty file"),
    ("- host: a\n", "got list"),
    ("pd_servers:\n  - host: a\npd_servers:\n  - host: b\n", "found key 'pd_servers' twice"),
    ("pd_server:\n  - host: a\n", "unknown top-level key 'pd_server'"),
    ("pd_servers:\n  - hots: a\n", "pd_servers[0]: needs 'host'"),
    ("pd_servers:\n  host: a\n", "pd_servers: must be a list of instances"),
    ("tikv_servers:\n  - host: a\n    prot: 20161\n", "unknown field 'prot' for a TiKV server"),
    ("tikv_servers:\n  - host: a\n    port: '20161'\n", "tikv_servers[0] (a).port: must be a port number"),
    ("tikv_servers:\n  - host: a\n    status_port: 70000\n", "status_port: must be a port number (1-65535), got 70000"),
    ("global:\n  ssh_prot: 22\npd_servers:\n  - host: a\n", "global: unknown field 'ssh_prot'"),
    ("global: [1]\npd_servers:\n  - host: a\n", "global: must be a mapping"),
    ("global:\n  user: 7\npd_servers:\n  - host: a\n", "global.user: must be a string"),
    ("tidb_servers:\n  - host: a\n", "no pd_servers or tikv_servers"),
    ("tikv_servers:\n  - host: a\n    config:\n      server.labels: {zone: 1}\n", "label 'zone': 1: TiKV label"),
    ("tikv_servers:\n  - host: a\n  - host: a\n", "port 20160 on a is already used by tikv_servers[0] (a)"),
    ("pd_servers:\n  - host: a\ntikv_servers:\n  - host: a\n    port: 2380\n",
     "tikv_servers[0] (a): port 2380 on a is already used by pd_servers[0] (a)"),
    ("tikv_servers:\n  - host: a\n  - host: a\n    port: 20161\n    status_port: 20181\n    deploy_dir: /tidb-deploy/tikv-20160\n"
     "global:\n  deploy_dir: /tidb-deploy\n", "deploy_dir /tidb-deploy/tikv-20160 on a is already used by tikv_servers[0] (a)"),
    ("pd_servers:\n  - host: a\n    name: x\n  - host: b\n    name: x\n", "PD name 'x' is already used by pd_servers[0] (a)"),
    ("topology: 3\ntidb_version: v8.5.0\n", "'topology' must be a mapping"),
])
def test_malformed_topology_is_refused_with_the_place_and_the_reason(tmp_path, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(T.TopologyError) as err:
        T.read(path)
    assert expected in str(err.value)
    assert path in str(err.value)


def test_every_problem_is_listed_at_once(tmp_path):
    path = write(tmp_path, "pd_servers:\n  - host: a\n    client_prot: 1\ntikv_servers:\n  - port: 1\n  - host: b\n    port: x\n")
    with pytest.raises(T.TopologyError) as err:
        T.read(path)
    message = str(err.value)
    assert "3 problems" in message
    assert "pd_servers[0] (a): unknown field 'client_prot'" in message
    assert "tikv_servers[0]: needs 'host'" in message
    assert "tikv_servers[1] (b).port: must be a port number" in message


def test_missing_file_is_named(tmp_path):
    with pytest.raises(T.TopologyError, match="cannot read the TiUP topology file .*nope.yaml"):
        T.read(str(tmp_path / "nope.yaml"))


# ---------------------------------------------------------------------------------------------
# Through ansible-inventory, as users run it


def inventory_list(config_path: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([ANSIBLE_INVENTORY, "-i", config_path, "--list", "--export"], capture_output=True,
                          text=True, check=False, timeout=120, env=dict(os.environ, ANSIBLE_NOCOLOR="1", **(env or {})))


def plain(value):
    """ansible-inventory marks what an inventory plugin read as not-to-be-templated; the data is the same."""
    if isinstance(value, dict):
        if set(value) == {"__ansible_unsafe"}:
            return value["__ansible_unsafe"]
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [plain(item) for item in value]
    return value


def write_config(tmp_path, text: str, name: str = "cluster.tiup_topology.yml") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_ansible_inventory_lists_hosts_groups_and_vars(tmp_path):
    shutil.copy(fixture("multi-dc.yaml"), tmp_path / "topology.yaml")
    config = write_config(tmp_path, "plugin: tlsops.tikv.tiup_topology\ntopology_file: topology.yaml\n"
                                    "keyed_groups:\n  - key: tikv_labels.dc\n    prefix: dc\n"
                                    "compose:\n  tikv_tls_extra_sans: \"[pd_name | default(tiup_host) ~ '.example']\"\n"
                                    "groups:\n  shanghai: \"tikv_labels.zone | default('') == 'sh'\"\n")
    result = inventory_list(config)
    assert result.returncode == 0, result.stderr
    inv = plain(json.loads(result.stdout))
    assert inv["pd"]["hosts"] == ["pd-10.0.1.11-2379", "pd-10.0.1.13-2379", "pd-10.0.1.15-2379"]
    assert len(inv["tikv"]["hosts"]) == 5
    assert inv["dc_bjb"]["hosts"] == ["tikv-10.0.1.21-20160", "tikv-10.0.1.22-20160"]
    assert inv["shanghai"]["hosts"] == ["tikv-10.0.1.23-20160"]
    assert inv["monitoring"]["hosts"] == ["prometheus-10.0.1.26-9090"]
    assert inv["all"]["vars"]["ansible_user"] == "tidb"
    assert inv["all"]["vars"]["tikv_tls_service_user"] == "tidb"
    hostvars = inv["_meta"]["hostvars"]
    assert hostvars["pd-10.0.1.13-2379"]["pd_name"] == "pd-10.0.1.13-2379"
    assert hostvars["pd-10.0.1.13-2379"]["tikv_tls_extra_sans"] == ["pd-10.0.1.13-2379.example"]
    assert hostvars["tikv-10.0.1.19-20160"]["tikv_tls_extra_sans"] == ["10.0.1.19.example"]
    assert hostvars["tikv-10.0.1.19-20160"]["deploy_dir"] == "/tidb-deploy/tikv-20160"


def test_group_vars_files_override_the_topology_globals(tmp_path):
    shutil.copy(fixture("minimal.yaml"), tmp_path / "topology.yaml")
    (tmp_path / "group_vars").mkdir()
    (tmp_path / "group_vars" / "all.yml").write_text("ansible_user: admin\n", encoding="utf-8")
    config = write_config(tmp_path, "plugin: tlsops.tikv.tiup_topology\ntopology_file: topology.yaml\n")
    result = subprocess.run([ANSIBLE_INVENTORY, "-i", config, "--host", "pd-10.0.1.11-2379"], capture_output=True,
                            text=True, check=False, timeout=120)
    assert result.returncode == 0, result.stderr
    hostvars = plain(json.loads(result.stdout))
    assert hostvars["ansible_user"] == "admin"
    assert hostvars["tikv_tls_service_user"] == "tidb"


def test_malformed_topology_fails_the_inventory_with_the_reason(tmp_path):
    (tmp_path / "topology.yaml").write_text("pd_servers:\n  - host: a\n    clientport: 2379\n", encoding="utf-8")
    config = write_config(tmp_path, "plugin: tlsops.tikv.tiup_topology\ntopology_file: topology.yaml\n")
    result = inventory_list(config, {"ANSIBLE_INVENTORY_UNPARSED_FAILED": "1"})
    assert result.returncode != 0
    assert "unknown field 'clientport' for a PD server" in result.stderr
    assert "pd_servers[0] (a)" in result.stderr


def test_only_files_named_tiup_topology_are_taken(tmp_path):
    shutil.copy(fixture("minimal.yaml"), tmp_path / "topology.yaml")
    config = write_config(tmp_path, "plugin: tlsops.tikv.tiup_topology\ntopology_file: topology.yaml\n",
                          name="cluster.yml")
    result = inventory_list(config, {"ANSIBLE_INVENTORY_UNPARSED_FAILED": "1"})
    assert result.returncode != 0
    assert "could not be verified by inventory plugin 'tlsops.tikv.tiup_topology'" in result.stderr

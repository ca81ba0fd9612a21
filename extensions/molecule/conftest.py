"""Shared testinfra fixtures of the Molecule scenarios: the instance a test host is, and its peers.

Testinfra runs every test once per inventory host (one PD or TiKV instance; several share a lab host)
through the ansible backend, so the inventory the scenario's create step wrote is the one source of
truth, as it is for the playbooks. Paths and unit names follow TiUP's defaults, as the roles do.
"""

from __future__ import annotations

import json
import os
import subprocess
import tomllib
from dataclasses import dataclass
from typing import Any

import pytest

SERVICE_USER = "tidb"


@dataclass
class Instance:
    """One PD or TiKV instance as an operator sees it on its host."""

    name: str
    component: str
    address: str
    lab_host: str
    deploy_dir: str
    ports: dict[str, int]

    @property
    def main_port(self) -> int:
        return self.ports["client"] if self.component == "pd" else self.ports["grpc"]

    @property
    def service(self) -> str:
        return f"{self.component}-{self.main_port}"

    @property
    def config_path(self) -> str:
        return f"{self.deploy_dir}/conf/{self.component}.toml"

    @property
    def run_script(self) -> str:
        return f"{self.deploy_dir}/scripts/run_{self.component}.sh"

    @property
    def tls_dir(self) -> str:
        return f"{self.deploy_dir}/tls"

    @property
    def ca_path(self) -> str:
        return f"{self.tls_dir}/ca.crt"

    @property
    def cert_path(self) -> str:
        return f"{self.tls_dir}/{self.component}.crt"

    @property
    def key_path(self) -> str:
        return f"{self.tls_dir}/{self.component}.pem"


def instance_from_vars(name: str, hostvars: dict[str, Any]) -> Instance:
    component = "pd" if "pd" in hostvars.get("group_names", []) else "tikv"
    if component == "pd":
        ports = {"client": int(hostvars.get("pd_client_port", 2379)), "peer": int(hostvars.get("pd_peer_port", 2380))}
    else:
        ports = {"grpc": int(hostvars.get("tikv_port", 20160)), "status": int(hostvars.get("tikv_status_port", 20180))}
    main = ports.get("client", ports.get("grpc"))
    return Instance(name=name, component=component, address=hostvars["ansible_host"],
                    lab_host=hostvars.get("tikv_tls_lab_host", hostvars["ansible_host"]),
                    deploy_dir=hostvars.get("deploy_dir", f"/tidb-deploy/{component}-{main}"), ports=ports)


def inventory_dir() -> str:
    return os.path.join(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"], "inventory")


@pytest.fixture(scope="session")
def inventory() -> dict[str, Any]:
    """`ansible-inventory --list` of the scenario's inventory (every host's variables)."""
    out = subprocess.run(["ansible-inventory", "-i", inventory_dir(), "--list"], capture_output=True, text=True,
                         check=True).stdout
    return json.loads(out)


@pytest.fixture(scope="session")
def instances(inventory: dict[str, Any]) -> dict[str, Instance]:
    hostvars = inventory["_meta"]["hostvars"]
    groups = {name: inventory.get(name, {}).get("hosts", []) for name in ("pd", "tikv")}
    out = {}
    for name, values in hostvars.items():
        values = {**values, "group_names": [g for g, members in groups.items() if name in members]}
        out[name] = instance_from_vars(name, values)
    return out


@pytest.fixture()
def instance(host, instances: dict[str, Instance]) -> Instance:
    """The instance the test host stands for."""
    return instances[host.backend.get_hostname()]


@pytest.fixture(scope="session")
def lab_root(inventory: dict[str, Any]) -> str:
    hostvars = next(iter(inventory["_meta"]["hostvars"].values()))
    return hostvars["tikv_tls_lab_root"]


@pytest.fixture(scope="session")
def lab_status(lab_root: str) -> Any:
    """`tikv-lab status --json`, asked when a test calls it (the lab's own view of the cluster)."""
    def ask() -> tuple[int, dict[str, Any]]:
        result = subprocess.run([os.environ["TIKV_LAB_CLI"], "--root", lab_root, "status", "--json"],
                                capture_output=True, text=True, check=False)
        return result.returncode, json.loads(result.stdout)
    return ask


@pytest.fixture(scope="session")
def service_user() -> str:
    return SERVICE_USER


@pytest.fixture(scope="session")
def read_toml():
    """read_toml(host, path): a TOML file on the test host, parsed."""
    def read(host, path: str) -> dict[str, Any]:
        return tomllib.loads(host.file(path).content_string)
    return read


@pytest.fixture(scope="session")
def handshake():
    """handshake(host, client, address, port, ca_path=None): `openssl s_client` on the test host to
    address:port with the client instance's certificate and key, verifying the chain and that the
    certificate names the address dialled; the command's result."""
    def run(host, client: Instance, address: str, port: int, ca_path: str | None = None):
        ca = ca_path or client.ca_path
        return host.run(
            f"openssl s_client -connect {address}:{port} -CAfile {ca} -cert {client.cert_path} "
            f"-key {client.key_path} -verify_return_error -verify_ip {address} -brief </dev/null")
    return run

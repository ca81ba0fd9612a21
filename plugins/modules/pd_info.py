#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) tlsops.tikv maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: pd_info
short_description: Read a TiKV cluster's state from PD (members, leader, health, stores, config)
version_added: "0.1.0"
description:
  - Calls the PD HTTP API on the first of O(endpoints) that answers and returns what it says about the
    PD members, their leader and health, the TiKV (and other) stores and their states, and PD's config.
  - With TLS on, PD requires a client certificate on its client port; give O(ca_path),
    O(client_cert_path) and O(client_key_path). Without O(ca_path) the calls are plaintext.
  - V(clients) in O(gather) lists the clients of the cluster that PD knows of (RV(clients)), that is TiDB servers and
    TiUP's monitoring registered under C(/topology/) in PD's etcd, TiCDC captures under C(/tidb/cdc/), and
    TiFlash (or any store whose C(engine) label is not C(tikv)). Applications that talk to TiKV directly
    (client-go, client-rust) register nowhere and are never listed.
  - Read-only. Returns RV(problems), a list of what is unhealthy, and fails on it only with
    O(fail_on_problems=true).
author:
  - tlsops.tikv maintainers (@tlsops)
extends_documentation_fragment:
  - tlsops.tikv.pd_client
  - tlsops.tikv.pd_client.tls
options:
  gather:
    description: What to read.
    type: list
    elements: str
    choices: [members, health, stores, config, schedulers, etcd_members, clients]
    default: [members, health, stores]
  fail_on_problems:
    description: Fail when RV(problems) is not empty (no leader, an unhealthy member, a store not Up).
    type: bool
    default: false
attributes:
  check_mode:
    support: full
    description: Read-only; runs the same in check mode.
  diff_mode:
    support: none
    description: Reads only; there is nothing to diff.
  idempotent:
    support: full
    description: Never changes anything.
notes:
  - PD's health check pings each member's client URL; it says nothing about the peer (raft) links.
    Use the verify role to check those.
"""

EXAMPLES = r"""
- name: Read the cluster from PD over TLS with the operator certificate
  tlsops.tikv.pd_info:
    endpoints: ["10.0.1.1:2379", "10.0.1.2:2379", "10.0.1.3:2379"]
    ca_path: /etc/tikv-tls/ca.crt
    client_cert_path: /etc/tikv-tls/client.crt
    client_key_path: /etc/tikv-tls/client.pem
    gather: [members, health, stores, config]
  delegate_to: localhost
  run_once: true
  register: cluster

- name: Refuse to go on with an unhealthy cluster
  tlsops.tikv.pd_info:
    endpoints: ["10.0.1.1:2379", "10.0.1.2:2379", "10.0.1.3:2379"]
    fail_on_problems: true
  delegate_to: localhost
  run_once: true
"""

RETURN = r"""
endpoint_used:
  description: The endpoints tried, in order (the first that answered served every call).
  returned: always
  type: list
  elements: str
members:
  description: PD's GET /members answer (header, members, leader, etcd_leader).
  returned: when members is gathered
  type: dict
leader:
  description: Name of the PD leader, or null when there is none.
  returned: when members is gathered
  type: str
health:
  description: PD's GET /health answer, one item per member with name, member_id, client_urls, health.
  returned: when health is gathered
  type: list
  elements: dict
stores:
  description: PD's GET /stores answer (count, stores with store and status).
  returned: when stores is gathered
  type: dict
config:
  description: PD's GET /config answer (includes security).
  returned: when config is gathered
  type: dict
schedulers:
  description: Names of the schedulers PD runs.
  returned: when schedulers is gathered
  type: list
  elements: str
etcd_members:
  description: etcd's member list from the v3 JSON gateway (IDs, names, peerURLs, clientURLs as stored).
  returned: when etcd_members is gathered
  type: list
  elements: dict
clients:
  description: The clients PD knows of, sorted; each with component (C(tidb), C(tiflash), C(ticdc), C(prometheus) ...),
    address and source (where it was found).
  returned: when clients is gathered
  type: list
  elements: dict
  sample: [{"component": "tidb", "address": "10.0.1.5:4000", "source": "etcd /topology/"}]
problems:
  description: What is unhealthy (no leader, a member not healthy, a store not Up), one line each.
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.tlsops.tikv.plugins.module_utils._pd_client import (
    PD_REQUIRED_TOGETHER,
    PDClient,
    TICDC_PREFIX,
    TOPOLOGY_PREFIX,
    PDError,
    cluster_problems,
    known_clients,
    pd_argument_spec,
)


def gather(client, wanted):
    """Read each wanted part; a failing call fails the module (the cluster did not answer)."""
    result = {}
    if "members" in wanted:
        result["members"] = client.members()
        result["leader"] = ((result["members"] or {}).get("leader") or {}).get("name")
    if "health" in wanted:
        result["health"] = client.health()
    if "stores" in wanted:
        result["stores"] = client.stores()
    if "config" in wanted:
        result["config"] = client.config()
    if "schedulers" in wanted:
        result["schedulers"] = client.schedulers()
    if "etcd_members" in wanted:
        result["etcd_members"] = (client.etcd_members() or {}).get("members") or []
    if "clients" in wanted:
        stores = result["stores"] if "stores" in result else client.stores()
        result["clients"] = known_clients(client.etcd_range(TOPOLOGY_PREFIX), client.etcd_range(TICDC_PREFIX), stores)
    return result


def main():
    module = AnsibleModule(
        argument_spec=pd_argument_spec(
            gather=dict(type="list", elements="str", default=["members", "health", "stores"],
                        choices=["members", "health", "stores", "config", "schedulers", "etcd_members",
                                 "clients"]),
            fail_on_problems=dict(type="bool", default=False),
        ),
        required_together=PD_REQUIRED_TOGETHER,
        supports_check_mode=True,
    )
    params = module.params
    client = PDClient(params["endpoints"], params["ca_path"], params["client_cert_path"],
                      params["client_key_path"], params["timeout"])
    try:
        result = gather(client, params["gather"])
    except PDError as exc:
        module.fail_json(msg="PD did not answer: %s. Check that PD is running and, with TLS, that the "
                             "CA and client certificate are the cluster's." % exc,
                         endpoint_used=client.endpoints, problems=[str(exc)])

    result["problems"] = cluster_problems(result.get("members"), result.get("health"), result.get("stores"))
    result["endpoint_used"] = client.endpoints
    if params["fail_on_problems"] and result["problems"]:
        module.fail_json(msg="cluster not healthy: " + "; ".join(result["problems"]), changed=False, **result)
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()

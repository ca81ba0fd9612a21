#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: tlsops.tikv contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function

DOCUMENTATION = r"""
---
module: pd_peer_links
short_description: Check one PD member's raft links to the other members from etcd's peer metrics
version_added: 0.1.0
description:
  - Reads the etcd member list (etcd's v3 JSON gateway) and, twice O(interval) seconds apart, the
    C(/metrics) of ONE PD member through its client port, and judges its peer (raft) link to every
    other member from etcd's own counters.
  - A link is ok when C(etcd_network_active_peers) is 1 for that member in both readings and neither
    C(etcd_network_peer_sent_failures_total) nor C(etcd_network_disconnected_peers_total) grew in between.
    Totals since the member started are returned too, but an old failure (a restart an hour ago) does
    not fail a link.
  - "PD's C(/health) only pings every member's client URL: a cluster whose members cannot reach each
    other over the peer port (for example C(x509: certificate signed by unknown authority) after a peer
    URL migration done in the wrong order) can report every member healthy. This module looks at the
    links themselves."
  - Run it once per PD member (the links of a member are only in that member's metrics), or once for
    every member with O(targets).
  - Read-only; never reports a change.
author:
  - tlsops.tikv maintainers (@tlsops)
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
    details: The module only reads; it runs the same in check mode.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: none
  idempotent:
    description: When run twice in a row outside check mode, with the same arguments, the second invocation indicates no change.
    support: full
  platform:
    description: Target OS/families that can be operated against.
    support: full
    platforms: posix
extends_documentation_fragment:
  - tlsops.tikv.pd_client.tls
  - tlsops.tikv.batch
options:
  endpoint:
    description:
      - The client endpoint of the PD member to look at, V(host:port) or a URL. The scheme is ignored;
        TLS is used when O(ca_path) is set (as TiKV does).
      - Exactly one member; the module does not move on to another one.
      - Required unless O(targets) is given; the two exclude each other.
    type: str
  targets:
    description:
      - Many members read in one run instead of O(endpoint), up to O(parallel) at once, so their
        O(interval)s overlap. The results come back in RV(results), in this order.
    type: list
    elements: dict
    suboptions:
      endpoint:
        description: As O(endpoint).
        type: str
        required: true
      tls:
        description:
          - Whether to read this member over TLS with O(ca_path), O(client_cert_path) and
            O(client_key_path). V(false) reads it in plaintext (a client port that does not serve TLS yet).
        type: bool
        default: true
      tag:
        description: Any value, returned unchanged with this target's result (C(tag) in RV(results)).
        type: raw
  interval:
    description:
      - Seconds between the two readings of C(/metrics). V(0) takes one reading (then only the gauge
        and the totals are judged; a link that flaps can go unnoticed).
    type: float
    default: 2
  fail_on_problems:
    description: Fail when RV(problems) is not empty (with O(targets), any target's).
    type: bool
    default: false
notes:
  - etcd names members by hexadecimal ID in its metrics; PD and the JSON gateway give them in decimal.
    The module maps both to member names.
seealso:
  - module: tlsops.tikv.pd_info
  - module: tlsops.tikv.tls_log_scan
"""

EXAMPLES = r"""
- name: Check every PD member's peer links over TLS (one call per member, from the controller)
  tlsops.tikv.pd_peer_links:
    endpoint: "{{ ansible_host }}:{{ pd_client_port | default(2379) }}"
    ca_path: /etc/tikv-tls/ca.crt
    client_cert_path: /etc/tikv-tls/client.crt
    client_key_path: /etc/tikv-tls/client.pem
  delegate_to: localhost
  register: pd_links

- name: Fail on a broken raft link
  ansible.builtin.assert:
    that: pd_links.problems | length == 0
    fail_msg: "{{ pd_links.problems | join('; ') }}"
"""

RETURN = r"""
member:
  description: The member that was read.
  returned: without O(targets)
  type: dict
  contains:
    id:
      description: Member ID in hexadecimal (as in etcd's metrics and logs).
      type: str
      returned: success
    id_decimal:
      description: Member ID in decimal (as in PD's API).
      type: str
      returned: success
    name:
      description: Member name.
      type: str
      returned: success
  sample: {"id": "9b8f130d65c67aa1", "id_decimal": "11209198945811462817", "name": "pd-10.0.1.1-2379"}
members:
  description: Every member as etcd stores it (IDs, names, peer and client URLs).
  returned: without O(targets)
  type: list
  elements: dict
links:
  description: One entry per other member.
  returned: without O(targets)
  type: list
  elements: dict
  contains:
    remote_id:
      description: The other member's ID (hex).
      type: str
      returned: always
    remote_name:
      description: The other member's name.
      type: str
      returned: always
    remote_peer_urls:
      description: Its peer URLs as stored in etcd.
      type: list
      elements: str
      returned: always
    active:
      description: Whether the link was active in both readings.
      type: bool
      returned: always
    sent_failures_total:
      description: Messages to it that failed since this member started (null when never counted).
      type: int
      returned: always
    received_failures_total:
      description: Reads from it that failed since this member started (null when never counted).
      type: int
      returned: always
    disconnected_total:
      description: Times the link went inactive since this member started (null when never).
      type: int
      returned: always
    sent_failures_new:
      description: Send failures between the two readings.
      type: int
      returned: always
    received_failures_new:
      description: Read failures between the two readings.
      type: int
      returned: always
    disconnected_new:
      description: Disconnections between the two readings.
      type: int
      returned: always
    round_trip_ms:
      description: Mean round trip of etcd's prober to that member, in milliseconds (null when none measured).
      type: float
      returned: always
    ok:
      description: Whether the link is judged working.
      type: bool
      returned: always
    problem:
      description: Why not; null when ok.
      type: str
      returned: always
has_leader:
  description: C(etcd_server_has_leader) of this member (null when the metric is missing).
  returned: without O(targets)
  type: bool
checked:
  description:
    - Whether the links could be judged at all (the member answered and its metrics have etcd's peer
      metrics, or it is the only member). False means RV(links) proves nothing.
  returned: without O(targets)
  type: bool
problems:
  description:
    - One line per broken link or per reason the links could not be judged.
    - With O(targets), those of every target.
  returned: always
  type: list
  elements: str
  sample: ["link pd-10.0.1.1-2379 -> pd-10.0.1.2-2379 (https://10.0.1.2:2380): not active now"]
results:
  description:
    - With O(targets), one entry per target in the order given, each with the return values above and
      that target's RV(problems), plus C(endpoint) and C(tag) as given.
  returned: with O(targets)
  type: list
  elements: dict
  sample:
    - endpoint: 10.0.1.1:2379
      tag: pd1
      checked: true
      problems: []
"""

import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.tlsops.tikv.plugins.module_utils import _batch
from ansible_collections.tlsops.tikv.plugins.module_utils._etcd_metrics import Reading, member_hex, peer_links
from ansible_collections.tlsops.tikv.plugins.module_utils._pd_client import PD_REQUIRED_TOGETHER, PDClient, PDError, tls_argument_spec


def read_links(client, interval, sleep=time.sleep):
    """Everything the module returns, from one PD member."""
    result = dict(member={}, members=[], links=[], has_leader=None, checked=False, problems=[])
    listing = client.etcd_members() or {}
    header = listing.get("header") or {}
    members = []
    for item in listing.get("members") or []:
        if item.get("ID") is None:
            continue
        members.append(dict(id=member_hex(item["ID"]), id_decimal=str(item["ID"]), name=item.get("name"),
                            peer_urls=list(item.get("peerURLs") or []), client_urls=list(item.get("clientURLs") or [])))
    result["members"] = members
    if header.get("member_id") is None:
        result["problems"].append("%s: the etcd member list does not say which member answered" % client.endpoints[0])
        return result
    local_id = member_hex(header["member_id"])
    local = [m for m in members if m["id"] == local_id]
    result["member"] = dict(id=local_id, id_decimal=str(header["member_id"]),
                            name=local[0]["name"] if local else None)

    first = Reading(_text(client.request("GET", "/metrics")))
    second = first
    if interval > 0:
        sleep(interval)
        second = Reading(_text(client.request("GET", "/metrics")))
    has_leader = second.value("etcd_server_has_leader")
    result["has_leader"] = None if has_leader is None else bool(has_leader)
    others = [m for m in members if m["id"] != local_id]
    if others and not second.has_metric("etcd_network_active_peers") and not second.has_metric(
            "etcd_network_peer_sent_failures_total"):
        result["problems"].append("%s: /metrics has no etcd peer metrics (etcd_network_active_peers); the "
                                  "peer links cannot be judged here" % client.endpoints[0])
        return result
    ids = second.local_ids()
    if ids and local_id not in ids:
        result["problems"].append("%s: the metrics are those of member(s) %s, not of %s that answered the member "
                                  "list; the peer links cannot be judged here" % (
                                      client.endpoints[0], ", ".join(ids), local_id))
        return result
    links, problems = peer_links(first, second, local_id, members, interval, local_name=result["member"]["name"])
    result["links"] = links
    result["problems"].extend(problems)
    if result["has_leader"] is False:
        result["problems"].append("%s: etcd_server_has_leader is 0 (this member sees no raft leader)"
                                  % (result["member"]["name"] or local_id))
    result["checked"] = True
    return result


def _text(answer):
    if answer is None:
        return ""
    if isinstance(answer, str):
        return answer
    return ""  # JSON is not what /metrics serves


def read_member(params, endpoint, tls=True):
    """The return values for one member (``problems`` included)."""
    client = PDClient([endpoint], params["ca_path"] if tls else None, params["client_cert_path"] if tls else None,
                      params["client_key_path"] if tls else None, params["timeout"])
    try:
        return read_links(client, params["interval"])
    except PDError as exc:
        return dict(member={}, members=[], links=[], has_leader=None, checked=False,
                    problems=["%s did not answer: %s" % (client.endpoints[0], exc)])


def main():
    module = AnsibleModule(
        argument_spec=tls_argument_spec(
            endpoint=dict(type="str"),
            targets=dict(type="list", elements="dict", options=dict(
                endpoint=dict(type="str", required=True),
                tls=dict(type="bool", default=True),
                tag=dict(type="raw"),
            )),
            parallel=_batch.PARALLEL_SPEC,
            interval=dict(type="float", default=2.0),
            fail_on_problems=dict(type="bool", default=False),
        ),
        required_together=PD_REQUIRED_TOGETHER,
        required_one_of=[("endpoint", "targets")],
        mutually_exclusive=[("endpoint", "targets")],
        supports_check_mode=True,
    )
    params = module.params
    if params["interval"] < 0:
        module.fail_json(msg="interval must be 0 or more seconds, got %g" % params["interval"])
    if _batch.parallel_problem(params["parallel"]):
        module.fail_json(msg=_batch.parallel_problem(params["parallel"]))
    targets = params["targets"]
    if targets is None:
        targets = [dict(endpoint=params["endpoint"], tls=True)]
    found = _batch.run_all(lambda t: read_member(params, t["endpoint"], t["tls"]), targets, params["parallel"])
    result = _batch.returned(params, targets, found, "problems", ("endpoint", "tag"))
    if params["fail_on_problems"] and result["problems"]:
        module.fail_json(msg="; ".join(result["problems"]), changed=False, **result)
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()

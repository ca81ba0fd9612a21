#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) tlsops.tikv maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: pd_leader
short_description: Move PD leadership away from a member, or onto one, and wait for the new leader
version_added: "0.1.0"
description:
  - With O(state=absent), makes sure the PD member O(name) is not the leader. When it is, leadership is
    transferred (C(POST /pd/api/v1/leader/transfer/<member>)) to O(target), or to the first other member
    that PD reports healthy, and the module waits until PD names the new leader. This is what a rolling
    restart does before it restarts the leader.
  - With O(state=present), makes sure O(name) is the leader, transferring leadership to it when it is not.
  - When the leader already is where it should be, nothing is sent and the module reports no change.
  - The wait FAILS after O(wait_timeout) seconds, naming the member and what to check.
author:
  - tlsops.tikv maintainers (@tlsops)
extends_documentation_fragment:
  - tlsops.tikv.pd_client
  - tlsops.tikv.pd_client.tls
options:
  name:
    description: PD member name (C(pd_name), for example V(pd-10.0.1.1-2379)).
    type: str
    required: true
  state:
    description:
      - V(absent) - O(name) must not be the leader (transfer away from it when it is).
      - V(present) - O(name) must be the leader (transfer to it when it is not).
    type: str
    choices: [absent, present]
    default: absent
  target:
    description:
      - With O(state=absent), the member to hand leadership to. It must be healthy.
      - Default is the first other member in name order that PD's health check reports healthy.
      - Ignored when no transfer is needed.
    type: str
  wait_timeout:
    description: Seconds to wait for PD to report the new leader after the transfer.
    type: float
    default: 60
  poll_interval:
    description: Seconds between two reads of the leader while waiting.
    type: float
    default: 1
attributes:
  check_mode:
    support: full
    description: In check mode nothing is transferred; RV(msg) says which transfer would be made.
  diff_mode:
    support: none
    description: RV(previous_leader) and RV(leader) show the change.
  idempotent:
    support: full
    description: A second run finds the leader where the first put it and changes nothing.
notes:
  - A single-member PD cannot hand leadership to anyone; the module fails with O(state=absent) for the
    only member. Restart such a member without a transfer.
  - PD's C(/leader/transfer) moves the etcd leader too; clients and TiKV follow within seconds.
seealso:
  - module: tlsops.tikv.pd_info
"""

EXAMPLES = r"""
- name: Before restarting pd2, make sure it is not the PD leader
  tlsops.tikv.pd_leader:
    endpoints: ["10.0.1.1:2379", "10.0.1.2:2379", "10.0.1.3:2379"]
    ca_path: /etc/tikv-tls/ca.crt
    client_cert_path: /etc/tikv-tls/client.crt
    client_key_path: /etc/tikv-tls/client.pem
    name: pd-10.0.1.2-2379
    state: absent
  delegate_to: localhost

- name: Put leadership back on pd1 (plaintext cluster)
  tlsops.tikv.pd_leader:
    endpoints: ["10.0.1.1:2379", "10.0.1.2:2379", "10.0.1.3:2379"]
    name: pd-10.0.1.1-2379
    state: present
    wait_timeout: 30
  delegate_to: localhost
"""

RETURN = r"""
leader:
  description: Name of the PD leader when the module finished (in check mode, the leader it found).
  returned: always
  type: str
  sample: pd-10.0.1.3-2379
previous_leader:
  description: Name of the PD leader the module found.
  returned: always
  type: str
  sample: pd-10.0.1.2-2379
transferred_to:
  description: The member leadership was (or in check mode would be) transferred to; null when no transfer was needed.
  returned: always
  type: str
waited:
  description: Seconds spent waiting for the new leader.
  returned: always
  type: float
msg:
  description: What was done (or would be done in check mode), in one sentence.
  returned: always
  type: str
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.tlsops.tikv.plugins.module_utils._pd_client import (
    PD_REQUIRED_TOGETHER,
    PDError,
    client_from_params,
    member_named,
    pd_argument_spec,
    poll,
)


def leader_name(client):
    return (client.leader() or {}).get("name")


def choose_target(client, members, name, target):
    """The member to hand leadership to: `target` (checked to exist and be healthy) or the first other
    healthy member in name order. Returns (member name, None) or (None, why not)."""
    healthy = set(item.get("name") for item in client.health() or [] if item.get("health"))
    if target:
        if member_named(members, target) is None:
            return None, "target %s is not a PD member (members: %s)" % (
                target, ", ".join(sorted(m.get("name", "") for m in members.get("members") or [])))
        if target not in healthy:
            return None, "target %s is not healthy according to PD" % target
        return target, None
    others = sorted(m.get("name") for m in members.get("members") or [] if m.get("name") and m.get("name") != name)
    candidates = [m for m in others if m in healthy]
    if not candidates:
        if not others:
            return None, "%s is the only PD member: there is nobody to hand leadership to" % name
        return None, "no other PD member is healthy (members: %s)" % ", ".join(others)
    return candidates[0], None


def main():
    module = AnsibleModule(
        argument_spec=pd_argument_spec(
            name=dict(type="str", required=True),
            state=dict(type="str", default="absent", choices=["absent", "present"]),
            target=dict(type="str"),
            wait_timeout=dict(type="float", default=60.0),
            poll_interval=dict(type="float", default=1.0),
        ),
        required_together=PD_REQUIRED_TOGETHER,
        supports_check_mode=True,
    )
    params = module.params
    name, state = params["name"], params["state"]
    client = client_from_params(params)
    result = dict(changed=False, leader=None, previous_leader=None, transferred_to=None, waited=0.0)

    try:
        members = client.members() or {}
    except PDError as exc:
        module.fail_json(msg="PD leader of %s: PD did not answer: %s. Check that PD has quorum and, with TLS, "
                             "that the CA and client certificate are the cluster's." % (name, exc), **result)
    current = (members.get("leader") or {}).get("name")
    result["leader"] = result["previous_leader"] = current
    if member_named(members, name) is None:
        module.fail_json(msg="%s is not a PD member (members: %s). Check pd_name in the inventory."
                             % (name, ", ".join(sorted(m.get("name", "") for m in members.get("members") or []))),
                         **result)
    if not current:
        module.fail_json(msg="PD has no leader right now (quorum lost or an election running); %s cannot be "
                             "made %s leader. Check every PD member's log." % (name, "the" if state == "present" else "not the"),
                         **result)

    if state == "absent":
        if current != name:
            result["msg"] = "%s is not the PD leader (%s is); nothing to do" % (name, current)
            module.exit_json(**result)
        try:
            target, why_not = choose_target(client, members, name, params["target"])
        except PDError as exc:
            target, why_not = None, "PD health could not be read: %s" % exc
        if target is None:
            module.fail_json(msg="cannot move PD leadership away from %s: %s. Bring another member back to health "
                                 "first (or restart a single-member PD without a leader transfer)." % (name, why_not),
                             **result)
    else:
        if current == name:
            result["msg"] = "%s is already the PD leader; nothing to do" % name
            module.exit_json(**result)
        target = name

    result.update(changed=True, transferred_to=target)
    if module.check_mode:
        result["msg"] = "would transfer PD leadership from %s to %s" % (current, target)
        module.exit_json(**result)

    try:
        client.transfer_leader(target)
    except PDError as exc:
        # Real PD only submits the transfer; an error can still mean it happened. The wait decides.
        module.warn("PD answered the transfer to %s with an error: %s" % (target, exc))

    def arrived():
        leader = leader_name(client)
        return leader if leader == target else None

    leader, waited, error = poll(arrived, params["wait_timeout"], params["poll_interval"])
    result["waited"] = round(waited, 2)
    if not leader:
        try:
            result["leader"] = leader_name(client)
        except PDError:
            result["leader"] = None
        module.fail_json(msg="PD leadership did not move from %s to %s within %g s (leader now: %s%s). Check %s's "
                             "health and PD logs, then retry; wait_timeout raises the limit."
                             % (current, target, params["wait_timeout"], result["leader"] or "none",
                                "; last error: %s" % error if error else "", target), **result)
    result["leader"] = leader
    result["msg"] = "transferred PD leadership from %s to %s in %.1f s" % (current, target, waited)
    module.exit_json(**result)


if __name__ == "__main__":
    main()

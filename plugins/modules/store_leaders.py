#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) tlsops.tikv maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: store_leaders
short_description: Evict the region leaders from a TiKV store before a restart, and allow them back
version_added: "0.1.0"
description:
  - With O(state=evicted), makes sure PD runs C(evict-leader-scheduler) for the store (adds it when it is
    missing) and waits until the store holds no region leader (C(status.leader_count) of C(GET /store/<id>)
    is 0), so a restart does not interrupt reads and writes.
  - The wait FAILS after O(wait_timeout) seconds by default (O(on_timeout=fail)); the scheduler this run
    added is then removed again, so the store is left as it was found. TiUP and tidb-ansible only warn
    and restart anyway; set O(on_timeout=warn) to do that knowingly.
  - With O(state=allowed), removes the store's C(evict-leader-scheduler) when there is one, so PD balances
    leaders back onto it.
  - The store is named by O(store_id) or by O(store_address) (the C(host:port) TiKV advertises, as
    C(GET /stores) lists it).
author:
  - tlsops.tikv maintainers (@tlsops)
extends_documentation_fragment:
  - tlsops.tikv.pd_client
  - tlsops.tikv.pd_client.tls
options:
  store_id:
    description: PD's id of the store.
    type: int
  store_address:
    description: The store's advertised address, V(host:port) of its gRPC port (a scheme is ignored).
    type: str
  state:
    description:
      - V(evicted) - the store runs C(evict-leader-scheduler) and (with O(wait)) holds no leader.
      - V(allowed) - the store has no C(evict-leader-scheduler).
    type: str
    choices: [evicted, allowed]
    default: evicted
  wait:
    description: With O(state=evicted), wait until the store's leader count is 0.
    type: bool
    default: true
  wait_timeout:
    description: Seconds to wait for the leader count to reach 0 (TiUP waits 600).
    type: float
    default: 600
  poll_interval:
    description: Seconds between two reads of the leader count.
    type: float
    default: 1
  on_timeout:
    description:
      - V(fail) - fail when the leaders are not gone in time, removing the scheduler this run added.
      - V(warn) - warn, keep the scheduler and succeed with RV(timed_out=true) (what TiUP does; a restart
        that follows interrupts the leaders still on the store).
    type: str
    choices: [fail, warn]
    default: fail
attributes:
  check_mode:
    support: full
    description: In check mode no scheduler is added or removed and nothing is waited for; RV(msg) says what would be done.
  diff_mode:
    support: none
    description: RV(scheduler_present) and RV(leader_count) show the state.
  idempotent:
    support: full
    description: A store already evicted (scheduler present, no leader) or already allowed is reported unchanged.
notes:
  - Leaders can only move to other stores that are Up; with no such store (or a store that keeps its
    leaders) the wait times out.
seealso:
  - module: tlsops.tikv.pd_info
"""

EXAMPLES = r"""
- name: Evict the leaders from the TiKV at 10.0.1.4:20160 (fails if they are not gone in 5 minutes)
  tlsops.tikv.store_leaders:
    endpoints: ["10.0.1.1:2379", "10.0.1.2:2379", "10.0.1.3:2379"]
    ca_path: /etc/tikv-tls/ca.crt
    client_cert_path: /etc/tikv-tls/client.crt
    client_key_path: /etc/tikv-tls/client.pem
    store_address: 10.0.1.4:20160
    state: evicted
    wait_timeout: 300
  delegate_to: localhost

- name: Allow leaders back on store 4
  tlsops.tikv.store_leaders:
    endpoints: ["10.0.1.1:2379"]
    store_id: 4
    state: allowed
  delegate_to: localhost
"""

RETURN = r"""
store_id:
  description: PD's id of the store.
  returned: always
  type: int
  sample: 4
store_address:
  description: The store's address as PD lists it.
  returned: always
  type: str
  sample: 10.0.1.4:20160
store_state:
  description: The store's state as PD reports it (Up, Disconnected, Down, Offline, Tombstone).
  returned: always
  type: str
scheduler:
  description: Name of the store's evict-leader scheduler.
  returned: always
  type: str
  sample: evict-leader-scheduler-4
scheduler_present:
  description: Whether the scheduler runs when the module finishes (in check mode, whether it would).
  returned: always
  type: bool
leader_count_before:
  description: Leaders the store held when the module started.
  returned: always
  type: int
leader_count:
  description: Leaders the store holds when the module finishes.
  returned: always
  type: int
waited:
  description: Seconds spent waiting for the leader count to reach 0.
  returned: always
  type: float
timed_out:
  description: Whether the wait ran out of time (only V(true) with O(on_timeout=warn); otherwise the module failed).
  returned: always
  type: bool
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
    pd_argument_spec,
    poll,
    store_matching,
)

EVICT_LEADER = "evict-leader-scheduler"


def leader_count(entry):
    return int(((entry or {}).get("status") or {}).get("leader_count") or 0)


def main():
    module = AnsibleModule(
        argument_spec=pd_argument_spec(
            store_id=dict(type="int"),
            store_address=dict(type="str"),
            state=dict(type="str", default="evicted", choices=["evicted", "allowed"]),
            wait=dict(type="bool", default=True),
            wait_timeout=dict(type="float", default=600.0),
            poll_interval=dict(type="float", default=1.0),
            on_timeout=dict(type="str", default="fail", choices=["fail", "warn"]),
        ),
        required_together=PD_REQUIRED_TOGETHER,
        required_one_of=[("store_id", "store_address")],
        mutually_exclusive=[("store_id", "store_address")],
        supports_check_mode=True,
    )
    params = module.params
    client = client_from_params(params)
    named = ("store %s" % params["store_id"]) if params["store_id"] is not None else ("the store at %s" % params["store_address"])
    result = dict(changed=False, store_id=params["store_id"], store_address=params["store_address"], store_state=None,
                  scheduler=None, scheduler_present=False, leader_count_before=0, leader_count=0, waited=0.0,
                  timed_out=False)

    try:
        entry = store_matching(client.stores(), params["store_id"], params["store_address"])
        if entry is None:
            module.fail_json(msg="%s is not known to PD. Check tikv_port/ansible_host in the inventory against "
                                 "`pd-ctl store` (the address TiKV advertises)." % named, **result)
        store = entry.get("store") or {}
        store_id = int(store["id"])
        scheduler = "%s-%d" % (EVICT_LEADER, store_id)
        present = scheduler in (client.schedulers() or [])
    except PDError as exc:
        module.fail_json(msg="leaders of %s: PD did not answer: %s. Check that PD has quorum and, with TLS, that the "
                             "CA and client certificate are the cluster's." % (named, exc), **result)
    label = "store %d (%s)" % (store_id, store.get("address"))
    result.update(store_id=store_id, store_address=store.get("address"), store_state=store.get("state_name"),
                  scheduler=scheduler, scheduler_present=present,
                  leader_count_before=leader_count(entry), leader_count=leader_count(entry))

    if params["state"] == "allowed":
        if not present:
            result["msg"] = "%s has no %s; nothing to do" % (label, scheduler)
            module.exit_json(**result)
        result.update(changed=True, scheduler_present=False)
        if module.check_mode:
            result["msg"] = "would remove %s so that %s takes leaders again" % (scheduler, label)
            module.exit_json(**result)
        try:
            client.remove_evict_leader(store_id)
        except PDError as exc:
            module.fail_json(msg="could not remove %s for %s: %s" % (scheduler, label, exc), **result)
        result["msg"] = "removed %s; PD balances leaders back onto %s" % (scheduler, label)
        module.exit_json(**result)

    if store.get("state_name") == "Tombstone":
        module.fail_json(msg="%s is a Tombstone (removed from the cluster); it has no leaders to evict. Remove it "
                             "from the inventory." % label, **result)
    added = not present
    result.update(changed=added, scheduler_present=True)
    if module.check_mode:
        if added:
            result["msg"] = ("would add %s and wait up to %g s for %s to hand over its %d leaders"
                             % (scheduler, params["wait_timeout"], label, result["leader_count"]))
        else:
            result["msg"] = "%s already runs %s (%d leaders left)" % (label, scheduler, result["leader_count"])
        module.exit_json(**result)
    if added:
        try:
            client.add_evict_leader(store_id)
        except PDError as exc:
            result.update(changed=False, scheduler_present=False)
            module.fail_json(msg="could not add %s for %s: %s" % (scheduler, label, exc), **result)
    if not params["wait"]:
        result["msg"] = "%s %s; not waiting for its leaders to move" % ("added" if added else "kept", scheduler)
        module.exit_json(**result)

    last = {"count": result["leader_count"]}

    def drained():
        last["count"] = leader_count(client.store(store_id))
        return last["count"] == 0

    done, waited, error = poll(drained, params["wait_timeout"], params["poll_interval"])
    result.update(waited=round(waited, 2), leader_count=last["count"])
    if done:
        result["msg"] = "%s: %d leaders evicted in %.1f s (%s)" % (label, result["leader_count_before"], waited, scheduler)
        module.exit_json(**result)

    why = ("%s still holds %d leaders after waiting %g s with %s%s. Leaders move only to other stores that are Up; check "
           "`pd-ctl store` for a store that is not Up and the store's own log for why it keeps them"
           % (label, last["count"], params["wait_timeout"], scheduler, "; last error: %s" % error if error else ""))
    if params["on_timeout"] == "warn":
        module.warn(why + ". Going on anyway (on_timeout=warn): a restart now interrupts those leaders.")
        result.update(timed_out=True, msg=why)
        module.exit_json(**result)
    if added:
        # Leave the store as we found it: a store we could not drain must not stay leaderless.
        try:
            client.remove_evict_leader(store_id)
            result.update(scheduler_present=False, changed=False)
            why += "; %s was removed again, so the store is as it was" % scheduler
        except PDError as exc:
            why += "; removing %s again failed too (%s): remove it with state=allowed" % (scheduler, exc)
    module.fail_json(msg=why + ". Fix that and retry, or raise wait_timeout / set on_timeout=warn.",
                     **result)


if __name__ == "__main__":
    main()

#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) tlsops.tikv maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: pd_member
short_description: Set a PD member's peer URLs in etcd membership (etcd member update)
version_added: "0.1.0"
description:
  - PD keeps its members' peer URLs in etcd membership, and a restarted PD overwrites its configured
    advertise-peer-urls with the stored value (tikv/pd#2996). Turning the peer links to C(https://)
    therefore needs an etcd C(MemberUpdate), which this module sends through etcd's v3 JSON gateway on a
    PD client URL (C(POST /v3/cluster/member/update)); no C(etcdctl) is needed.
  - Reads the member list (C(POST /v3/cluster/member/list)), finds the member by O(name) or O(member_id),
    and updates its peer URLs only when they differ from O(peer_urls) (order does not matter). The list is
    read again afterwards to confirm the change.
author:
  - tlsops.tikv maintainers (@tlsops)
extends_documentation_fragment:
  - tlsops.tikv.pd_client
  - tlsops.tikv.pd_client.tls
options:
  name:
    description: PD member name (C(pd_name)). A member that has never started has no name yet; use O(member_id) for it.
    type: str
  member_id:
    description: The member's id in decimal, as PD's API shows it (etcdctl shows it in hex).
    type: str
  peer_urls:
    description: The peer URLs the member must have, for example V([https://10.0.1.1:2380]).
    type: list
    elements: str
    required: true
attributes:
  check_mode:
    support: full
    description: In check mode membership is not changed; RV(msg) and the diff say what would change.
  diff_mode:
    support: full
    description: The member's peer URLs before and after.
  idempotent:
    support: full
    description: Peer URLs that already match are not sent again.
notes:
  - Order matters for a working cluster. Updating a member's peer URL to C(https://) before every member
    can dial TLS (peer certificate, key and CA configured) breaks its raft links while health still looks
    green. See the enable_tls playbook and docs/tls-facts.md for the proven order.
seealso:
  - module: tlsops.tikv.pd_info
"""

EXAMPLES = r"""
- name: Publish pd1's https peer URL in etcd membership
  tlsops.tikv.pd_member:
    endpoints: ["10.0.1.1:2379", "10.0.1.2:2379", "10.0.1.3:2379"]
    ca_path: /etc/tikv-tls/ca.crt
    client_cert_path: /etc/tikv-tls/client.crt
    client_key_path: /etc/tikv-tls/client.pem
    name: pd-10.0.1.1-2379
    peer_urls: ["https://10.0.1.1:2380"]
  delegate_to: localhost
"""

RETURN = r"""
member:
  description: The member after the module ran (in check mode, as found).
  returned: success
  type: dict
  contains:
    name:
      description: Member name.
      type: str
    member_id:
      description: Member id in decimal (as PD's API shows it).
      type: str
    member_id_hex:
      description: Member id in hex (as etcdctl shows it).
      type: str
    peer_urls:
      description: Peer URLs stored in etcd membership.
      type: list
      elements: str
    client_urls:
      description: Client URLs the member publishes.
      type: list
      elements: str
previous_peer_urls:
  description: The member's peer URLs before the module ran.
  returned: success
  type: list
  elements: str
msg:
  description: What was done (or would be done in check mode), in one sentence.
  returned: always
  type: str
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.six.moves.urllib.parse import urlsplit
from ansible_collections.tlsops.tikv.plugins.module_utils._pd_client import (
    PD_REQUIRED_TOGETHER,
    PDError,
    client_from_params,
    pd_argument_spec,
)


def url_problem(url):
    """Why `url` is not a usable etcd peer URL, or None."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return "%s: %s" % (url, exc)
    if parts.scheme not in ("http", "https"):
        return "%s: the scheme must be http or https" % url
    if not parts.hostname or port is None:
        return "%s: needs a host and a port" % url
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        return "%s: a peer URL has no path" % url
    return None


def member_view(member):
    member_id = int(member.get("ID", 0))
    return {"name": member.get("name", ""), "member_id": str(member_id), "member_id_hex": "%x" % member_id,
            "peer_urls": list(member.get("peerURLs") or []), "client_urls": list(member.get("clientURLs") or [])}


def find_member(listing, name, member_id):
    for member in (listing or {}).get("members") or []:
        if name is not None and member.get("name") == name:
            return member_view(member)
        if member_id is not None and str(int(member.get("ID", 0))) == member_id:
            return member_view(member)
    return None


def main():
    module = AnsibleModule(
        argument_spec=pd_argument_spec(
            name=dict(type="str"),
            member_id=dict(type="str"),
            peer_urls=dict(type="list", elements="str", required=True),
        ),
        required_together=PD_REQUIRED_TOGETHER,
        required_one_of=[("name", "member_id")],
        mutually_exclusive=[("name", "member_id")],
        supports_check_mode=True,
    )
    params = module.params
    wanted = [u.rstrip("/") for u in params["peer_urls"]]
    who = params["name"] if params["name"] is not None else "member id %s" % params["member_id"]
    member_id = params["member_id"]
    if member_id is not None:
        try:
            member_id = str(int(member_id, 16) if member_id.lower().startswith("0x") else int(member_id))
        except ValueError:
            module.fail_json(msg="member_id %r is not a decimal member id (hex needs a 0x prefix)" % member_id)
    problems = [p for p in (url_problem(u) for u in wanted) if p]
    if not wanted or problems:
        module.fail_json(msg="peer_urls for %s are not usable: %s" % (who, "; ".join(problems) or "the list is empty"))

    client = client_from_params(params)
    try:
        listing = client.etcd_members()
    except PDError as exc:
        module.fail_json(msg="etcd member list of %s: PD's JSON gateway did not answer: %s. Check that PD runs with "
                             "enable-grpc-gateway (the default) and, with TLS, the CA and client certificate." % (who, exc))
    member = find_member(listing, params["name"], member_id)
    if member is None:
        names = ", ".join(sorted("%s (%s)" % (m.get("name") or "unstarted", int(m.get("ID", 0)))
                                 for m in (listing or {}).get("members") or []))
        module.fail_json(msg="%s is not an etcd member of this PD cluster (members: %s)" % (who, names))

    result = dict(changed=False, member=member, previous_peer_urls=member["peer_urls"])
    if sorted(member["peer_urls"]) == sorted(wanted):
        result["msg"] = "%s already has peer URLs %s" % (who, ", ".join(wanted))
        module.exit_json(**result)
    result["changed"] = True
    if module._diff:
        result["diff"] = {"before": {"peer_urls": member["peer_urls"]}, "after": {"peer_urls": wanted},
                          "before_header": "etcd member %s" % who, "after_header": "etcd member %s" % who}
    if module.check_mode:
        result["msg"] = "would update %s's peer URLs from %s to %s" % (who, ", ".join(member["peer_urls"]), ", ".join(wanted))
        module.exit_json(**result)

    try:
        client.update_member_peer_urls(member["member_id"], wanted)
        after = find_member(client.etcd_members(), None, member["member_id"])
    except PDError as exc:
        module.fail_json(msg="etcd member update of %s to %s failed: %s" % (who, ", ".join(wanted), exc), **result)
    if after is None or sorted(after["peer_urls"]) != sorted(wanted):
        module.fail_json(msg="etcd member update of %s was accepted but the member list shows %s" % (
            who, ", ".join((after or {}).get("peer_urls") or []) or "no such member"), **result)
    result["member"] = after
    result["msg"] = "updated %s's peer URLs from %s to %s" % (who, ", ".join(member["peer_urls"]), ", ".join(wanted))
    module.exit_json(**result)


if __name__ == "__main__":
    main()

#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: tlsops.tikv contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function

DOCUMENTATION = r"""
---
module: running_config
short_description: Read the configuration a running PD or TiKV instance reports, with its TLS settings
version_added: 0.1.0
description:
  - Asks ONE running instance for its configuration, PD on its client port (C(GET /pd/api/v1/config)),
    TiKV on its status port (C(GET /config)), and returns it with the C([security]) settings in one
    shape for both (PD says C(cacert-path), TiKV C(ca-path)).
  - This is what the process runs with, which can differ from its files until it restarts.
  - With TLS on, both ports may require a client certificate; give O(ca_path), O(client_cert_path)
    and O(client_key_path). Without O(ca_path) the call is plaintext.
  - Read-only; never reports a change. An instance that does not answer is reported in RV(problems)
    (and fails the module only with O(fail_on_problems=true)).
  - With O(targets), many instances are read in one run (one module start instead of one per instance).
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
  component:
    description:
      - What runs at O(endpoint).
      - Required with O(endpoint).
    type: str
    choices: [pd, tikv]
  endpoint:
    description:
      - V(host:port) of the PD client port or the TiKV status port (a URL's scheme is ignored; TLS is
        used when O(ca_path) is set).
      - Required unless O(targets) is given; the two exclude each other.
    type: str
  targets:
    description:
      - Many instances read in one run instead of O(component) and O(endpoint), up to O(parallel) at once.
        The results come back in RV(results), in this order.
    type: list
    elements: dict
    suboptions:
      component:
        description: What runs at O(targets[].endpoint).
        type: str
        required: true
        choices: [pd, tikv]
      endpoint:
        description: As O(endpoint).
        type: str
        required: true
      tls:
        description:
          - Whether to call this instance over TLS with O(ca_path), O(client_cert_path) and
            O(client_key_path). V(false) calls it in plaintext (a port that does not serve TLS yet).
        type: bool
        default: true
      tag:
        description: Any value, returned unchanged with this target's result (C(tag) in RV(results)).
        type: raw
  fail_on_problems:
    description:
      - Fail when RV(problems) is not empty (the instance did not answer, or its TLS settings are partial).
      - With O(targets), when any target has a problem.
    type: bool
    default: false
seealso:
  - module: tlsops.tikv.pd_info
"""

EXAMPLES = r"""
- name: Read the TLS settings a TiKV runs with (its status port, from the controller)
  tlsops.tikv.running_config:
    component: tikv
    endpoint: 10.0.1.21:20180
    ca_path: /etc/tikv-tls/ca.crt
    client_cert_path: /etc/tikv-tls/client.crt
    client_key_path: /etc/tikv-tls/client.pem
  delegate_to: localhost
  register: tikv_config

- name: Show its allow-list
  ansible.builtin.debug:
    msg: "cert-allowed-cn: {{ tikv_config.security.cert_allowed_cn }}"
"""

RETURN = r"""
reachable:
  description: Whether the instance answered with a configuration.
  returned: without O(targets)
  type: bool
url:
  description: The URL that was called.
  returned: without O(targets)
  type: str
  sample: https://10.0.1.21:20180/config
config:
  description: The whole configuration as the instance reports it; empty when it did not answer.
  returned: without O(targets)
  type: dict
security:
  description: The TLS settings, in one shape for PD and TiKV.
  returned: without O(targets)
  type: dict
  contains:
    ca_path:
      description: PD C(security.cacert-path) / TiKV C(security.ca-path); empty when not set.
      type: str
      returned: always
    cert_path:
      description: C(security.cert-path).
      type: str
      returned: always
    key_path:
      description: C(security.key-path) (a path).
      type: str
      returned: always
    cert_allowed_cn:
      description: C(security.cert-allowed-cn) as a list (PD up to v8.3 keeps one value as a string).
      type: list
      elements: str
      returned: always
    tls:
      description: Whether all three paths are set (the instance runs TLS on its ports; PD still needs https URLs).
      type: bool
      returned: always
    partial:
      description: Whether only some of the three paths are set (a real server refuses to start so).
      type: bool
      returned: always
urls:
  description: PD only, its client and peer URLs (and advertised ones) as configured, each a list.
  returned: without O(targets)
  type: dict
  sample: {"client-urls": ["https://10.0.1.1:2379"], "peer-urls": ["https://10.0.1.1:2380"]}
problems:
  description:
    - What is wrong (no answer, partial TLS settings), one line each.
    - With O(targets), those of every target.
  returned: always
  type: list
  elements: str
results:
  description:
    - With O(targets), one entry per target in the order given, each with the return values above and
      that target's RV(problems), plus C(component), C(endpoint) and C(tag) as given.
  returned: with O(targets)
  type: list
  elements: dict
  sample:
    - component: tikv
      endpoint: 10.0.1.21:20180
      tag: tikv1
      reachable: true
      url: https://10.0.1.21:20180/config
      problems: []
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.tlsops.tikv.plugins.module_utils import _batch
from ansible_collections.tlsops.tikv.plugins.module_utils._pd_client import PD_REQUIRED_TOGETHER, PDClient, PDError, tls_argument_spec

CONFIG_PATHS = {"pd": "/pd/api/v1/config", "tikv": "/config"}
CA_KEYS = {"pd": "cacert-path", "tikv": "ca-path"}
URL_KEYS = ("client-urls", "peer-urls", "advertise-client-urls", "advertise-peer-urls")


def security_of(component, config):
    security = (config or {}).get("security") or {}
    allowed = security.get("cert-allowed-cn") or []
    if isinstance(allowed, str):
        allowed = [allowed] if allowed else []
    paths = dict(ca_path=security.get(CA_KEYS[component]) or "", cert_path=security.get("cert-path") or "",
                 key_path=security.get("key-path") or "")
    set_count = sum(1 for value in paths.values() if value)
    return dict(paths, cert_allowed_cn=[str(cn) for cn in allowed], tls=set_count == 3, partial=0 < set_count < 3)


def urls_of(config):
    urls = {}
    for key in URL_KEYS:
        value = (config or {}).get(key)
        if isinstance(value, str):
            urls[key] = [item.strip() for item in value.split(",") if item.strip()]
        elif isinstance(value, list):
            urls[key] = [str(item) for item in value]
    return urls


def read_config(params, component, endpoint, tls=True):
    """The return values for one instance (``problems`` included)."""
    client = PDClient([endpoint], params["ca_path"] if tls else None, params["client_cert_path"] if tls else None,
                      params["client_key_path"] if tls else None, params["timeout"])
    url = client.endpoints[0] + CONFIG_PATHS[component]
    result = dict(reachable=False, url=url, config={}, security=security_of(component, {}), urls={}, problems=[])
    try:
        answer = client.request("GET", CONFIG_PATHS[component])
    except PDError as exc:
        result["problems"].append("%s did not answer: %s" % (url, exc))
        answer = None
    if answer is not None and not isinstance(answer, dict):
        result["problems"].append("%s did not answer with a JSON object: %.200s" % (url, answer))
    elif isinstance(answer, dict):
        result.update(reachable=True, config=answer, security=security_of(component, answer),
                      urls=urls_of(answer) if component == "pd" else {})
        if result["security"]["partial"]:
            result["problems"].append("%s reports partial TLS settings (%s): ca, cert and key must be all set or "
                                      "none" % (url, ", ".join("%s=%r" % (k, result["security"][k])
                                                               for k in ("ca_path", "cert_path", "key_path"))))
    return result


def main():
    module = AnsibleModule(
        argument_spec=tls_argument_spec(
            component=dict(type="str", choices=["pd", "tikv"]),
            endpoint=dict(type="str"),
            targets=dict(type="list", elements="dict", options=dict(
                component=dict(type="str", required=True, choices=["pd", "tikv"]),
                endpoint=dict(type="str", required=True),
                tls=dict(type="bool", default=True),
                tag=dict(type="raw"),
            )),
            parallel=_batch.PARALLEL_SPEC,
            fail_on_problems=dict(type="bool", default=False),
        ),
        required_together=PD_REQUIRED_TOGETHER + [("component", "endpoint")],
        required_one_of=[("endpoint", "targets")],
        mutually_exclusive=[("endpoint", "targets")],
        supports_check_mode=True,
    )
    params = module.params
    if _batch.parallel_problem(params["parallel"]):
        module.fail_json(msg=_batch.parallel_problem(params["parallel"]))
    targets = params["targets"]
    if targets is None:
        targets = [dict(component=params["component"], endpoint=params["endpoint"], tls=True)]
    found = _batch.run_all(lambda t: read_config(params, t["component"], t["endpoint"], t["tls"]), targets,
                           params["parallel"])
    result = _batch.returned(params, targets, found, "problems", ("component", "endpoint", "tag"))
    if params["fail_on_problems"] and result["problems"]:
        module.fail_json(msg="; ".join(result["problems"]), changed=False, **result)
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()

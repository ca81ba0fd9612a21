#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: tlsops.tikv contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function

DOCUMENTATION = r"""
---
module: grpc_call
short_description: Make one gRPC call with a client certificate to prove a TiKV accepts the caller
version_added: 0.1.0
description:
  - Makes ONE unary gRPC call to O(host):O(port) over TLS (presenting O(client_cert_path)) or
    plaintext, and reports the gRPC status the server answered.
  - TiKV checks its C(cert-allowed-cn) on every gRPC call, not in the TLS handshake, so a handshake
    that succeeds says nothing about the allow-list; a call that gets past the check does. Delegate the
    module to a TiKV host with that TiKV's own certificate to prove that the other TiKVs accept its
    identity (TiKV to TiKV, allow-list included).
  - The call is V(/tikvpb.Tikv/KvGet) with an empty request by default. For a real TiKV that is a
    read of the empty key in region 0, which it answers with a region error in the response (gRPC
    status OK); it reads nothing and changes nothing.
  - RV(call_accepted) is V(true) when the server ran the call (any gRPC status except
    C(UNAUTHENTICATED), C(PERMISSION_DENIED) and C(UNIMPLEMENTED)), V(false) when it refused the caller
    (C(UNAUTHENTICATED) is TiKV's C(Common name check fail)), and V(null) when the answer does not tell
    (no answer, the method is unknown, or the status came in a form this client does not decode).
  - Uses the Python standard library only (its own minimal HTTP/2 and HPACK), so it runs on hosts
    without grpcio.
  - Never reports a change.
author:
  - tlsops.tikv maintainers (@tlsops)
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
    details: The default call only reads; it is made in check mode too. Do not point O(method) at a method that writes.
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
options:
  host:
    description:
      - Address or name to connect to.
      - Required unless O(targets) is given; the two exclude each other.
    type: str
  port:
    description:
      - TCP port of the gRPC server, for example C(20160) (TiKV).
      - Required with O(host).
    type: int
  targets:
    description:
      - Many servers called in one run instead of O(host) and O(port), one call each with the other
        options, up to O(parallel) at once. The results come back in RV(results), in this order.
      - A target's own O(targets[].server_name), O(targets[].ca_path), O(targets[].client_cert_path) and
        O(targets[].client_key_path) replace the options of the same name for it.
    type: list
    elements: dict
    suboptions:
      host:
        description: Address or name to connect to.
        type: str
        required: true
      port:
        description: TCP port of the gRPC server.
        type: int
        required: true
      server_name:
        description: As O(server_name); defaults to this target's O(targets[].host).
        type: str
      ca_path:
        description: As O(ca_path).
        type: path
      client_cert_path:
        description: As O(client_cert_path).
        type: path
      client_key_path:
        description: As O(client_key_path).
        type: path
      tag:
        description: Any value, returned unchanged with this target's result (C(tag) in RV(results)).
        type: raw
  server_name:
    description: Name the server's certificate must match (SNI). Defaults to O(host).
    type: str
  tls:
    description: Use TLS (with ALPN V(h2)). V(false) makes a plaintext call (h2c with prior knowledge).
    type: bool
    default: true
  ca_path:
    description: CA certificate(s) in PEM that must have signed the server's certificate. Without it the system trust store is used.
    type: path
  client_cert_path:
    description: Client certificate (PEM) to present; may also hold the key.
    type: path
  client_key_path:
    description: Private key (PEM) of O(client_cert_path). A path, not key material.
    type: path
  method:
    description: Full gRPC method name, C(/<package>.<service>/<method>).
    type: str
    default: /tikvpb.Tikv/KvGet
  timeout:
    description: Seconds allowed for the connect, the handshake and the answer, each.
    type: float
    default: 5
  require_accepted:
    description: Fail unless RV(call_accepted) is V(true). With V(false) the module only reports.
    type: bool
    default: true
extends_documentation_fragment:
  - tlsops.tikv.batch
notes:
  - A server that closes the connection right after a TLS 1.3 handshake refused the client certificate;
    RV(error) then says the connection closed before the answer.
seealso:
  - module: tlsops.tikv.tls_handshake
"""

EXAMPLES = r"""
- name: From tikv2's host, with tikv2's own certificate, prove tikv1 accepts tikv2's calls
  tlsops.tikv.grpc_call:
    host: 10.0.1.21
    port: 20160
    ca_path: /tidb-deploy/tikv-20160/tls/ca.crt
    client_cert_path: /tidb-deploy/tikv-20160/tls/tikv.crt
    client_key_path: /tidb-deploy/tikv-20160/tls/tikv.pem
  delegate_to: tikv2

- name: Report, without failing, whether the operator certificate may call a TiKV
  tlsops.tikv.grpc_call:
    host: 10.0.1.21
    port: 20160
    ca_path: /etc/tikv-tls/ca.crt
    client_cert_path: /etc/tikv-tls/client.crt
    client_key_path: /etc/tikv-tls/client.pem
    require_accepted: false
  delegate_to: localhost
  register: operator_call
"""

RETURN = r"""
call_accepted:
  description:
    - V(true) when the server ran the call, V(false) when it refused the caller (C(UNAUTHENTICATED) or
      C(PERMISSION_DENIED)), V(null) when the answer does not tell.
  returned: without O(targets)
  type: bool
verdict:
  description: RV(call_accepted) in words.
  returned: without O(targets)
  type: str
  sample: "the server refused the call: UNAUTHENTICATED 'Common name check fail'"
grpc_status:
  description: The gRPC status code answered; null without an answer.
  returned: without O(targets)
  type: int
  sample: 16
grpc_status_name:
  description: Its name.
  returned: without O(targets)
  type: str
  sample: UNAUTHENTICATED
grpc_message:
  description: The server's grpc-message (percent-decoded).
  returned: without O(targets)
  type: str
  sample: Common name check fail
http_status:
  description: The HTTP/2 C(:status) of the answer.
  returned: without O(targets)
  type: int
  sample: 200
response_bytes:
  description: Size of the response message(s), without gRPC framing.
  returned: without O(targets)
  type: int
protocol:
  description: TLS protocol version negotiated; null for plaintext or when no handshake completed.
  returned: without O(targets)
  type: str
  sample: TLSv1.3
cipher:
  description: Cipher suite negotiated; null for plaintext or when no handshake completed.
  returned: without O(targets)
  type: str
alpn:
  description: ALPN protocol the server selected.
  returned: without O(targets)
  type: str
  sample: h2
stage:
  description: Where the call stopped, V(connect), V(handshake), V(call) or V(done) (an answer with a status).
  returned: without O(targets)
  type: str
error:
  description: Why there is no gRPC status; null when there is one.
  returned: without O(targets)
  type: str
undecodable_headers:
  description: Names of answer headers whose value came Huffman-coded (not decoded here).
  returned: without O(targets)
  type: list
  elements: str
failures:
  description:
    - "C(<host>:<port>: <check>: <what>) for each problem; empty when the call was accepted (or O(require_accepted=false))."
    - With O(targets), those of every target.
  returned: always
  type: list
  elements: str
results:
  description:
    - With O(targets), one entry per target in the order given, each with the return values above and
      that target's RV(failures), plus C(host), C(port) and C(tag) as given.
  returned: with O(targets)
  type: list
  elements: dict
  sample:
    - host: 10.0.1.21
      port: 20160
      tag: {"instance": "tikv1", "source": "tikv2"}
      call_accepted: true
      stage: done
      failures: []
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.tlsops.tikv.plugins.module_utils import _batch
from ansible_collections.tlsops.tikv.plugins.module_utils._grpc_call import checked_call, is_method
from ansible_collections.tlsops.tikv.plugins.module_utils._tls_probe import Target

# The options a target of O(targets) may set for itself (the module-level value applies otherwise).
TARGET_OWN = ("server_name", "ca_path", "client_cert_path", "client_key_path")


def call_one(params, target_params):
    """One call to one server: the module's return values, ``failures`` included."""
    target = Target(target_params["host"], target_params["port"], server_name=target_params["server_name"],
                    ca_path=target_params["ca_path"], client_cert_path=target_params["client_cert_path"],
                    client_key_path=target_params["client_key_path"], timeout=params["timeout"],
                    alpn_protocols=["h2"])
    return checked_call(target, params["method"], tls=params["tls"], require_accepted=params["require_accepted"])


def main():
    module = AnsibleModule(
        argument_spec=dict(
            host=dict(type="str"),
            port=dict(type="int"),
            targets=dict(type="list", elements="dict", options=dict(_batch.ENDPOINT_TARGET_OPTIONS)),
            parallel=_batch.PARALLEL_SPEC,
            server_name=dict(type="str"),
            tls=dict(type="bool", default=True),
            ca_path=dict(type="path"),
            client_cert_path=dict(type="path"),
            client_key_path=dict(type="path", no_log=False),
            method=dict(type="str", default="/tikvpb.Tikv/KvGet"),
            timeout=dict(type="float", default=5.0),
            require_accepted=dict(type="bool", default=True),
        ),
        required_one_of=[("host", "targets")],
        mutually_exclusive=[("host", "targets")],
        required_together=[("host", "port")],
        required_by=dict(client_key_path="client_cert_path"),
        supports_check_mode=True,
    )
    params = module.params
    if not is_method(params["method"]):
        module.fail_json(msg="method must look like /package.Service/Method, got %r" % params["method"])
    targets = _batch.endpoint_targets(module, TARGET_OWN)
    found = _batch.run_all(lambda target: call_one(params, target), targets, params["parallel"])
    result = _batch.returned(params, targets, found, "failures", ("host", "port", "tag"))
    if result["failures"]:
        module.fail_json(msg="; ".join(result["failures"]), changed=False, **result)
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()

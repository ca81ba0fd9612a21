#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: tlsops.tikv contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function

DOCUMENTATION = r"""
---
module: tls_handshake
short_description: Probe a TLS endpoint and check what it serves and accepts
version_added: 0.1.0
description:
  - Opens TLS connections to O(host):O(port) with Python's C(ssl) module and reports what the server
    negotiates (protocol, cipher, ALPN), whether its certificate chain and name verify, and which
    certificate it serves.
  - Optionally checks expectations that matter for a TiKV/PD cluster running with TLS, each with its
    own probe connection, namely that a client without a certificate is refused (O(require_client_cert)),
    that a plaintext request gets no plaintext answer (O(require_plaintext_refused)), that protocol
    versions below O(min_protocol) are refused, and that the served certificate stays valid for
    O(min_days_valid) days.
  - Every unmet expectation adds one message to RV(failures), naming C(host:port) and the check.
    The module fails when RV(failures) is not empty and still returns every value it found.
  - When the chain does not verify, a second handshake with verification switched off reads the
    served certificate, so RV(peer_cert) shows what the server actually presents.
  - With O(grpc_method) (or a target's O(targets[].grpc_method)), the probe also makes that one unary
    gRPC call with the same client certificate, as the M(tlsops.tikv.grpc_call) module does, and returns
    its outcome in RV(grpc_call). TiKV checks its C(cert-allowed-cn) on every call, not in the handshake,
    so only a call proves the caller's CN is admitted; making it in the same run saves a second module
    run on every host that probes its peers.
  - Read-only; never reports a change. Runs on the controller or on any host it is delegated to
    (for example a TiKV host probing a peer with that host's own certificate).
author:
  - tlsops.tikv maintainers (@tlsops)
requirements:
  - Python C(ssl) linked against OpenSSL 1.1.1 or later (TLS 1.3).
  - The Python library C(cryptography) for the details of RV(peer_cert) and for O(min_days_valid).
    Without it RV(peer_cert) holds the fingerprint, plus the other fields when the chain verified.
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
    details: The module only reads; it runs the same probes in check mode and reports the same results.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: none
  idempotent:
    description: When run twice in a row outside check mode, with the same arguments, the second invocation indicates no change.
    support: full
  platform:
    description: Target OS/families that can be operated against.
    support: N/A
    platforms: posix
options:
  host:
    description:
      - Address or name to connect to.
      - Required unless O(targets) is given; the two exclude each other.
    type: str
  port:
    description:
      - TCP port, for example C(2379) (PD client), C(2380) (PD peer), C(20160) (TiKV gRPC) or C(20180)
        (TiKV status).
      - Required with O(host).
    type: int
  targets:
    description:
      - Many endpoints probed in one run instead of O(host) and O(port), each with the checks the other
        options ask for, up to O(parallel) at once. The results come back in RV(results), in this order.
      - A target's own O(targets[].server_name), O(targets[].ca_path), O(targets[].client_cert_path),
        O(targets[].client_key_path), O(targets[].require_client_cert) and O(targets[].grpc_method) replace
        the options of the same name for it; where it leaves them out, those options apply.
    type: list
    elements: dict
    suboptions:
      host:
        description: Address or name to connect to.
        type: str
        required: true
      port:
        description: TCP port.
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
      require_client_cert:
        description: As O(require_client_cert).
        type: bool
      grpc_method:
        description: As O(grpc_method).
        type: str
      tag:
        description:
          - Any value, returned unchanged with this target's result (C(tag) in RV(results)) to tell the
            results apart, for example the instance and channel.
        type: raw
  server_name:
    description:
      - Name sent as SNI and checked against the certificate's subject alternative names.
      - An IP address is checked against the IP SANs (and no SNI is sent, as TLS requires).
      - The subject CN is never used for the name check, as in Go (PD, etcd).
      - Defaults to O(host).
    type: str
  ca_path:
    description:
      - CA certificate(s) in PEM to verify the server with (a file, or a directory prepared with
        C(openssl rehash)).
      - When omitted, the system's default trust store is used.
    type: path
  client_cert_path:
    description:
      - Client certificate (PEM) to present. May also contain the key.
      - Needed for ports that require client certificates (PD client and peer ports, TiKV gRPC).
    type: path
  client_key_path:
    description:
      - Private key (PEM) for O(client_cert_path). Omit when the key is in O(client_cert_path).
    type: path
  timeout:
    description:
      - Seconds allowed for each TCP connect, each TLS handshake and each wait for an answer.
      - One run makes several connections, so the total time can be a multiple of this.
    type: float
    default: 5
  alpn_protocols:
    description:
      - ALPN protocols to offer, most preferred first. TiKV's and PD's gRPC servers need V(h2).
      - An empty list offers no ALPN.
    type: list
    elements: str
    default: ["h2", "http/1.1"]
  grpc_method:
    description:
      - After the checks, make one unary gRPC call of this method (C(/<package>.<service>/<method>), for
        example V(/tikvpb.Tikv/KvGet), an empty read that changes nothing) over TLS with the same CA and
        client certificate, and return its outcome in RV(grpc_call). Never name a method that writes.
      - A call the server did not run adds its message to the C(failures) of RV(grpc_call) and to the
        top-level RV(failures).
    type: str
  require_client_cert:
    description:
      - Also connect without a client certificate and fail if the server accepts that connection.
      - With TLS 1.3 a server rejects a missing certificate only after the handshake, so after the
        handshake a small request is sent (an HTTP/2 preface when V(h2) was negotiated, else an HTTP/1.1
        GET) and the module reads until the server answers (accepted), closes or sends an alert
        (refused). A server that neither answers nor refuses within O(timeout) counts as accepting.
    type: bool
    default: false
  require_plaintext_refused:
    description:
      - Also send a plaintext HTTP/1.1 request and fail if the server answers in plaintext.
      - Answered means any bytes back that are not a TLS record, for example an HTTP status line or an
        HTTP/2 frame from a plaintext gRPC server.
      - Closing, resetting, staying silent until O(timeout), a TLS alert, or the fixed
        C(400 Client sent an HTTP request to an HTTPS server) of Go (nginx's equivalent too) count as
        refused. When the server closes without a word and V(h2) is offered in O(alpn_protocols), an
        HTTP/2 preface is tried as well.
    type: bool
    default: false
  min_protocol:
    description:
      - Lowest protocol version the server may accept. Every lower version that the local OpenSSL can
        still offer is tried (security level 0, verification off, client certificate presented) and the
        module fails if the server accepts one.
      - A version counts as accepted when the server's ServerHello selects it, even if the handshake then
        fails for another reason.
      - Versions that could not be tried locally are listed in RV(untested_protocols) with a warning.
    type: str
    choices: ["TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"]
  min_days_valid:
    description:
      - Fail if the served certificate expires in fewer than this many days (or has expired).
    type: int
extends_documentation_fragment:
  - tlsops.tikv.batch
notes:
  - TiKV and PD have no setting for protocol versions or ciphers; use O(min_protocol) and the returned
    RV(protocol) and RV(cipher) to audit what each port negotiates.
  - The check names used in RV(failures) are C(connect), C(handshake), C(chain), C(hostname), C(client_cert)
    (the server refused our client certificate or needs one), C(alpn), C(local) (a local file cannot be
    loaded), and the option names O(require_client_cert), O(require_plaintext_refused), O(min_protocol)
    and O(min_days_valid).
seealso:
  - name: TiDB TLS between components
    description: How TiKV and PD use certificates.
    link: https://docs.pingcap.com/tidb/stable/enable-tls-between-components
"""

EXAMPLES = r"""
- name: Probe the PD client port with the operator certificate (from the controller)
  tlsops.tikv.tls_handshake:
    host: 10.0.1.11
    port: 2379
    ca_path: /etc/tikv-tls/ca.crt
    client_cert_path: /etc/tikv-tls/operator.crt
    client_key_path: /etc/tikv-tls/operator.pem
    require_client_cert: true
    require_plaintext_refused: true
    min_protocol: TLSv1.2
    min_days_valid: 30
  delegate_to: localhost
  register: pd_client_tls

- name: Show what the PD client port serves
  ansible.builtin.debug:
    msg: >-
      {{ pd_client_tls.protocol }} {{ pd_client_tls.cipher }},
      certificate {{ pd_client_tls.peer_cert.subject_cn }} valid for {{ pd_client_tls.peer_cert.days_left }} days

- name: From each TiKV host, probe the next TiKV's gRPC port with this host's own tikv certificate
  tlsops.tikv.tls_handshake:
    host: "{{ hostvars[peer].ansible_host | default(peer) }}"
    port: "{{ hostvars[peer].tikv_port | default(20160) }}"
    ca_path: "{{ deploy_dir }}/tls/ca.crt"
    client_cert_path: "{{ deploy_dir }}/tls/tikv.crt"
    client_key_path: "{{ deploy_dir }}/tls/tikv.pem"
    require_client_cert: true
  vars:
    peer: "{{ groups['tikv'][(groups['tikv'].index(inventory_hostname) + 1) % (groups['tikv'] | length)] }}"
  become: true

- name: Audit the TiKV status port, reporting failures without stopping the play
  tlsops.tikv.tls_handshake:
    host: "{{ ansible_host | default(inventory_hostname) }}"
    port: "{{ tikv_status_port | default(20180) }}"
    server_name: "{{ inventory_hostname }}"
    ca_path: /etc/tikv-tls/ca.crt
    client_cert_path: /etc/tikv-tls/operator.crt
    client_key_path: /etc/tikv-tls/operator.pem
    alpn_protocols: []
    require_plaintext_refused: true
    min_protocol: TLSv1.2
  delegate_to: localhost
  register: status_tls
  ignore_errors: true

- name: List what is wrong on the status ports
  ansible.builtin.debug:
    var: status_tls.failures
  when: status_tls.failures | length > 0
"""

RETURN = r"""
protocol:
  description:
    - Protocol version negotiated by the first handshake that completed (the verified one when it
      succeeded, else the one with verification off). Null when no handshake completed.
  returned: without O(targets)
  type: str
  sample: TLSv1.3
cipher:
  description: Cipher suite negotiated by that handshake; null when no handshake completed.
  returned: without O(targets)
  type: str
  sample: TLS_AES_256_GCM_SHA384
alpn:
  description: ALPN protocol the server selected; null when none was selected.
  returned: without O(targets)
  type: str
  sample: h2
chain_verified:
  description:
    - Whether the served chain verifies against O(ca_path) (or the system trust store).
    - Null when no handshake got as far as the server's certificate.
  returned: without O(targets)
  type: bool
  sample: true
hostname_verified:
  description:
    - Whether the certificate's SANs match O(server_name).
    - When the chain does not verify this is computed from the served certificate's SANs (needs
      C(cryptography), else null). Null when no handshake got as far as the certificate.
  returned: without O(targets)
  type: bool
  sample: true
client_cert_required:
  description:
    - Whether the server refused a client presenting no certificate. Null when not tested
      (O(require_client_cert) false), when the server could not be reached, or when it could not be
      told (then RV(failures) says why).
  returned: without O(targets)
  type: bool
  sample: true
plaintext_refused:
  description:
    - Whether a plaintext HTTP request got no plaintext answer. Null when not tested
      (O(require_plaintext_refused) false) or when the server could not be reached.
    - Independent of the TLS handshake, so a plaintext server shows up as V(false) here and as a
      C(handshake) failure.
  returned: without O(targets)
  type: bool
  sample: true
weak_protocols_accepted:
  description: Protocol versions below O(min_protocol) that the server accepted. Empty when not tested.
  returned: without O(targets)
  type: list
  elements: str
  sample: ["TLSv1.1"]
untested_protocols:
  description:
    - Protocol versions below O(min_protocol) that could not be tried (the local OpenSSL cannot offer
      them, or the server could not be reached). Each comes with a warning saying why.
  returned: without O(targets)
  type: list
  elements: str
  sample: []
handshake_ms:
  description:
    - Duration of that TLS handshake (after the TCP connect) in milliseconds; null when no handshake
      completed.
  returned: without O(targets)
  type: float
  sample: 3.41
peer_cert:
  description:
    - The certificate the server presented (the leaf), null when no certificate was seen.
    - Without the Python library C(cryptography) only some fields are filled and C(details) says so.
  returned: without O(targets)
  type: dict
  contains:
    subject_cn:
      description: Subject common name.
      type: str
      returned: success
      sample: tikv-10.0.1.21
    sans:
      description: Subject alternative names, prefixed C(DNS:), C(IP:), C(email:) or C(URI:).
      type: list
      elements: str
      returned: success
      sample: ["IP:10.0.1.21", "IP:127.0.0.1", "DNS:localhost"]
    issuer:
      description: Issuer distinguished name (RFC 4514).
      type: str
      returned: success
      sample: CN=tikv-cluster-ca
    serial:
      description: Serial number in upper-case hexadecimal without separators (as C(openssl x509 -serial)).
      type: str
      returned: success
      sample: 5A1F0C3E9B
    not_before:
      description: Start of validity, ISO 8601 UTC.
      type: str
      returned: success
      sample: "2026-01-01T00:00:00Z"
    not_after:
      description: End of validity, ISO 8601 UTC.
      type: str
      returned: success
      sample: "2027-01-01T00:00:00Z"
    days_left:
      description: Whole days until RV(peer_cert.not_after); negative once expired.
      type: int
      returned: success
      sample: 364
    fingerprint_sha256:
      description: SHA-256 of the DER certificate, lower-case hex pairs separated by colons.
      type: str
      returned: success
      sample: "3f:a1:...:9c"
    key_type:
      description: Public key algorithm and size or curve.
      type: str
      returned: success
      sample: ECDSA P-256
    details:
      description: Present only when some fields could not be filled, saying why.
      type: str
      returned: when C(cryptography) is missing or cannot parse the certificate
      sample: "partial: the Python library cryptography is not installed (key_type unknown)"
grpc_call:
  description:
    - With O(grpc_method), the call's outcome, with the return values of M(tlsops.tikv.grpc_call)
      (C(call_accepted), C(verdict), C(grpc_status), C(grpc_status_name), C(grpc_message), C(http_status),
      C(response_bytes), C(protocol), C(cipher), C(alpn), C(stage), C(error), C(undecodable_headers)) and
      its own C(failures) (a call the server did not run, or local files that cannot be loaded).
  returned: with O(grpc_method) (without O(targets)); in RV(results), for each target that has one
  type: dict
  sample: {"call_accepted": true, "grpc_status": 0, "stage": "done", "failures": []}
failures:
  description:
    - "One message per unmet expectation, C(<host>:<port>: <check>: <what>). Empty on success."
    - With O(targets), those of every target.
    - Includes those of RV(grpc_call) (an entry of RV(results) keeps them in its C(grpc_call) only, so
      its own C(failures) are the handshake checks').
  returned: always
  type: list
  elements: str
  sample:
    - "10.0.1.11:2379: chain: certificate verify failed: unable to get local issuer certificate (CA /etc/tikv-tls/ca.crt)"
results:
  description:
    - With O(targets), one entry per target in the order given, each with the return values above
      (RV(protocol), RV(cipher), RV(alpn), RV(chain_verified), RV(hostname_verified),
      RV(client_cert_required), RV(plaintext_refused), RV(weak_protocols_accepted),
      RV(untested_protocols), RV(handshake_ms), RV(peer_cert), RV(grpc_call) when it had a method, and
      that target's RV(failures)), plus C(host), C(port) and C(tag) as given.
  returned: with O(targets)
  type: list
  elements: dict
  sample:
    - host: 10.0.1.11
      port: 2379
      tag: {"instance": "pd1", "channel": "pd_client"}
      protocol: TLSv1.3
      chain_verified: true
      failures: []
"""

import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.tlsops.tikv.plugins.module_utils import _batch, _grpc_call, _tls_probe

# The options a target of O(targets) may set for itself (the module-level value applies otherwise).
TARGET_OWN = ("server_name", "ca_path", "client_cert_path", "client_key_path", "require_client_cert", "grpc_method")


def probe(params, target_params):
    """Every check the options ask for on one endpoint: (the module's return values, warnings)."""
    target = _tls_probe.Target(
        host=target_params["host"], port=target_params["port"], server_name=target_params["server_name"],
        ca_path=target_params["ca_path"], client_cert_path=target_params["client_cert_path"],
        client_key_path=target_params["client_key_path"], timeout=params["timeout"],
        alpn_protocols=params["alpn_protocols"])
    result, notes = _tls_probe.run_checks(
        target,
        require_client_cert=target_params["require_client_cert"],
        require_plaintext_refused=params["require_plaintext_refused"],
        min_protocol=params["min_protocol"],
        min_days_valid=params["min_days_valid"],
    )
    if target_params["grpc_method"]:
        # The same endpoint and files; gRPC needs ALPN h2 whatever the handshake checks offered.
        call_target = _tls_probe.Target(
            host=target.host, port=target.port, server_name=target_params["server_name"], ca_path=target.ca_path,
            client_cert_path=target.client_cert_path, client_key_path=target.client_key_path,
            timeout=params["timeout"], alpn_protocols=["h2"])
        result["grpc_call"] = _grpc_call.checked_call(call_target, target_params["grpc_method"])
    return result, ["%s: %s" % (target.address, note) for note in notes]


def main():
    module = AnsibleModule(
        argument_spec=dict(
            host=dict(type="str"),
            port=dict(type="int"),
            targets=dict(type="list", elements="dict",
                         options=dict(_batch.ENDPOINT_TARGET_OPTIONS, require_client_cert=dict(type="bool"),
                                      grpc_method=dict(type="str"))),
            parallel=_batch.PARALLEL_SPEC,
            server_name=dict(type="str"),
            ca_path=dict(type="path"),
            client_cert_path=dict(type="path"),
            client_key_path=dict(type="path", no_log=False),
            timeout=dict(type="float", default=5.0),
            alpn_protocols=dict(type="list", elements="str", default=["h2", "http/1.1"]),
            require_client_cert=dict(type="bool", default=False),
            require_plaintext_refused=dict(type="bool", default=False),
            min_protocol=dict(type="str", choices=list(_tls_probe.PROTOCOLS)),
            min_days_valid=dict(type="int"),
            grpc_method=dict(type="str"),
        ),
        required_one_of=[("host", "targets")],
        mutually_exclusive=[("host", "targets")],
        required_together=[("host", "port")],
        required_by=dict(client_key_path="client_cert_path"),
        supports_check_mode=True,
    )
    params = module.params
    targets = _batch.endpoint_targets(module, TARGET_OWN)
    for target in targets:
        if target["grpc_method"] is not None and not _grpc_call.is_method(target["grpc_method"]):
            module.fail_json(msg="%s:%d: grpc_method must look like /package.Service/Method, got %r"
                             % (target["host"], target["port"], target["grpc_method"]))
    if params["timeout"] <= 0:
        module.fail_json(msg="timeout must be positive, got %s" % params["timeout"])
    if params["min_days_valid"] is not None and not _tls_probe.HAS_CRYPTOGRAPHY:
        module.fail_json(msg=missing_required_lib("cryptography", reason="to read the certificate's expiry "
                                                  "for min_days_valid"),
                         exception=_tls_probe.CRYPTOGRAPHY_IMPORT_ERROR)

    try:
        found = _batch.run_all(lambda target: probe(params, target), targets, params["parallel"])
    except Exception as exc:  # a bug in the probe must still end in a readable failure
        module.fail_json(msg="unexpected error while probing: %s" % exc, exception=traceback.format_exc())
    for result, notes in found:
        for note in notes:
            module.warn(note)
    result = _batch.returned(params, targets, [result for result, notes in found], "failures", ("host", "port", "tag"))
    calls_failed = [failure for probed, notes in found for failure in (probed.get("grpc_call") or {}).get("failures", [])]
    result["failures"] = result["failures"] + calls_failed
    if result["failures"]:
        module.fail_json(msg="; ".join(result["failures"]), changed=False, **result)
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()

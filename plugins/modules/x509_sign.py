#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) tlsops.tikv maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: x509_sign
short_description: Sign many instance certificates in one controller call, re-issuing only on drift
version_added: 0.1.0
description:
  - Takes the CSRs of many instances (from M(tlsops.tikv.x509_key)) and, for each, decides whether
    its current certificate can be kept or must be (re-)issued, then signs the ones that must with
    the CA at O(ca_path)/O(ca_key_path). One call signs a whole cluster.
  - "A certificate is re-issued when: there is none or it cannot be read; it is not signed by the
    current CA; it is for another key than the CSR's (the host key changed, or its type did); its CN,
    SANs or extended key usages differ from the request; it is not yet valid; it expires within
    O(renew_before_days) (unless the CA expires first, so a new one would not last longer: then it
    is kept and a warning says to rotate the CA); or it was issued before O(requests[].reissue_before).
    Otherwise it is returned unchanged."
  - The CSR contributes only its public key, after its signature is verified; the CN and SANs come
    from the request, never from the CSR. Keys weaker than RSA 2048 or of unsupported types are refused.
  - "Issued leaves: random serial, basicConstraints CA:FALSE (critical), keyUsage digitalSignature
    (+keyEncipherment for RSA, critical), EKU serverAuth+clientAuth (O(requests[].usage=client): clientAuth
    only), SAN, SKI, AKI; SHA-256 signatures (SHA-384 with a P-384 CA key); validity O(validity_days),
    clamped to the CA's expiry."
  - "Run it on the controller (C(delegate_to: localhost), C(run_once: true)). Never returns key material."
author:
  - tlsops.tikv maintainers (@tlsops)
requirements:
  - cryptography >= 41.0
attributes:
  check_mode:
    support: full
    description:
      - Makes every decision and reports it, issues nothing. A certificate that would be issued is
        returned as null. A request may then lack its CSR (the key does not exist yet) and a missing
        CA is reported as a reason instead of an error.
  diff_mode:
    support: full
    description: Per instance, a summary of the current and the new certificate of every changed instance.
  idempotent:
    support: full
    description: With the current certificates passed back in, a second run re-uses them all and reports no change.
options:
  ca_path:
    description: CA certificate (PEM); may be a bundle with the signing CA and its issuers, whose intermediates are added to RV(certificates.chain).
    type: path
    required: true
  ca_key_path:
    description: Private key of the signing CA (PEM).
    type: path
    required: true
  ca_passphrase:
    description: Passphrase of an encrypted CA key.
    type: str
  validity_days:
    description: Validity of issued certificates, in days.
    type: int
    default: 365
  renew_before_days:
    description: Re-issue a certificate that expires within this many days. Must be smaller than O(validity_days).
    type: int
    default: 30
  requests:
    description: One entry per certificate.
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description: Unique name of the request (the inventory host); the key of RV(certificates).
        type: str
        required: true
      cn:
        description: Subject CN of the certificate (C(pd), C(tikv), or a client's name).
        type: str
        required: true
      sans:
        description:
          - Every address the instance is dialled at, plus C(127.0.0.1) and C(localhost). IPs become
            IP SANs, the rest DNS names. Required (non-empty) for O(requests[].usage=server_client).
        type: list
        elements: str
        default: []
      usage:
        description: V(server_client) for instances (EKU serverAuth+clientAuth), V(client) for operators and applications (clientAuth).
        type: str
        choices: [server_client, client]
        default: server_client
      csr:
        description: PEM CSR from M(tlsops.tikv.x509_key). May be null only in check mode.
        type: str
      current_cert:
        description: The certificate (or chain, leaf first) the instance has now, PEM; null or empty if none.
        type: str
      reissue_before:
        description:
          - "Re-issue the current certificate if it was issued before this time (ISO 8601, for example
            C(2026-05-01T10:00:00Z); UTC when it has no zone). How a rotation selects what it replaces:
            it passes its own start time, so a second run (or a re-run after an interruption) re-issues
            only the certificates still older than that, and nothing once all are new."
          - The issuing time is the certificate's notBefore plus the 5 minutes every certificate signed
            here is backdated by. Must not be in the future. Empty or null means no such rule.
        type: str
"""

EXAMPLES = r"""
- name: Sign (or keep) every instance certificate in one call
  tlsops.tikv.x509_sign:
    ca_path: "{{ tikv_tls_ca_dir }}/ca.crt"
    ca_key_path: "{{ tikv_tls_ca_dir }}/ca.key"
    ca_passphrase: "{{ tikv_tls_ca_passphrase | default(omit) }}"
    validity_days: 365
    renew_before_days: 30
    requests: >-
      {{ ansible_play_hosts | map('extract', hostvars, '__tikv_tls_request') | list }}
  delegate_to: localhost
  run_once: true
  register: tikv_signed

- name: Install the certificate chain on each instance (cert written last)
  ansible.builtin.copy:
    content: "{{ tikv_signed.certificates[inventory_hostname].chain }}"
    dest: "{{ deploy_dir }}/tls/{{ component }}.crt"
    mode: "0644"
  when: tikv_signed.certificates[inventory_hostname].chain is not none
"""

RETURN = r"""
certificates:
  description: Per request name, the decision and the certificate.
  returned: always
  type: dict
  contains:
    changed:
      description: Whether the certificate was (or in check mode would be) issued.
      type: bool
    reason:
      description: Why it was issued (several reasons joined by C(; )), or C(up to date).
      type: str
      sample: "SANs differ: missing 10.0.1.7"
    cert:
      description: The leaf certificate (PEM), new or kept. Null in check mode when it would be issued.
      type: str
    chain:
      description: Leaf followed by the intermediates (PEM) - what the instance serves as its certificate file. Null when RV(certificates.cert) is.
      type: str
    not_after:
      description: Expiry of the certificate (ISO 8601, UTC); null when RV(certificates.cert) is.
      type: str
    serial:
      description: Serial number (hex); null when RV(certificates.cert) is.
      type: str
    warnings:
      description: Warnings about this certificate (for example, the CA expires before it could be renewed).
      type: list
      elements: str
  sample:
    pd-10.0.1.5:
      changed: true
      reason: no certificate yet
      cert: "-----BEGIN CERTIFICATE-----..."
      chain: "-----BEGIN CERTIFICATE-----..."
      not_after: "2026-05-01T10:00:00Z"
      serial: "5F1C0B2A..."
      warnings: []
issued:
  description: Names whose certificate was (or would be) issued.
  returned: always
  type: list
  elements: str
reused:
  description: Names whose current certificate was kept.
  returned: always
  type: list
  elements: str
ca_subject:
  description: Subject of the signing CA; null in check mode when the CA does not exist yet.
  returned: always
  type: str
"""

import os

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.tlsops.tikv.plugins.module_utils import _x509 as x


def _current_summary(pem):
    if not pem:
        return {}
    try:
        return x.cert_summary(x.load_certs(pem, "current certificate")[0])
    except x.X509Error as exc:
        return {"unreadable": str(exc)}


def main():
    module = AnsibleModule(
        argument_spec=dict(
            ca_path=dict(type="path", required=True),
            ca_key_path=dict(type="path", required=True, no_log=False),
            ca_passphrase=dict(type="str", no_log=True),
            validity_days=dict(type="int", default=x.DEFAULT_LEAF_DAYS),
            renew_before_days=dict(type="int", default=x.DEFAULT_RENEW_BEFORE_DAYS),
            requests=dict(type="list", elements="dict", required=True, options=dict(
                name=dict(type="str", required=True),
                cn=dict(type="str", required=True),
                sans=dict(type="list", elements="str", default=[]),
                usage=dict(type="str", default="server_client", choices=list(x.USAGES)),
                csr=dict(type="str"),
                current_cert=dict(type="str"),
                reissue_before=dict(type="str"),
            )),
        ),
        supports_check_mode=True,
    )
    if not x.HAS_CRYPTOGRAPHY:
        module.fail_json(msg=missing_required_lib("cryptography"), exception=x.CRYPTOGRAPHY_IMPORT_ERROR)

    p = module.params
    try:
        x.check_sign_params(p["validity_days"], p["renew_before_days"])
    except x.X509Error as exc:
        module.fail_json(msg=str(exc))

    ca_missing = [q for q in (p["ca_path"], p["ca_key_path"]) if not os.path.exists(q)]
    if ca_missing and module.check_mode:
        results = {}
        for req in p["requests"]:
            results[req["name"]] = dict(changed=True, reason="the CA (%s) does not exist yet" % ", ".join(ca_missing),
                                        cert=None, chain=None, not_after=None, serial=None, warnings=[])
        module.exit_json(changed=bool(results), certificates=results, issued=sorted(results), reused=[],
                         ca_subject=None)
    if ca_missing:
        module.fail_json(msg="CA %s: %s missing; create the CA first (tlsops.tikv.x509_ca) or fix ca_path/ca_key_path"
                             % (p["ca_path"], " and ".join(ca_missing)))

    try:
        ca = x.load_ca_files(p["ca_path"], p["ca_key_path"], p["ca_passphrase"])
        problems = ca.problems()
        if problems:
            raise x.X509Error("cannot sign certificates: " + "; ".join(problems))
        results = x.sign_requests(ca, p["requests"], p["validity_days"], p["renew_before_days"],
                                  check_mode=module.check_mode)
    except x.X509Error as exc:
        module.fail_json(msg="CA %s: %s" % (p["ca_path"], exc))

    for name in sorted(results):
        for warning in results[name]["warnings"]:
            module.warn("%s: %s" % (name, warning))
    issued = sorted(n for n, r in results.items() if r["changed"])
    reused = sorted(n for n, r in results.items() if not r["changed"])
    out = dict(changed=bool(issued), certificates=results, issued=issued, reused=reused,
               ca_subject=x.name_str(ca.cert.subject))
    if module._diff:
        currents = dict((r["name"], r.get("current_cert")) for r in p["requests"])
        before, after = {}, {}
        for name in issued:
            before[name] = _current_summary(currents.get(name))
            new = results[name]["cert"]
            after[name] = _current_summary(new) if new else {"state": "would be issued",
                                                             "reason": results[name]["reason"]}
        out["diff"] = {"before": before, "after": after}
    module.exit_json(**out)


if __name__ == "__main__":
    main()

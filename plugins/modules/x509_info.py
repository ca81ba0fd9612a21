#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) tlsops.tikv maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: x509_info
short_description: Read an instance certificate and check it against what TiKV/PD need
version_added: 0.1.0
description:
  - Reads the certificate file at O(path) (leaf first, then any intermediates) on the host and
    returns its facts and a list of RV(problems) measured against expectations
    (key matches, SANs cover every address, EKU serverAuth and clientAuth, validity, chain to the
    CA, CN).
  - Used to validate user-provided certificates (C(provided_certs) mode) and to read the current
    state before and after a rotation. With O(fail_on_problems=true) any problem fails the task with
    the instance name, the file and every reason.
  - Never returns key material; of the key only whether it matches and a hash of its public part.
author:
  - tlsops.tikv maintainers (@tlsops)
requirements:
  - cryptography >= 41.0 (on the host that runs the module)
attributes:
  check_mode:
    support: full
    description: Read-only; runs the same in check mode.
  diff_mode:
    support: none
    description: Nothing changes, so there is nothing to diff.
  idempotent:
    support: full
    description: Never changes anything.
options:
  path:
    description: Certificate file (PEM), leaf first; intermediates after it are used to build the chain.
    type: path
    required: true
  key_path:
    description: Private key that must match the certificate.
    type: path
  key_passphrase:
    description: Passphrase of O(key_path) when it is encrypted.
    type: str
  ca_path:
    description: CA file (PEM, may hold several CAs) the certificate must chain to.
    type: path
  name:
    description: Instance name used in messages (for example C(inventory_hostname)); defaults to O(path).
    type: str
  common_name:
    description: Expected subject CN.
    type: str
  subject_alt_names:
    description: Addresses the certificate must cover (IPs must be IP SANs).
    type: list
    elements: str
    default: []
  extended_key_usages:
    description:
      - Extended key usages the certificate must allow. A certificate without an EKU extension
        allows every usage. V([]) skips the check.
    type: list
    elements: str
    choices: [serverAuth, clientAuth]
    default: [serverAuth, clientAuth]
  min_valid_days:
    description: Days the certificate must remain valid (a problem otherwise). It must always be valid now.
    type: int
    default: 0
  fail_on_problems:
    description: Fail when RV(problems) is not empty (and when the certificate file is missing).
    type: bool
    default: false
"""

EXAMPLES = r"""
- name: Validate a provided certificate on its host
  tlsops.tikv.x509_info:
    path: "{{ deploy_dir }}/tls/tikv.crt"
    key_path: "{{ deploy_dir }}/tls/tikv.pem"
    ca_path: "{{ deploy_dir }}/tls/ca.crt"
    name: "{{ inventory_hostname }}"
    common_name: tikv
    subject_alt_names: ["{{ ansible_host }}", 127.0.0.1, localhost]
    min_valid_days: 7
    fail_on_problems: true

- name: Read the current certificate
  tlsops.tikv.x509_info:
    path: "{{ deploy_dir }}/tls/pd.crt"
  register: pd_cert
"""

RETURN = r"""
exists:
  description: Whether the certificate file exists.
  returned: always
  type: bool
name:
  description: The instance name used in messages.
  returned: always
  type: str
cert:
  description: Facts of the leaf certificate; empty when the file is missing or unreadable.
  returned: always
  type: dict
  contains:
    subject:
      description: Subject (RFC 4514).
      type: str
    common_name:
      description: Subject CN.
      type: str
    issuer:
      description: Issuer (RFC 4514).
      type: str
    serial:
      description: Serial number, hex.
      type: str
    not_before:
      description: Start of validity (ISO 8601, UTC).
      type: str
    not_after:
      description: End of validity (ISO 8601, UTC).
      type: str
    days_left:
      description: Whole days until expiry (negative when expired).
      type: int
    subject_alt_names:
      description: SANs; IPs and DNS names bare, other kinds prefixed.
      type: list
      elements: str
    extended_key_usages:
      description: EKU names; null when the certificate has no EKU extension.
      type: list
      elements: str
    key_usages:
      description: keyUsage names; null without the extension.
      type: list
      elements: str
    key_type:
      description: Public key type (ecdsa-p256, rsa-3072, ...).
      type: str
    signature_algorithm:
      description: Signature algorithm name.
      type: str
    is_ca:
      description: basicConstraints CA flag.
      type: bool
    path_length:
      description: basicConstraints pathlen of a CA certificate, else null.
      type: int
    self_signed:
      description: Whether the certificate is self-signed.
      type: bool
    fingerprint_sha256:
      description: SHA-256 fingerprint, colon-separated hex.
      type: str
    public_key_sha256:
      description: SHA-256 of the SubjectPublicKeyInfo, hex.
      type: str
intermediates:
  description: Number of certificates after the leaf in the file.
  returned: always
  type: int
key_matches:
  description: Whether O(key_path) matches the certificate; null when not checked.
  returned: always
  type: bool
chain_valid:
  description: Whether the certificate chains to a CA in O(ca_path); null when not checked.
  returned: always
  type: bool
chain:
  description: Subjects from the leaf to the CA, as far as the chain was built.
  returned: always
  type: list
  elements: str
problems:
  description: Every way the certificate falls short of the expectations, one sentence each.
  returned: always
  type: list
  elements: str
  sample: ["SANs lack 10.0.1.7 (the certificate has: 127.0.0.1, localhost)"]
"""

import os

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.tlsops.tikv.plugins.module_utils import _x509 as x


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", required=True),
            key_path=dict(type="path", no_log=False),
            key_passphrase=dict(type="str", no_log=True),
            ca_path=dict(type="path"),
            name=dict(type="str"),
            common_name=dict(type="str"),
            subject_alt_names=dict(type="list", elements="str", default=[]),
            extended_key_usages=dict(type="list", elements="str", choices=list(x.EKU_CHOICES),
                                     default=list(x.EKU_CHOICES)),
            min_valid_days=dict(type="int", default=0),
            fail_on_problems=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )
    if not x.HAS_CRYPTOGRAPHY:
        module.fail_json(msg=missing_required_lib("cryptography"), exception=x.CRYPTOGRAPHY_IMPORT_ERROR)

    p = module.params
    path = p["path"]
    label = p["name"] or path
    result = dict(changed=False, exists=os.path.exists(path), name=label, cert={}, intermediates=0,
                  key_matches=None, chain_valid=None, chain=[], problems=[])

    def finish():
        if p["fail_on_problems"] and result["problems"]:
            module.fail_json(msg="%s: certificate %s: %d problem(s): %s" % (
                label, path, len(result["problems"]), "; ".join(result["problems"])), **result)
        module.exit_json(**result)

    if not result["exists"]:
        result["problems"].append("certificate file %s does not exist" % path)
        finish()
    try:
        certs = x.load_certs(x.read_file(path, "certificate"), path)
    except x.X509Error as exc:
        result["problems"].append(str(exc))
        finish()
    leaf = certs[0]
    result["cert"] = x.cert_facts(leaf)
    result["intermediates"] = len(certs) - 1

    key = None
    if p["key_path"]:
        try:
            key = x.load_private_key(x.read_file(p["key_path"], "key"), p["key_path"], p["key_passphrase"])
        except x.X509Error as exc:
            result["problems"].append(str(exc))
            result["key_matches"] = False
    anchors = None
    if p["ca_path"]:
        try:
            anchors = x.load_certs(x.read_file(p["ca_path"], "CA file"), p["ca_path"])
        except x.X509Error as exc:
            result["problems"].append(str(exc))
            result["chain_valid"] = False
    try:
        problems, path_certs, chain_ok = x.check_leaf(
            certs, key=key, key_label=p["key_path"], anchors=anchors, cn=p["common_name"],
            sans=p["subject_alt_names"], ekus=p["extended_key_usages"], min_valid_days=p["min_valid_days"])
    except x.X509Error as exc:  # an expected SAN that is not an address
        module.fail_json(msg="%s: %s" % (label, exc), **result)
    result["problems"].extend(problems)
    result["chain"] = [x.name_str(c.subject) for c in path_certs]
    if key is not None:
        result["key_matches"] = x.same_public_key(leaf.public_key(), key)
    if anchors is not None:
        result["chain_valid"] = chain_ok
        if not any(x.is_self_signed(a) for a in anchors):
            module.warn("%s: %s holds no self-signed root; OpenSSL-based TiKV needs the root CA in its ca-path"
                        % (label, p["ca_path"]))
    finish()


if __name__ == "__main__":
    main()

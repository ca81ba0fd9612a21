#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) tlsops.tikv maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: cert_expiry
short_description: List every certificate in PEM files on a host with its expiry
version_added: 0.1.0
description:
  - Reads each file of O(paths) on the host and returns every certificate it holds (a leaf, a chain,
    a CA bundle with several CAs) with its subject, serial, expiry and days left.
  - Reports a problem for every certificate that expires within O(min_days_valid) days (or has
    expired, or is not yet valid) and for every file that is missing or holds no certificate.
  - The expiry role runs it on every instance for its CA bundle and certificate; what the ports
    actually serve is read with M(tlsops.tikv.tls_handshake).
  - Reads certificates only. It never opens a private key.
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
  paths:
    description: PEM files to read (certificates, chains or CA bundles).
    type: list
    elements: path
    required: true
  name:
    description: Instance name used in messages (for example C(inventory_hostname)).
    type: str
  min_days_valid:
    description: A certificate with fewer days left than this is a problem.
    type: int
    default: 0
  fail_on_problems:
    description: Fail when RV(problems) is not empty.
    type: bool
    default: false
"""

EXAMPLES = r"""
- name: Expiry of an instance's CA bundle and certificate
  tlsops.tikv.cert_expiry:
    paths:
      - /tidb-deploy/tikv-20160/tls/ca.crt
      - /tidb-deploy/tikv-20160/tls/tikv.crt
    name: "{{ inventory_hostname }}"
    min_days_valid: 14
  register: expiry

- name: Fail when a file is missing or a certificate expires within a week
  tlsops.tikv.cert_expiry:
    paths: [/tidb-deploy/pd-2379/tls/pd.crt]
    min_days_valid: 7
    fail_on_problems: true
"""

RETURN = r"""
certificates:
  description: Every certificate found, in file order.
  returned: always
  type: list
  elements: dict
  contains:
    path:
      description: File the certificate is in.
      type: str
    index:
      description: Position in the file, from 0.
      type: int
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
      description: Serial number, hexadecimal.
      type: str
    not_before:
      description: Start of validity, UTC (ISO 8601).
      type: str
    not_after:
      description: End of validity, UTC (ISO 8601).
      type: str
    not_after_timestamp:
      description: End of validity as Unix seconds (for metrics).
      type: int
    days_left:
      description: Whole days until RV(certificates[].not_after) (negative once expired).
      type: int
    is_ca:
      description: Whether it is a CA certificate.
      type: bool
    fingerprint_sha256:
      description: SHA-256 fingerprint of the certificate.
      type: str
  sample:
    - path: /tidb-deploy/tikv-20160/tls/tikv.crt
      index: 0
      subject: CN=tikv
      common_name: tikv
      issuer: CN=tlsops.tikv CA
      serial: 5F1A
      not_before: "2026-11-24T10:00:00Z"
      not_after: "2027-11-24T10:00:00Z"
      not_after_timestamp: 1826532000
      days_left: 365
      is_ca: false
      fingerprint_sha256: "AB:CD:..."
missing:
  description: Files of O(paths) that do not exist.
  returned: always
  type: list
  elements: str
soonest:
  description: The certificate that expires first (one item of RV(certificates)), or V(null) when none was found.
  returned: always
  type: dict
problems:
  description: One message per certificate that expires too soon or per unusable file, naming the instance and the file.
  returned: always
  type: list
  elements: str
"""

import calendar
import os

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.tlsops.tikv.plugins.module_utils import _x509


def read_certificates(path):
    """Every certificate of one PEM file as plain facts; raises X509Error for an unusable file."""
    certs = _x509.load_certs(_x509.read_file(path, "certificate file"), path)
    found = []
    for index, cert in enumerate(certs):
        facts = _x509.cert_facts(cert)
        found.append({
            "path": path,
            "index": index,
            "subject": facts["subject"],
            "common_name": facts["common_name"],
            "issuer": facts["issuer"],
            "serial": facts["serial"],
            "not_before": facts["not_before"],
            "not_after": facts["not_after"],
            "not_after_timestamp": calendar.timegm(_x509.not_after(cert).utctimetuple()),
            "days_left": facts["days_left"],
            "is_ca": facts["is_ca"],
            "fingerprint_sha256": facts["fingerprint_sha256"],
        })
    return found


def expiry_problem(who, cert, min_days_valid):
    """A message when the certificate is not valid now or for fewer than min_days_valid days."""
    what = "%s: %s (certificate #%d, CN=%s, serial %s)" % (
        who, cert["path"], cert["index"] + 1, cert["common_name"], cert["serial"])
    if cert["days_left"] < 0:
        return "%s expired on %s; issue a new one (rotate_certs, or rotate_ca for a CA)" % (what, cert["not_after"])
    if _x509.parse_time(cert["not_before"]) > _x509.utcnow():
        return "%s is not valid before %s; check the host's clock" % (what, cert["not_before"])
    if cert["days_left"] < min_days_valid:
        return "%s expires on %s, in %d day(s) (less than %d); renew it (rotate_certs, or rotate_ca for a CA)" % (
            what, cert["not_after"], cert["days_left"], min_days_valid)
    return None


def main():
    module = AnsibleModule(
        argument_spec=dict(
            paths=dict(type="list", elements="path", required=True),
            name=dict(type="str"),
            min_days_valid=dict(type="int", default=0),
            fail_on_problems=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )
    if not _x509.HAS_CRYPTOGRAPHY:
        module.fail_json(msg=missing_required_lib("cryptography"), exception=_x509.CRYPTOGRAPHY_IMPORT_ERROR)

    who = module.params["name"] or "this host"
    certificates, missing, problems = [], [], []
    for path in module.params["paths"]:
        if not os.path.exists(path):
            missing.append(path)
            problems.append("%s: %s does not exist" % (who, path))
            continue
        try:
            certificates.extend(read_certificates(path))
        except _x509.X509Error as exc:
            problems.append("%s: %s" % (who, exc))
    for cert in certificates:
        problem = expiry_problem(who, cert, module.params["min_days_valid"])
        if problem:
            problems.append(problem)

    soonest = min(certificates, key=lambda cert: cert["not_after_timestamp"]) if certificates else None
    result = dict(changed=False, certificates=certificates, missing=missing, soonest=soonest, problems=problems)
    if problems and module.params["fail_on_problems"]:
        module.fail_json(msg="; ".join(problems), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()

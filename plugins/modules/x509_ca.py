#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) tlsops.tikv maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: x509_ca
short_description: Ensure a certificate authority (certificate and key) on the controller
version_added: 0.1.0
description:
  - Ensures a CA certificate and its private key exist at the given paths, for signing the
    TiKV/PD instance certificates with M(tlsops.tikv.x509_sign).
  - With O(create=true) (the collection's C(generate) CA mode) a missing CA is created; an existing
    one is loaded, validated and re-used, never replaced. A key without its certificate gets a new
    self-signed certificate; a certificate without its key is refused.
  - With O(create=false) (the C(provided_ca) mode) the CA must already exist; it may be an
    intermediate, and O(path) may be a bundle holding the signing CA and its issuers up to the root.
    The module validates it (a CA, may sign certificates, valid now, key matches) and reports
    what to serve (RV(chain)) and what to trust (RV(trust)).
  - "Run it on the controller (C(delegate_to: localhost), C(run_once: true)); the CA key never
    travels to the instances."
  - Never returns key material.
author:
  - tlsops.tikv maintainers (@tlsops)
requirements:
  - cryptography >= 41.0
attributes:
  check_mode:
    support: full
    description: Reports whether a CA would be created; writes nothing. RV(cert) is null then.
  diff_mode:
    support: full
    description: Before and after summaries of the CA certificate (subject, serial, validity, fingerprint).
  idempotent:
    support: full
    description: An existing CA is loaded and re-used; a second run reports no change.
options:
  path:
    description:
      - Path of the CA certificate (PEM). With O(create=false) it may hold a bundle (signing CA
        and its issuers).
    type: path
    required: true
  key_path:
    description: Path of the CA private key (PEM). Created with mode 0600.
    type: path
    required: true
  passphrase:
    description:
      - Passphrase of the CA key. A newly created key is encrypted with it (PKCS#8, best available
        scheme); an existing encrypted key needs it to load.
    type: str
  create:
    description:
      - Create the CA when absent (C(generate) mode). V(false) only loads and validates an existing
        CA (C(provided_ca) mode) and fails when it is missing.
    type: bool
    default: true
  common_name:
    description: Subject CN of a newly created CA. Ignored for an existing CA.
    type: str
    default: tlsops-tikv-ca
  key_type:
    description:
      - Key type of a newly created CA. An existing CA of another type is kept (with a warning);
        changing the CA is a CA rotation (playbook C(tlsops.tikv.rotate_ca)).
    type: str
    choices: [ecdsa-p256, ecdsa-p384, rsa-2048, rsa-3072, rsa-4096]
    default: ecdsa-p256
  validity_days:
    description: Validity of a newly created CA certificate, in days.
    type: int
    default: 3650
  path_length:
    description: basicConstraints pathlen of a newly created CA (0 = it signs leaves only).
    type: int
    default: 0
  min_valid_days:
    description:
      - Warn when the CA expires in fewer days than this (leaf certificates are clamped to the CA's
        expiry). V(0) disables the warning.
    type: int
    default: 30
"""

EXAMPLES = r"""
- name: Ensure the cluster CA on the controller (generate mode)
  tlsops.tikv.x509_ca:
    path: "{{ playbook_dir }}/tls-ca/ca.crt"
    key_path: "{{ playbook_dir }}/tls-ca/ca.key"
    passphrase: "{{ vault_tikv_ca_passphrase | default(omit) }}"
    common_name: tikv-cluster-ca
  delegate_to: localhost
  run_once: true
  register: tikv_ca

- name: Validate a user's intermediate CA (provided_ca mode)
  tlsops.tikv.x509_ca:
    path: /etc/pki/tikv/intermediate-bundle.crt
    key_path: /etc/pki/tikv/intermediate.key
    passphrase: "{{ vault_intermediate_passphrase }}"
    create: false
  delegate_to: localhost
  run_once: true
  register: tikv_ca

- name: Put the trust anchors on every instance
  ansible.builtin.copy:
    content: "{{ tikv_ca.trust }}"
    dest: "{{ deploy_dir }}/tls/ca.crt"
    mode: "0644"
"""

RETURN = r"""
path:
  description: Path of the CA certificate.
  returned: always
  type: str
key_path:
  description: Path of the CA key.
  returned: always
  type: str
created:
  description: Whether a new CA (or a new certificate for an existing key) was created (or would be, in check mode).
  returned: always
  type: bool
cert:
  description: The signing CA certificate (PEM). Null in check mode when the CA would be created.
  returned: always
  type: str
chain:
  description:
    - Certificates a server sends after its leaf (PEM), i.e. the signing CA and further
      intermediates when the signing CA is not a self-signed root. Empty for a root CA.
  returned: always
  type: str
trust:
  description: Trust anchors (PEM) to install as C(ca.crt) on every instance.
  returned: always
  type: str
subject:
  description: Subject of the signing CA (RFC 4514).
  returned: always
  type: str
  sample: CN=tlsops-tikv-ca
fingerprint_sha256:
  description: SHA-256 fingerprint of the signing CA certificate, colon-separated hex.
  returned: always
  type: str
not_after:
  description: Expiry of the signing CA (ISO 8601, UTC).
  returned: always
  type: str
  sample: "2035-01-01T00:00:00Z"
days_left:
  description: Whole days until the signing CA expires.
  returned: always
  type: int
key_type:
  description: Key type of the CA key.
  returned: always
  type: str
  sample: ecdsa-p256
self_signed:
  description: Whether the signing CA is a self-signed root.
  returned: always
  type: bool
"""

import os

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.tlsops.tikv.plugins.module_utils import _x509 as x


def _result(module, ca, created):
    if ca is None:
        return dict(path=module.params["path"], key_path=module.params["key_path"], created=created, cert=None,
                    chain="", trust="", subject=None, fingerprint_sha256=None, not_after=None, days_left=None,
                    key_type=module.params["key_type"], self_signed=True)
    return dict(path=module.params["path"], key_path=module.params["key_path"], created=created,
                cert=x.cert_to_pem(ca.cert), chain=ca.chain_pem(), trust=ca.anchors_pem(),
                subject=x.name_str(ca.cert.subject), fingerprint_sha256=x.fingerprint(ca.cert),
                not_after=x.fmt_time(x.not_after(ca.cert)), days_left=x.days_left(ca.cert),
                key_type=x.key_type_of(ca.key), self_signed=ca.self_signed)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", required=True),
            key_path=dict(type="path", required=True, no_log=False),
            passphrase=dict(type="str", no_log=True),
            create=dict(type="bool", default=True),
            common_name=dict(type="str", default="tlsops-tikv-ca"),
            key_type=dict(type="str", default=x.DEFAULT_KEY_TYPE, choices=list(x.KEY_TYPES)),
            validity_days=dict(type="int", default=x.DEFAULT_CA_DAYS),
            path_length=dict(type="int", default=0),
            min_valid_days=dict(type="int", default=30),
        ),
        supports_check_mode=True,
    )
    if not x.HAS_CRYPTOGRAPHY:
        module.fail_json(msg=missing_required_lib("cryptography"), exception=x.CRYPTOGRAPHY_IMPORT_ERROR)

    p = module.params
    cert_path, key_path, passphrase = p["path"], p["key_path"], p["passphrase"]
    cert_exists, key_exists = os.path.exists(cert_path), os.path.exists(key_path)
    if p["validity_days"] < 1:
        module.fail_json(msg="CA %s: validity_days must be at least 1 (got %d); the pki role sets it from "
                             "tikv_tls_ca_validity_days" % (cert_path, p["validity_days"]))
    if p["path_length"] < 0:
        module.fail_json(msg="CA %s: path_length must not be negative (got %d)" % (cert_path, p["path_length"]))

    if not p["create"] and not (cert_exists and key_exists):
        missing = [q for q, e in ((cert_path, cert_exists), (key_path, key_exists)) if not e]
        module.fail_json(msg="provided CA: %s does not exist; give the paths of your CA (or intermediate) "
                             "certificate and key, or use create=true to generate a CA" % " and ".join(missing))
    if cert_exists and not key_exists:
        module.fail_json(msg="CA certificate %s exists but its key %s does not: restore the key, or remove the "
                             "certificate to create a new CA (every instance certificate is then re-issued)"
                             % (cert_path, key_path))

    diff = {"before_header": cert_path, "after_header": cert_path}
    try:
        if cert_exists:
            key_data = x.read_file(key_path, "CA key")
            if passphrase and not x.is_encrypted_pem(key_data):
                module.warn("passphrase given, but the CA key %s is not encrypted; it is left as it is" % key_path)
            ca = x.load_ca(x.read_file(cert_path, "CA certificate"), key_data, cert_path, key_path, passphrase)
            created = False
        else:
            created = True
            key = None
            if key_exists:
                key_data = x.read_file(key_path, "CA key")
                key = x.load_private_key(key_data, key_path, passphrase)
            if module.check_mode:
                diff.update(before={}, after={"subject": "CN=%s" % p["common_name"], "state": "would be created"})
                result = _result(module, None, True)
                if module._diff:
                    result["diff"] = diff
                module.exit_json(changed=True, **result)
            parent = os.path.dirname(os.path.abspath(cert_path))
            key_parent = os.path.dirname(os.path.abspath(key_path))
            for directory in sorted(set([parent, key_parent])):
                if not os.path.isdir(directory):
                    os.makedirs(directory, 0o700)
            if key is None:
                key = x.generate_key(p["key_type"])
                x.write_file(module, key_path, x.private_key_pem(key, passphrase), 0o600)
            cert = x.create_ca_cert(key, p["common_name"], p["validity_days"], p["path_length"])
            x.write_file(module, cert_path, x.cert_to_pem(cert), 0o644)
            ca = x.CA(cert, key, label=cert_path)
    except x.X509Error as exc:
        module.fail_json(msg="CA %s: %s" % (cert_path, exc))
    except (IOError, OSError) as exc:
        module.fail_json(msg="CA %s: cannot write: %s (check the directory and its permissions)"
                             % (cert_path, exc.strerror or exc))

    problems = ca.problems()
    if problems:
        module.fail_json(msg="CA %s cannot sign certificates: %s" % (cert_path, "; ".join(problems)),
                         problems=problems)
    for warning in ca.warnings:
        module.warn(warning)
    if not created:
        if x.key_type_of(ca.key) != p["key_type"] and p["create"]:
            module.warn("the existing CA %s has a %s key, not %s; it is kept (changing it is a CA rotation)"
                        % (cert_path, x.key_type_of(ca.key), p["key_type"]))
        if p["create"] and (os.stat(key_path).st_mode & 0o077):
            module.warn("CA key %s is readable by group/others (mode %o); it should be 0600"
                        % (key_path, os.stat(key_path).st_mode & 0o777))
    if p["min_valid_days"] and x.days_left(ca.cert) < p["min_valid_days"]:
        module.warn("CA %s expires %s (%d days left): instance certificates are clamped to it; rotate the CA"
                    % (cert_path, x.fmt_time(x.not_after(ca.cert)), x.days_left(ca.cert)))

    result = _result(module, ca, created)
    if module._diff:
        summary = x.cert_summary(ca.cert)
        diff.update(before={} if created else summary, after=summary)
        result["diff"] = diff
    module.exit_json(changed=created, **result)


if __name__ == "__main__":
    main()

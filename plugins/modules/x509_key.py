#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) tlsops.tikv maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: x509_key
short_description: Ensure an instance's private key on its host and return a CSR for it
version_added: 0.1.0
description:
  - Ensures an unencrypted private key exists at O(path) (TiKV and PD cannot read encrypted keys),
    with mode 0600 and the given owner and group. The key is created when absent, when its type
    differs from O(key_type), or when O(force=true); otherwise it is kept.
  - When O(common_name) is given, returns a certificate signing request for the key with that CN
    and O(subject_alt_names), for M(tlsops.tikv.x509_sign) on the controller. A CSR is not secret.
  - The key never leaves the host and is never returned.
author:
  - tlsops.tikv maintainers (@tlsops)
requirements:
  - cryptography >= 41.0 (on the host that runs the module)
attributes:
  check_mode:
    support: full
    description:
      - Reports whether the key would be created or its file attributes changed; writes nothing.
      - RV(csr) is returned for an existing key of the right type, and is null when the key would be
        (re)created.
  diff_mode:
    support: full
    description: Key type and public key hash before and after (never key material).
  idempotent:
    support: full
    description:
      - An existing key of the wanted type is kept; a second run reports no change. The CSR is
        signed afresh on every run (ECDSA signatures are randomised) but it is not state.
options:
  path:
    description: Path of the private key (PEM, PKCS#8). Its directory must exist.
    type: path
    required: true
  key_type:
    description: Wanted key type. An existing key of another type is replaced.
    type: str
    choices: [ecdsa-p256, ecdsa-p384, rsa-2048, rsa-3072, rsa-4096]
    default: ecdsa-p256
  force:
    description:
      - Always create a new key. Also the way to replace an unreadable or encrypted key file, which
        is otherwise refused.
    type: bool
    default: false
  owner:
    description: Owner of the key file (name or uid); default the user running the module.
    type: str
  group:
    description: Group of the key file (name or gid).
    type: str
  mode:
    description: Mode of the key file.
    type: raw
    default: "0600"
  common_name:
    description: CN of the CSR. Without it no CSR is returned.
    type: str
  subject_alt_names:
    description:
      - SANs of the CSR; IPs become IP SANs, anything else DNS names (prefix C(IP:) or C(DNS:) to force).
    type: list
    elements: str
    default: []
"""

EXAMPLES = r"""
- name: Ensure the PD key on the instance's host and get a CSR for it
  tlsops.tikv.x509_key:
    path: "{{ deploy_dir }}/tls/pd.pem"
    key_type: ecdsa-p256
    owner: tidb
    group: tidb
    common_name: pd
    subject_alt_names:
      - "{{ ansible_host }}"
      - 127.0.0.1
      - localhost
  register: pd_key

- name: An operator's client key kept on the controller
  tlsops.tikv.x509_key:
    path: "{{ playbook_dir }}/tls-clients/ops-alice.key"
    common_name: ops-alice
  delegate_to: localhost
"""

RETURN = r"""
path:
  description: Path of the key.
  returned: always
  type: str
key_type:
  description: Type of the key now at O(path) (the wanted type when it would be created in check mode).
  returned: always
  type: str
  sample: ecdsa-p256
created:
  description: Whether a new key was (or, in check mode, would be) written.
  returned: always
  type: bool
reason:
  description: Why a key was created, or C(exists) when the key was kept.
  returned: always
  type: str
  sample: "absent"
public_key_sha256:
  description: SHA-256 of the key's SubjectPublicKeyInfo (hex); null when the key does not exist yet (check mode).
  returned: always
  type: str
csr:
  description: PEM CSR for the key with O(common_name) and O(subject_alt_names); null without O(common_name) or when no key exists yet.
  returned: always
  type: str
"""

import os

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.tlsops.tikv.plugins.module_utils import _x509 as x


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", required=True),
            key_type=dict(type="str", default=x.DEFAULT_KEY_TYPE, choices=list(x.KEY_TYPES)),
            force=dict(type="bool", default=False),
            owner=dict(type="str"),
            group=dict(type="str"),
            mode=dict(type="raw", default="0600"),
            common_name=dict(type="str"),
            subject_alt_names=dict(type="list", elements="str", default=[]),
        ),
        supports_check_mode=True,
    )
    if not x.HAS_CRYPTOGRAPHY:
        module.fail_json(msg=missing_required_lib("cryptography"), exception=x.CRYPTOGRAPHY_IMPORT_ERROR)

    p = module.params
    path = p["path"]
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        module.fail_json(msg="key %s: directory %s does not exist; create it first (mode 0700, owned by the "
                             "service user)" % (path, directory))
    try:
        sans = x.normalize_sans(p["subject_alt_names"])
    except x.X509Error as exc:
        module.fail_json(msg="key %s: %s" % (path, exc))

    key = None
    before = {}
    reason = None
    if os.path.exists(path):
        try:
            data = x.read_file(path, "key")
            if x.is_encrypted_pem(data):
                raise x.X509Error("%s is encrypted; TiKV and PD need an unencrypted key" % path)
            key = x.load_private_key(data, path)
            before = {"key_type": x.key_type_of(key), "public_key_sha256": x.public_key_sha256(key)}
        except x.X509Error as exc:
            if not p["force"]:
                module.fail_json(msg="key %s: %s. Remove the file or set force=true to replace it" % (path, exc))
            reason = "unreadable key replaced (force)"
        if key is not None and x.key_type_of(key) != p["key_type"]:
            reason = "key type %s, want %s" % (x.key_type_of(key), p["key_type"])
        elif key is not None and p["force"]:
            reason = "force"
    else:
        reason = "absent"

    created = reason is not None
    if created:
        key = None
        if not module.check_mode:
            try:
                key = x.generate_key(p["key_type"])
                x.write_file(module, path, x.private_key_pem(key), 0o600)
            except (IOError, OSError) as exc:
                module.fail_json(msg="key %s: cannot write: %s (check the directory and its permissions)"
                                     % (path, exc.strerror or exc))

    changed = created
    if os.path.exists(path) and (key is not None or not created):
        file_args = module.load_file_common_arguments(dict(path=path, mode=p["mode"], owner=p["owner"],
                                                           group=p["group"]))
        changed = module.set_fs_attributes_if_different(file_args, changed)

    csr = None
    if key is not None and p["common_name"]:
        csr = x.csr_to_pem(x.csr_for(key, p["common_name"], [x.san_key(s) for s in sans]))

    result = dict(
        changed=changed, path=path, created=created, reason=reason or "exists",
        key_type=x.key_type_of(key) if key is not None else p["key_type"],
        public_key_sha256=x.public_key_sha256(key) if key is not None else None,
        csr=csr,
    )
    if module._diff:
        after = {"key_type": result["key_type"],
                 "public_key_sha256": result["public_key_sha256"] or "(new key)"}
        result["diff"] = {"before": before, "after": after, "before_header": path, "after_header": path}
    module.exit_json(**result)


if __name__ == "__main__":
    main()

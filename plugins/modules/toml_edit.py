#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: tlsops.tikv contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: toml_edit
short_description: Set and remove keys in a TOML file, keeping everything else as it was
version_added: 0.1.0
description:
  - Sets and removes keys in a TOML configuration file such as TiKV's C(tikv.toml) or PD's C(pd.toml)
    while leaving comments, key order, formatting and unrelated tables untouched.
  - A changed value replaces only the value's text. A new key is added after the last key of its
    table, with the indentation and C(=) spacing of that key. A new table is appended at the end of
    the file after one blank line; a new sub-table of an existing table goes right after that table's
    group; a table that existed only implicitly (for example C([security.encryption]) without
    C([security])) gets its header after that group of sub-tables.
  - O(remove) is the exact reverse of O(settings) for keys that were absent before, so enabling and then
    disabling gives back a byte-identical file. A table left without keys by O(remove) is removed
    when nothing else (no comment) is left in it.
  - The result is parsed again before anything is written; it must be valid TOML and differ from the
    original only in the requested keys. A file whose content would not change is not written
    (its modification time is untouched).
  - Writes are atomic (a temporary file in the same directory, then a rename); an existing file keeps
    its owner, group and mode.
author:
  - tlsops.tikv maintainers (@tlsops)
requirements:
  - tomlkit (Python library) on the host that runs the module
  - Python >= 3.11 (tomllib) is used for validation when available; tomlkit alone otherwise
extends_documentation_fragment:
  - ansible.builtin.files
attributes:
  check_mode:
    description: Can run in check mode and return changed status prediction without modifying the target.
    support: full
  diff_mode:
    description: Returns the text before and after (and attribute changes) in diff mode.
    support: full
  idempotent:
    description: Running the same task twice changes nothing the second time.
    support: full
  safe_file_operations:
    description: Uses Ansible's atomic file operations (temporary file, atomic_move).
    support: full
  platform:
    description: Target OS/families that can be operated against.
    support: full
    platforms: posix
options:
  path:
    description:
      - The TOML file to read (and to write, unless O(dest) is given). It must exist.
    type: path
    required: true
  settings:
    description:
      - Keys to set, as a mapping of dotted key paths to values.
      - Paths are split on C(.); a part that itself contains a dot is quoted as in TOML, with double or
        single quotes, for example V(server.labels."zone.name"). V(log.file.filename) is the key
        C(filename) in table C([log.file]).
      - 'A mapping value is the same as its keys given one by one: V({security: {ca-path: /x}}) equals
        V({security.ca-path: /x}).'
      - Values are written as TOML strings, integers, floats, booleans or arrays. A key that already has
        an equal value of the same type (V(1) is not V(true)) is left alone, whatever its quoting.
      - Null values are refused; use O(remove).
    type: dict
    default: {}
  remove:
    description:
      - Dotted key paths (same syntax as O(settings)) to delete. Absent keys are ignored.
      - A path naming a table removes the table with everything in it, its comments included.
      - After a key is removed, a table that has no keys or comments left is removed too, together with
        one of the blank lines around it when it sat between two blank lines; it is kept when one of its
        own sub-tables follows it directly (TiUP writes C([readpool]) right before C([readpool.coprocessor])).
    type: list
    elements: str
    default: []
  dest:
    description:
      - Write the result to this file instead of O(path), leaving O(path) untouched (staged mode, for
        example V(<path>.tls-pending)). Idempotence and O(backup) then refer to O(dest).
      - A new O(dest) takes owner, group and mode from O(path).
    type: path
  backup:
    description:
      - Before changing the file that is written, copy it to V(<file>.<YYYYmmddTHHMMSS>.bak).
    type: bool
    default: false
notes:
  - A key inside an inline table (C(labels = { zone = "z1" })) is changed by writing that inline table
    again in the canonical C({ k = v, k2 = v2 }) form.
  - Keys inside arrays of tables (C([[...]])) cannot be addressed and are refused with an error.
seealso:
  - module: tlsops.tikv.script_flags
"""

EXAMPLES = r"""
- name: Turn on TLS in tikv.toml
  tlsops.tikv.toml_edit:
    path: /tidb-deploy/tikv-20160/conf/tikv.toml
    settings:
      security.ca-path: /tidb-deploy/tikv-20160/tls/ca.crt
      security.cert-path: /tidb-deploy/tikv-20160/tls/tikv.crt
      security.key-path: /tidb-deploy/tikv-20160/tls/tikv.pem
      security.cert-allowed-cn: [tikv, pd]
    backup: true

- name: Stage the PD TLS settings next to the live file
  tlsops.tikv.toml_edit:
    path: /tidb-deploy/pd-2379/conf/pd.toml
    dest: /tidb-deploy/pd-2379/conf/pd.toml.tls-pending
    settings:
      security:
        cacert-path: /tidb-deploy/pd-2379/tls/ca.crt
        cert-path: /tidb-deploy/pd-2379/tls/pd.crt
        key-path: /tidb-deploy/pd-2379/tls/pd.pem

- name: Turn TLS off again (gives back the file as it was before)
  tlsops.tikv.toml_edit:
    path: /tidb-deploy/tikv-20160/conf/tikv.toml
    remove:
      - security.ca-path
      - security.cert-path
      - security.key-path
      - security.cert-allowed-cn

- name: A key whose name contains a dot
  tlsops.tikv.toml_edit:
    path: /tidb-deploy/tikv-20160/conf/tikv.toml
    settings:
      server.labels."zone.name": z1
"""

RETURN = r"""
changed:
  description: Whether the file (or its attributes) changed, or would change in check mode.
  returned: always
  type: bool
path:
  description: The file the edit was computed from.
  returned: always
  type: str
  sample: /tidb-deploy/tikv-20160/conf/tikv.toml
dest:
  description: The file that was (or would be) written; equals O(path) without O(dest).
  returned: always
  type: str
  sample: /tidb-deploy/tikv-20160/conf/tikv.toml.tls-pending
values:
  description:
    - For every key in O(settings) and O(remove), its value in O(path) before and its value after the
      edit; V(null) means absent. Keys are given in the dotted syntax of O(settings).
  returned: always
  type: dict
  sample:
    security.ca-path:
      before: null
      after: /tidb-deploy/tikv-20160/tls/ca.crt
backup_file:
  description: The backup copy that was made.
  returned: when O(backup=true) and the file was changed
  type: str
  sample: /tidb-deploy/tikv-20160/conf/tikv.toml.20261124T150000.bak
diff:
  description:
    - The text before and after (C(before_header)/C(after_header) name the files); a list with a
      second entry when owner, group or mode change as well.
  returned: changed and diff mode
  type: raw
"""

import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.tlsops.tikv.plugins.module_utils._textfile import (
    FileEditError,
    apply_edit,
    read_text,
)
from ansible_collections.tlsops.tikv.plugins.module_utils._toml_edit import (
    HAS_TOMLKIT,
    TOMLKIT_IMPORT_ERROR,
    TomlEditError,
    edit_toml,
)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", required=True),
            settings=dict(type="dict", default={}),
            remove=dict(type="list", elements="str", default=[]),
            dest=dict(type="path"),
            backup=dict(type="bool", default=False),
        ),
        add_file_common_args=True,
        supports_check_mode=True,
    )
    if not HAS_TOMLKIT:
        module.fail_json(msg=missing_required_lib("tomlkit"), exception=str(TOMLKIT_IMPORT_ERROR))

    path = module.params["path"]
    dest = module.params["dest"] or path
    result = dict(changed=False, path=path, dest=dest, values={})
    try:
        text = read_text(path)
        new_text, values = edit_toml(text, module.params["settings"], module.params["remove"], name=path)
        result["values"] = values
        apply_edit(module, path, dest, new_text, result)
    except (FileEditError, TomlEditError) as exc:
        module.fail_json(msg=str(exc), **result)
    except OSError as exc:
        module.fail_json(msg="cannot write %s: %s; run with become or fix the directory's permissions"
                         % (dest, exc), exception=traceback.format_exc(), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()

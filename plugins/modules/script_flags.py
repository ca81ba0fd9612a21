#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: tlsops.tikv contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: script_flags
short_description: Read, set and remove the command-line flags in a TiUP run script
version_added: 0.1.0
description:
  - Edits the C(--flag=value) / C(--flag value) arguments of the C(exec bin/pd-server ...) (or
    C(tikv-server)) command in a run script written by TiUP (C(<deploy_dir>/scripts/run_pd.sh),
    C(run_tikv.sh)). PD's URLs (C(--client-urls), C(--peer-urls), C(--advertise-*),
    C(--initial-cluster)) and TiKV's C(--pd) endpoints live there, and flags override the TOML file.
  - Everything else is kept byte for byte (other lines, comments, line continuations, indentation,
    the C(2>>) redirection), and so is the quoting style of each flag (C(--name="v"), C(--name='v'),
    C(--name=v), C(--name "v"), C(--name v)).
  - A new flag goes on its own line before C(--config) (or before the command's last line), indented
    like that line, in the style most flags of the script use, for example C(    --cacert="/x" \\).
    Removing it again gives back a byte-identical file.
  - With neither O(flags) nor O(remove) the module only reads; RV(flags) lists every flag.
  - A file whose content would not change is not written (its modification time is untouched).
    Writes are atomic; an existing file keeps its owner, group and mode.
author:
  - tlsops.tikv maintainers (@tlsops)
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
      - The run script to read (and to write, unless O(dest) is given). It must exist.
    type: path
    required: true
  flags:
    description:
      - Flags to set, name (with or without the leading dashes) to value.
      - Every occurrence of an existing flag gets the value, in the quoting style it has. A missing flag
        is added.
      - Values are written as strings (V(true)/V(false) for booleans, a list is joined with commas);
        V(null) makes a bare switch without a value.
    type: dict
    default: {}
  remove:
    description:
      - Names of flags to delete (every occurrence). Absent flags are ignored.
    type: list
    elements: str
    default: []
  program:
    description:
      - The server program whose command is edited, as its base name or path (V(pd-server),
        V(bin/tikv-server)).
      - By default the first C(exec) command that runs a program whose name ends in C(-server).
    type: str
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
  - Inside double quotes C(\\), C(") and backquotes are escaped; C($) is left to the shell, so
    V(${DEPLOY_DIR}/tls/ca.crt) expands as TiUP's own variables do.
seealso:
  - module: tlsops.tikv.toml_edit
"""

EXAMPLES = r"""
- name: Read the URL flags of a PD run script
  tlsops.tikv.script_flags:
    path: /tidb-deploy/pd-2379/scripts/run_pd.sh
  register: pd_run_script
  check_mode: false

- name: Serve PD's client port over TLS
  tlsops.tikv.script_flags:
    path: /tidb-deploy/pd-2379/scripts/run_pd.sh
    flags:
      client-urls: "{{ pd_run_script.flags['client-urls'] | replace('http://', 'https://') }}"
      advertise-client-urls: "{{ pd_run_script.flags['advertise-client-urls'] | replace('http://', 'https://') }}"
    backup: true

- name: Stage a run script with an extra flag
  tlsops.tikv.script_flags:
    path: /tidb-deploy/pd-2379/scripts/run_pd.sh
    dest: /tidb-deploy/pd-2379/scripts/run_pd.sh.tls-pending
    flags:
      cacert: /tidb-deploy/pd-2379/tls/ca.crt

- name: Drop the flag again
  tlsops.tikv.script_flags:
    path: /tidb-deploy/pd-2379/scripts/run_pd.sh
    remove:
      - cacert
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
  sample: /tidb-deploy/pd-2379/scripts/run_pd.sh
dest:
  description: The file that was (or would be) written; equals O(path) without O(dest).
  returned: always
  type: str
flags:
  description: Every flag of the server command after the edit, name without dashes to value (V(null) for a bare switch).
  returned: always
  type: dict
  sample:
    name: pd-10.0.1.1-2379
    client-urls: https://0.0.0.0:2379
    config: conf/pd.toml
values:
  description: For every flag in O(flags) and O(remove), its value in O(path) before and after the edit; V(null) means absent.
  returned: always
  type: dict
  sample:
    client-urls:
      before: http://0.0.0.0:2379
      after: https://0.0.0.0:2379
backup_file:
  description: The backup copy that was made.
  returned: when O(backup=true) and the file was changed
  type: str
  sample: /tidb-deploy/pd-2379/scripts/run_pd.sh.20261124T150000.bak
diff:
  description:
    - The text before and after (C(before_header)/C(after_header) name the files); a list with a
      second entry when owner, group or mode change as well.
  returned: changed and diff mode
  type: raw
"""

import traceback

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.tlsops.tikv.plugins.module_utils._run_script import ScriptError, edit_script
from ansible_collections.tlsops.tikv.plugins.module_utils._textfile import (
    FileEditError,
    apply_edit,
    read_text,
)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", required=True),
            flags=dict(type="dict", default={}),
            remove=dict(type="list", elements="str", default=[]),
            program=dict(type="str"),
            dest=dict(type="path"),
            backup=dict(type="bool", default=False),
        ),
        add_file_common_args=True,
        supports_check_mode=True,
    )
    path = module.params["path"]
    dest = module.params["dest"] or path
    result = dict(changed=False, path=path, dest=dest, values={}, flags={})
    try:
        text = read_text(path)
        new_text, values, flags = edit_script(text, module.params["flags"], module.params["remove"],
                                              program=module.params["program"], name=path)
        result["values"] = values
        result["flags"] = flags
        apply_edit(module, path, dest, new_text, result)
    except (FileEditError, ScriptError) as exc:
        module.fail_json(msg=str(exc), **result)
    except OSError as exc:
        module.fail_json(msg="cannot write %s: %s; run with become or fix the directory's permissions"
                         % (dest, exc), exception=traceback.format_exc(), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()

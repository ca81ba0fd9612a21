#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: tlsops.tikv contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: config_files
short_description: Back up, swap in and restore the configuration files of a TiKV or PD instance
version_added: 0.1.0
description:
  - Keeps the files the config role changes (C(pd.toml), C(tikv.toml), C(run_pd.sh), C(run_tikv.sh))
    recoverable. Each operation that changes live files first copies them into a B(backup set), a
    directory C(<backup_dir>/<YYYYmmddTHHMMSSZ>/) with a C(manifest.json) that maps every original path
    to its copy, its sha256, mode and owner. The manifest is written last, so an interrupted backup is
    never mistaken for a complete one. Sets are never pruned.
  - O(operation=backup) copies O(files) into a new set.
  - O(operation=swap) promotes every staged C(<file>.tls-pending) of O(files) over its live file with an
    atomic rename, after backing up the live files into a new set. A C(.toml) file is parsed before
    anything moves. A pending file equal to its live file is just removed. If a rename fails, the
    files already promoted are put back from the set.
  - O(operation=restore) puts back every file of a set (O(backup_set), else the latest set that was not
    made by a restore), content, mode and owner, each with an atomic write; the files it overwrites go
    into a new set first (its manifest has operation V(restore)), so a rollback can itself be undone
    by naming that set. Files already equal to the set are left alone, so a second restore changes
    nothing. Staged C(.tls-pending) files of the restored files (and of O(files)) are removed.
author:
  - tlsops.tikv maintainers (@tlsops)
attributes:
  check_mode:
    description: Reports what would change (and the diff) without writing anything.
    support: full
  diff_mode:
    description: O(operation=swap) and O(operation=restore) return the text of every live file before and after.
    support: full
  idempotent:
    description:
      - O(operation=swap) and O(operation=restore) change nothing the second time.
      - O(operation=backup) makes a new set on every call; call it only when a change is coming.
    support: partial
  safe_file_operations:
    description: Live files are replaced by atomic renames in their own directory.
    support: full
  platform:
    description: Target OS/families that can be operated against.
    support: full
    platforms: posix
options:
  operation:
    description: What to do (see the description).
    type: str
    required: true
    choices: [backup, swap, restore]
  files:
    description:
      - Live files (absolute paths). V(backup) copies them (each must exist); V(swap) promotes their
        staged copies; V(restore) removes their staged copies too (with O(discard_pending)).
    type: list
    elements: path
    default: []
  backup_dir:
    description: Directory that holds the instance's backup sets, for example V(<deploy_dir>/tls-backup). Created (mode 0700) when needed.
    type: path
    required: true
  backup_set:
    description:
      - For O(operation=restore), the set to put back, as its name under O(backup_dir) or an absolute path.
      - Default is the latest complete set whose manifest does not name the operation V(restore) (a restore's safety copy).
    type: str
  instance:
    description: Name of the instance, for the manifest and messages (for example C(inventory_hostname)).
    type: str
  pending_suffix:
    description: Suffix of the staged files next to the live ones.
    type: str
    default: .tls-pending
  discard_pending:
    description: With O(operation=restore), remove the staged copies of the restored files and of O(files).
    type: bool
    default: true
  set_operation:
    description: The operation recorded in the manifest of a set made by O(operation=backup).
    type: str
    default: config
notes:
  - Mode and owner are recorded and restored; the owner only when the module runs as root.
seealso:
  - module: tlsops.tikv.toml_edit
  - module: tlsops.tikv.script_flags
"""

EXAMPLES = r"""
- name: Back up the files a live render is about to change
  tlsops.tikv.config_files:
    operation: backup
    files:
      - /tidb-deploy/pd-2379/conf/pd.toml
      - /tidb-deploy/pd-2379/scripts/run_pd.sh
    backup_dir: /tidb-deploy/pd-2379/tls-backup
    instance: "{{ inventory_hostname }}"

- name: Promote the staged files (*.tls-pending) into place
  tlsops.tikv.config_files:
    operation: swap
    files:
      - /tidb-deploy/pd-2379/conf/pd.toml
      - /tidb-deploy/pd-2379/scripts/run_pd.sh
    backup_dir: /tidb-deploy/pd-2379/tls-backup

- name: Roll back to the latest backup set
  tlsops.tikv.config_files:
    operation: restore
    backup_dir: /tidb-deploy/pd-2379/tls-backup

- name: Roll back to a named set
  tlsops.tikv.config_files:
    operation: restore
    backup_dir: /tidb-deploy/pd-2379/tls-backup
    backup_set: 20261124T150000Z
"""

RETURN = r"""
backup_set:
  description:
    - V(backup) and V(swap) - the set that was made (or would be, in check mode); V(null) when nothing needed a backup.
    - V(restore) - the set that was put back.
  returned: always
  type: str
  sample: /tidb-deploy/pd-2379/tls-backup/20261124T150000Z
safety_set:
  description: V(restore) - the set holding the files the restore overwrote; V(null) when nothing was overwritten.
  returned: always
  type: str
manifest:
  description: The manifest of RV(backup_set) (written or read); empty when there is none.
  returned: always
  type: dict
  sample:
    format: 1
    instance: pd1
    operation: config
    created: "2026-11-24T15:00:00.123456Z"
    restores: null
    files:
      /tidb-deploy/pd-2379/conf/pd.toml:
        backup: pd.toml
        sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
        size: 580
        mode: "0644"
        uid: 1000
        gid: 1000
promoted:
  description: V(swap) - live files replaced by their staged copies.
  returned: always
  type: list
  elements: str
restored:
  description: V(restore) - files put back from the set.
  returned: always
  type: list
  elements: str
discarded:
  description: Staged files removed (equal to the live file on V(swap); every staged copy on V(restore)).
  returned: always
  type: list
  elements: str
"""

import os
import traceback

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.tlsops.tikv.plugins.module_utils._backup_set import (
    BackupSetError,
    apply_attributes,
    check_set,
    create_set,
    find_set,
    new_set_path,
    plan_restore,
    plan_swap,
    validate_toml,
)
from ansible_collections.tlsops.tikv.plugins.module_utils._textfile import (
    FileEditError,
    read_text,
    write_atomic,
)


def _diff(before, after, before_header, after_header):
    return {"before": before, "after": after, "before_header": before_header, "after_header": after_header}


def _finish(module, result, diffs):
    if module._diff and diffs:
        result["diff"] = diffs[0] if len(diffs) == 1 else diffs
    module.exit_json(**result)


def do_backup(module, result, label):
    p = module.params
    if not p["files"]:
        module.fail_json(msg="%s: operation=backup needs files" % label, **result)
    missing = [f for f in p["files"] if not os.path.isfile(f)]
    if missing:
        module.fail_json(msg="%s: cannot back up %s: not a regular file" % (label, ", ".join(missing)), **result)
    result["changed"] = True
    if module.check_mode:
        result["backup_set"] = new_set_path(p["backup_dir"])
        module.exit_json(**result)
    path, manifest = create_set(p["backup_dir"], p["files"], p["set_operation"], instance=p["instance"])
    result["backup_set"] = path
    result["manifest"] = manifest
    module.exit_json(**result)


def do_swap(module, result, label):
    p = module.params
    plan = plan_swap(p["files"], p["pending_suffix"])
    diffs = []
    promote = [(live, pending) for live, pending, action in plan if action == "promote"]
    discard = [pending for _live, pending, action in plan if action == "discard"]
    texts = {}
    for live, pending in promote:
        texts[pending] = read_text(pending)
        validate_toml(live, texts[pending])
        before = read_text(live) if os.path.exists(live) else ""
        diffs.append(_diff(before, texts[pending], live, "%s (from %s)" % (live, os.path.basename(pending))))
    result["promoted"] = [live for live, _pending in promote]
    result["discarded"] = discard
    result["changed"] = bool(promote or discard)
    if module.check_mode or not result["changed"]:
        if promote:
            result["backup_set"] = new_set_path(p["backup_dir"])
        _finish(module, result, diffs)

    backup_set = None
    existing = [live for live, _pending in promote if os.path.isfile(live)]
    if existing:
        path, manifest = create_set(p["backup_dir"], existing, "swap", instance=p["instance"])
        backup_set = {"path": path, "manifest": manifest}
        result["backup_set"] = path
        result["manifest"] = manifest
    done = []
    try:
        for live, pending in promote:
            module.atomic_move(pending, live, unsafe_writes=False)
            done.append(live)
    except Exception as exc:  # put back what was already promoted, then report
        undo_errors = []
        for live in done:
            entry = backup_set["manifest"]["files"].get(os.path.abspath(live)) if backup_set else None
            if entry is None:
                continue
            try:
                write_atomic(module, live, read_text(os.path.join(backup_set["path"], entry["backup"])))
                apply_attributes(live, entry)
            except Exception as undo_exc:  # pylint: disable=broad-except
                undo_errors.append("%s: %s" % (live, undo_exc))
        module.fail_json(
            msg="%s: swapping %s in failed: %s; %s" % (
                label, pending, exc,
                "the files already swapped were put back from %s" % result.get("backup_set") if not undo_errors
                else "COULD NOT put back %s; restore them from %s" % ("; ".join(undo_errors), result.get("backup_set"))),
            exception=traceback.format_exc(), **result)
    for pending in discard:
        os.unlink(pending)
    _finish(module, result, diffs)


def do_restore(module, result, label):
    p = module.params
    backup_set = find_set(p["backup_dir"], p["backup_set"])
    check_set(backup_set)
    result["backup_set"] = backup_set["path"]
    result["manifest"] = backup_set["manifest"]
    plan = plan_restore(backup_set)
    diffs = []
    texts = {}
    for original, copy, _entry, action in plan:
        if action != "restore":
            continue
        texts[original] = read_text(copy)
        before = read_text(original) if os.path.exists(original) else ""
        if before != texts[original]:
            diffs.append(_diff(before, texts[original], original,
                               "%s (from %s)" % (original, os.path.relpath(copy, p["backup_dir"]))))
    restore = [(original, entry) for original, _copy, entry, action in plan if action == "restore"]
    pendings = []
    if p["discard_pending"]:
        for live in [o for o, _c, _e, _a in plan] + list(p["files"]):
            pending = live + p["pending_suffix"]
            if os.path.lexists(pending) and pending not in pendings:
                pendings.append(pending)
    result["restored"] = [original for original, _entry in restore]
    result["discarded"] = pendings
    result["changed"] = bool(restore or pendings)
    if module.check_mode or not result["changed"]:
        if restore:
            result["safety_set"] = new_set_path(p["backup_dir"])
        _finish(module, result, diffs)

    existing = [original for original, _entry in restore if os.path.isfile(original)]
    if existing:
        path, _manifest = create_set(p["backup_dir"], existing, "restore", instance=p["instance"],
                                     restores=backup_set["name"])
        result["safety_set"] = path
    for original, entry in restore:
        write_atomic(module, original, texts[original])
        apply_attributes(original, entry)
    for pending in pendings:
        os.unlink(pending)
    _finish(module, result, diffs)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            operation=dict(type="str", required=True, choices=["backup", "swap", "restore"]),
            files=dict(type="list", elements="path", default=[]),
            backup_dir=dict(type="path", required=True),
            backup_set=dict(type="str"),
            instance=dict(type="str"),
            pending_suffix=dict(type="str", default=".tls-pending"),
            discard_pending=dict(type="bool", default=True),
            set_operation=dict(type="str", default="config"),
        ),
        supports_check_mode=True,
    )
    p = module.params
    label = p["instance"] or p["backup_dir"]
    if not p["pending_suffix"] or "/" in p["pending_suffix"]:
        module.fail_json(msg="%s: pending_suffix must be a non-empty file name suffix such as .tls-pending" % label)
    p["files"] = [os.path.abspath(f) for f in p["files"]]
    result = dict(changed=False, backup_set=None, safety_set=None, manifest={}, promoted=[], restored=[],
                  discarded=[])
    try:
        if p["operation"] == "backup":
            do_backup(module, result, label)
        elif p["operation"] == "swap":
            do_swap(module, result, label)
        else:
            do_restore(module, result, label)
    except (BackupSetError, FileEditError) as exc:
        module.fail_json(msg="%s: %s" % (label, exc), **result)
    except OSError as exc:
        module.fail_json(msg="%s: %s: %s; run with become or fix the permissions" % (label, exc.filename or "", exc.strerror or exc),
                         exception=traceback.format_exc(), **result)


if __name__ == "__main__":
    main()

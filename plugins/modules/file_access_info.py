#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: tlsops.tikv contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: file_access_info
short_description: Tell which files exist and whether a given user can read them
version_added: 0.1.0
description:
  - For each path of O(paths), reports whether it exists, its type, mode and owner (symbolic links are
    followed) and, with O(user), whether that user can read it, the way the kernel decides for a
    process of that user - owner, group (primary and supplementary) or other permission bits of the
    file, and search permission on every directory on the way to it (through the path as given and
    through its real path). The user C(root) reads everything.
  - Used by the config role to prove, before it writes a configuration, that the service account of
    TiKV/PD will be able to open its CA, certificate and key.
  - One call for many paths, so a role needs no loop of M(ansible.builtin.stat).
author:
  - tlsops.tikv maintainers (@tlsops)
attributes:
  check_mode:
    description: Read-only; runs the same in check mode.
    support: full
  diff_mode:
    description: Nothing changes, so there is nothing to diff.
    support: none
  idempotent:
    description: Never changes anything.
    support: full
options:
  paths:
    description: Absolute paths to look at.
    type: list
    elements: path
    required: true
  user:
    description:
      - Account whose read access is checked (name or numeric uid).
      - Without it, RV(files[].readable) is V(null).
    type: str
notes:
  - Permission bits only; POSIX ACLs, SELinux/AppArmor labels and capabilities other than root's are not
    evaluated.
seealso:
  - module: ansible.builtin.stat
"""

EXAMPLES = r"""
- name: Can the tidb account read the TLS files of this instance?
  tlsops.tikv.file_access_info:
    paths:
      - /tidb-deploy/pd-2379/tls/ca.crt
      - /tidb-deploy/pd-2379/tls/pd.crt
      - /tidb-deploy/pd-2379/tls/pd.pem
    user: tidb
  register: tls_access

- name: Refuse to go on otherwise
  ansible.builtin.assert:
    that: tls_access.unreadable | length == 0
    fail_msg: "{{ tls_access.unreadable | join('; ') }}"
"""

RETURN = r"""
files:
  description: One entry per path of O(paths), keyed by the path as given.
  returned: always
  type: dict
  contains:
    exists:
      description: Whether the path exists (after following symbolic links).
      type: bool
    type:
      description: V(file), V(directory), V(other) or V(missing).
      type: str
    islink:
      description: Whether the path itself is a symbolic link.
      type: bool
    realpath:
      description: The path with every symbolic link resolved.
      type: str
    mode:
      description: Permission bits, octal string (V(null) when missing).
      type: str
    uid:
      description: Owner uid.
      type: int
    gid:
      description: Group gid.
      type: int
    readable:
      description: Whether O(user) can read the file (open a directory for listing); V(null) without O(user).
      type: bool
    reason:
      description: Why O(user) cannot read it (the file's bits, or the directory that blocks the way); V(null) when it can.
      type: str
  sample:
    /tidb-deploy/pd-2379/tls/pd.pem:
      exists: true
      type: file
      islink: false
      realpath: /tidb-deploy/pd-2379/tls/pd.pem
      mode: "0600"
      uid: 0
      gid: 0
      readable: false
      reason: "owner uid 0, mode 0600: no read permission for uid 1000"
user:
  description: The account checked (V(null) without O(user) or when it does not exist).
  returned: always
  type: dict
  sample: {name: tidb, uid: 1000, gid: 1000, groups: [1000]}
user_exists:
  description: Whether O(user) exists on the host; V(null) without O(user).
  returned: always
  type: bool
missing:
  description: The paths of O(paths) that do not exist.
  returned: always
  type: list
  elements: str
unreadable:
  description: One sentence per existing path O(user) cannot read (path and reason); empty without O(user).
  returned: always
  type: list
  elements: str
"""

import grp
import os
import pwd
import stat

from ansible.module_utils.basic import AnsibleModule


def lookup_user(name):
    """(name, uid, gid, [gids]) of a user given by name or numeric uid; None when unknown."""
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        if not name.isdigit():
            return None
        try:
            entry = pwd.getpwuid(int(name))
        except KeyError:
            return None
    try:
        groups = sorted(set(os.getgrouplist(entry.pw_name, entry.pw_gid)))
    except (AttributeError, OSError):  # no getgrouplist: scan the group database
        groups = sorted(set([entry.pw_gid] + [g.gr_gid for g in grp.getgrall() if entry.pw_name in g.gr_mem]))
    return {"name": entry.pw_name, "uid": entry.pw_uid, "gid": entry.pw_gid, "groups": groups}


def permitted(st, user, want):
    """Whether ``user`` has ``want`` ('r' or 'x') on an object with stat ``st`` (owner, group, other)."""
    if user["uid"] == 0:
        return True
    bits = {"r": (stat.S_IRUSR, stat.S_IRGRP, stat.S_IROTH), "x": (stat.S_IXUSR, stat.S_IXGRP, stat.S_IXOTH)}[want]
    if st.st_uid == user["uid"]:
        return bool(st.st_mode & bits[0])
    if st.st_gid in user["groups"]:
        return bool(st.st_mode & bits[1])
    return bool(st.st_mode & bits[2])


def _ancestors(path):
    out = []
    parent = os.path.dirname(path)
    while True:
        out.append(parent)
        up = os.path.dirname(parent)
        if up == parent:
            return out
        parent = up


def blocking_directory(path, user):
    """The first directory on the way to ``path`` (as given, then resolved) ``user`` cannot search."""
    seen = []
    for way in (os.path.abspath(path), os.path.realpath(path)):
        for directory in reversed(_ancestors(way)):
            if directory in seen:
                continue
            seen.append(directory)
            try:
                st = os.stat(directory)
            except OSError:
                continue
            if not permitted(st, user, "x"):
                return directory, st
    return None, None


def describe(path, user):
    entry = {"exists": False, "type": "missing", "islink": os.path.islink(path), "realpath": os.path.realpath(path),
             "mode": None, "uid": None, "gid": None, "readable": None, "reason": None}
    try:
        st = os.stat(path)
    except OSError:
        if user is not None:
            entry["readable"] = False
            entry["reason"] = "does not exist"
        return entry
    entry.update(exists=True, mode="%04o" % stat.S_IMODE(st.st_mode), uid=st.st_uid, gid=st.st_gid,
                 type="file" if stat.S_ISREG(st.st_mode) else "directory" if stat.S_ISDIR(st.st_mode) else "other")
    if user is None:
        return entry
    directory, dst = blocking_directory(path, user)
    if directory is not None:
        entry["readable"] = False
        entry["reason"] = ("directory %s (owner uid %d, gid %d, mode %04o) gives uid %d no search permission"
                           % (directory, dst.st_uid, dst.st_gid, stat.S_IMODE(dst.st_mode), user["uid"]))
    elif not permitted(st, user, "r"):
        entry["readable"] = False
        entry["reason"] = ("owner uid %d, gid %d, mode %s: no read permission for uid %d"
                           % (st.st_uid, st.st_gid, entry["mode"], user["uid"]))
    else:
        entry["readable"] = True
    return entry


def main():
    module = AnsibleModule(
        argument_spec=dict(
            paths=dict(type="list", elements="path", required=True),
            user=dict(type="str"),
        ),
        supports_check_mode=True,
    )
    user_name = module.params["user"]
    user = lookup_user(user_name) if user_name else None
    result = dict(changed=False, files={}, user=user, user_exists=None if not user_name else user is not None,
                  missing=[], unreadable=[])
    for path in module.params["paths"]:
        if not os.path.isabs(path):
            module.fail_json(msg="file_access_info: %s is not an absolute path" % path, **result)
        entry = describe(path, user)
        result["files"][path] = entry
        if not entry["exists"]:
            result["missing"].append(path)
        elif entry["readable"] is False:
            result["unreadable"].append("%s (%s)" % (path, entry["reason"]))
    module.exit_json(**result)


if __name__ == "__main__":
    main()

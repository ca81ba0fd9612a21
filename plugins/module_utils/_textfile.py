# -*- coding: utf-8 -*-
# Copyright: tlsops.tikv contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Read, compare, back up and atomically write one text file; shared by the file-editing modules.

The editing modules (``toml_edit``, ``script_flags``) compute a new text from the text of ``path``
and hand it here. This module decides whether anything changes (byte comparison with the file that
would be written: ``dest`` when given, else ``path``), takes the backup, writes through a temporary
file in the same directory plus ``AnsibleModule.atomic_move`` (owner, group and mode of an existing
file are kept; a new ``dest`` takes them from ``path``), applies ``owner``/``group``/``mode`` and
builds the diff. A file whose content would not change is never written, so its mtime is untouched.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
import time


class FileEditError(Exception):
    """A problem with the file itself (missing, unreadable, not UTF-8): the message names it."""


def read_text(path):
    """The file's text, decoded as UTF-8 with line endings untouched."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        raise FileEditError("%s does not exist; check the path (the deploy_dir of the instance?)" % path)
    except IsADirectoryError:
        raise FileEditError("%s is a directory, not a file" % path)
    except OSError as exc:
        raise FileEditError("cannot read %s: %s; run with become or fix its permissions" % (path, exc.strerror or exc))
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FileEditError("%s is not UTF-8 text (byte %d); refusing to edit it" % (path, exc.start))


def backup_name(path, now=None):
    """``<path>.<YYYYmmddTHHMMSS>.bak``; a second backup in the same second gets ``.<n>`` before ``.bak``."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.localtime(now))
    candidate = "%s.%s.bak" % (path, stamp)
    counter = 1
    while os.path.lexists(candidate):
        candidate = "%s.%s.%d.bak" % (path, stamp, counter)
        counter += 1
    return candidate


def make_backup(path):
    """Copy ``path`` (content, mode, times, and owner when permitted) to a timestamped backup."""
    dest = backup_name(path)
    shutil.copy2(path, dest)
    st = os.stat(path)
    try:
        os.chown(dest, st.st_uid, st.st_gid)
    except PermissionError:
        pass
    return dest


def write_atomic(module, dest, text, template=None):
    """Write ``text`` to ``dest`` through a temporary file in the same directory and atomic_move.

    An existing ``dest`` keeps its owner, group and mode (atomic_move copies them). A new ``dest`` takes
    mode and, when permitted, owner and group from ``template`` (the source file), so a staged copy has
    the permissions of the file it will replace.
    """
    directory = os.path.dirname(os.path.abspath(dest))
    if not os.path.isdir(directory):
        raise FileEditError("directory %s of %s does not exist; create it first" % (directory, dest))
    creating = not os.path.exists(dest)
    fd, tmp = tempfile.mkstemp(prefix=".%s." % os.path.basename(dest), suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(text.encode("utf-8"))
            fh.flush()
            os.fsync(fh.fileno())
        module.atomic_move(tmp, dest, unsafe_writes=module.params.get("unsafe_writes", False))
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    if creating and template and os.path.exists(template):
        st = os.stat(template)
        os.chmod(dest, stat.S_IMODE(st.st_mode))
        try:
            os.chown(dest, st.st_uid, st.st_gid)
        except PermissionError:
            pass


def apply_edit(module, path, dest, new_text, result):
    """Compare, back up, write and set attributes; fills ``result`` (changed, diff, backup_file).

    ``path`` is the file the edit was computed from, ``dest`` the file to write (may equal ``path``).
    Honours check mode (nothing written, changed predicted) and diff mode.
    """
    dest_exists = os.path.exists(dest)
    if dest_exists:
        current = read_text(dest)
        before_header = dest
    else:
        # A staged dest that does not exist yet: show the change relative to the source file.
        current = None
        before_header = "%s (%s does not exist yet)" % (path, dest)
    changed = current != new_text
    result["changed"] = changed
    diffs = []
    if changed and module._diff:
        before = current if current is not None else read_text(path)
        diffs.append({
            "before": before,
            "after": new_text,
            "before_header": before_header,
            "after_header": dest,
        })
    if changed and not module.check_mode:
        if module.params.get("backup") and dest_exists:
            result["backup_file"] = make_backup(dest)
        write_atomic(module, dest, new_text, template=path)
    # owner/group/mode: set_fs_attributes_if_different honours check mode itself.
    if os.path.exists(dest):
        attr_diff = {"before": {}, "after": {}}
        file_args = module.load_file_common_arguments(module.params, path=dest)
        result["changed"] = module.set_fs_attributes_if_different(
            file_args, result["changed"], diff=attr_diff if module._diff else None)
        if attr_diff["before"] or attr_diff["after"]:
            attr_diff["before_header"] = attr_diff["after_header"] = "%s (attributes)" % dest
            diffs.append(attr_diff)
    if diffs:
        result["diff"] = diffs[0] if len(diffs) == 1 else diffs
    return result

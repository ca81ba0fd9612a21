# -*- coding: utf-8 -*-
# Copyright: tlsops.tikv contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Backup sets of an instance's configuration files, for the config role's swap and rollback.

A backup set is one directory ``<backup_dir>/<YYYYmmddTHHMMSSZ>/`` holding a copy of every file one
operation was about to change, and ``manifest.json`` mapping each original path to its copy::

    {
      "format": 1,
      "instance": "pd1",
      "operation": "config",            # config (a live render), swap, or restore
      "created": "2026-11-24T15:00:00.123456Z",
      "restores": null,                 # for operation restore: the set that was put back
      "files": {
        "/tidb-deploy/pd-2379/conf/pd.toml": {
          "backup": "pd.toml", "sha256": "...", "size": 580, "mode": "0644", "uid": 1000, "gid": 1000
        }
      }
    }

The manifest is written last (atomically), so a set without one is incomplete and ignored. Sets are
never pruned. Only ``_textfile`` does the text I/O (read, atomic write); this module adds the set
bookkeeping and the pure planning of a swap (``*.tls-pending`` over the live file) and a restore.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import shutil
import stat
import tempfile

MANIFEST = "manifest.json"
FORMAT = 1
PENDING_SUFFIX = ".tls-pending"


class BackupSetError(Exception):
    """A problem with a backup set or a file it covers; the message names it and the fix."""


def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(65536), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_bytes(path):
    with open(path, "rb") as fh:
        return fh.read()


def _utcnow():
    return datetime.datetime.now(datetime.timezone.utc)


def set_name(now):
    return now.strftime("%Y%m%dT%H%M%SZ")


def new_set_path(backup_dir, now=None):
    """The directory for a new set: ``<backup_dir>/<timestamp>``; ``-1``, ``-2``... on a clash."""
    now = now or _utcnow()
    base = os.path.join(backup_dir, set_name(now))
    candidate, counter = base, 1
    while os.path.lexists(candidate):
        candidate = "%s-%d" % (base, counter)
        counter += 1
    return candidate


def _load_manifest(directory):
    path = os.path.join(directory, MANIFEST)
    try:
        with open(path, "r", encoding="utf-8") as fh:
            manifest = json.load(fh)
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or not isinstance(manifest.get("files"), dict):
        return None
    return manifest


def list_sets(backup_dir):
    """Complete sets under ``backup_dir``, oldest first: dicts with name, path, manifest."""
    if not os.path.isdir(backup_dir):
        return []
    found = []
    for name in os.listdir(backup_dir):
        path = os.path.join(backup_dir, name)
        if not os.path.isdir(path) or os.path.islink(path):
            continue
        manifest = _load_manifest(path)
        if manifest is not None:
            found.append({"name": name, "path": path, "manifest": manifest})
    found.sort(key=lambda s: (str(s["manifest"].get("created", "")), s["name"]))
    return found


def find_set(backup_dir, wanted=None, skip_operations=("restore",)):
    """The set named ``wanted`` (a name under ``backup_dir`` or an absolute path), or the latest set
    whose operation is not in ``skip_operations`` (a restore's own safety copy is not "the backup")."""
    if wanted:
        path = wanted if os.path.isabs(wanted) else os.path.join(backup_dir, wanted)
        manifest = _load_manifest(path)
        if manifest is None:
            raise BackupSetError("backup set %s does not exist or has no readable %s; list the sets with "
                                 "ls %s" % (path, MANIFEST, backup_dir))
        return {"name": os.path.basename(os.path.normpath(path)), "path": path, "manifest": manifest}
    candidates = [s for s in list_sets(backup_dir) if s["manifest"].get("operation") not in skip_operations]
    if not candidates:
        raise BackupSetError("no backup set under %s: nothing to restore (the config role makes one "
                             "whenever it changes a live file)" % backup_dir)
    return candidates[-1]


def _file_entry(path, backup_name):
    st = os.stat(path)
    return {
        "backup": backup_name,
        "sha256": sha256_file(path),
        "size": st.st_size,
        "mode": "%04o" % stat.S_IMODE(st.st_mode),
        "uid": st.st_uid,
        "gid": st.st_gid,
    }


def _write_json_atomic(path, data):
    directory = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(prefix=".manifest.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, sort_keys=True)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o600)
        os.rename(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def create_set(backup_dir, files, operation, instance=None, restores=None, now=None):
    """Copy every path of ``files`` into a new set and write its manifest; returns (path, manifest).

    Every file must exist. A failure part way removes the partial set and raises BackupSetError.
    """
    now = now or _utcnow()
    missing = [p for p in files if not os.path.isfile(p)]
    if missing:
        raise BackupSetError("cannot back up %s: not a regular file" % ", ".join(missing))
    try:
        os.makedirs(backup_dir, mode=0o700, exist_ok=True)
    except OSError as exc:
        raise BackupSetError("cannot create the backup directory %s: %s; run with become or fix its "
                             "parent's permissions" % (backup_dir, exc.strerror or exc))
    path = new_set_path(backup_dir, now)
    manifest = {
        "format": FORMAT,
        "instance": instance,
        "operation": operation,
        "created": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "restores": restores,
        "files": {},
    }
    try:
        os.mkdir(path, 0o700)
        used = set([MANIFEST])
        for src in files:
            src = os.path.abspath(src)
            if src in manifest["files"]:
                continue
            base = os.path.basename(src)
            name, counter = base, 1
            while name in used:
                name = "%s.%d" % (base, counter)
                counter += 1
            used.add(name)
            dest = os.path.join(path, name)
            shutil.copy2(src, dest)
            st = os.stat(src)
            try:
                os.chown(dest, st.st_uid, st.st_gid)
            except PermissionError:
                pass
            entry = _file_entry(src, name)
            if sha256_file(dest) != entry["sha256"]:
                raise BackupSetError("%s changed while it was being backed up; run again" % src)
            manifest["files"][src] = entry
        _write_json_atomic(os.path.join(path, MANIFEST), manifest)
    except BackupSetError:
        shutil.rmtree(path, ignore_errors=True)
        raise
    except OSError as exc:
        shutil.rmtree(path, ignore_errors=True)
        raise BackupSetError("cannot write backup set %s: %s; run with become or fix the permissions of %s"
                             % (path, exc.strerror or exc, backup_dir))
    return path, manifest


def check_set(backup_set):
    """Every copy of the set is present and unchanged (sha256); raises BackupSetError otherwise."""
    for original, entry in sorted(backup_set["manifest"]["files"].items()):
        copy = os.path.join(backup_set["path"], entry["backup"])
        if not os.path.isfile(copy):
            raise BackupSetError("backup set %s is damaged: the copy of %s (%s) is missing; choose another "
                                 "set" % (backup_set["path"], original, entry["backup"]))
        if sha256_file(copy) != entry["sha256"]:
            raise BackupSetError("backup set %s is damaged: the copy of %s (%s) does not match its sha256 "
                                 "in the manifest; choose another set" % (backup_set["path"], original, entry["backup"]))


def plan_swap(files, suffix=PENDING_SUFFIX):
    """For each live path: (live, pending, action) with action ``promote`` (pending differs from the
    live file), ``discard`` (pending equals the live file) or ``none`` (no pending file)."""
    plan = []
    for live in files:
        pending = live + suffix
        if not os.path.lexists(pending):
            plan.append((live, pending, "none"))
            continue
        if not os.path.isfile(pending):
            raise BackupSetError("%s is not a regular file; remove it and render again" % pending)
        if os.path.isfile(live) and read_bytes(live) == read_bytes(pending):
            plan.append((live, pending, "discard"))
        else:
            plan.append((live, pending, "promote"))
    return plan


def validate_toml(path, text):
    """Parse ``text`` as TOML when ``path`` ends in .toml (tomllib, else tomlkit, else skipped)."""
    if not path.endswith(".toml"):
        return
    try:
        import tomllib
        parse = tomllib.loads
        errors = (tomllib.TOMLDecodeError,)
    except ImportError:
        try:
            import tomlkit
            from tomlkit.exceptions import TOMLKitError
        except ImportError:
            return
        parse = tomlkit.parse
        errors = (TOMLKitError,)
    try:
        parse(text)
    except errors as exc:
        raise BackupSetError("%s is not valid TOML (%s); nothing was swapped. Render it again with the "
                             "config role" % (path, exc))


def plan_restore(backup_set):
    """For each file of the set: (original, copy, entry, action) with action ``restore`` (content,
    mode or owner differ, or the file is gone) or ``none``."""
    plan = []
    for original, entry in sorted(backup_set["manifest"]["files"].items()):
        copy = os.path.join(backup_set["path"], entry["backup"])
        action = "restore"
        if os.path.isfile(original):
            st = os.stat(original)
            # The owner only counts where it can be set (as root); elsewhere it could never match.
            owner_ok = os.geteuid() != 0 or (st.st_uid, st.st_gid) == (entry["uid"], entry["gid"])
            if (sha256_file(original) == entry["sha256"] and "%04o" % stat.S_IMODE(st.st_mode) == entry["mode"]
                    and owner_ok):
                action = "none"
        plan.append((original, copy, entry, action))
    return plan


def apply_attributes(path, entry):
    """Mode and (when permitted) owner of ``path`` as the manifest entry recorded them."""
    os.chmod(path, int(entry["mode"], 8))
    st = os.stat(path)
    if (st.st_uid, st.st_gid) != (entry["uid"], entry["gid"]):
        try:
            os.chown(path, entry["uid"], entry["gid"])
        except PermissionError:
            pass

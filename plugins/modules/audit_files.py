#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) tlsops.tikv maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: audit_files
short_description: Write an audit's report files and record its probe window, on the controller, in one step
version_added: 0.1.0
description:
  - The record an audit keeps on the controller (delegate it to C(localhost)), written in one module run
    instead of a directory and a copy task per file.
  - Writes each of O(files) whole into O(dir) (the report, for example C(verify.json) and C(verify.md)),
    creating the directory (mode 0755) when it is missing.
  - Appends O(window) (the time the audit's own probes made the servers log TLS errors on purpose) to the
    JSON list in O(windows_path), keeping the last O(keep_windows); the file (mode 0600) and its directory
    (mode 0700) are created when missing. Anything but a list in the file starts the list afresh. The
    C(tlsops.tikv.verify) role's log scan of a later audit leaves those windows out.
  - Every file is written to a temporary file beside it and renamed into place, so a reader never sees half
    of one.
author:
  - tlsops.tikv maintainers (@tlsops)
attributes:
  check_mode:
    support: full
    description: Says what would be written and writes nothing.
  diff_mode:
    support: none
    description: The files are the audit's output, not configuration; no diff is returned.
  idempotent:
    support: partial
    description: The same O(files) again change nothing; a O(window) is appended on every run.
  platform:
    description: Target OS/families that can be operated against.
    support: full
    platforms: posix
options:
  dir:
    description: Directory of O(files). Required with O(files).
    type: path
  files:
    description: The files to write in O(dir), each whole.
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: File name inside O(dir) (no directory part).
        type: str
        required: true
      content:
        description: The text to write.
        type: str
        required: true
      mode:
        description: File mode.
        type: str
        default: "0644"
  windows_path:
    description: The JSON file holding the probe windows. Required with O(window).
    type: path
  window:
    description: The window to append, with C(since) and C(until) (ISO 8601 UTC times).
    type: dict
  keep_windows:
    description: How many windows the file keeps (the newest).
    type: int
    default: 50
"""

EXAMPLES = r"""
- name: Write the report and record when the audit probed
  tlsops.tikv.audit_files:
    dir: /home/ops/tikv-tls-report
    files:
      - name: verify.json
        content: "{{ report | to_nice_json }}"
      - name: verify.md
        content: "{{ report | tlsops.tikv.verify_markdown }}"
    windows_path: /home/ops/.tlsops-tikv/tikv/audit_probes.json
    window:
      since: "2026-12-07T12:00:00Z"
      until: "2026-12-07T12:00:09Z"
  delegate_to: localhost
  run_once: true
"""

RETURN = r"""
written:
  description: The files that were (or in check mode would be) written because their content or mode differed.
  returned: always
  type: list
  elements: str
  sample: [/home/ops/tikv-tls-report/verify.json]
windows:
  description: How many windows the record holds afterwards; null without O(window).
  returned: always
  type: int
  sample: 12
"""

import json
import os
import re
import tempfile

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_bytes

ISO_UTC = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$")


def _read(path):
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except (IOError, OSError):
        return None


def _mode(path):
    try:
        return os.stat(path).st_mode & 0o7777
    except (IOError, OSError):
        return None


def _write(module, path, data, mode):
    directory = os.path.dirname(path)
    handle, tmp = tempfile.mkstemp(prefix=".%s." % os.path.basename(path), dir=directory)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, mode)
        os.rename(tmp, path)
    except (IOError, OSError) as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        module.fail_json(msg="cannot write %s: %s" % (path, exc))


def _ensure_dir(module, path, mode):
    if os.path.isdir(path):
        return
    try:
        os.makedirs(path, mode)
    except (IOError, OSError) as exc:
        module.fail_json(msg="cannot create the directory %s: %s" % (path, exc))


def windows_after(recorded, window, keep):
    """The record with ``window`` appended, the last ``keep`` kept; what is not a list starts afresh."""
    try:
        current = json.loads(recorded.decode("utf-8")) if recorded else []
    except ValueError:
        current = []
    if not isinstance(current, list):
        current = []
    return (current + [window])[-keep:]


def main():
    module = AnsibleModule(
        argument_spec=dict(
            dir=dict(type="path"),
            files=dict(type="list", elements="dict", default=[], options=dict(
                name=dict(type="str", required=True),
                content=dict(type="str", required=True),
                mode=dict(type="str", default="0644"),
            )),
            windows_path=dict(type="path"),
            window=dict(type="dict"),
            keep_windows=dict(type="int", default=50),
        ),
        required_by=dict(window="windows_path"),
        supports_check_mode=True,
    )
    params = module.params
    if params["files"] and not params["dir"]:
        module.fail_json(msg="files need dir, the directory to write them in")
    plan = []
    for item in params["files"]:
        if not item["name"] or os.path.basename(item["name"]) != item["name"] or item["name"] in (".", ".."):
            module.fail_json(msg="files: %r is not a file name (no directory part)" % item["name"])
        try:
            mode = int(item["mode"], 8)
        except ValueError:
            module.fail_json(msg="files: %s: mode %r is not an octal mode" % (item["name"], item["mode"]))
        plan.append((os.path.join(params["dir"], item["name"]), to_bytes(item["content"]), mode))
    window = params["window"]
    if window is not None:
        if set(window) != set(("since", "until")) or not all(ISO_UTC.match(str(window[k])) for k in window):
            module.fail_json(msg="window must have since and until, ISO 8601 UTC times like 2026-12-07T12:00:00Z; got %r"
                             % (window,))
        if params["keep_windows"] < 1:
            module.fail_json(msg="keep_windows must be at least 1, got %d" % params["keep_windows"])

    written = [path for path, data, mode in plan if _read(path) != data or _mode(path) != mode]
    kept = None
    if window is not None:
        windows = windows_after(_read(params["windows_path"]), dict(since=str(window["since"]), until=str(window["until"])),
                                params["keep_windows"])
        kept = len(windows)
        if not module.check_mode:
            _ensure_dir(module, os.path.dirname(params["windows_path"]) or ".", 0o700)
            _write(module, params["windows_path"], to_bytes(json.dumps(windows, indent=4) + "\n"), 0o600)
    if plan and not module.check_mode:
        _ensure_dir(module, params["dir"], 0o755)
        for path, data, mode in plan:
            if path in written:
                _write(module, path, data, mode)
    module.exit_json(changed=bool(written) or window is not None, written=written, windows=kept)


if __name__ == "__main__":
    main()

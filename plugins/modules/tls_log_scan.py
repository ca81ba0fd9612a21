#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: tlsops.tikv contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function

DOCUMENTATION = r"""
---
module: tls_log_scan
short_description: Count TLS errors in TiKV, PD and etcd log files since a given time
version_added: 0.1.0
description:
  - Reads log files on the host it runs on and counts, per pattern, the lines dated between O(since)
    and O(until) that match it. Returns the counts, the last few matching lines of each pattern and
    what was read from each file.
  - The default patterns find the TLS errors TiKV, PD, etcd, gRPC and Go log when a certificate, a CA,
    a name or an allow-list is wrong (C(x509:), C(unknown authority), C(bad certificate),
    C(certificate has expired), C(Common name check fail), ...) and the refused clients that any client
    can cause (no client certificate, plaintext on a TLS port, an old protocol version). RV(errors)
    adds up the first kind only (O(error_patterns)).
  - Knows the timestamps of TiKV's and PD's unified log format, etcd's JSON (zap) and capnslog lines,
    Go's standard log (PD's stderr) and gRPC-core's glog lines (TiKV's stderr). A line without a
    timestamp (a continuation) belongs to the last dated line before it.
  - Health endpoints can say a cluster is fine while its members log certificate errors in a loop
    (for example during a PD peer URL migration done in the wrong order); this module reads what the
    instances themselves say.
  - Read-only; never reports a change. Files that do not exist are reported, not an error.
author:
  - tlsops.tikv maintainers (@tlsops)
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
    details: The module only reads; it scans the same in check mode.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: none
  idempotent:
    description: When run twice in a row outside check mode, with the same arguments, the second invocation indicates no change.
    support: full
  platform:
    description: Target OS/families that can be operated against.
    support: full
    platforms: posix
options:
  paths:
    description:
      - Log files to read, for example C(<deploy_dir>/log/tikv.log) and C(<deploy_dir>/log/tikv_stderr.log).
      - Rotated files (C(tikv-2026-11-24T15-00-00.000.log)) are only read when listed.
    type: list
    elements: path
    required: true
  since:
    description:
      - Count lines from this time on. A duration back from now on the host's clock (V(10m), V(2h),
        V(90s), V(1d)), Unix seconds, or an ISO 8601 date-time (V(2026-11-24T15:00:00Z); without a zone
        the host's local time).
      - Omit to read the whole files.
    type: str
  until:
    description:
      - Count lines up to this time (same forms as O(since)). Omit for "up to now".
      - Give the time a probe run started to leave out the errors the probes themselves cause.
    type: str
  skip_windows:
    description:
      - Time windows whose lines are not counted, each with C(since) and C(until) in the forms of O(since).
      - The verify role passes the windows of its earlier audits' probes (a client without a certificate,
        a certificate of a foreign CA ...), which make the servers log TLS errors on purpose.
    type: list
    elements: dict
    default: []
  patterns:
    description:
      - Patterns to count, name to Python regular expression, matched case-insensitively anywhere in a
        line. Replaces the default set (see RV(patterns)).
    type: dict
  error_patterns:
    description:
      - Names of the patterns whose matches count as errors in RV(errors) and RV(error_lines).
      - The default names the patterns that mean a wrong certificate, CA, name or allow-list
        (V(unknown_authority), V(bad_certificate), V(expired_certificate), V(name_mismatch),
        V(cn_check_failed), V(x509)), not the refused clients that any client can cause.
    type: list
    elements: str
  samples:
    description: How many of the most recent matching lines to return per pattern (each cut to 300 characters).
    type: int
    default: 3
  fail_on_errors:
    description: Fail when RV(errors) is above zero (the counts are returned either way).
    type: bool
    default: false
notes:
  - Log lines can contain addresses and certificate subjects; they never contain key material, but
    consider O(samples=0) when the output is kept somewhere public.
  - Files larger than 4 MiB are bisected on their timestamps to skip what lies before O(since).
seealso:
  - module: tlsops.tikv.pd_peer_links
  - module: tlsops.tikv.tls_handshake
"""

EXAMPLES = r"""
- name: Count TLS errors a TiKV logged in the last 10 minutes
  tlsops.tikv.tls_log_scan:
    paths:
      - /tidb-deploy/tikv-20160/log/tikv.log
      - /tidb-deploy/tikv-20160/log/tikv_stderr.log
    since: 10m
  register: tikv_log_tls

- name: Show the counts per pattern
  ansible.builtin.debug:
    msg: "{{ tikv_log_tls.errors }} TLS errors: {{ tikv_log_tls.counts }}"

- name: Refuse to go on if a PD logged certificate errors since the restart
  tlsops.tikv.tls_log_scan:
    paths: [/tidb-deploy/pd-2379/log/pd.log, /tidb-deploy/pd-2379/log/pd_stderr.log]
    since: "2026-11-24T15:00:00Z"
    fail_on_errors: true
"""

RETURN = r"""
counts:
  description: Matching lines per pattern name (a line can match several patterns).
  returned: always
  type: dict
  sample: {"unknown_authority": 12, "bad_certificate": 12, "x509": 12, "handshake_failure": 12,
           "missing_client_cert": 0, "plaintext_on_tls_port": 0, "old_protocol": 0,
           "expired_certificate": 0, "name_mismatch": 0, "cn_check_failed": 0}
errors:
  description: Lines that match at least one of O(error_patterns).
  returned: always
  type: int
  sample: 12
error_lines:
  description: The most recent lines (up to O(samples)) that match one of O(error_patterns), newest last.
  returned: always
  type: list
  elements: dict
  contains:
    path:
      description: The file.
      type: str
      returned: always
    line:
      description: Line number in the file; null when the file was bisected (the count starts mid-file).
      type: int
      returned: always
    time:
      description: Time of the line (ISO 8601, UTC).
      type: str
      returned: always
    text:
      description: The line, cut to 300 characters.
      type: str
      returned: always
    patterns:
      description: Names of the patterns the line matched.
      type: list
      elements: str
      returned: always
matched_lines:
  description: Lines that match at least one pattern.
  returned: always
  type: int
  sample: 30
samples:
  description: Per pattern name, the most recent matching lines (up to O(samples)), as in RV(error_lines).
  returned: always
  type: dict
files:
  description: What was read from each file of O(paths).
  returned: always
  type: list
  elements: dict
  contains:
    path:
      description: The file.
      type: str
      returned: always
    exists:
      description: Whether it exists.
      type: bool
      returned: always
    lines_scanned:
      description: Lines dated inside the window.
      type: int
      returned: always
    skipped_lines:
      description: Lines inside O(skip_windows), not counted.
      type: int
      returned: always
    undated_lines:
      description: Lines before the first dated line that were read (not counted).
      type: int
      returned: always
    matched_lines:
      description: Lines of this file that match at least one pattern.
      type: int
      returned: always
    first_time:
      description: Time of the first line inside the window (ISO 8601, UTC); null when none.
      type: str
      returned: always
    last_time:
      description: Time of the last line inside the window; null when none.
      type: str
      returned: always
    start_offset:
      description: Byte offset the reading started at (above 0 when the file was bisected).
      type: int
      returned: always
    error:
      description: Why the file could not be read; null when it was.
      type: str
      returned: always
since:
  description: Start of the window (ISO 8601, UTC); null when the files were read from the top.
  returned: always
  type: str
  sample: "2026-11-24T15:00:00.000Z"
until:
  description: End of the window (ISO 8601, UTC); the host's time of the scan when O(until) was not given.
  returned: always
  type: str
  sample: "2026-11-24T15:10:00.000Z"
patterns:
  description: The patterns used, name to regular expression.
  returned: always
  type: dict
"""

import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.tlsops.tikv.plugins.module_utils import _log_scan


def main():
    module = AnsibleModule(
        argument_spec=dict(
            paths=dict(type="list", elements="path", required=True),
            since=dict(type="str"),
            until=dict(type="str"),
            skip_windows=dict(type="list", elements="dict", default=[]),
            patterns=dict(type="dict"),
            error_patterns=dict(type="list", elements="str"),
            samples=dict(type="int", default=3),
            fail_on_errors=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )
    params = module.params
    now = time.time()
    try:
        since = _log_scan.parse_time_spec(params["since"], now)
        until = _log_scan.parse_time_spec(params["until"], now)
        skip = []
        for window in params["skip_windows"]:
            if not window.get("since") or not window.get("until"):
                module.fail_json(msg="every skip_windows item needs since and until, got %r" % (window,))
            skip.append((_log_scan.parse_time_spec(window["since"], now), _log_scan.parse_time_spec(window["until"], now)))
    except _log_scan.TimeSpecError as exc:
        module.fail_json(msg=str(exc))
    patterns = params["patterns"] or dict(_log_scan.DEFAULT_PATTERNS)
    for name, expression in patterns.items():
        if not isinstance(expression, str):
            module.fail_json(msg="patterns.%s must be a regular expression string, got %r" % (name, expression))
    error_patterns = params["error_patterns"]
    if error_patterns is None:
        error_patterns = [name for name in _log_scan.ERROR_PATTERNS if name in patterns]
    unknown = [name for name in error_patterns if name not in patterns]
    if unknown:
        module.fail_json(msg="error_patterns names %s, which are not in patterns (%s)"
                             % (", ".join(unknown), ", ".join(sorted(patterns))))
    if params["samples"] < 0:
        module.fail_json(msg="samples must be 0 or more, got %d" % params["samples"])
    try:
        scanned = _log_scan.scan_files(params["paths"], since=since, until=until, patterns=patterns,
                                       samples=params["samples"], now=now, error_patterns=error_patterns,
                                       skip=skip)
    except ValueError as exc:
        module.fail_json(msg=str(exc))
    errors = scanned["errors"]

    result = dict(
        changed=False,
        counts=scanned["counts"],
        errors=errors,
        error_lines=scanned["error_samples"],
        matched_lines=scanned["matched_lines"],
        samples=scanned["samples"],
        files=scanned["files"],
        since=_log_scan.iso_utc(since),
        until=_log_scan.iso_utc(until if until is not None else now),
        patterns=patterns,
    )
    unreadable = [f["error"] for f in scanned["files"] if f["error"]]
    if unreadable:
        module.warn("; ".join(unreadable))
    if params["fail_on_errors"] and errors:
        module.fail_json(msg="%d TLS error line(s) in %s between %s and %s: %s" % (
            errors, ", ".join(params["paths"]), result["since"] or "the start", result["until"],
            "; ".join("%s=%d" % (n, scanned["counts"][n]) for n in error_patterns if scanned["counts"][n])),
            **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()

# -*- coding: utf-8 -*-
# Copyright (c) tlsops.tikv maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Filters ``expiry_report`` and ``expiry_textfile``: the expiry role's judgement and its Prometheus
textfile-collector file (documented in expiry_report.yml and expiry_textfile.yml)."""

from __future__ import annotations

import calendar
import datetime
import time

from ansible.errors import AnsibleFilterError

from ansible_collections.tlsops.tikv.plugins.module_utils._plain import plain

METRIC_NOT_AFTER = "tikv_tls_certificate_not_after_timestamp_seconds"
METRIC_READABLE = "tikv_tls_certificate_readable"
METRIC_LAST_RUN = "tikv_tls_expiry_check_timestamp_seconds"


def _timestamp(iso_time):
    """'2027-11-24T10:00:00Z' (how tls_handshake and cert_expiry write times) -> Unix seconds."""
    return calendar.timegm(datetime.datetime.strptime(iso_time, "%Y-%m-%dT%H:%M:%SZ").timetuple())


def _file_rows(instance, files):
    rows = []
    for cert in files.get("certificates") or []:
        rows.append({
            "instance": instance["name"], "component": instance["component"], "source": "file",
            "path": cert["path"], "index": cert["index"], "common_name": cert.get("common_name"),
            "serial": cert.get("serial"), "is_ca": bool(cert.get("is_ca")),
            "not_after": cert.get("not_after"), "not_after_timestamp": cert.get("not_after_timestamp"),
            "days_left": cert.get("days_left"), "error": None,
        })
    for path in files.get("missing") or []:
        rows.append({"instance": instance["name"], "component": instance["component"], "source": "file",
                     "path": path, "index": 0, "error": "the file does not exist"})
    # A file that exists but holds no readable certificate shows up only in problems.
    reported = set(cert["path"] for cert in files.get("certificates") or []) | set(files.get("missing") or [])
    for problem in files.get("problems") or []:
        for path in instance.get("paths") or []:
            if path not in reported and path in problem:
                rows.append({"instance": instance["name"], "component": instance["component"], "source": "file",
                             "path": path, "index": 0, "error": problem})
                reported.add(path)
    return rows


def _port_rows(instance, probes):
    rows = []
    for probe in probes:
        address = "%s:%s" % (instance["address"], probe["port"])
        cert = probe.get("peer_cert") or {}
        row = {"instance": instance["name"], "component": instance["component"], "source": "port",
               "path": address, "channel": probe["channel"], "index": 0}
        if cert.get("not_after"):
            row.update({"common_name": cert.get("subject_cn"), "serial": cert.get("serial"), "is_ca": False,
                        "not_after": cert["not_after"], "days_left": cert.get("days_left"),
                        "not_after_timestamp": _timestamp(cert["not_after"]), "error": None})
        elif probe.get("plaintext_refused") is False:
            row["error"] = "the port serves plaintext, not TLS"
        else:
            row["error"] = "no certificate could be read from the port: %s" % (
                "; ".join(probe.get("failures") or []) or "no TLS handshake")
        rows.append(row)
    return rows


def expiry_report(instances, settings=None):
    """Rows (one per certificate in a file, one per port) and the verdict.

    instances: per instance {'instance': instance model, 'paths': [...], 'files': cert_expiry result,
    'cert_path': the instance's leaf file, 'ports': [{'channel', 'port', 'peer_cert', 'failures',
    'plaintext_refused'}]}.
    settings: {'fail_days': int, 'warn_days': int}."""
    if not isinstance(instances, (list, tuple)):
        raise AnsibleFilterError("expiry_report: expected a list of per-instance results, got %s"
                                 % type(instances).__name__)
    settings = plain(settings or {})
    fail_days = int(settings.get("fail_days", 14))
    warn_days = int(settings.get("warn_days", 30))
    rows = []
    try:
        for entry in plain(list(instances)):
            instance = dict(entry["instance"], paths=entry.get("paths") or [])
            if entry.get("failed_host"):
                rows.append({"instance": instance["name"], "component": instance.get("component", ""),
                             "source": "host", "path": "-", "index": 0, "error": entry["failed_host"]})
                continue
            file_rows = _file_rows(instance, entry.get("files") or {})
            leaf = [row for row in file_rows if row.get("serial") and row["path"] == entry.get("cert_path")
                    and row["index"] == 0]
            for row in _port_rows(instance, entry.get("ports") or []):
                if row.get("serial") and leaf:
                    row["matches_file"] = row["serial"] == leaf[0]["serial"]
                rows.append(row)
            rows.extend(file_rows)
    except (KeyError, TypeError, ValueError) as exc:
        raise AnsibleFilterError("expiry_report: unexpected input: %s: %s" % (type(exc).__name__, exc))

    failures, warnings = [], []
    for row in rows:
        where = "%s %s %s" % (row["instance"], row["source"], row["path"])
        if row.get("error"):
            row["status"] = "error"
            failures.append("%s: %s" % (where, row["error"]))
        elif row["days_left"] < fail_days:
            row["status"] = "expired" if row["days_left"] < 0 else "critical"
            failures.append("%s: CN=%s serial %s expires %s (%d day(s) left, threshold %d); renew it "
                            "(tlsops.tikv.rotate_certs, or rotate_ca for a CA)" % (
                                where, row.get("common_name"), row.get("serial"), row["not_after"],
                                row["days_left"], fail_days))
        elif row["days_left"] < warn_days:
            row["status"] = "warning"
            warnings.append("%s: CN=%s expires %s (%d day(s) left)" % (
                where, row.get("common_name"), row["not_after"], row["days_left"]))
        else:
            row["status"] = "ok"
        if row.get("matches_file") is False:
            warnings.append("%s serves serial %s but the certificate file holds a newer one: the instance has not "
                            "reloaded it (a restart is pending)" % (where, row.get("serial")))
    dated = [row for row in rows if row.get("not_after_timestamp") is not None]
    soonest = min(dated, key=lambda row: row["not_after_timestamp"]) if dated else None
    return {
        "rows": rows, "failures": failures, "warnings": warnings, "soonest": soonest,
        "verdict": "fail" if failures else "pass", "fail_days": fail_days, "warn_days": warn_days,
        "checked_at": int(settings.get("now") or time.time()),
    }


def _label_value(value):
    """Prometheus text format: backslash, double quote and newline are escaped in label values."""
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(row, keys):
    return "{%s}" % ",".join('%s="%s"' % (key, _label_value(row.get(key) if row.get(key) is not None else ""))
                             for key in keys)


def expiry_textfile(report):
    """The report as a node_exporter textfile-collector file."""
    if not isinstance(report, dict) or "rows" not in report:
        raise AnsibleFilterError("expiry_textfile: expected the output of tlsops.tikv.expiry_report")
    report = plain(report)
    keys = ("instance", "component", "source", "path", "index")
    lines = [
        "# HELP %s When the certificate stops being valid (notAfter), Unix seconds." % METRIC_NOT_AFTER,
        "# TYPE %s gauge" % METRIC_NOT_AFTER,
    ]
    for row in report["rows"]:
        if row.get("not_after_timestamp") is not None:
            lines.append("%s%s %d" % (
                METRIC_NOT_AFTER,
                _labels(dict(row, ca="true" if row.get("is_ca") else "false", cn=row.get("common_name"),
                             serial=row.get("serial")), keys + ("cn", "serial", "ca")),
                int(row["not_after_timestamp"])))
    lines += [
        "# HELP %s Whether the last check could read the certificate (1) or not (0)." % METRIC_READABLE,
        "# TYPE %s gauge" % METRIC_READABLE,
    ]
    for row in report["rows"]:
        lines.append("%s%s %d" % (METRIC_READABLE, _labels(row, keys), 0 if row.get("error") else 1))
    lines += [
        "# HELP %s When the expiry check last ran, Unix seconds." % METRIC_LAST_RUN,
        "# TYPE %s gauge" % METRIC_LAST_RUN,
        "%s %d" % (METRIC_LAST_RUN, int(report["checked_at"])),
    ]
    return "\n".join(lines) + "\n"


class FilterModule(object):
    def filters(self):
        return {"expiry_report": expiry_report, "expiry_textfile": expiry_textfile}

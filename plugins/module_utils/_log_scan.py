# -*- coding: utf-8 -*-
# Copyright: tlsops.tikv contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Scan TiKV / PD / etcd log files for TLS errors since a point in time (private to the collection).

The logs of one instance mix several line formats, each with its own timestamp:

- TiKV / PD unified log: ``[2026/11/24 15:00:00.123 +08:00] [WARN] [file.rs:12] ["message"] ...``
- etcd zap JSON (etcd 3.5, and PD's stderr): ``{"level":"warn","ts":"2026-11-24T15:00:00.123Z",...}``
  or ``"ts":1795536982.13`` (Unix seconds)
- etcd 3.4 capnslog: ``2026-11-24 15:00:00.123456 W | rafthttp: ...`` (host local time)
- Go's standard ``log`` (net/http's ``http: TLS handshake error from ...`` on PD's stderr):
  ``2026/11/24 15:00:00 http: ...`` (host local time)
- gRPC-core / glog (TiKV's stderr): ``I1124 15:00:00.123456  1089 file.cc:12] ...`` (host local
  time, no year: the most recent year that does not put the line in the future)
- any line starting with an ISO 8601 time.

A line without a timestamp (a continuation, a stack trace) belongs to the last dated line before it;
lines before the first dated line of a file are not counted (``undated_lines`` says how many).

Python 3.8+ and the standard library only: this runs on the managed hosts.
"""

from __future__ import absolute_import, division, print_function

import datetime
import os
import re
import time

# Patterns, by name, searched case-insensitively in every line. A line may match several.
# The first group are errors that mean a certificate or a CA is wrong somewhere; the second group
# are refused clients (no certificate, plaintext, an old protocol) that any client, including the
# verify role's own negative probes, can cause.
DEFAULT_PATTERNS = (
    ("unknown_authority", r"unknown (certificate )?authority|\bunknown[ _]ca\b|unable to get (local )?issuer "
                          r"certificate|self[- ]signed certificate in certificate chain"),
    ("bad_certificate", r"bad[ _]certificate|certificate verify failed|certificate_verify_failed|"
                        r"certificate[ _]unknown|unsupported[ _]certificate"),
    ("expired_certificate", r"certificate has expired|certificate[ _]expired|certificate is not yet valid|"
                            r"certificate not yet valid"),
    ("name_mismatch", r"certificate is valid for|certificate is not valid for|doesn't contain any IP SANs|"
                      r"hostname mismatch|ip address mismatch"),
    ("cn_check_failed", r"common name check fail|cn check failed"),
    ("x509", r"\bx509:"),
    ("scheme_mismatch", r"server gave http response to https client"),
    # This instance failed to reach another one over TLS (etcd's peer dialer and prober, TiKV's raft
    # client and PD heartbeats): the line names the cause within a few hundred characters.
    ("outgoing_tls_failure", r"(prober detected unhealthy|failed to dial|failed to get version|lost tcp streaming "
                             r"connection|connection abort|failed to send heartbeat|failed to connect)"
                             r".{0,400}(tls|ssl|x509|certificate|handshake|first record)"),
    ("handshake_failure", r"handshake (failure|failed|error)|tls handshake|handshake_failure"),
    ("missing_client_cert", r"didn't provide a certificate|peer_did_not_return_a_certificate|"
                            r"peer did not return a certificate|certificate required|certificate_required"),
    ("plaintext_on_tls_port", r"first record does not look like a tls handshake|\bhttp_request\b|"
                              r"wrong[ _]version[ _]number"),
    ("old_protocol", r"unsupported versions|unsupported[ _]protocol|protocol version not supported|"
                     r"alert[ _]protocol[ _]version"),
)

# The names above that mean a wrong certificate, CA, name or allow-list (not just a refused client).
ERROR_PATTERNS = ("unknown_authority", "bad_certificate", "expired_certificate", "name_mismatch",
                  "cn_check_failed", "x509", "scheme_mismatch", "outgoing_tls_failure")

SAMPLE_TEXT_LIMIT = 300
# Files bigger than this are bisected to find where O(since) starts instead of read from the top.
BISECT_MIN_BYTES = 4 * 1024 * 1024

_UNIFIED = re.compile(r"^\[(\d{4})/(\d{2})/(\d{2}) (\d{2}):(\d{2}):(\d{2})(?:\.(\d+))? ?([+-]\d{2}):?(\d{2})\]")
_JSON_TS_TEXT = re.compile(r'"ts"\s*:\s*"([^"]+)"')
_JSON_TS_NUM = re.compile(r'"ts"\s*:\s*(\d+(?:\.\d+)?)')
_CAPNSLOG = re.compile(r"^(\d{4})-(\d{2})-(\d{2}) (\d{2}):(\d{2}):(\d{2})(?:\.(\d+))? [DINWECP] \| ")
_GOLOG = re.compile(r"^(\d{4})/(\d{2})/(\d{2}) (\d{2}):(\d{2}):(\d{2})(?:\.(\d+))? ")
_GLOG = re.compile(r"^[IWEF](\d{2})(\d{2}) (\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?\s+\d+ ")
_ISO_START = re.compile(r"^(\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:[.,]\d+)?(?:Z|[+-]\d{2}:?\d{2})?)\b")
_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|secs|seconds?|m|min|mins|minutes?|h|hours?|d|days?)\s*$", re.I)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class TimeSpecError(ValueError):
    """A time given by the user that cannot be understood."""


def _fraction(text):
    return float("0." + text) if text else 0.0


def _local_epoch(year, month, day, hour, minute, second, frac=0.0):
    """Seconds since the epoch of a wall-clock time in the host's local time zone."""
    return time.mktime((year, month, day, hour, minute, second, 0, 0, -1)) + frac


def _aware_epoch(year, month, day, hour, minute, second, frac, offset_seconds):
    base = datetime.datetime(year, month, day, hour, minute, second, tzinfo=datetime.timezone.utc)
    return (base - datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)).total_seconds() + frac - offset_seconds


def parse_iso(text):
    """ISO 8601 date-time -> epoch seconds; without a zone it is host local time. None if not ISO."""
    text = text.strip()
    m = re.match(r"^(\d{4})[-/](\d{2})[-/](\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d+))?)?)?"
                 r"\s*(Z|[+-]\d{2}:?\d{2})?$", text)
    if not m:
        return None
    year, month, day = int(m.group(1)), int(m.group(2)), int(m.group(3))
    hour, minute = int(m.group(4) or 0), int(m.group(5) or 0)
    second, frac = int(m.group(6) or 0), _fraction(m.group(7))
    zone = m.group(8)
    try:
        if zone is None:
            return _local_epoch(year, month, day, hour, minute, second, frac)
        if zone == "Z":
            offset = 0
        else:
            sign = -1 if zone[0] == "-" else 1
            digits = zone[1:].replace(":", "")
            offset = sign * (int(digits[:2]) * 3600 + int(digits[2:4]) * 60)
        return _aware_epoch(year, month, day, hour, minute, second, frac, offset)
    except (ValueError, OverflowError):
        return None


def parse_time_spec(spec, now=None):
    """The user's O(since)/O(until): a duration back from now (``10m``, ``2h``, ``90s``, ``1d``),
    Unix seconds, or an ISO 8601 date-time (host local time without a zone). Returns epoch seconds."""
    now = time.time() if now is None else now
    if spec is None:
        return None
    if isinstance(spec, (int, float)) and not isinstance(spec, bool):
        return float(spec)
    text = str(spec).strip()
    if not text:
        return None
    m = _RELATIVE.match(text)
    if m:
        return now - float(m.group(1)) * _UNIT_SECONDS[m.group(2)[0].lower()]
    if re.match(r"^\d+(\.\d+)?$", text):
        return float(text)
    epoch = parse_iso(text)
    if epoch is None:
        raise TimeSpecError("%r is not a time: give a duration back from now (10m, 2h, 1d), Unix seconds "
                            "or an ISO 8601 date-time such as 2026-11-24T15:00:00Z" % (spec,))
    return epoch


def iso_utc(epoch):
    if epoch is None:
        return None
    stamp = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc) + datetime.timedelta(seconds=epoch)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (stamp.microsecond // 1000)


def line_time(line, now=None):
    """Epoch seconds of a log line's own timestamp, or None when it has none we know."""
    m = _UNIFIED.match(line)
    if m:
        g = m.groups()
        sign = -1 if g[7].startswith("-") else 1
        offset = sign * (abs(int(g[7])) * 3600 + int(g[8]) * 60)
        try:
            return _aware_epoch(int(g[0]), int(g[1]), int(g[2]), int(g[3]), int(g[4]), int(g[5]),
                                _fraction(g[6]), offset)
        except ValueError:
            return None
    if line.startswith("{"):
        m = _JSON_TS_TEXT.search(line)
        if m:
            return parse_iso(m.group(1))
        m = _JSON_TS_NUM.search(line)
        if m:
            return float(m.group(1))
        return None
    for pattern in (_CAPNSLOG, _GOLOG):
        m = pattern.match(line)
        if m:
            g = m.groups()
            try:
                return _local_epoch(int(g[0]), int(g[1]), int(g[2]), int(g[3]), int(g[4]), int(g[5]), _fraction(g[6]))
            except (ValueError, OverflowError):
                return None
    m = _GLOG.match(line)
    if m:
        g = m.groups()
        now = time.time() if now is None else now
        year = time.localtime(now).tm_year
        try:
            stamp = _local_epoch(year, int(g[0]), int(g[1]), int(g[2]), int(g[3]), int(g[4]), _fraction(g[5]))
            if stamp > now + 86400:  # December's lines read in January
                stamp = _local_epoch(year - 1, int(g[0]), int(g[1]), int(g[2]), int(g[3]), int(g[4]),
                                     _fraction(g[5]))
            return stamp
        except (ValueError, OverflowError):
            return None
    m = _ISO_START.match(line)
    if m:
        return parse_iso(m.group(1).replace(",", "."))
    return None


def compile_patterns(patterns=None):
    """[(name, compiled)] from a mapping or pairs; raises ValueError naming a bad expression."""
    items = patterns.items() if isinstance(patterns, dict) else (patterns or DEFAULT_PATTERNS)
    compiled = []
    for name, expression in items:
        try:
            compiled.append((name, re.compile(expression, re.I)))
        except re.error as exc:
            raise ValueError("pattern %s: %r is not a valid regular expression: %s" % (name, expression, exc))
    return compiled


def _first_dated_time(fh, offset, now, max_lines=200):
    """Time of the first dated line that starts after ``offset`` (None if none within max_lines)."""
    fh.seek(offset)
    if offset:
        fh.readline()  # the rest of a line cut in the middle
    for _count in range(max_lines):
        raw = fh.readline()
        if not raw:
            return None
        stamp = line_time(raw.decode("utf-8", "replace"), now)
        if stamp is not None:
            return stamp
    return None


def start_offset(fh, size, since, now):
    """A byte offset at or before the first line at ``since`` (bisection on dated lines). Lines
    are not strictly ordered (etcd and the server write in parallel), so the scan that follows still
    checks every line's time; this only saves reading hours of older log."""
    if since is None or size < BISECT_MIN_BYTES:
        return 0
    low, high = 0, size
    while high - low > 65536:
        middle = (low + high) // 2
        stamp = _first_dated_time(fh, middle, now)
        if stamp is None or stamp >= since - 60:  # a minute of slack for unordered lines
            high = middle
        else:
            low = middle
    if low == 0:
        return 0
    fh.seek(low)
    fh.readline()
    return fh.tell()


class ScanResult(object):
    def __init__(self, names, error_names):
        self.counts = dict((name, 0) for name in names)
        self.samples = dict((name, []) for name in names)
        self.error_names = set(error_names)
        self.errors = 0
        self.error_samples = []
        self.matched_lines = 0
        self.files = []


def _keep(kept, sample, limit):
    if limit > 0:
        kept.append(sample)
        if len(kept) > limit:
            del kept[0]


def scan_files(paths, since=None, until=None, patterns=None, samples=3, now=None, error_patterns=ERROR_PATTERNS,
               skip=None):
    """Count, per pattern, the lines of ``paths`` dated in [since, until] that match it.
    ``skip`` is a list of (start, end) times (epoch seconds) whose lines are not counted.

    Returns a dict: counts, matched_lines, samples (per pattern, the last ``samples`` matching lines
    with path, line number, time and text), errors (lines matching at least one of
    ``error_patterns``) with error_samples (the last ``samples`` of them), files (per path: exists,
    lines_scanned, undated_lines, first_time, last_time, error)."""
    now = time.time() if now is None else now
    compiled = compile_patterns(patterns)
    names = [name for name, _regex in compiled]
    result = ScanResult(names, [name for name in error_patterns if name in names])
    for path in paths:
        info = dict(path=path, exists=os.path.exists(path), lines_scanned=0, skipped_lines=0, undated_lines=0,
                    matched_lines=0, first_time=None, last_time=None, start_offset=0, error=None)
        result.files.append(info)
        if not info["exists"]:
            continue
        try:
            _scan_one(path, info, result, compiled, since, until, samples, now, skip or [])
        except (IOError, OSError) as exc:
            info["error"] = "cannot read %s: %s" % (path, exc.strerror or exc)
    return dict(counts=result.counts, matched_lines=result.matched_lines, samples=result.samples,
                errors=result.errors, error_samples=result.error_samples, files=result.files)


def _scan_one(path, info, result, compiled, since, until, samples, now, skip):
    size = os.path.getsize(path)
    with open(path, "rb") as fh:
        offset = start_offset(fh, size, since, now)
        info["start_offset"] = offset
        fh.seek(offset)
        line_no = None if offset else 0
        current = None
        for raw in fh:
            if line_no is not None:
                line_no += 1
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            stamp = line_time(line, now)
            if stamp is not None:
                current = stamp
            if current is None:
                info["undated_lines"] += 1
                continue
            if since is not None and current < since:
                continue
            if until is not None and current > until:
                continue
            if any(start <= current <= end for start, end in skip):
                info["skipped_lines"] += 1
                continue
            info["lines_scanned"] += 1
            if info["first_time"] is None:
                info["first_time"] = iso_utc(current)
            info["last_time"] = iso_utc(current)
            hits = [name for name, regex in compiled if regex.search(line)]
            if not hits:
                continue
            info["matched_lines"] += 1
            result.matched_lines += 1
            text = line if len(line) <= SAMPLE_TEXT_LIMIT else line[:SAMPLE_TEXT_LIMIT] + "..."
            sample = dict(path=path, line=line_no, time=iso_utc(current), text=text, patterns=hits)
            for name in hits:
                result.counts[name] += 1
                _keep(result.samples[name], sample, samples)
            if result.error_names.intersection(hits):
                result.errors += 1
                _keep(result.error_samples, sample, samples)

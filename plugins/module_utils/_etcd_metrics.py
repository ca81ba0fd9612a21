# -*- coding: utf-8 -*-
# Copyright: tlsops.tikv contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""etcd's peer (raft) link metrics, as PD serves them on its client port's /metrics (private).

What etcd 3.4/3.5 exposes about the links to the other members (rafthttp), by member ID in hex:

- ``etcd_network_active_peers{Local,Remote}`` gauge: 1 while the link to Remote is active (a stream
  or pipeline to it works), 0 after it went inactive; absent if it never was active.
- ``etcd_network_disconnected_peers_total{Local,Remote}`` counter: times the link went inactive.
- ``etcd_network_peer_sent_failures_total{To}`` / ``etcd_network_peer_received_failures_total{From}``
  counters: messages that could not be sent to / read from that member.
- ``etcd_network_peer_round_trip_time_seconds{To}`` histogram (the prober's round trips).
- ``etcd_server_has_leader`` gauge.

A link is judged from two readings a few seconds apart: active in both, and no new send failure or
disconnection in between. Counters alone would blame a link for a failure it had hours ago (a
restart); the gauge alone can miss a link that flaps (one stream works, the other fails its TLS
handshake over and over, which is what a peer-URL migration done in the wrong order looks like).
"""

from __future__ import absolute_import, division, print_function

import math
import re

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)(?:\s+-?\d+)?\s*$")
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?')


def _unescape(value):
    return value.replace('\\"', '"').replace("\\n", "\n").replace("\\\\", "\\")


def _number(text):
    lowered = text.lower()
    if lowered in ("+inf", "inf"):
        return math.inf
    if lowered == "-inf":
        return -math.inf
    if lowered == "nan":
        return math.nan
    return float(text)


def parse_prometheus(text):
    """Prometheus text exposition -> [(name, {label: value}, float)]; comments and bad lines skipped."""
    samples = []
    for line in (text or "").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if not m:
            continue
        labels = {}
        if m.group(3):
            for lm in _LABEL.finditer(m.group(3)):
                labels[lm.group(1)] = _unescape(lm.group(2))
        try:
            value = _number(m.group(4))
        except ValueError:
            continue
        samples.append((m.group(1), labels, value))
    return samples


def member_hex(member_id):
    """etcd member ID (decimal string or int, as the JSON gateway and PD give it) -> etcd's hex form."""
    return "%x" % int(member_id)


class Reading(object):
    """One /metrics reading, indexed for the peer-link questions."""

    def __init__(self, text):
        self.samples = parse_prometheus(text)

    def value(self, name, **labels):
        """Sum of the samples of ``name`` whose labels include ``labels`` (None when none match)."""
        found = None
        for sample_name, sample_labels, value in self.samples:
            if sample_name != name:
                continue
            if all(sample_labels.get(k) == v for k, v in labels.items()):
                found = (found or 0.0) + value
        return found

    def has_metric(self, name):
        return any(sample_name == name for sample_name, _labels, _value in self.samples)

    def local_ids(self):
        return sorted(set(labels.get("Local") for name, labels, _v in self.samples
                          if name == "etcd_network_active_peers" and labels.get("Local")))


def _delta(after, before):
    if after is None:
        return None
    return after - (before or 0.0)


def peer_links(first, second, local_id, members, interval, local_name=None):
    """Judge the link from ``local_id`` to every other member.

    first, second: Reading (``second`` taken ``interval`` seconds after ``first``; may be the same
    reading when only one was taken). members: [{"id": hex, "name": str, "peer_urls": [...]}].
    Returns (links, problems): one dict per remote member, one text per broken link."""
    links, problems = [], []
    for member in members:
        remote = member["id"]
        if remote == local_id:
            continue
        active_before = first.value("etcd_network_active_peers", Remote=remote)
        active_after = second.value("etcd_network_active_peers", Remote=remote)
        sent_total = second.value("etcd_network_peer_sent_failures_total", To=remote)
        received_total = second.value("etcd_network_peer_received_failures_total", From=remote)
        disconnected_total = second.value("etcd_network_disconnected_peers_total", Remote=remote)
        sent_new = _delta(sent_total, first.value("etcd_network_peer_sent_failures_total", To=remote))
        received_new = _delta(received_total, first.value("etcd_network_peer_received_failures_total", From=remote))
        disconnected_new = _delta(disconnected_total,
                                  first.value("etcd_network_disconnected_peers_total", Remote=remote))
        rtt_sum = second.value("etcd_network_peer_round_trip_time_seconds_sum", To=remote)
        rtt_count = second.value("etcd_network_peer_round_trip_time_seconds_count", To=remote)
        rtt_ms = None
        if rtt_sum is not None and rtt_count:
            rtt_ms = round(rtt_sum / rtt_count * 1000.0, 3)
        reasons = []
        if not active_after:
            reasons.append("not active now" if active_after is not None
                           else "never became active (no etcd_network_active_peers sample)")
        elif not active_before:
            reasons.append("became active only during the %gs between the two readings" % interval)
        if sent_new:
            reasons.append("%d message(s) to it failed in the last %gs" % (sent_new, interval))
        if disconnected_new:
            reasons.append("went inactive %d time(s) in the last %gs" % (disconnected_new, interval))
        if received_new:
            reasons.append("%d read(s) from it failed in the last %gs" % (received_new, interval))
        link = dict(
            remote_id=remote,
            remote_name=member.get("name"),
            remote_peer_urls=list(member.get("peer_urls") or []),
            active=bool(active_after) and bool(active_before),
            sent_failures_total=_int(sent_total),
            received_failures_total=_int(received_total),
            disconnected_total=_int(disconnected_total),
            sent_failures_new=_int(sent_new),
            received_failures_new=_int(received_new),
            disconnected_new=_int(disconnected_new),
            round_trip_ms=rtt_ms,
            ok=not reasons,
            problem="; ".join(reasons) or None,
        )
        links.append(link)
        if reasons:
            problems.append("link %s -> %s (%s): %s" % (
                local_name or local_id, member.get("name") or remote,
                ", ".join(link["remote_peer_urls"]) or "no peer URL", "; ".join(reasons)))
    return links, problems


def _int(value):
    if value is None or (isinstance(value, float) and (math.isnan(value) or math.isinf(value))):
        return None
    return int(value)

"""_etcd_metrics: Prometheus text and the peer-link verdict from two readings."""

from __future__ import annotations

import math

from ansible_collections.tlsops.tikv.plugins.module_utils._etcd_metrics import (
    Reading,
    member_hex,
    parse_prometheus,
    peer_links,
)

LOCAL, B, C = "9b8f130d65c67aa1", "34953a4aa11a90f1", "a8ba8deecf5330da"
MEMBERS = [dict(id=LOCAL, name="pd1", peer_urls=["https://10.0.0.1:2380"]),
           dict(id=B, name="pd2", peer_urls=["https://10.0.0.2:2380"]),
           dict(id=C, name="pd3", peer_urls=["https://10.0.0.3:2380"])]


def metrics(active_b=1, active_c=1, sent_c=None, disconnected_c=None):
    lines = [
        "# HELP etcd_network_active_peers The current number of active peer connections.",
        "# TYPE etcd_network_active_peers gauge",
        'etcd_network_active_peers{Local="%s",Remote="%s"} %d' % (LOCAL, B, active_b),
    ]
    if active_c is not None:
        lines.append('etcd_network_active_peers{Local="%s",Remote="%s"} %d' % (LOCAL, C, active_c))
    if sent_c is not None:
        lines.append('etcd_network_peer_sent_failures_total{To="%s"} %d' % (C, sent_c))
    if disconnected_c is not None:
        lines.append('etcd_network_disconnected_peers_total{Local="%s",Remote="%s"} %d' % (LOCAL, C, disconnected_c))
    lines += ['etcd_network_peer_round_trip_time_seconds_sum{To="%s"} 0.004' % B,
              'etcd_network_peer_round_trip_time_seconds_count{To="%s"} 2' % B,
              "etcd_server_has_leader 1"]
    return "\n".join(lines) + "\n"


def test_parse_prometheus_labels_values_and_specials():
    samples = parse_prometheus('a{x="1",y="q\\"uote"} 2.5\nb +Inf\nc NaN 1700000000\n# comment\nbroken line here\n')
    assert samples[0] == ("a", {"x": "1", "y": 'q"uote'}, 2.5)
    assert samples[1][2] == math.inf
    assert math.isnan(samples[2][2])
    assert len(samples) == 3


def test_member_ids_decimal_to_hex():
    assert member_hex("11209198945811462817") == LOCAL
    assert member_hex(3788998753707004145) == B


def test_healthy_links():
    reading = Reading(metrics())
    links, problems = peer_links(reading, Reading(metrics()), LOCAL, MEMBERS, 2, local_name="pd1")
    assert problems == []
    assert [link["remote_name"] for link in links] == ["pd2", "pd3"]
    assert all(link["ok"] and link["active"] for link in links)
    assert links[0]["round_trip_ms"] == 2.0


def test_an_inactive_link_is_named():
    links, problems = peer_links(Reading(metrics(active_c=0, sent_c=72, disconnected_c=3)),
                                 Reading(metrics(active_c=0, sent_c=72, disconnected_c=3)), LOCAL, MEMBERS, 2,
                                 local_name="pd1")
    assert problems == ["link pd1 -> pd3 (https://10.0.0.3:2380): not active now"]
    assert links[1]["sent_failures_total"] == 72 and links[1]["disconnected_total"] == 3
    assert links[1]["sent_failures_new"] == 0


def test_a_link_that_never_came_up():
    problems = peer_links(Reading(metrics(active_c=None)), Reading(metrics(active_c=None)), LOCAL, MEMBERS, 2)[1]
    assert "never became active" in problems[0]


def test_a_flapping_link_is_caught_by_the_counters_between_readings():
    # Active in both readings (one stream works), but sends fail and it disconnected in between.
    links, problems = peer_links(Reading(metrics(sent_c=10, disconnected_c=1)),
                                 Reading(metrics(sent_c=25, disconnected_c=2)), LOCAL, MEMBERS, 2)
    assert not links[1]["ok"]
    assert "15 message(s) to it failed in the last 2s" in problems[0]
    assert "went inactive 1 time(s)" in problems[0]


def test_old_failures_alone_do_not_fail_a_link():
    links, problems = peer_links(Reading(metrics(sent_c=40, disconnected_c=1)),
                                 Reading(metrics(sent_c=40, disconnected_c=1)), LOCAL, MEMBERS, 2)
    assert problems == [] and links[1]["ok"] and links[1]["sent_failures_total"] == 40


def test_a_link_that_only_came_up_between_readings_is_not_trusted_yet():
    problems = peer_links(Reading(metrics(active_c=0)), Reading(metrics(active_c=1)), LOCAL, MEMBERS, 2)[1]
    assert "became active only during" in problems[0]

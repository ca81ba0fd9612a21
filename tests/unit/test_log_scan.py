"""_log_scan: timestamps of every log format an instance writes, the window, the patterns, bisection."""

from __future__ import annotations

import calendar
import os
import time

import pytest

from ansible_collections.tlsops.tikv.plugins.module_utils import _log_scan as L

NOW = calendar.timegm((2026, 11, 24, 16, 0, 0))


def local(y, mo, d, h, mi, s):
    return time.mktime((y, mo, d, h, mi, s, 0, 0, -1))


@pytest.mark.parametrize("line, expected", [
    ('[2026/11/24 15:00:00.250 +00:00] [WARN] [x.rs:1] ["m"]', calendar.timegm((2026, 11, 24, 15, 0, 0)) + 0.25),
    ('[2026/11/24 23:00:00.000 +08:00] [INFO] [x.go:1] ["m"]', calendar.timegm((2026, 11, 24, 15, 0, 0))),
    ('{"level":"warn","ts":"2026-11-24T15:00:00.500Z","msg":"rejected connection"}',
     calendar.timegm((2026, 11, 24, 15, 0, 0)) + 0.5),
    ('{"level":"warn","ts":"2026-11-24T17:00:00.000+0200","msg":"x"}', calendar.timegm((2026, 11, 24, 15, 0, 0))),
    ('{"level":"warn","ts":1795536982.25,"caller":"x"}', 1795536982.25),
    ("2026-11-24 15:00:00.123456 W | rafthttp: lost the TCP streaming connection", local(2026, 11, 24, 15, 0, 0) + 0.123456),
    ("2026/11/24 15:00:00 http: TLS handshake error from 10.0.0.1:1: remote error: tls: bad certificate",
     local(2026, 11, 24, 15, 0, 0)),
    ("I1124 15:00:00.500000    1089 ssl_transport_security.cc:2563] Handshake failed", local(2026, 11, 24, 15, 0, 0) + 0.5),
    ("2026-11-24T15:00:00Z something", calendar.timegm((2026, 11, 24, 15, 0, 0))),
    ("    at stack frame", None),
    ("", None),
])
def test_line_time_knows_every_format(line, expected):
    got = L.line_time(line, now=NOW)
    if expected is None:
        assert got is None
    else:
        assert got == pytest.approx(expected, abs=1e-3)


def test_glog_lines_from_december_read_in_january_belong_to_last_year():
    january = calendar.timegm((2027, 1, 2, 0, 0, 0))
    assert L.line_time("E1231 23:59:00.000000 1 x.cc:1] x", now=january) == pytest.approx(
        local(2026, 12, 31, 23, 59, 0))


@pytest.mark.parametrize("spec, expected", [
    ("10m", NOW - 600), ("2h", NOW - 7200), ("90s", NOW - 90), ("1d", NOW - 86400), ("1.5 hours", NOW - 5400),
    ("1795536982", 1795536982.0), ("2026-11-24T15:00:00Z", calendar.timegm((2026, 11, 24, 15, 0, 0))),
    ("2026-11-24T17:00:00+02:00", calendar.timegm((2026, 11, 24, 15, 0, 0))),
    ("2026-11-24 15:00", local(2026, 11, 24, 15, 0, 0)), (None, None), ("", None),
])
def test_time_specs(spec, expected):
    assert L.parse_time_spec(spec, now=NOW) == (None if expected is None else pytest.approx(expected))


def test_a_bad_time_spec_says_what_is_accepted():
    with pytest.raises(L.TimeSpecError, match="duration back from now"):
        L.parse_time_spec("yesterday", now=NOW)


def write(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


PD_LOG = [
    '[2026/11/24 14:00:00.000 +00:00] [WARN] [pd.go:1] ["TLS handshake error"] [error="x509: certificate signed by unknown authority"]',
    '[2026/11/24 15:10:00.000 +00:00] [INFO] [server.go:1] ["PD server started"]',
    '{"level":"warn","ts":"2026-11-24T15:20:00.000Z","caller":"rafthttp/probing_status.go:68","msg":"prober detected '
    'unhealthy status","remote-peer-id":"1","error":"tls: first record does not look like a TLS handshake"}',
    '{"level":"warn","ts":"2026-11-24T15:21:00.000Z","caller":"embed/config_logging.go:169","msg":"rejected '
    'connection","remote-addr":"127.0.0.1:1","error":"remote error: tls: bad certificate"}',
    '{"level":"warn","ts":"2026-11-24T15:22:00.000Z","caller":"embed/config_logging.go:169","msg":"rejected '
    'connection","error":"tls: client didn\'t provide a certificate"}',
    '{"level":"warn","ts":"2026-11-24T15:23:00.000Z","msg":"rejected connection","error":"tls: client offered only '
    'unsupported versions: [301]"}',
    '{"level":"warn","ts":"2026-11-24T15:24:00.000Z","caller":"etcdserver/cluster_util.go:155","msg":"failed to get '
    'version","error":"Get \\"https://10.0.0.2:2380/version\\": http: server gave HTTP response to HTTPS client"}',
    '[2026/11/24 15:30:00.000 +00:00] [WARN] [x.go:1] ["x509 failure"] [err="x509: certificate has expired or is not yet valid"]',
    "continuation without a timestamp: x509: certificate signed by unknown authority",
]


def test_lines_inside_a_skip_window_are_not_counted(tmp_path):
    """An earlier audit's own probes (15:20-15:22 here) are left out; what follows them still counts."""
    path = write(tmp_path / "pd.log", PD_LOG)
    since = calendar.timegm((2026, 11, 24, 15, 0, 0))
    skip = [(calendar.timegm((2026, 11, 24, 15, 20, 0)), calendar.timegm((2026, 11, 24, 15, 22, 0)))]
    counts = L.scan_files([path], since=since, now=NOW, skip=skip)["counts"]
    assert counts["bad_certificate"] == 0 and counts["missing_client_cert"] == 0
    assert counts["old_protocol"] == 1 and counts["expired_certificate"] == 1
    assert L.scan_files([path], since=since, now=NOW, skip=skip)["files"][0]["skipped_lines"] == 3


def test_counts_inside_the_window_only(tmp_path):
    path = write(tmp_path / "pd.log", PD_LOG)
    since = calendar.timegm((2026, 11, 24, 15, 0, 0))
    result = L.scan_files([path], since=since, now=NOW)
    counts = result["counts"]
    assert counts["bad_certificate"] == 1
    assert counts["missing_client_cert"] == 1
    assert counts["old_protocol"] == 1
    assert counts["scheme_mismatch"] == 1
    assert counts["outgoing_tls_failure"] == 1  # the prober line: this PD failed to reach a peer over TLS
    assert counts["expired_certificate"] == 1
    # The 14:00 line is outside; the continuation line belongs to the 15:30 line before it.
    assert counts["x509"] == 2 and counts["unknown_authority"] == 1
    # errors: lines with a certificate/CA/name/allow-list problem, each line once.
    assert result["errors"] == 5
    assert [s["line"] for s in result["error_samples"]] == [7, 8, 9]
    info = result["files"][0]
    assert info["exists"] and info["undated_lines"] == 0 and info["first_time"].startswith("2026-11-24T15:10")


def test_until_leaves_later_lines_out(tmp_path):
    path = write(tmp_path / "pd.log", PD_LOG)
    result = L.scan_files([path], since=calendar.timegm((2026, 11, 24, 15, 0, 0)),
                          until=calendar.timegm((2026, 11, 24, 15, 21, 30)), now=NOW)
    assert result["counts"]["bad_certificate"] == 1 and result["counts"]["expired_certificate"] == 0


def test_refused_clients_are_counted_but_are_not_errors(tmp_path):
    path = write(tmp_path / "tikv_stderr.log", [
        "I1124 15:00:01.000000    1 ssl_transport_security.cc:2563] Handshake failed with error SSL_ERROR_SSL: "
        "error:100000c0:SSL routines:OPENSSL_internal:PEER_DID_NOT_RETURN_A_CERTIFICATE",
        "I1124 15:00:02.000000    1 ssl_transport_security.cc:2563] Handshake failed with error SSL_ERROR_SSL: "
        "error:1000009c:SSL routines:OPENSSL_internal:HTTP_REQUEST",
    ])
    result = L.scan_files([path], now=NOW)
    assert result["counts"]["missing_client_cert"] == 1
    assert result["counts"]["plaintext_on_tls_port"] == 1
    assert result["counts"]["handshake_failure"] == 2
    assert result["errors"] == 0


def test_tikv_cn_check_and_raft_client_lines(tmp_path):
    path = write(tmp_path / "tikv.log", [
        '[2026/11/24 15:00:00.000 +00:00] [WARN] [tikv_grpc.py:1] ["Common name check fail"] [peer=ipv4:127.0.0.1:1]',
        '[2026/11/24 15:00:01.000 +00:00] [ERROR] [raft_client.rs:1] ["connection abort"] [store_id=2] '
        '[err="certificate verify failed: unable to get local issuer certificate"]',
        '[2026/11/24 15:00:02.000 +00:00] [INFO] [raft_client.rs:1] ["connection established"] [store_id=2]',
    ])
    result = L.scan_files([path], now=NOW)
    assert result["counts"]["cn_check_failed"] == 1
    assert result["counts"]["outgoing_tls_failure"] == 1
    assert result["errors"] == 2


def test_missing_files_are_reported_not_raised(tmp_path):
    result = L.scan_files([str(tmp_path / "nope.log")], now=NOW)
    assert result["files"][0]["exists"] is False and result["errors"] == 0


def test_samples_keep_the_most_recent_lines(tmp_path):
    lines = ['[2026/11/24 15:00:%02d.000 +00:00] [WARN] [x:1] ["x509: bad certificate %d"]' % (i, i) for i in range(10)]
    result = L.scan_files([write(tmp_path / "a.log", lines)], samples=2, now=NOW)
    assert [s["text"][-3:] for s in result["samples"]["x509"]] == ['8"]', '9"]']
    assert result["counts"]["x509"] == 10


def test_custom_patterns_and_a_bad_expression(tmp_path):
    path = write(tmp_path / "a.log", ['[2026/11/24 15:00:00.000 +00:00] [WARN] [x:1] ["boom"]'])
    result = L.scan_files([path], patterns={"boom": "bo+m"}, error_patterns=("boom",), now=NOW)
    assert result["counts"] == {"boom": 1} and result["errors"] == 1
    with pytest.raises(ValueError, match="pattern bad"):
        L.scan_files([path], patterns={"bad": "("}, now=NOW)


def test_big_files_are_bisected_and_still_counted_exactly(tmp_path, monkeypatch):
    monkeypatch.setattr(L, "BISECT_MIN_BYTES", 1024)
    base = calendar.timegm((2026, 11, 24, 0, 0, 0))
    lines = []
    for i in range(20000):
        stamp = time.gmtime(base + i)
        text = "x509: certificate signed by unknown authority" if i % 1000 == 0 else "all fine"
        lines.append("[%s.000 +00:00] [INFO] [x:1] [\"%s\"]" % (time.strftime("%Y/%m/%d %H:%M:%S", stamp), text))
    path = write(tmp_path / "big.log", lines)
    since = base + 15000
    result = L.scan_files([path], since=since, now=NOW)
    assert result["files"][0]["start_offset"] > os.path.getsize(path) // 2
    assert result["counts"]["x509"] == 5  # 15000, 16000, ..., 19000
    assert result["files"][0]["lines_scanned"] == 5000

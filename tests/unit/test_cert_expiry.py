"""cert_expiry (every certificate in PEM files with its expiry) and the expiry filters (the verdict and
the Prometheus textfile)."""

from __future__ import annotations

import datetime
import re

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.tlsops.tikv.plugins.filter.expiry import expiry_report, expiry_textfile
from ansible_collections.tlsops.tikv.plugins.module_utils import _x509 as x
from ansible_collections.tlsops.tikv.plugins.modules import cert_expiry

from module_runner import ModuleFailed, run


def leaf(ca, cn, days, now=None):
    key = x.generate_key()
    return x.issue_cert(ca, key.public_key(), cn, ["127.0.0.1"], validity_days=days, now=now)


@pytest.fixture(name="files")
def fixture_files(tmp_path):
    """A CA bundle of two CAs, a leaf with its intermediate, a leaf that expires in 3 days."""
    ca_key, old_key = x.generate_key(), x.generate_key()
    new_ca = x.CA(x.create_ca_cert(ca_key, "new CA", validity_days=3650), ca_key)
    old_ca = x.CA(x.create_ca_cert(old_key, "old CA", validity_days=400), old_key)
    paths = {
        "bundle": tmp_path / "ca.crt",
        "leaf": tmp_path / "tikv.crt",
        "short": tmp_path / "short.crt",
        "garbage": tmp_path / "garbage.crt",
    }
    paths["bundle"].write_text(x.cert_to_pem(old_ca.cert) + x.cert_to_pem(new_ca.cert))
    paths["leaf"].write_text(x.cert_to_pem(leaf(new_ca, "tikv", 365)) + x.cert_to_pem(new_ca.cert))
    paths["short"].write_text(x.cert_to_pem(leaf(new_ca, "pd", 3)))
    paths["garbage"].write_text("not a certificate\n")
    return {name: str(path) for name, path in paths.items()}


def test_every_certificate_of_every_file_is_listed(files):
    result = run(cert_expiry, {"paths": [files["bundle"], files["leaf"]], "name": "tikv1"})
    assert result["changed"] is False and result["problems"] == []
    listed = [(c["path"], c["index"], c["common_name"], c["is_ca"]) for c in result["certificates"]]
    assert listed == [(files["bundle"], 0, "old CA", True), (files["bundle"], 1, "new CA", True),
                      (files["leaf"], 0, "tikv", False), (files["leaf"], 1, "new CA", True)]
    old = result["certificates"][0]
    assert 398 <= old["days_left"] <= 400
    assert old["not_after_timestamp"] == int(datetime.datetime.strptime(
        old["not_after"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc).timestamp())
    assert result["soonest"]["common_name"] == "tikv"
    assert "PRIVATE KEY" not in repr(result)


def test_a_certificate_inside_the_threshold_is_a_problem_naming_instance_file_and_fix(files):
    result = run(cert_expiry, {"paths": [files["leaf"], files["short"]], "name": "pd1", "min_days_valid": 14})
    assert len(result["problems"]) == 1
    problem = result["problems"][0]
    assert problem.startswith("pd1: %s (certificate #1, CN=pd" % files["short"])
    assert "day(s) (less than 14); renew it (rotate_certs" in problem
    assert result["soonest"]["path"] == files["short"]


def test_missing_and_unreadable_files_are_problems_and_fail_on_request(files, tmp_path):
    missing = str(tmp_path / "nope.crt")
    args = {"paths": [missing, files["garbage"], files["leaf"]], "name": "tikv2"}
    result = run(cert_expiry, args)
    assert result["missing"] == [missing]
    assert result["problems"][0] == "tikv2: %s does not exist" % missing
    assert files["garbage"] in result["problems"][1] and "no PEM certificate" in result["problems"][1]
    assert len(result["certificates"]) == 2
    with pytest.raises(ModuleFailed) as failed:
        run(cert_expiry, dict(args, fail_on_problems=True))
    assert "does not exist" in failed.value.result["msg"] and "no PEM certificate" in failed.value.result["msg"]


def test_expired_and_not_yet_valid_certificates(tmp_path):
    past = x.utcnow() - datetime.timedelta(days=30)
    key = x.generate_key()
    ca = x.CA(x.create_ca_cert(key, "CA", validity_days=3650, now=past - datetime.timedelta(days=1)), key)
    future = x.utcnow() + datetime.timedelta(days=2)
    expired, early = tmp_path / "expired.crt", tmp_path / "early.crt"
    expired.write_text(x.cert_to_pem(leaf(ca, "tikv", 10, now=past)))
    early.write_text(x.cert_to_pem(leaf(ca, "tikv", 10, now=future)))
    result = run(cert_expiry, {"paths": [str(expired), str(early)], "name": "tikv3"}, check=True)
    assert "expired on" in result["problems"][0]
    assert "is not valid before" in result["problems"][1] and "clock" in result["problems"][1]


# --- the filters ------------------------------------------------------------------------------------

NOW = 1795500000


def instance(name, component="tikv"):
    return {"name": name, "component": component, "address": "10.0.1.4"}


def cert_row(path, serial, days, index=0, is_ca=False, cn="tikv"):
    not_after = NOW + days * 86400
    return {"path": path, "index": index, "common_name": cn, "serial": serial, "is_ca": is_ca,
            "not_after": datetime.datetime.fromtimestamp(not_after, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "not_after_timestamp": not_after, "days_left": days}


def port(channel, number, serial=None, days=None, **extra):
    probe = {"channel": channel, "port": number, "failures": [], "plaintext_refused": True, "peer_cert": None}
    if serial:
        probe["peer_cert"] = {"subject_cn": "tikv", "serial": serial, "days_left": days,
                              "not_after": datetime.datetime.fromtimestamp(NOW + days * 86400, datetime.timezone.utc)
                              .strftime("%Y-%m-%dT%H:%M:%SZ")}
    probe.update(extra)
    return probe


def entry(name, files, ports, cert_path="/d/tls/tikv.crt"):
    return {"instance": instance(name), "paths": ["/d/tls/ca.crt", cert_path], "cert_path": cert_path,
            "files": {"certificates": files, "missing": [], "problems": []}, "ports": ports}


def test_report_rows_verdict_and_a_pending_reload():
    good = entry("tikv1", [cert_row("/d/tls/ca.crt", "CA1", 3000, is_ca=True, cn="CA"),
                           cert_row("/d/tls/tikv.crt", "AA", 200)],
                 [port("tikv_grpc", 20160, "AA", 200), port("tikv_status", 20180, "99", 20)])
    report = expiry_report([good], {"fail_days": 14, "warn_days": 30, "now": NOW})
    assert report["verdict"] == "pass" and report["failures"] == []
    statuses = {(r["source"], r["path"]): r["status"] for r in report["rows"]}
    assert statuses == {("port", "10.0.1.4:20160"): "ok", ("port", "10.0.1.4:20180"): "warning",
                        ("file", "/d/tls/ca.crt"): "ok", ("file", "/d/tls/tikv.crt"): "ok"}
    # The status port still serves serial 99 while the file holds AA: a restart is pending.
    assert any("10.0.1.4:20180 serves serial 99" in w and "restart is pending" in w for w in report["warnings"])
    assert report["soonest"]["path"] == "10.0.1.4:20180"


def test_report_fails_on_expiry_errors_and_lost_hosts():
    soon = entry("tikv2", [cert_row("/d/tls/tikv.crt", "BB", 5)],
                 [port("tikv_grpc", 20160, "BB", 5), port("tikv_status", 20180, plaintext_refused=False),
                  port("pd_client", 2379, failures=["10.0.1.4:2379: connection refused"])])
    lost = {"instance": instance("tikv3"), "failed_host": "unreachable"}
    report = expiry_report([soon, lost], {"fail_days": 14, "warn_days": 30})
    assert report["verdict"] == "fail"
    text = "\n".join(report["failures"])
    assert "tikv2 file /d/tls/tikv.crt: CN=tikv serial BB expires" in text and "(5 day(s) left, threshold 14)" in text
    assert "tikv2 port 10.0.1.4:20180: the port serves plaintext, not TLS" in text
    assert "tikv2 port 10.0.1.4:2379: no certificate could be read from the port: 10.0.1.4:2379: connection refused" in text
    assert "tikv3 host -: unreachable" in text


def test_report_refuses_what_is_not_a_list():
    with pytest.raises(AnsibleFilterError, match="expected a list"):
        expiry_report({"not": "a list"})
    with pytest.raises(AnsibleFilterError, match="unexpected input: KeyError"):
        expiry_report([{"instance": {}, "files": {"certificates": [{"path": "/x"}]}}])


METRIC_LINE = re.compile(r'^([a-z_]+)(\{(?:[a-z_]+="(?:[^"\\]|\\.)*",?)*\})? (-?[0-9]+)$')


def test_textfile_is_valid_prometheus_text_with_the_labels_alerts_use():
    tricky = entry('tikv"1', [cert_row('/d/tls/ti"kv\\.crt', "AA", 200)], [port("tikv_grpc", 20160, "AA", 200)],
                   cert_path='/d/tls/ti"kv\\.crt')
    tricky["files"]["missing"] = ["/d/tls/ca.crt"]
    text = expiry_textfile(expiry_report([tricky], {"now": NOW}))
    samples = {}
    for line in text.splitlines():
        if line.startswith("#"):
            assert re.match(r"^# (HELP|TYPE) [a-z_]+ ", line), line
            continue
        match = METRIC_LINE.match(line)
        assert match, "not a Prometheus sample line: %r" % line
        samples.setdefault(match.group(1), []).append(line)
    assert len(samples["tikv_tls_certificate_not_after_timestamp_seconds"]) == 2
    assert any('instance="tikv\\"1"' in s and 'path="/d/tls/ti\\"kv\\\\.crt"' in s and 'source="file"' in s
               and s.endswith(" %d" % (NOW + 200 * 86400))
               for s in samples["tikv_tls_certificate_not_after_timestamp_seconds"])
    assert 'tikv_tls_certificate_readable{instance="tikv\\"1",component="tikv",source="file",path="/d/tls/ca.crt",index="0"} 0' \
        in samples["tikv_tls_certificate_readable"]
    assert samples["tikv_tls_expiry_check_timestamp_seconds"] == ["tikv_tls_expiry_check_timestamp_seconds %d" % NOW]
    with pytest.raises(AnsibleFilterError):
        expiry_textfile({"no": "rows"})

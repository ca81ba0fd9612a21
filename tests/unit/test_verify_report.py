"""_verify_report: the verify role's judgement, from synthetic probe/call/config/log/link results."""

from __future__ import annotations

import copy

import pytest

from ansible_collections.tlsops.tikv.plugins.module_utils import _verify_report as V


def tls_probe(addr, failures=(), cn="pd", client_cert_required=True, plaintext_refused=True, days=300,
              protocol="TLSv1.3"):
    return dict(protocol=protocol, cipher="TLS_AES_256_GCM_SHA384", alpn="h2", client_cert_required=client_cert_required,
                plaintext_refused=plaintext_refused, weak_protocols_accepted=[], untested_protocols=[],
                peer_cert=dict(subject_cn=cn, issuer="CN=ca", serial="1", not_after="2027-01-01T00:00:00Z",
                               days_left=days, sans=["IP:10.0.0.1"]),
                failures=["%s: %s" % (addr, f) for f in failures])


def plain_probe(addr):
    return dict(protocol=None, cipher=None, alpn=None, client_cert_required=None, plaintext_refused=False,
                peer_cert=None, weak_protocols_accepted=[],
                failures=["%s: handshake: the server did not answer with TLS" % addr,
                          "%s: require_plaintext_refused: the server answered a plaintext HTTP/1.1 GET" % addr])


def config(tls=True, allowed=(), urls=None):
    return dict(reachable=True, security=dict(ca_path="/t/ca.crt" if tls else "", cert_path="/t/c.crt" if tls else "",
                                              key_path="/t/c.pem" if tls else "", cert_allowed_cn=list(allowed),
                                              tls=tls, partial=False), urls=urls or {}, problems=[])


def log_scan(errors=0):
    return dict(counts={"x509": errors, "unknown_authority": errors}, errors=errors, files=[dict(path="/l", exists=True)],
                error_lines=[dict(time="2026-11-24T15:00:00Z", path="/l", text="x509: unknown authority")] if errors else [],
                since="2026-11-24T14:45:00Z", until="2026-11-24T15:00:00Z")


def links_ok(name, others):
    return dict(checked=True, problems=[], links=[dict(remote_name=o, active=True, ok=True, problem=None) for o in others])


def pd_instance(i, tls=True, allowed=(), version="v8.5.0"):
    name = "pd%d" % i
    addr = "10.0.0.%d" % i
    inst = dict(name=name, component="pd", address=addr, port=2379, peer_port=2380, pd_name="pd-%s-2379" % addr,
                version=version)
    scheme = "https" if tls else "http"
    probes = ({"pd_client": tls_probe(addr + ":2379"), "pd_peer": tls_probe(addr + ":2380", protocol="TLSv1.2")}
              if tls else {"pd_client": plain_probe(addr + ":2379"), "pd_peer": plain_probe(addr + ":2380")})
    return dict(instance=inst, probes=probes, peers={}, calls={},
                config=config(tls, allowed, {"client-urls": ["%s://%s:2379" % (scheme, addr)],
                                             "peer-urls": ["%s://%s:2380" % (scheme, addr)]}),
                log_scan=log_scan(), peer_links=links_ok(name, ["pd%d" % j for j in (1, 2, 3) if j != i]))


def tikv_instance(i, tls=True, allowed=(), cn="tikv", status_requires=False):
    name = "tikv%d" % i
    addr = "10.0.1.%d" % i
    inst = dict(name=name, component="tikv", address=addr, port=20160, status_port=20180, version="v8.5.0")
    if tls:
        status_failures = [] if status_requires else [
            "require_client_cert: the server completed a TLSv1.2 handshake with a client presenting no certificate"]
        probes = {"tikv_grpc": tls_probe(addr + ":20160", cn=cn),
                  "tikv_status": tls_probe(addr + ":20180", failures=status_failures, cn=cn,
                                           client_cert_required=status_requires, protocol="TLSv1.2")}
    else:
        probes = {"tikv_grpc": plain_probe(addr + ":20160"), "tikv_status": plain_probe(addr + ":20180")}
    return dict(instance=inst, probes=probes, peers={}, calls={}, config=config(tls, allowed), log_scan=log_scan())


def pd_info(tls=True, tikvs=3, state="Up"):
    scheme = "https" if tls else "http"
    members = [dict(name="pd-10.0.0.%d-2379" % i, client_urls=["%s://10.0.0.%d:2379" % (scheme, i)],
                    peer_urls=["%s://10.0.0.%d:2380" % (scheme, i)]) for i in (1, 2, 3)]
    return dict(members=dict(members=members), leader="pd-10.0.0.1-2379",
                health=[dict(name=m["name"], health=True, client_urls=m["client_urls"]) for m in members],
                stores=dict(stores=[dict(store=dict(id=i, address="10.0.1.%d:20160" % i, state_name=state))
                                    for i in range(1, tikvs + 1)]),
                etcd_members=[dict(name=m["name"], peerURLs=m["peer_urls"], clientURLs=m["client_urls"]) for m in members],
                problems=[])


def peer(source, result=None, skipped=None):
    entry = dict(source=source)
    if skipped:
        entry["skipped"] = skipped
    else:
        entry["result"] = result
    return entry


def grpc_result(status=0, message="", error=None, stage="done"):
    accepted = None if status is None else (False if status == 16 else True)
    return dict(call_accepted=accepted, grpc_status=status, grpc_status_name={0: "OK", 16: "UNAUTHENTICATED"}.get(status),
                grpc_message=message, verdict="verdict %s" % status, error=error, stage=stage, protocol="TLSv1.3")


def cluster(tls=True):
    instances = [pd_instance(i, tls) for i in (1, 2, 3)] + [tikv_instance(i, tls) for i in (1, 2, 3)]
    if tls:
        for inst in instances:
            model = inst["instance"]
            if model["component"] == "tikv":
                addr = "%s:20160" % model["address"]
                inst["peers"]["tikv_grpc"] = [peer("tikvX", tls_probe(addr, cn="tikv"))]
                inst["calls"]["tikv_grpc"] = [dict(source="tikvX", result=grpc_result(0))]
    return instances, dict(pd=pd_info(tls), operator=dict(usable=True, cn="client", missing=[]))


def build(instances, cluster_data, settings=None):
    return V.build(instances, cluster_data, settings or {})


def rows_of(report, **match):
    return [r for r in report["rows"] if all(r[k] == v for k, v in match.items())]


def check(report, name):
    return [c for c in report["cluster_checks"] if c["name"] == name][0]


def test_a_healthy_tls_cluster_passes_and_every_row_is_ok():
    report = build(*cluster())
    assert report["verdict"] == "pass", report["failures"]
    assert report["cluster_state"] == "tls"
    assert report["summary"]["fail"] == 0 and report["summary"]["ok"] == len(report["rows"]) == 15
    status = rows_of(report, instance="tikv1", channel="tikv_status")[0]
    assert status["result"] == "ok" and status["mtls_enforced"] is False and "not required" in status["mtls_note"]
    assert check(report, "cn_allow_lists")["result"] == "not_checked"


def test_a_plaintext_cluster_lists_every_channel_as_plaintext_and_passes():
    report = build(*cluster(tls=False))
    assert report["cluster_state"] == "plaintext" and report["verdict"] == "pass", report["failures"]
    assert {r["result"] for r in report["rows"]} == {"plaintext"}
    assert len(report["rows"]) == 12
    assert check(report, "pd_urls")["result"] == "plaintext"
    assert check(report, "config_security")["result"] == "plaintext"


def test_require_tls_fails_a_plaintext_cluster_on_every_channel():
    instances, data = cluster(tls=False)
    report = build(instances, data, dict(require_tls=True))
    assert report["verdict"] == "fail"
    assert {r["result"] for r in report["rows"]} == {"fail"}
    assert any(f.startswith("pd1 pd_peer (10.0.0.1:2380) from controller") for f in report["failures"])


def test_one_plaintext_channel_in_a_tls_cluster_fails_unless_allowed():
    instances, data = cluster()
    instances[0]["probes"]["pd_peer"] = plain_probe("10.0.0.1:2380")
    report = build(copy.deepcopy(instances), data, {})
    assert report["cluster_state"] == "mixed" and report["verdict"] == "fail"
    row = rows_of(report, instance="pd1", channel="pd_peer", source="controller")[0]
    assert row["result"] == "fail" and "serves plaintext while the cluster runs TLS" in row["reasons"][0]
    allowed = build(instances, data, dict(allow_plaintext_channels=["pd_peer"]))
    assert rows_of(allowed, instance="pd1", channel="pd_peer")[0]["result"] == "plaintext"
    assert allowed["verdict"] == "pass", allowed["failures"]


def test_the_status_port_must_require_a_certificate_only_with_an_allow_list():
    instances, data = cluster()
    instances[3]["config"] = config(True, allowed=["tikv", "pd", "client"])
    report = build(instances, data, {})
    row = rows_of(report, instance="tikv1", channel="tikv_status", source="controller")[0]
    assert row["result"] == "fail" and row["reasons"][0].startswith("mtls:")


def test_a_refused_grpc_call_names_instance_channel_and_source():
    instances, data = cluster()
    instances[4]["config"] = config(True, allowed=["tikv"])
    instances[4]["calls"]["tikv_grpc"] = [dict(source="tikvX", result=grpc_result(16, "Common name check fail"))]
    report = build(instances, data, {})
    row = rows_of(report, instance="tikv2", channel="tikv_grpc", source="tikvX")[0]
    assert row["result"] == "fail" and "tikv2 refused a gRPC call from tikvX" in row["reasons"][0]
    assert row["call"]["grpc_status_name"] == "UNAUTHENTICATED"
    assert any(f.startswith("tikv2 tikv_grpc (10.0.1.2:20160) from tikvX:") for f in report["failures"])


def test_a_call_without_answer_fails_and_does_not_claim_the_certificate_was_accepted():
    instances, data = cluster()
    instances[3]["calls"]["tikv_grpc"] = [dict(source="tikvX", result=grpc_result(
        None, error="the server closed the connection before answering the call", stage="call"))]
    report = build(instances, data, {})
    row = rows_of(report, instance="tikv1", channel="tikv_grpc", source="tikvX")[0]
    assert row["result"] == "fail" and row["client_cert_accepted"] is None and "TLS 1.3" in row["reasons"][0]


def test_a_call_that_does_not_tell_is_not_checked_never_ok():
    instances, data = cluster()
    unknown = dict(grpc_result(None), stage="done", error=None, verdict="UNIMPLEMENTED")
    instances[3]["calls"]["tikv_grpc"] = [dict(source="tikvX", result=unknown)]
    report = build(instances, data, {})
    row = rows_of(report, instance="tikv1", channel="tikv_grpc", source="tikvX")[0]
    grpc_checks = [c for c in row["checks"] if c["name"] == "grpc_call"]
    assert grpc_checks[0]["status"] == "not_checked"
    assert row["result"] == "ok" and "does not tell" in row["reasons"][0]  # the handshake itself was proven


def test_a_skipped_peer_probe_is_reported_as_not_checked():
    instances, data = cluster()
    instances[0]["peers"]["pd_peer"] = [peer("(no pd)", skipped="there is no other pd instance to probe from")]
    report = build(instances, data, {})
    row = rows_of(report, instance="pd1", channel="pd_peer", source="(no pd)")[0]
    assert row["result"] == "not_checked" and report["summary"]["not_checked"] == 1
    assert report["verdict"] == "pass"


def test_a_foreign_certificate_fails_from_controller_and_from_peers():
    instances, data = cluster()
    chain = "chain: certificate verify failed: unable to get local issuer certificate (CA /ca.crt)"
    instances[5]["probes"]["tikv_grpc"] = tls_probe("10.0.1.3:20160", failures=[chain])
    instances[5]["peers"]["tikv_grpc"] = [peer("tikv1", tls_probe("10.0.1.3:20160", failures=[chain]))]
    instances[5]["calls"]["tikv_grpc"] = [dict(source="tikv1", result=grpc_result(None, error="handshake", stage="handshake"))]
    report = build(instances, data, {})
    assert rows_of(report, instance="tikv3", channel="tikv_grpc", source="controller")[0]["result"] == "fail"
    peer_row = rows_of(report, instance="tikv3", channel="tikv_grpc", source="tikv1")[0]
    assert peer_row["result"] == "fail" and peer_row["reasons"][0].startswith("chain:")
    assert [c["status"] for c in peer_row["checks"] if c["name"] == "grpc_call"] == ["not_checked"]


def test_pd_peer_port_refusing_the_operator_by_its_allow_list_is_expected():
    instances, data = cluster()
    instances[0]["config"] = config(True, allowed=["pd"])
    instances[0]["probes"]["pd_peer"] = tls_probe("10.0.0.1:2380", failures=[
        "client_cert: the server rejected our client certificate (sslv3 alert bad certificate)"], protocol=None)
    report = build(instances, data, {})
    row = rows_of(report, instance="pd1", channel="pd_peer", source="controller")[0]
    assert row["result"] == "not_checked" and "refuses the operator's CN client" in row["reasons"][0]


def test_allow_list_cross_check_names_the_caller():
    instances, data = cluster()
    for inst in instances[3:]:
        inst["config"] = config(True, allowed=["tikv", "pd", "client"])
    instances[5]["probes"]["tikv_grpc"]["peer_cert"]["subject_cn"] = "tikv-rogue"
    report = build(instances, data, {})
    result = check(report, "cn_allow_lists")
    assert result["result"] == "fail"
    assert "tikv1 (TiKV gRPC) does not admit tikv3's CN 'tikv-rogue'" in result["problems"][0]


def test_pd_allow_list_from_v84_covers_the_client_port_when_it_has_several_entries():
    instances, data = cluster()
    instances[0]["config"] = config(True, allowed=["pd", "client"])
    report = build(instances, data, {})
    result = check(report, "cn_allow_lists")
    assert result["result"] == "fail"
    assert any("pd1 (PD client) does not admit tikv1's CN 'tikv'" in p for p in result["problems"])
    instances[0]["instance"]["version"] = "v8.1.0"
    instances[0]["config"] = config(True, allowed=["pd"])
    assert check(build(instances, data, {}), "cn_allow_lists")["result"] == "ok"


def test_log_errors_fail_or_warn():
    instances, data = cluster()
    instances[1]["log_scan"] = log_scan(errors=4)
    report = build(copy.deepcopy(instances), data, {})
    logs = check(report, "log_tls_errors")
    assert logs["result"] == "fail" and logs["problems"][0].startswith("pd2: 4 error line(s)")
    warned = build(instances, data, dict(fail_on_log_errors=False))
    assert check(warned, "log_tls_errors")["result"] == "warn" and warned["verdict"] == "pass"


def test_health_can_lie_peer_links_cannot():
    instances, data = cluster()
    instances[0]["peer_links"] = dict(checked=True, problems=["link pd1 -> pd3 (https://10.0.0.3:2380): not active now"],
                                      links=[dict(remote_name="pd3", active=False, ok=False, problem="not active now")])
    report = build(instances, data, {})
    assert check(report, "pd_health")["result"] == "ok"
    links = check(report, "pd_peer_links")
    assert links["result"] == "fail" and "pd1 -> pd3" in links["problems"][0]


def test_stores_not_up_and_missing_are_named():
    instances, data = cluster()
    data["pd"]["stores"]["stores"][2]["store"]["state_name"] = "Disconnected"
    data["pd"]["stores"]["stores"].pop(1)
    result = check(build(instances, data, {}), "stores_up")
    assert result["result"] == "fail"
    assert any(p.startswith("tikv2 (10.0.1.2:20160): no store") for p in result["problems"])
    assert any(p.startswith("tikv3 (10.0.1.3:20160): store 3 is Disconnected") for p in result["problems"])


def test_http_urls_in_a_tls_cluster_fail():
    instances, data = cluster()
    data["pd"]["etcd_members"][1]["peerURLs"] = ["http://10.0.0.2:2380"]
    result = check(build(instances, data, {}), "pd_urls")
    assert result["result"] == "fail" and "http://10.0.0.2:2380 (etcd member list)" in result["problems"][0]


def test_pd_not_answering_fails_the_member_check():
    instances, data = cluster()
    data["pd"] = dict(failed=False, msg="PD did not answer", problems=["GET /members: no PD endpoint answered"])
    report = build(instances, data, {})
    assert check(report, "pd_members")["result"] == "fail" and report["verdict"] == "fail"


def test_a_host_that_dropped_out_is_never_verified():
    instances, data = cluster()
    instances[4] = dict(instance=instances[4]["instance"], failed_host="unreachable")
    report = build(instances, data, {})
    assert {r["result"] for r in rows_of(report, instance="tikv2")} == {"not_checked"}
    assert any(f.startswith("host tikv2: unreachable") for f in report["failures"])


def test_missing_operator_files_are_named_on_tls_rows():
    instances, data = cluster()
    data["operator"] = dict(usable=False, missing=["/op/ca.crt"], cn=None)
    report = build(instances, data, {})
    row = rows_of(report, instance="pd1", channel="pd_client", source="controller")[0]
    assert row["result"] == "fail" and "operator" in row["reasons"][0] and "/op/ca.crt" in row["reasons"][0]


def test_collect_turns_registered_loop_results_into_rows():
    probe = tls_probe("10.0.1.1:20160", cn="tikv")
    raw = [dict(
        instance=dict(name="tikv1", component="tikv", address="10.0.1.1", port=20160, status_port=20180),
        controller=[dict(probe, item=dict(channel="tikv_grpc", port=20160)),
                    dict(skipped=True, skip_reason="Conditional result was False", item=dict(channel="tikv_status"))],
        peers=[dict(probe, item=dict(channel="tikv_grpc", source="tikv2", source_component="tikv", skipped="")),
               dict(skipped=True, skip_reason="Conditional result was False",
                    item=dict(channel="tikv_status", source="", source_component="tikv",
                              skipped="there is no other tikv instance to probe from"))],
        calls=[dict(grpc_result(0), item=dict(channel="tikv_grpc", source="tikv2", source_component="tikv"))],
        config=dict(skipped=True, skip_reason="Conditional result was False"),
        log_scan=log_scan(),
    )]
    collected = V.collect(raw)[0]
    assert collected["probes"]["tikv_status"] == {"skipped": "Conditional result was False"}
    expected = dict(source="(no tikv)", source_component="tikv", skipped="there is no other tikv instance to probe from")
    assert collected["peers"]["tikv_status"][0] == expected
    assert collected["config"]["skipped"].startswith("not read")
    report = V.build(V.collect(raw), dict(pd={"skipped": True, "skip_reason": "x"}), {})
    grpc_peer = rows_of(report, channel="tikv_grpc", source="tikv2")[0]
    assert grpc_peer["result"] == "ok" and grpc_peer["call"]["grpc_status_name"] == "OK"


def test_markdown_has_one_line_per_row_and_the_verdict():
    report = build(*cluster())
    page = V.markdown(report)
    assert "- Verdict: **PASS**" in page
    header = [line for line in page.splitlines() if line.startswith("| Instance | Channel")][0]
    for column in ("Protocol", "Cipher", "Cert expiry (days)", "mTLS enforced", "Plaintext refused", "Result"):
        assert column in header
    table = [line for line in page.splitlines() if line.startswith("| pd") or line.startswith("| tikv")]
    assert len([line for line in table if "TLS_AES" in line]) == 15


@pytest.mark.parametrize("failures, expected", [
    (["1.2.3.4:5: chain: certificate verify failed: x: y"], [("chain", "certificate verify failed: x: y")]),
    (["[::1]:5: connect: refused"], [("connect", "refused")]),
    (["odd"], [("other", "odd")]),
])
def test_parse_failures(failures, expected):
    assert V.parse_failures(failures) == expected

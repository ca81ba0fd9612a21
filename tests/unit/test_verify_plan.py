"""_verify_plan and the verify_plan / verify_gather filters: which peer probes which port, and every
instance's results put together for the report, for a 3 PD + 3 TiKV cluster (and its odd cases)."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.tlsops.tikv.plugins.filter.verify_report import verify_gather, verify_plan
from ansible_collections.tlsops.tikv.plugins.module_utils import _verify_plan as P
from ansible_collections.tlsops.tikv.plugins.module_utils import _verify_report as V

SOURCES = {"pd_client": ["tikv", "pd"], "pd_peer": ["pd"], "tikv_grpc": ["tikv"], "tikv_status": ["tikv"]}
METHOD = "/tikvpb.Tikv/KvGet"


def model(name):
    component = "pd" if name.startswith("pd") else "tikv"
    number = int(name[-1])
    address = "10.0.%d.%d" % (0 if component == "pd" else 1, number)
    channels = ([{"channel": "pd_client", "port": 2379}, {"channel": "pd_peer", "port": 2380}] if component == "pd"
                else [{"channel": "tikv_grpc", "port": 20160}, {"channel": "tikv_status", "port": 20180}])
    tls = "/d/%s/tls/" % name
    return dict(name=name, component=component, address=address, channels=channels, ca_path=tls + "ca.crt",
                cert_path=tls + component + ".crt", key_path=tls + component + ".pem")


HOSTS = ["pd1", "pd2", "pd3", "tikv1", "tikv2", "tikv3"]
GROUPS = {"pd": HOSTS[:3], "tikv": HOSTS[3:]}


def controller(served=None):
    """The controller's probes of every port: TLS unless ``served`` says otherwise for (host, channel)."""
    out = []
    for host in HOSTS:
        for channel in model(host)["channels"]:
            mode = (served or {}).get((host, channel["channel"]), "tls")
            result = {"tls": dict(protocol="TLSv1.3", peer_cert={"subject_cn": host}, plaintext_refused=True),
                      "plaintext": dict(protocol=None, peer_cert=None, plaintext_refused=False),
                      "none": dict(protocol=None, peer_cert=None, plaintext_refused=None)}[mode]
            out.append(dict(result, failures=[], tag=dict(instance=host, channel=channel["channel"], port=channel["port"])))
    return out


def plan_for(hosts=tuple(HOSTS), served=None):
    return P.peer_plan(dict((h, model(h)) for h in hosts), GROUPS, SOURCES, P.served(controller(served)), METHOD)


def test_served_reads_tls_plaintext_and_neither_from_the_controller_probes():
    served = P.served(controller({("pd2", "pd_peer"): "plaintext", ("tikv3", "tikv_status"): "none"}))
    assert served["pd1"] == {"pd_client": "tls", "pd_peer": "tls"}
    assert served["pd2"]["pd_peer"] == "plaintext"
    assert served["tikv3"] == {"tikv_grpc": "tls", "tikv_status": "none"}


def test_every_port_gets_one_peer_per_source_component_round_robin():
    plan = plan_for()
    sources = dict(((p["target"], p["channel"], p["source_component"]), p["source"])
                   for plans in plan["plans"].values() for p in plans)
    # The same component: the next instance in the group; the other: the one at the same position.
    assert sources[("pd1", "pd_client", "pd")] == "pd2"
    assert sources[("pd3", "pd_client", "pd")] == "pd1"
    assert sources[("pd2", "pd_client", "tikv")] == "tikv2"
    assert sources[("pd1", "pd_peer", "pd")] == "pd2"
    assert sources[("tikv3", "tikv_grpc", "tikv")] == "tikv1"
    assert sources[("tikv1", "tikv_status", "tikv")] == "tikv2"
    assert len(sources) == 3 * 3 + 3 * 2
    assert all(not p["skipped"] for plans in plan["plans"].values() for p in plans)


def test_each_source_probes_with_its_own_files_and_calls_on_tikv_grpc_ports():
    targets = plan_for()["targets"]
    # tikv2 probes pd2's client port, tikv1's gRPC and status ports (it is tikv1's next TiKV).
    mine = dict(((t["tag"]["target"], t["tag"]["channel"]), t) for t in targets["tikv2"])
    assert set(mine) == {("pd2", "pd_client"), ("tikv1", "tikv_grpc"), ("tikv1", "tikv_status")}
    grpc = mine[("tikv1", "tikv_grpc")]
    assert (grpc["host"], grpc["port"]) == ("10.0.1.1", 20160)
    assert (grpc["ca_path"], grpc["client_cert_path"], grpc["client_key_path"]) == (
        "/d/tikv2/tls/ca.crt", "/d/tikv2/tls/tikv.crt", "/d/tikv2/tls/tikv.pem")
    assert grpc["grpc_method"] == METHOD
    assert "grpc_method" not in mine[("tikv1", "tikv_status")] and "grpc_method" not in mine[("pd2", "pd_client")]
    assert grpc["tag"] == {"target": "tikv1", "channel": "tikv_grpc", "source_component": "tikv"}


def test_skipped_probes_say_why_and_are_not_made():
    # One PD only; tikv3 outside the run (--limit); pd1's peer port plaintext.
    one_pd = dict(GROUPS, pd=["pd1"])
    hosts = ["pd1", "tikv1", "tikv2"]
    plan = P.peer_plan(dict((h, model(h)) for h in hosts), one_pd, SOURCES,
                       P.served(controller({("pd1", "pd_peer"): "plaintext"})), METHOD)
    reasons = dict(((p["target"], p["channel"], p["source_component"]), p["skipped"])
                   for plans in plan["plans"].values() for p in plans)
    assert reasons[("pd1", "pd_client", "pd")] == "there is no other pd instance to probe from"
    assert reasons[("pd1", "pd_peer", "pd")] == "there is no other pd instance to probe from"
    assert reasons[("tikv2", "tikv_grpc", "tikv")] == "tikv3 is not part of this run, so its certificate is unknown"
    assert reasons[("pd1", "pd_client", "tikv")] == ""
    plaintext = P.peer_plan(dict((h, model(h)) for h in HOSTS), GROUPS, SOURCES,
                            P.served(controller({("pd1", "pd_peer"): "plaintext"})), METHOD)
    assert [p["skipped"] for p in plaintext["plans"]["pd1"] if p["channel"] == "pd_peer"] == ["the port serves plaintext"]
    made = [(t["tag"]["target"], t["tag"]["channel"]) for ts in plaintext["targets"].values() for t in ts]
    assert ("pd1", "pd_peer") not in made


def peer_batch(plan, source, refuse=()):
    """What ``source``'s tls_handshake run returned: every planned target passed, the calls to targets in
    ``refuse`` refused."""
    results = []
    for target in plan["targets"].get(source, []):
        result = dict(protocol="TLSv1.3", peer_cert={"subject_cn": target["tag"]["target"]}, failures=[],
                      host=target["host"], port=target["port"], tag=target["tag"])
        if "grpc_method" in target:
            refused = target["tag"]["target"] in refuse
            result["grpc_call"] = dict(call_accepted=not refused, stage="done", grpc_status=16 if refused else 0,
                                       verdict="refused" if refused else "ran", failures=["x"] if refused else [])
        results.append(result)
    return dict(results=results, failures=[])


def per_host(plan, hosts=tuple(HOSTS), refuse=()):
    return dict((h, dict(instance=model(h), log_scan=dict(errors=0, host=h), peer_batch=peer_batch(plan, h, refuse)))
                for h in hosts)


def test_gather_puts_each_instances_results_together():
    plan = plan_for()
    configs = [dict(tag=h, reachable=True) for h in HOSTS]
    links = [dict(tag=h, checked=True) for h in HOSTS[:3]]
    gathered = P.gather(HOSTS, HOSTS, per_host(plan, refuse=["tikv3"]), plan, controller(), configs, links)
    assert [g["instance"]["name"] for g in gathered] == HOSTS
    pd1, tikv3 = gathered[0], gathered[5]
    assert [r["tag"]["channel"] for r in pd1["controller"]] == ["pd_client", "pd_peer"]
    assert pd1["log_scan"]["host"] == "pd1" and pd1["config"]["tag"] == "pd1" and pd1["peer_links"]["tag"] == "pd1"
    # pd1's ports as probed by its peers: pd_client from tikv1 and pd2, pd_peer from pd2; no calls.
    assert sorted((e["item"]["channel"], e["item"]["source"]) for e in pd1["peers"]) == [
        ("pd_client", "pd2"), ("pd_client", "tikv1"), ("pd_peer", "pd2")]
    assert all(e["peer_cert"]["subject_cn"] == "pd1" for e in pd1["peers"])
    assert pd1["calls"] == []
    # tikv3's gRPC port: probed and called by tikv1 (the call refused), its status port probed by tikv1.
    assert [(e["item"]["channel"], e["item"]["source"]) for e in tikv3["peers"]] == [
        ("tikv_grpc", "tikv1"), ("tikv_status", "tikv1")]
    assert [c["call_accepted"] for c in tikv3["calls"]] == [False]
    assert tikv3["calls"][0]["item"]["source"] == "tikv1"
    assert tikv3["peer_links"] == {}


def test_a_host_that_dropped_out_is_named_and_what_it_was_to_probe_is_not_made():
    plan = plan_for()
    active = [h for h in HOSTS if h != "tikv1"]
    gathered = P.gather(HOSTS, active, per_host(plan), plan, controller(), [], [])
    tikv1 = gathered[3]
    assert tikv1["failed_host"] == "a task failed on it or it was unreachable during the audit"
    assert tikv1["instance"]["name"] == "tikv1" and "peers" not in tikv1
    # tikv1 was to probe pd1's client port and tikv3's ports: not made, and said so.
    pd1 = gathered[0]
    from_tikv1 = [e for e in pd1["peers"] if e["item"]["source"] == "tikv1"]
    assert from_tikv1[0]["skipped"] is True
    assert from_tikv1[0]["item"]["skipped"] == "tikv1 made no probe (a task failed on it)"
    tikv3 = gathered[5]
    assert [c["item"]["skipped"] for c in tikv3["calls"]] == ["tikv1 made no probe (a task failed on it)"]


def test_the_gathered_results_make_a_passing_report_and_a_refused_call_fails_it():
    plan = plan_for()
    gathered = P.gather(HOSTS, HOSTS, per_host(plan, refuse=["tikv2"]), plan, controller(), [], [])
    collected = dict((c["instance"]["name"], c) for c in V.collect(gathered))
    assert collected["tikv2"]["calls"]["tikv_grpc"][0]["result"]["call_accepted"] is False
    assert collected["tikv2"]["calls"]["tikv_grpc"][0]["source"] == "tikv3"
    assert collected["pd2"]["peers"]["pd_client"][0]["source"] in ("tikv2", "pd3")
    assert set(collected["tikv1"]["probes"]) == {"tikv_grpc", "tikv_status"}


def test_the_filters_check_their_input():
    with pytest.raises(AnsibleFilterError, match="expected the controller probes' results"):
        verify_plan({}, {}, GROUPS, SOURCES, METHOD)
    with pytest.raises(AnsibleFilterError, match="expected the instance models by host"):
        verify_plan([], [], GROUPS, SOURCES, METHOD)
    with pytest.raises(AnsibleFilterError, match="expected the output of tlsops.tikv.verify_plan"):
        verify_gather({}, HOSTS, HOSTS, None, [])
    plan = verify_plan(controller(), dict((h, model(h)) for h in HOSTS), GROUPS, SOURCES, METHOD)
    assert plan["served"]["tikv1"]["tikv_grpc"] == "tls" and set(plan) == {"served", "plans", "targets"}
    gathered = verify_gather(per_host(plan), HOSTS, HOSTS, plan, controller())
    assert len(gathered) == 6 and gathered[0]["config"] == {}

"""The rotation filters: what the rotate role concludes from synthetic instance records (the files, the
handshakes and the gRPC calls probe.yml collects), for rotate_certs and each phase of rotate_ca."""

from __future__ import annotations

import copy

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.tlsops.tikv.plugins.filter.rotation import (
    FilterModule, ca_rotation_phase, pem_certificates, rotation_judge)

OLD, NEW = "CN=old CA", "CN=new CA"
OLD_FP, NEW_FP = "AA:AA:01", "BB:BB:02"
CAS = {"old": {"subject": OLD, "anchors": [OLD_FP]}, "new": {"subject": NEW, "anchors": [NEW_FP]}}
REFUSED = "client_cert: the server rejected our client certificate /c/probe.crt after the handshake (tlsv1 alert unknown ca)"


def instance(name, component):
    if component == "pd":
        channels = [{"channel": "pd_client", "port": 2379}, {"channel": "pd_peer", "port": 2380}]
    else:
        channels = [{"channel": "tikv_grpc", "port": 20160}, {"channel": "tikv_status", "port": 20180}]
    return {"name": name, "component": component, "address": "10.0.0.1", "channels": channels}


def tls_row(channel, port, client, serial="S1", issuer=OLD, failures=(), requests_cert=None):
    return {"channel": channel, "port": port, "client": client,
            "peer_cert": {"serial": serial, "issuer": issuer} if serial else None,
            "failures": ["10.0.0.1:%d: %s" % (port, f) for f in failures], "client_cert_required": requests_cert}


def seen(name, component, serial="S1", issuer=OLD, anchors=(OLD_FP,), served=None, accepts=None,
         status_requests_cert=False, clients=("operator",)):
    """A record as probe.yml keeps it. served: {channel: (serial, issuer)}; accepts: {client: bool} for the
    ports that check client certificates (all of them by default)."""
    inst = instance(name, component)
    accepts = accepts or {}
    tls, grpc = [], []
    for chan in inst["channels"]:
        serial_here, issuer_here = (served or {}).get(chan["channel"], (serial, issuer))
        for client in clients:
            refused = client in accepts and not accepts[client]
            checks_cert = chan["channel"] != "tikv_status" or status_requests_cert
            failures = [REFUSED] if refused and checks_cert and chan["channel"] != "tikv_grpc" else []
            tls.append(tls_row(chan["channel"], chan["port"], client, serial_here, issuer_here, failures,
                               status_requests_cert if chan["channel"] == "tikv_status" and client != "operator" else None))
        if chan["channel"] == "tikv_grpc":
            for client in clients:
                if client == "operator":
                    continue
                refused = client in accepts and not accepts[client]
                grpc.append({"client": client, "stage": "call" if refused else "done",
                             "error": "the server closed the connection before answering the call" if refused else None})
    return {"instance": inst, "file": {"serial": serial, "issuer": issuer, "error": None}, "anchors": list(anchors),
            "tls": tls, "grpc": grpc}


def cluster(**kw):
    return [seen("pd1", "pd", **kw), seen("pd2", "pd", **kw), seen("tikv1", "tikv", **kw)]


# ---------------------------------------------------------------------------------------------
# rotate_certs: served


def test_served_is_met_when_every_port_serves_the_file_serial():
    judged = rotation_judge(cluster(), "served")
    assert judged["met"] and judged["unmet"] == [] and judged["lines"] == []


def test_a_status_port_with_the_old_serial_is_named_and_marked_for_a_reload():
    records = cluster(serial="NEW1")
    records[2] = seen("tikv1", "tikv", serial="NEW1", served={"tikv_status": ("OLD9", OLD)})
    judged = rotation_judge(records, "served")
    assert judged["unmet"] == ["tikv1"]
    assert judged["instances"]["tikv1"]["ports"] == ["tikv_status"]
    assert judged["instances"]["tikv1"]["files"] == []
    assert judged["lines"] == ["tikv1 tikv_status 10.0.0.1:20180: serves serial OLD9, the certificate file holds serial "
                               "NEW1 (the new certificate is not loaded)"]


def test_a_port_serving_nothing_and_an_unreadable_file_are_unmet():
    records = cluster()
    records[0]["tls"][0]["peer_cert"] = None
    records[0]["tls"][0]["failures"] = ["10.0.0.1:2379: connect: connection refused"]
    records[1]["file"] = {"serial": None, "issuer": None, "error": "pd2: /d/tls/pd.crt: the file does not exist"}
    judged = rotation_judge(records, "served")
    assert judged["unmet"] == ["pd1", "pd2"]
    assert "serves no certificate: 10.0.0.1:2379: connect: connection refused" in judged["lines"][0]
    assert judged["instances"]["pd2"]["files"] == ["its certificate file cannot be read: pd2: /d/tls/pd.crt: the file "
                                                   "does not exist"]
    assert judged["instances"]["pd2"]["ports"] == []


# ---------------------------------------------------------------------------------------------
# rotate_ca: the three expectations and the phase


def test_trust_new_needs_the_new_ca_in_ca_crt_and_every_checking_port_to_accept_it():
    before = cluster(clients=("new",), accepts={"new": False})
    judged = rotation_judge(before, "trust_new", CAS)
    assert judged["unmet"] == ["pd1", "pd2", "tikv1"]
    assert judged["instances"]["pd1"]["files"] == ["its ca.crt lacks the new CA (1 certificate(s) missing)"]
    # The peer port is not judged (same CA pool as the client port; its CN list may refuse any probe) and the
    # status port without cert-allowed-cn checks no client certificate at all.
    assert judged["instances"]["pd1"]["ports"] == ["pd_client"]
    assert judged["instances"]["tikv1"]["ports"] == ["tikv_grpc"]
    after = cluster(clients=("new",), anchors=(OLD_FP, NEW_FP))
    assert rotation_judge(after, "trust_new", CAS)["met"]


def test_a_status_port_that_asks_for_client_certificates_is_judged_too():
    records = [seen("tikv1", "tikv", clients=("new",), anchors=(OLD_FP, NEW_FP), accepts={"new": False},
                    status_requests_cert=True)]
    records[0]["grpc"][0].update(stage="done", error=None)  # gRPC reloaded already, the status port did not
    judged = rotation_judge(records, "trust_new", CAS)
    assert judged["instances"]["tikv1"]["ports"] == ["tikv_status"]


def test_fingerprints_compare_without_separators_or_case():
    records = cluster(clients=("new",), anchors=(OLD_FP, "bbbb02"))
    assert rotation_judge(records, "trust_new", CAS)["met"]


def test_drop_old_needs_the_old_ca_gone_and_its_certificates_refused():
    still = cluster(clients=("old",), anchors=(NEW_FP, OLD_FP), serial="N", issuer=NEW)
    judged = rotation_judge(still, "drop_old", CAS)
    assert judged["instances"]["pd1"]["files"] == ["its ca.crt still holds the old CA (1 certificate(s))"]
    assert "pd1 pd_client 10.0.0.1:2379: still accepts a client certificate signed by the old CA (it has not dropped " \
           "the old CA)" in judged["lines"]
    done = cluster(clients=("old",), anchors=(NEW_FP,), serial="N", issuer=NEW, accepts={"old": False})
    assert rotation_judge(done, "drop_old", CAS)["met"]


def test_drop_old_is_met_at_once_when_both_cas_share_their_anchor():
    shared = {"old": {"subject": "CN=old intermediate", "anchors": [OLD_FP]},
              "new": {"subject": "CN=new intermediate", "anchors": [OLD_FP]}}
    assert rotation_judge(cluster(clients=("old",)), "drop_old", shared)["met"]


def test_an_unreachable_port_cannot_prove_anything():
    records = cluster(clients=("new",), anchors=(OLD_FP, NEW_FP))
    records[0]["tls"][0].update(peer_cert=None, failures=["10.0.0.1:2379: connect: connection refused"])
    records[2]["grpc"][0].update(stage="connect", error="connection refused")
    judged = rotation_judge(records, "trust_new", CAS)
    assert judged["unmet"] == ["pd1", "tikv1"]
    assert all("could not tell whether it accepts" in line for line in judged["lines"])


def test_served_new_wants_the_file_and_every_port_from_the_new_ca():
    half = cluster(serial="N1", issuer=NEW)
    half[0] = seen("pd1", "pd", serial="O1", issuer=OLD)
    judged = rotation_judge(half, "served_new", CAS)
    assert judged["unmet"] == ["pd1"]
    assert judged["instances"]["pd1"]["files"] == ["its certificate file (serial O1) is issued by CN=old CA, not by the "
                                                   "new CA CN=new CA"]
    assert rotation_judge(cluster(serial="N1", issuer=NEW), "served_new", CAS)["met"]


def test_the_phase_is_the_first_not_done_everywhere():
    start = cluster(clients=("new", "old"), accepts={"new": False})
    assert ca_rotation_phase(start, CAS, [])["phase"] == 1
    trusted = cluster(clients=("new", "old"), anchors=(OLD_FP, NEW_FP))
    state = ca_rotation_phase(trusted, CAS, [{"path": "/c/clients/client.crt", "issuer": OLD}])
    assert state["phase"] == 2 and state["phases"][1]["done"]
    # Leaves done but a client certificate still from the old CA: still phase 2 (phase 3 would lock it out).
    leaves = cluster(clients=("new", "old"), anchors=(NEW_FP, OLD_FP), serial="N", issuer=NEW)
    state = ca_rotation_phase(leaves, CAS, [{"path": "/c/clients/client.crt", "issuer": OLD}])
    assert state["phase"] == 2
    assert state["phases"][2]["lines"] == ["client certificate /c/clients/client.crt is issued by CN=old CA, not by "
                                           "the new CA"]
    assert ca_rotation_phase(leaves, CAS, [{"path": "/c/clients/client.crt", "issuer": NEW}])["phase"] == 3
    done = cluster(clients=("new", "old"), anchors=(NEW_FP,), serial="N", issuer=NEW, accepts={"old": False})
    assert ca_rotation_phase(done, CAS, [{"path": "/c/clients/client.crt", "issuer": NEW}])["phase"] == 4


def test_the_latest_probe_of_a_port_counts():
    """A record keeps earlier probes when a port is probed again after a reload: the latest decides."""
    records = [seen("tikv1", "tikv", serial="NEW1", served={"tikv_status": ("OLD9", OLD)})]
    assert rotation_judge(records, "served")["unmet"] == ["tikv1"]
    records[0]["tls"].append(tls_row("tikv_status", 20180, "operator", serial="NEW1"))
    assert rotation_judge(records, "served")["met"]
    # ...and a port that served nothing on its latest probe is not rescued by an earlier one.
    records[0]["tls"].append(tls_row("tikv_status", 20180, "operator", serial=None,
                                     failures=["connect: connection refused"]))
    assert rotation_judge(records, "served")["unmet"] == ["tikv1"]
    trust = [seen("tikv1", "tikv", clients=("new",), anchors=(OLD_FP, NEW_FP), accepts={"new": False})]
    trust[0]["grpc"].append({"client": "new", "stage": "done", "error": None})
    assert rotation_judge(trust, "trust_new", CAS)["met"]


def test_records_are_not_modified():
    records = cluster(clients=("new",))
    frozen = copy.deepcopy(records)
    rotation_judge(records, "trust_new", CAS)
    assert records == frozen


def test_bad_input_is_refused_with_the_reason():
    with pytest.raises(AnsibleFilterError, match="expect must be one of"):
        rotation_judge(cluster(), "everything")
    with pytest.raises(AnsibleFilterError, match="needs the CAs"):
        rotation_judge(cluster(), "trust_new")
    with pytest.raises(AnsibleFilterError, match="instance.name"):
        rotation_judge([{"instance": {}}], "served")
    with pytest.raises(AnsibleFilterError, match="needs the CAs"):
        ca_rotation_phase(cluster(), {"old": CAS["old"]})


def test_pem_certificates_ignores_wrapping_and_duplicates():
    body = "MIIB" + "A" * 70 + "QQ=="
    wrapped = "-----BEGIN CERTIFICATE-----\n%s\n%s\n-----END CERTIFICATE-----\n" % (body[:64], body[64:])
    flat = "junk\n-----BEGIN CERTIFICATE-----\n%s\n-----END CERTIFICATE-----\n" % body
    assert pem_certificates(wrapped) == pem_certificates(flat) == [body]
    assert pem_certificates(wrapped + flat) == [body]
    assert pem_certificates("") == [] and pem_certificates(None) == []


def test_the_filters_are_registered():
    assert set(FilterModule().filters()) == {"rotation_judge", "ca_rotation_phase", "pem_certificates"}

# -*- coding: utf-8 -*-
# Copyright: tlsops.tikv contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The verify role's judgement: raw probe/call/config/log/peer-link results in, a report out.

Private to the collection; used by the filter plugin ``tlsops.tikv.verify_report`` on the controller.
Pure functions over plain data, so every verdict can be unit-tested without a cluster.

Vocabulary of a result (rows and cluster checks alike):
  ok           the check ran and found what it must
  fail         the check ran and found a problem (or could not run where it had to)
  plaintext    the channel serves plaintext; a failure only when TLS is required for it
  not_checked  the check did not run, with the reason; NEVER counted as verified
  warn         (cluster checks only) something to look at that does not fail the audit
"""

from __future__ import absolute_import, division, print_function

import datetime
import re

FORMAT = 1

CHANNELS = (
    # name, component, port key in the instance model, title
    ("pd_client", "pd", "port", "PD client"),
    ("pd_peer", "pd", "peer_port", "PD peer"),
    ("tikv_grpc", "tikv", "port", "TiKV gRPC"),
    ("tikv_status", "tikv", "status_port", "TiKV status"),
)
CHANNEL_TITLES = dict((c[0], c[3]) for c in CHANNELS)

OK, FAIL, PLAINTEXT, NOT_CHECKED, WARN = "ok", "fail", "plaintext", "not_checked", "warn"

# The log patterns that fail the audit (tls_log_scan's default error patterns), for the summaries.
ERROR_LOG_PATTERNS = ("unknown_authority", "bad_certificate", "expired_certificate", "name_mismatch",
                      "cn_check_failed", "x509", "scheme_mismatch", "outgoing_tls_failure")

# What each check proves, and what it does not (also in docs/verify.md and in every JSON report).
PROVES = {
    "controller_probe": (
        "From the controller with the operator's client certificate: the port speaks TLS, its certificate "
        "chains to the operator's CA and its SANs cover the address dialled, the protocol/cipher it "
        "negotiates, no protocol below the minimum is accepted, a client without a certificate is refused "
        "(where the port must require one), plaintext gets no plaintext answer, and the certificate is valid "
        "long enough. It does not prove that the cluster's own members accept each other."),
    "peer_probe": (
        "From a peer instance's host with that peer's OWN certificate and CA files: the peer trusts this "
        "port's certificate (chain and name) and this port accepts the peer's certificate (with TLS 1.3 a "
        "request is sent after the handshake, so a refusal after the handshake is seen). PD checks its "
        "cert-allowed-cn in the handshake, so for PD ports this includes the allow-list. It uses the peer's "
        "files as they are on disk now, which is what the peer presents on its next connection."),
    "grpc_call": (
        "TiKV gRPC only: one real gRPC call (/tikvpb.Tikv/KvGet with an empty request, a harmless read) made "
        "from the peer's host with the peer's certificate. TiKV checks cert-allowed-cn on every call, not in "
        "the handshake, so only a call that is not answered UNAUTHENTICATED proves the allow-list admits "
        "the peer's CN."),
    "pd_members": "PD's member list names a leader and every PD of the inventory (GET /pd/api/v1/members).",
    "pd_health": (
        "Every member answers PD's health ping on its client URL (GET /pd/api/v1/health). It says NOTHING "
        "about the peer (raft) links: see pd_peer_links."),
    "pd_urls": (
        "Every client and peer URL PD publishes (GET /members) and etcd stores (member list) is https."),
    "stores_up": "Every TiKV of the inventory is a store in state Up at its address (GET /pd/api/v1/stores).",
    "config_security": (
        "Every instance's RUNNING configuration (PD GET /pd/api/v1/config, TiKV status GET /config) has the "
        "CA, certificate and key paths set (and PD's URLs https). It does not prove the files are right: the "
        "probes do."),
    "pd_peer_links": (
        "Every PD member's own etcd metrics show its raft link to every other member active in two readings "
        "a few seconds apart, with no new send failure or disconnection in between. This is the check that "
        "does not lie during a peer URL migration."),
    "log_tls_errors": (
        "The instances' own logs, in the time window, hold no line of a certificate/CA/name/allow-list error "
        "(x509, unknown authority, bad certificate, expired, CN check, scheme mismatch, outgoing TLS failure). "
        "Refused clients (no certificate, plaintext, old protocol) are counted but do not fail: the audit's "
        "own negative probes cause them."),
    "cn_allow_lists": (
        "Cross-check on the controller: each instance's cert-allowed-cn (running config) admits the CN of the "
        "certificate every instance that calls it serves (TiKV from TiKV; PD peer port from PD; PD >= v8.4 "
        "client port, when its list has more than one entry, from TiKV and PD). A static check: the gRPC "
        "calls and peer probes are the proof."),
}

_FAILURE = re.compile(r"^(\S+): ([a-z_]+): (.*)$", re.S)


# --------------------------------------------------------------------------------------------------
# helpers


def parse_failures(failures):
    """tls_handshake / grpc_call failures "<addr>: <check>: <text>" -> [(check, text)]."""
    parsed = []
    for item in failures or []:
        m = _FAILURE.match(str(item))
        parsed.append((m.group(2), m.group(3)) if m else ("other", str(item)))
    return parsed


def _version_tuple(version):
    m = re.match(r"^v?(\d+)\.(\d+)", str(version or ""))
    return (int(m.group(1)), int(m.group(2))) if m else None


def _url_scheme(url):
    return str(url).split("://", 1)[0].lower() if "://" in str(url) else None


def _endpoint(instance, channel):
    for name, _component, key, _title in CHANNELS:
        if name == channel:
            return "%s:%s" % (instance.get("address"), instance.get(key))
    return instance.get("address")


def served_mode(probe):
    """What the port served to the probe: tls, plaintext, unreachable, local (our files) or unknown."""
    if not probe:
        return "unknown"
    checks = [c for c, _t in parse_failures(probe.get("failures"))]
    if "local" in checks and probe.get("protocol") is None and probe.get("plaintext_refused") is None:
        return "local"
    if probe.get("protocol") is not None or probe.get("peer_cert") is not None:
        return "tls"
    if probe.get("plaintext_refused") is False:
        return "plaintext"
    if "connect" in checks:
        return "unreachable"
    return "unknown"


def _days_left(probe):
    cert = (probe or {}).get("peer_cert") or {}
    return cert.get("days_left")


def _cert_summary(probe):
    cert = (probe or {}).get("peer_cert") or {}
    if not cert:
        return None
    return dict((k, cert.get(k)) for k in ("subject_cn", "issuer", "serial", "not_after", "days_left", "sans"))


# --------------------------------------------------------------------------------------------------
# rows


def _row(instance, channel, source, source_kind):
    return dict(instance=instance.get("name"), component=instance.get("component"), channel=channel,
                channel_title=CHANNEL_TITLES.get(channel, channel), endpoint=_endpoint(instance, channel),
                source=source, source_kind=source_kind, protocol=None, cipher=None, alpn=None,
                cert=None, cert_days_left=None, mtls_enforced=None, mtls_note=None, plaintext_refused=None,
                client_cert_accepted=None, call=None, weak_protocols_accepted=[], checks=[], result=NOT_CHECKED,
                reasons=[], notes=[], proves=None)


def _check(row, name, status, detail):
    row["checks"].append(dict(name=name, status=status, detail=detail))


def _finish(row):
    """Row result from its checks: any fail -> fail; else plaintext; else not_checked; else ok."""
    statuses = [c["status"] for c in row["checks"]]
    if FAIL in statuses:
        row["result"] = FAIL
        row["reasons"] = ["%s: %s" % (c["name"], c["detail"]) for c in row["checks"] if c["status"] == FAIL]
    elif PLAINTEXT in statuses:
        row["result"] = PLAINTEXT
        row["reasons"] = [c["detail"] for c in row["checks"] if c["status"] == PLAINTEXT]
    elif not statuses or all(s == NOT_CHECKED for s in statuses):
        row["result"] = NOT_CHECKED
        row["reasons"] = [c["detail"] for c in row["checks"] if c["status"] == NOT_CHECKED] or ["no check ran"]
    else:
        row["result"] = OK
        row["reasons"] = [c["detail"] for c in row["checks"] if c["status"] == NOT_CHECKED]
    return row


def _plaintext_status(channel, ctx):
    """How a plaintext channel counts: plaintext (tolerated) or fail."""
    if ctx["require_tls"]:
        return FAIL, "serves plaintext and tikv_tls_verify_require_tls is true"
    if ctx["cluster_state"] == "plaintext":
        return PLAINTEXT, "serves plaintext (the whole cluster is plaintext)"
    if channel in ctx["allow_plaintext_channels"]:
        return PLAINTEXT, "serves plaintext (allowed by tikv_tls_verify_allow_plaintext_channels)"
    return FAIL, "serves plaintext while the cluster runs TLS (%s)" % ctx["cluster_state"]


def controller_row(instance, channel, probe, config, ctx):
    """Judge the controller's probe of one channel."""
    row = _row(instance, channel, "controller", "controller")
    row["proves"] = "controller_probe"
    if probe is None or probe.get("skipped"):
        _check(row, "probe", NOT_CHECKED, (probe or {}).get("skipped") or "the probe did not run")
        return _finish(row)
    mode = served_mode(probe)
    row.update(protocol=probe.get("protocol"), cipher=probe.get("cipher"), alpn=probe.get("alpn"),
               cert=_cert_summary(probe), cert_days_left=_days_left(probe),
               plaintext_refused=probe.get("plaintext_refused"),
               weak_protocols_accepted=list(probe.get("weak_protocols_accepted") or []))
    failures = parse_failures(probe.get("failures"))
    if mode == "plaintext":
        status, text = _plaintext_status(channel, ctx)
        _check(row, "tls", status, text)
        row["mtls_enforced"] = False
        return _finish(row)
    if mode == "local":
        _check(row, "local", FAIL, "; ".join(t for c, t in failures if c == "local") +
               " (the operator's files: set tikv_tls_operator_ca_path / _cert_path / _key_path)")
        return _finish(row)
    if mode == "unreachable":
        _check(row, "connect", FAIL, "; ".join(t for c, t in failures if c == "connect"))
        return _finish(row)
    if ctx.get("operator_missing"):
        _check(row, "operator", FAIL, "the operator's CA/certificate/key are not on the controller (%s), so the port "
               "was probed without them; set tikv_tls_operator_ca_path, _cert_path and _key_path"
               % ", ".join(ctx["operator_missing"]))

    security = (config or {}).get("security") or {}
    allowed = security.get("cert_allowed_cn")
    config_known = bool((config or {}).get("reachable"))
    operator_cn = ctx.get("operator_cn")

    # The PD peer port with an allow-list that does not admit the operator refuses it by design.
    if channel == "pd_peer" and config_known and allowed and operator_cn and operator_cn not in allowed \
            and any(c == "client_cert" for c, _t in failures):
        _check(row, "client_cert", NOT_CHECKED,
               "the peer port admits only CN %s (cert-allowed-cn) and refuses the operator's CN %s, as configured; "
               "the PD peer rows check this port" % (", ".join(allowed), operator_cn))
        for check, text in failures:
            if check in ("chain", "hostname", "min_days_valid"):
                _check(row, check, FAIL, text)
        return _finish(row)

    expect_client_cert = True
    if channel == "tikv_status":
        if not config_known:
            expect_client_cert = None
        else:
            expect_client_cert = bool(allowed)
    measured = probe.get("client_cert_required")
    row["mtls_enforced"] = measured
    judged = set()
    for check, text in failures:
        if check == "require_client_cert":
            judged.add(check)
            if expect_client_cert is True:
                _check(row, "mtls", FAIL, text)
            elif expect_client_cert is False:
                row["mtls_note"] = "not required: TiKV's status port asks for a certificate only with cert-allowed-cn"
            else:
                row["mtls_note"] = "not judged: the instance's cert-allowed-cn is unknown (its /config did not answer)"
        elif check == "client_cert":
            _check(row, "client_cert", FAIL, "the operator's certificate was refused: %s" % text)
        else:
            _check(row, check, FAIL, text)
    if measured is True and expect_client_cert is False:
        row["mtls_note"] = "a client certificate is required although no cert-allowed-cn is set"
    if not any(c["status"] == FAIL for c in row["checks"]):
        _check(row, "handshake", OK, "%s %s" % (row["protocol"], row["cipher"]))
    if measured is True and "require_client_cert" not in judged:
        _check(row, "mtls", OK, "a client without a certificate is refused")
    if probe.get("plaintext_refused") is True:
        _check(row, "plaintext", OK, "no plaintext answer")
    return _finish(row)


def peer_row(instance, channel, peer, call, config, ctx, controller_mode):
    """Judge a probe made from a peer's host with the peer's certificate (and its gRPC call)."""
    source = (peer or {}).get("source") or "?"
    row = _row(instance, channel, source, "peer")
    row["proves"] = "peer_probe"
    if peer is None or peer.get("skipped"):
        _check(row, "peer_probe", NOT_CHECKED, (peer or {}).get("skipped") or "the peer probe did not run")
        return _finish(row)
    probe = peer.get("result") or {}
    row.update(protocol=probe.get("protocol"), cipher=probe.get("cipher"), alpn=probe.get("alpn"),
               cert=_cert_summary(probe), cert_days_left=_days_left(probe))
    failures = parse_failures(probe.get("failures"))
    mode = served_mode(probe)
    if mode == "plaintext":
        status, text = _plaintext_status(channel, ctx)
        _check(row, "tls", status, text)
        return _finish(row)
    for check, text in failures:
        if check == "client_cert":
            row["client_cert_accepted"] = False
            _check(row, "client_cert", FAIL, "%s's certificate was refused: %s" % (source, text))
        elif check == "local":
            _check(row, "local", FAIL, "%s's own TLS files cannot be loaded on its host: %s" % (source, text))
        else:
            _check(row, check, FAIL, text)
    if not failures:
        row["client_cert_accepted"] = True
        _check(row, "handshake", OK, "%s accepts %s's certificate and %s trusts it" % (
            instance.get("name"), source, source))
    if channel == "tikv_grpc":
        row["proves"] = "peer_probe+grpc_call"
        _judge_call(row, instance, call, config, source, failures)
    return _finish(row)


_CLOSED_AFTER_HANDSHAKE = ("with TLS 1.3 a server that refuses the client certificate may just close the "
                           "connection after the handshake")


def _judge_call(row, instance, call, config, source, failures):
    allowed = ((config or {}).get("security") or {}).get("cert_allowed_cn")
    allow_text = ("cert-allowed-cn [%s]" % ", ".join(allowed)) if allowed else "no cert-allowed-cn"
    if call is None or call.get("skipped"):
        _check(row, "grpc_call", NOT_CHECKED, (call or {}).get("skipped") or "no gRPC call was made")
        return
    result = call.get("result") or {}
    row["call"] = dict((k, result.get(k)) for k in ("call_accepted", "grpc_status", "grpc_status_name",
                                                    "grpc_message", "verdict", "error"))
    accepted = result.get("call_accepted")
    if accepted is True:
        _check(row, "grpc_call", OK, "a gRPC call with %s's certificate was served (%s)" % (source, allow_text))
    elif accepted is False:
        _check(row, "grpc_call", FAIL, "%s refused a gRPC call from %s: %s (%s)" % (
            instance.get("name"), source, result.get("verdict"), allow_text))
    elif failures:
        _check(row, "grpc_call", NOT_CHECKED, "no gRPC call: the handshake already failed")
    elif result.get("stage") in ("connect", "handshake", "call") and result.get("error"):
        # No gRPC answer at all: the TLS session was not accepted either (whatever the probe saw).
        row["client_cert_accepted"] = None
        why = result.get("error")
        if result.get("stage") == "call" and result.get("protocol") == "TLSv1.3" and "closed" in str(why):
            why = "%s (%s)" % (why, _CLOSED_AFTER_HANDSHAKE)
        _check(row, "grpc_call", FAIL, "the gRPC call from %s got no answer: %s" % (source, why))
    else:
        _check(row, "grpc_call", NOT_CHECKED, "the gRPC call does not tell whether %s is admitted: %s" % (
            source, result.get("verdict") or result.get("error")))


# --------------------------------------------------------------------------------------------------
# cluster checks


def _cluster_check(name, title, result, detail, problems=None, data=None):
    return dict(name=name, title=title, result=result, detail=detail, problems=list(problems or []),
                data=data, proves=PROVES.get(name))


def check_pd_members(pd, pd_instances):
    if not pd or pd.get("skipped"):
        return _cluster_check("pd_members", "PD members and leader", NOT_CHECKED,
                              (pd or {}).get("skipped") or "PD was not asked")
    if pd.get("failed") or pd.get("members") is None:
        return _cluster_check("pd_members", "PD members and leader", FAIL,
                              "PD did not answer: %s" % "; ".join(pd.get("problems") or [pd.get("msg") or "?"]))
    members = (pd.get("members") or {}).get("members") or []
    names = [m.get("name") for m in members]
    leader = pd.get("leader")
    problems = []
    if not leader:
        problems.append("PD has no leader")
    expected = [i.get("pd_name") for i in pd_instances if i.get("pd_name")]
    for name in expected:
        if name not in names:
            problems.append("inventory PD %s is not a member (members: %s)" % (name, ", ".join(names)))
    for name in names:
        if expected and name not in expected:
            problems.append("member %s is not in the inventory" % name)
    detail = "%d member(s), leader %s" % (len(names), leader or "none")
    return _cluster_check("pd_members", "PD members and leader", FAIL if problems else OK, detail, problems,
                          dict(members=names, leader=leader))


def check_pd_health(pd):
    if not pd or pd.get("skipped") or pd.get("health") is None:
        return _cluster_check("pd_health", "PD members healthy", NOT_CHECKED if not pd or pd.get("skipped") else FAIL,
                              (pd or {}).get("skipped") or "PD's /health was not read")
    problems = ["member %s is not healthy (client URLs %s)" % (h.get("name"), ", ".join(h.get("client_urls") or []))
                for h in pd["health"] if not h.get("health")]
    return _cluster_check("pd_health", "PD members healthy", FAIL if problems else OK,
                          "%d of %d healthy" % (len(pd["health"]) - len(problems), len(pd["health"])), problems)


def check_pd_urls(pd, ctx):
    title = "PD client and peer URLs https"
    if not pd or pd.get("skipped") or pd.get("members") is None:
        return _cluster_check("pd_urls", title, NOT_CHECKED, "PD's member list was not read")
    urls = []
    for member in (pd.get("members") or {}).get("members") or []:
        for kind in ("client_urls", "peer_urls"):
            for url in member.get(kind) or []:
                urls.append((member.get("name"), kind.replace("_urls", ""), "PD /members", url))
    for member in pd.get("etcd_members") or []:
        for kind, key in (("client", "clientURLs"), ("peer", "peerURLs")):
            for url in member.get(key) or []:
                urls.append((member.get("name"), kind, "etcd member list", url))
    http = [u for u in urls if _url_scheme(u[3]) != "https"]
    if not urls:
        return _cluster_check("pd_urls", title, FAIL, "no URL listed")
    if not http:
        return _cluster_check("pd_urls", title, OK, "all %d URLs are https" % len(urls))
    texts = ["%s %s URL %s (%s)" % (name, kind, url, where) for name, kind, where, url in http]
    if ctx["require_tls"]:
        return _cluster_check("pd_urls", title, FAIL, "%d URL(s) not https" % len(http), texts)
    if len(http) == len(urls) and ctx["cluster_state"] == "plaintext":
        return _cluster_check("pd_urls", title, PLAINTEXT, "all %d URLs are http (plaintext cluster)" % len(urls), texts)
    tolerated = [u for u in http if u[1] == "peer" and "pd_peer" in ctx["allow_plaintext_channels"]]
    if len(tolerated) == len(http):
        return _cluster_check("pd_urls", title, PLAINTEXT, "peer URLs http (allowed by "
                              "tikv_tls_verify_allow_plaintext_channels)", texts)
    return _cluster_check("pd_urls", title, FAIL, "%d URL(s) not https" % len(http), texts)


def check_stores(pd, tikv_instances):
    title = "Every TiKV store Up at its address"
    if not pd or pd.get("skipped") or pd.get("stores") is None:
        return _cluster_check("stores_up", title, NOT_CHECKED if not pd or pd.get("skipped") else FAIL,
                              (pd or {}).get("skipped") or "PD's /stores was not read")
    stores = [(s.get("store") or {}) for s in (pd.get("stores") or {}).get("stores") or []]
    by_address = dict((s.get("address"), s) for s in stores)
    problems, data = [], []
    for inst in tikv_instances:
        address = "%s:%s" % (inst.get("address"), inst.get("port"))
        store = by_address.get(address)
        if store is None:
            problems.append("%s (%s): no store with this address (stores: %s)" % (
                inst.get("name"), address, ", ".join(sorted(str(a) for a in by_address)) or "none"))
            data.append(dict(instance=inst.get("name"), address=address, store_id=None, state=None))
            continue
        data.append(dict(instance=inst.get("name"), address=address, store_id=store.get("id"),
                         state=store.get("state_name")))
        if store.get("state_name") != "Up":
            problems.append("%s (%s): store %s is %s" % (
                inst.get("name"), address, store.get("id"), store.get("state_name")))
    known = set("%s:%s" % (i.get("address"), i.get("port")) for i in tikv_instances)
    for store in stores:
        if store.get("address") not in known and store.get("state_name") not in ("Up", "Tombstone"):
            problems.append("store %s at %s (not in the inventory) is %s" % (
                store.get("id"), store.get("address"), store.get("state_name")))
    up = sum(1 for d in data if d["state"] == "Up")
    return _cluster_check("stores_up", title, FAIL if problems else OK, "%d of %d inventory stores Up" % (
        up, len(tikv_instances)), problems, data)


def check_config_security(instances, configs, ctx):
    title = "Running config has the TLS paths set"
    problems, plain, data = [], [], []
    for inst in instances:
        config = configs.get(inst["name"]) or {}
        if config.get("skipped"):
            problems.append("%s: /config not read: %s" % (inst["name"], config["skipped"]))
            continue
        if not config.get("reachable"):
            problems.append("%s: /config did not answer: %s" % (inst["name"], "; ".join(config.get("problems") or ["?"])))
            continue
        security = config.get("security") or {}
        entry = dict(instance=inst["name"], tls=security.get("tls"), partial=security.get("partial"),
                     cert_allowed_cn=security.get("cert_allowed_cn"))
        data.append(entry)
        if security.get("partial"):
            problems.append("%s: partial [security] (ca %r, cert %r, key %r)" % (
                inst["name"], security.get("ca_path"), security.get("cert_path"), security.get("key_path")))
        elif not security.get("tls"):
            plain.append("%s: no TLS paths in its running config" % inst["name"])
        if inst.get("component") == "pd":
            for key, urls in sorted((config.get("urls") or {}).items()):
                for url in urls:
                    if _url_scheme(url) == "http":
                        peer = "peer" in key
                        if security.get("tls") and not (peer and "pd_peer" in ctx["allow_plaintext_channels"]
                                                        and not ctx["require_tls"]):
                            problems.append("%s: %s %s is http although TLS paths are set" % (inst["name"], key, url))
    if problems:
        return _cluster_check("config_security", title, FAIL, "%d problem(s)" % len(problems + plain),
                              problems + plain, data)
    if not plain:
        return _cluster_check("config_security", title, OK,
                              "CA, certificate and key set on all %d instances" % len(data), [], data)
    if ctx["require_tls"]:
        return _cluster_check("config_security", title, FAIL, "%d instance(s) without TLS paths and "
                              "tikv_tls_verify_require_tls is true" % len(plain), plain, data)
    if len(plain) == len(instances) and ctx["cluster_state"] in ("plaintext", "unknown"):
        return _cluster_check("config_security", title, PLAINTEXT, "no TLS paths (plaintext cluster)", plain, data)
    return _cluster_check("config_security", title, FAIL, "%d instance(s) without TLS paths in a cluster that runs "
                          "TLS" % len(plain), plain, data)


def check_peer_links(pd_instances, links_by_instance):
    title = "PD peer (raft) links"
    if len(pd_instances) <= 1:
        return _cluster_check("pd_peer_links", title, OK if pd_instances else NOT_CHECKED,
                              "a single PD member has no peer links" if pd_instances else "no PD in the inventory")
    problems, data = [], []
    checked = 0
    for inst in pd_instances:
        links = links_by_instance.get(inst["name"]) or {}
        if links.get("skipped"):
            problems.append("%s: not read: %s" % (inst["name"], links["skipped"]))
            continue
        if not links.get("checked"):
            problems.append("%s: %s" % (inst["name"], "; ".join(links.get("problems") or ["links not judged"])))
            continue
        checked += 1
        problems.extend("%s: %s" % (inst["name"], p) for p in links.get("problems") or [])
        for link in links.get("links") or []:
            data.append(dict(member=inst["name"], to=link.get("remote_name"), active=link.get("active"),
                             ok=link.get("ok"), problem=link.get("problem"), round_trip_ms=link.get("round_trip_ms"),
                             sent_failures_total=link.get("sent_failures_total")))
    bad_links = sum(1 for d in data if not d["ok"])
    detail = "%d link(s) from %d member(s), %d broken" % (len(data), checked, bad_links)
    return _cluster_check("pd_peer_links", title, FAIL if problems else OK, detail, problems, data)


def check_logs(instances, scans, ctx):
    title = "TLS errors in the instances' logs"
    problems, data, unread = [], [], []
    for inst in instances:
        scan = scans.get(inst["name"]) or {}
        if scan.get("skipped"):
            unread.append("%s: %s" % (inst["name"], scan["skipped"]))
            continue
        if scan.get("failed") or "counts" not in scan:
            unread.append("%s: the log scan failed: %s" % (inst["name"], scan.get("msg") or "?"))
            continue
        present = [f["path"] for f in scan.get("files") or [] if f.get("exists")]
        counts = dict((k, v) for k, v in (scan.get("counts") or {}).items() if v)
        data.append(dict(instance=inst["name"], errors=scan.get("errors", 0), counts=counts, files=present,
                         since=scan.get("since"), until=scan.get("until"),
                         error_lines=[dict(time=line.get("time"), path=line.get("path"), text=line.get("text"))
                                      for line in scan.get("error_lines") or []]))
        if not present:
            unread.append("%s: none of its log files exist (%s)" % (
                inst["name"], ", ".join(f["path"] for f in scan.get("files") or [])))
        if scan.get("errors"):
            error_names = [n for n in ERROR_LOG_PATTERNS if counts.get(n)]
            last = (scan.get("error_lines") or [{}])[-1]
            problems.append("%s: %d error line(s) (%s), last at %s" % (
                inst["name"], scan["errors"], ", ".join("%s=%d" % (n, counts[n]) for n in error_names) or "custom",
                last.get("time") or "?"))
    window = "since %s" % ctx.get("log_since") if ctx.get("log_since") else "whole files"
    if problems:
        result = FAIL if ctx.get("fail_on_log_errors", True) else WARN
        return _cluster_check("log_tls_errors", title, result, "%d instance(s) logged TLS errors (%s)" % (
            len(problems), window), problems + unread, data)
    if unread and not data:
        return _cluster_check("log_tls_errors", title, NOT_CHECKED, "no log was read", unread, data)
    if unread:
        return _cluster_check("log_tls_errors", title, WARN, "no TLS error in the logs read (%s); some were not "
                              "read" % window, unread, data)
    return _cluster_check("log_tls_errors", title, OK, "no TLS error line in %d instance(s) (%s)" % (len(data), window),
                          [], data)


def check_allow_lists(instances, configs, served_cns):
    """Static cross-check: each allow-list admits the CN every caller serves."""
    title = "cert-allowed-cn admits every caller's CN"
    by_component = {"pd": [i for i in instances if i.get("component") == "pd"],
                    "tikv": [i for i in instances if i.get("component") == "tikv"]}
    problems, data, any_list = [], [], False
    unknown = []
    for inst in instances:
        config = configs.get(inst["name"]) or {}
        if not config.get("reachable"):
            unknown.append(inst["name"])
            continue
        allowed = (config.get("security") or {}).get("cert_allowed_cn") or []
        if not allowed:
            continue
        any_list = True
        callers = []
        if inst["component"] == "tikv":
            callers = [(c, "tikv_grpc") for c in by_component["tikv"] if c["name"] != inst["name"]]
        else:
            callers = [(c, "pd_peer") for c in by_component["pd"]]  # its own CN too: etcd checks both sides
            version = _version_tuple(inst.get("version"))
            if version is not None and version >= (8, 4) and len(allowed) > 1:
                callers += [(c, "pd_client") for c in by_component["tikv"]]
                callers += [(c, "pd_client") for c in by_component["pd"] if c["name"] != inst["name"]]
        for caller, channel in callers:
            cn = served_cns.get(caller["name"])
            entry = dict(instance=inst["name"], channel=channel, caller=caller["name"], caller_cn=cn,
                         allowed=allowed, admitted=None if cn is None else cn in allowed)
            data.append(entry)
            if cn is not None and cn not in allowed:
                problems.append("%s (%s) does not admit %s's CN %r (cert-allowed-cn: %s)" % (
                    inst["name"], CHANNEL_TITLES[channel], caller["name"], cn, ", ".join(allowed)))
    if problems:
        return _cluster_check("cn_allow_lists", title, FAIL, "%d caller(s) not admitted" % len(problems), problems, data)
    if not any_list:
        detail = "no instance sets cert-allowed-cn"
        if unknown:
            detail += " (not known for %s: /config not read)" % ", ".join(unknown)
        return _cluster_check("cn_allow_lists", title, NOT_CHECKED, detail, [], data)
    unknown_cn = sorted(set(d["caller"] for d in data if d["caller_cn"] is None))
    detail = "%d caller/allow-list pair(s) admitted" % sum(1 for d in data if d["admitted"])
    if unknown_cn:
        detail += "; CN unknown for %s (their certificate was not read)" % ", ".join(unknown_cn)
    return _cluster_check("cn_allow_lists", title, OK, detail, [], data)


# --------------------------------------------------------------------------------------------------
# from the role's registered results


def _skip_reason(result, item=None):
    if item and item.get("skipped"):
        return str(item["skipped"])
    return str(result.get("skip_reason") or "skipped")


def _skipped_or(result, reason):
    if not result:
        return {"skipped": reason}
    if result.get("skipped"):
        text = result.get("skip_reason")
        return {"skipped": reason if not text or text == "Conditional result was False" else text}
    return result


def collect(raw_hosts):
    """The role's per-host registered results (``__tikv_tls_verify_raw``) -> build()'s input."""
    out = []
    for host in raw_hosts:
        item = dict(instance=host.get("instance") or {}, failed_host=host.get("failed_host"))
        probes = {}
        for result in host.get("controller") or []:
            # A loop item (``item``) or one target of a run over many (``tag``) names the channel.
            channel = (result.get("item") or result.get("tag") or {}).get("channel")
            probes[channel] = {"skipped": _skip_reason(result)} if result.get("skipped") else result
        item["probes"] = probes
        for key in ("peers", "calls"):
            grouped = {}
            for result in host.get(key) or []:
                plan = result.get("item") or {}
                entry = dict(source=plan.get("source") or "(no %s)" % plan.get("source_component", "peer"),
                             source_component=plan.get("source_component"))
                if result.get("skipped"):
                    entry["skipped"] = _skip_reason(result, plan)
                else:
                    entry["result"] = result
                grouped.setdefault(plan.get("channel"), []).append(entry)
            item[key] = grouped
        item["config"] = _skipped_or(host.get("config"), "not read: the port answered neither TLS nor plaintext")
        item["log_scan"] = _skipped_or(host.get("log_scan"), "the log scan did not run")
        if (item["instance"] or {}).get("component") == "pd":
            item["peer_links"] = _skipped_or(host.get("peer_links"),
                                             "not read: the client port answered neither TLS nor plaintext")
        out.append(item)
    return out


# --------------------------------------------------------------------------------------------------
# the whole report


def cluster_tls_state(controller_rows):
    modes = [r["_mode"] for r in controller_rows if r.get("_mode")]
    tls = sum(1 for m in modes if m == "tls")
    plain = sum(1 for m in modes if m == "plaintext")
    if tls and plain:
        return "mixed"
    if tls:
        return "tls"
    if plain:
        return "plaintext"
    return "unknown"


def instance_state(modes):
    modes = [m for m in modes if m in ("tls", "plaintext")]
    if not modes:
        return "unknown"
    if all(m == "tls" for m in modes):
        return "tls"
    if all(m == "plaintext" for m in modes):
        return "plaintext"
    return "mixed"


def build(instances, cluster, settings, now=None):
    """The report. ``instances``: one dict per instance as the role collects it:
    {instance: <__tikv_tls_instance>, version, probes: {channel: tls_handshake result or {skipped}},
     peers: {channel: [{source, result | skipped}]}, calls: {channel: [{source, result | skipped}]},
     config: running_config result or {skipped}, log_scan: tls_log_scan result or {skipped},
     peer_links: pd_peer_links result or {skipped} (PD), failed_host: reason (the host dropped out)}.
    ``cluster``: {pd: pd_info result or {skipped}, operator: {cert_path, ca_path, exists, cn}}.
    ``settings``: require_tls, allow_plaintext_channels, fail_on_log_errors, log_since, min_protocol,
    min_days_valid."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    ctx = dict(require_tls=bool(settings.get("require_tls")),
               allow_plaintext_channels=list(settings.get("allow_plaintext_channels") or []),
               fail_on_log_errors=settings.get("fail_on_log_errors", True),
               log_since=settings.get("log_since"),
               operator_cn=((cluster or {}).get("operator") or {}).get("cn"),
               operator_missing=list(((cluster or {}).get("operator") or {}).get("missing") or []))
    models = []
    for item in instances:
        model = dict(item.get("instance") or {})
        if item.get("version") and not model.get("version"):
            model["version"] = item.get("version")
        models.append((model, item))

    # First pass: what each port served the controller -> the cluster's TLS state.
    modes = {}
    for model, item in models:
        for channel, component, _key, _title in CHANNELS:
            if component != model.get("component"):
                continue
            probe = (item.get("probes") or {}).get(channel)
            modes[(model["name"], channel)] = served_mode(probe) if probe and not probe.get("skipped") else None
    ctx["cluster_state"] = cluster_tls_state([dict(_mode=m) for m in modes.values()])

    rows, failed_hosts = [], []
    configs, scans, links, served_cns = {}, {}, {}, {}
    for model, item in models:
        name = model.get("name")
        configs[name] = item.get("config") or {"skipped": "not read"}
        scans[name] = item.get("log_scan") or {"skipped": "not read"}
        if model.get("component") == "pd":
            links[name] = item.get("peer_links") or {"skipped": "not read"}
        main_channel = "pd_client" if model.get("component") == "pd" else "tikv_grpc"
        cert = ((item.get("probes") or {}).get(main_channel) or {}).get("peer_cert") or {}
        if cert.get("subject_cn"):
            served_cns[name] = cert["subject_cn"]
        if item.get("failed_host"):
            failed_hosts.append("%s: %s" % (name, item["failed_host"]))
        for channel, component, _key, _title in CHANNELS:
            if component != model.get("component"):
                continue
            probe = (item.get("probes") or {}).get(channel)
            if item.get("failed_host") and probe is None:
                probe = {"skipped": "the host dropped out of the play: %s" % item["failed_host"]}
            row = controller_row(model, channel, probe, configs[name], ctx)
            rows.append(row)
            mode = modes.get((name, channel))
            peers = (item.get("peers") or {}).get(channel) or []
            calls = dict((c.get("source"), c) for c in (item.get("calls") or {}).get(channel) or [])
            if mode == "plaintext":
                if peers:
                    row["notes"].append("peer probes not run: the port serves plaintext")
                continue
            for peer in peers:
                rows.append(peer_row(model, channel, peer, calls.get(peer.get("source")), configs[name], ctx, mode))

    cluster_checks = []
    pd = _skipped_or((cluster or {}).get("pd"), "PD was not asked")
    pd_models = [m for m, _i in models if m.get("component") == "pd"]
    tikv_models = [m for m, _i in models if m.get("component") == "tikv"]
    cluster_checks.append(check_pd_members(pd, pd_models))
    cluster_checks.append(check_pd_health(pd))
    cluster_checks.append(check_pd_urls(pd, ctx))
    cluster_checks.append(check_stores(pd, tikv_models))
    cluster_checks.append(check_config_security([m for m, _i in models], configs, ctx))
    cluster_checks.append(check_peer_links(pd_models, links))
    cluster_checks.append(check_logs([m for m, _i in models], scans, ctx))
    cluster_checks.append(check_allow_lists([m for m, _i in models], configs, served_cns))

    failures = []
    for row in rows:
        if row["result"] == FAIL:
            failures.append("%s %s (%s) from %s: %s" % (row["instance"], row["channel"], row["endpoint"],
                                                        row["source"], "; ".join(row["reasons"])))
    for check in cluster_checks:
        if check["result"] == FAIL:
            failures.append("cluster %s: %s%s" % (check["name"], check["detail"],
                                                  (": " + "; ".join(check["problems"])) if check["problems"] else ""))
    for text in failed_hosts:
        failures.append("host %s (tasks failed or it was unreachable; not verified)" % text)

    instance_summary = []
    for model, item in models:
        name = model.get("name")
        security = (configs[name] or {}).get("security") or {}
        instance_summary.append(dict(
            instance=name, component=model.get("component"), address=model.get("address"),
            version=model.get("version") or None,
            served=instance_state([modes.get((name, c[0])) for c in CHANNELS if c[1] == model.get("component")]),
            config_tls=security.get("tls") if (configs[name] or {}).get("reachable") else None,
            cert_allowed_cn=security.get("cert_allowed_cn") if (configs[name] or {}).get("reachable") else None,
            served_cn=served_cns.get(name),
            log_errors=(scans[name] or {}).get("errors"),
        ))

    counts = dict((k, sum(1 for r in rows if r["result"] == k)) for k in (OK, FAIL, PLAINTEXT, NOT_CHECKED))
    verdict = "fail" if failures else "pass"
    return dict(
        format=FORMAT,
        generated=now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        verdict=verdict,
        cluster_state=ctx["cluster_state"],
        settings=dict(settings),
        summary=dict(rows=len(rows), **counts),
        failures=failures,
        rows=rows,
        cluster_checks=cluster_checks,
        instances=instance_summary,
        operator=(cluster or {}).get("operator"),
        proves=PROVES,
    )


def result_text(row):
    """The table's result cell."""
    if row["result"] == OK:
        return "ok"
    if row["result"] == FAIL:
        return "FAIL: " + "; ".join(row["reasons"])
    if row["result"] == PLAINTEXT:
        return "plaintext (allowed)" if any("allowed by" in r for r in row["reasons"]) else "plaintext"
    return "not checked: " + "; ".join(row["reasons"])


def _short_note(note):
    if not note:
        return None
    if note.startswith("not required"):
        return "not required"
    if note.startswith("not judged"):
        return "not judged"
    return note


def _yes_no(value, note=None):
    text = {True: "yes", False: "no", None: "-"}[value if value in (True, False) else None]
    return "%s (%s)" % (text, note) if note else text


def _md(text):
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown(report):
    """The Markdown page: summary, rows table, cluster checks, instances."""
    lines = ["# TLS audit of the TiKV cluster", ""]
    lines.append("- Verdict: **%s** (%d failure(s))" % (report["verdict"].upper(), len(report["failures"])))
    lines.append("- Cluster TLS state (what the ports serve): **%s**" % report["cluster_state"])
    summary = report["summary"]
    lines.append("- Rows: %d ok, %d failed, %d plaintext, %d not checked" % (
        summary["ok"], summary["fail"], summary["plaintext"], summary["not_checked"]))
    lines.append("- Generated: %s" % report["generated"])
    lines.append("")
    lines.append("| Instance | Channel | Endpoint | Source | Protocol | Cipher | Cert expiry (days) | mTLS enforced "
                 "| Plaintext refused | Client cert | Result |")
    lines.append("|---|---|---|---|---|---|---|---|---|---|---|")
    for row in report["rows"]:
        if row["source_kind"] == "controller":
            mtls = _yes_no(row["mtls_enforced"], _short_note(row.get("mtls_note")))
            plain = _yes_no(row["plaintext_refused"])
            client = "operator" if row["protocol"] else "-"
        else:
            mtls, plain = "-", "-"
            client = {True: "accepted", False: "refused", None: "-"}[row["client_cert_accepted"]]
            if row.get("call"):
                call = row["call"]
                client += "; call %s" % (call.get("grpc_status_name") or "none")
        days = row["cert_days_left"]
        lines.append("| %s |" % " | ".join(_md(x) for x in (
            row["instance"], row["channel_title"], row["endpoint"], row["source"], row["protocol"] or "-",
            row["cipher"] or "-", "-" if days is None else days, mtls, plain, client, result_text(row))))
    lines.append("")
    lines.append("## Cluster checks")
    lines.append("")
    lines.append("| Check | Result | Detail |")
    lines.append("|---|---|---|")
    for check in report["cluster_checks"]:
        detail = check["detail"]
        if check["problems"]:
            detail += ": " + "; ".join(check["problems"])
        result = check["result"].upper() if check["result"] == FAIL else check["result"]
        lines.append("| %s | %s | %s |" % (_md(check["title"]), _md(result), _md(detail)))
    lines.append("")
    lines.append("## Instances")
    lines.append("")
    lines.append("| Instance | Component | Serves | Config TLS | cert-allowed-cn | Certificate CN | Log TLS errors |")
    lines.append("|---|---|---|---|---|---|---|")
    for inst in report["instances"]:
        lines.append("| %s |" % " | ".join(_md(x) for x in (
            inst["instance"], inst["component"], inst["served"], _yes_no(inst["config_tls"]),
            ", ".join(inst["cert_allowed_cn"] or []) or "-",
            inst["served_cn"] or "-", "-" if inst["log_errors"] is None else inst["log_errors"])))
    if report["failures"]:
        lines.append("")
        lines.append("## Failures")
        lines.append("")
        for text in report["failures"]:
            lines.append("- %s" % _md(text))
    lines.append("")
    lines.append("What each check proves (and does not) is in the JSON report (`proves`) and in docs/verify.md.")
    lines.append("")
    return "\n".join(lines)

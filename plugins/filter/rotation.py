# -*- coding: utf-8 -*-
# Copyright (c) tlsops.tikv maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Filters ``rotation_judge`` and ``ca_rotation_phase``: what the rotate role concludes from the files on
each instance and what its ports serve and accept (documented in rotation_judge.yml and
ca_rotation_phase.yml).

The rotate role collects, per instance, a "seen" record (probe.yml):

    instance: the preflight instance model (name, component, channels [{channel, port}])
    file:     {serial, issuer} of the leaf in the instance's certificate file, or {error}
    anchors:  SHA-256 fingerprints of the certificates in the instance's ca.crt ([] when it has none)
    tls:      tls_handshake results, each with channel, port and client (operator, new, old)
    grpc:     grpc_call results on the TiKV gRPC port, each with client

and these filters judge the records against one expectation at a time:

    served      every port serves the certificate in the instance's file (same serial)
    served_new  the same, and that certificate is signed by the new CA (CA rotation, phase 2)
    trust_new   the instance trusts the new CA: ca.crt holds it, and every port that checks client
                certificates accepts one the new CA signed (phase 1)
    drop_old    the instance no longer trusts the old CA: ca.crt lacks it, and every port that checks
                client certificates refuses one the old CA signed (phase 3)
"""

from __future__ import annotations

import re

from ansible.errors import AnsibleFilterError

from ansible_collections.tlsops.tikv.plugins.module_utils._plain import plain

EXPECTATIONS = ("served", "served_new", "trust_new", "drop_old")
_PEM = re.compile(r"-----BEGIN CERTIFICATE-----(.*?)-----END CERTIFICATE-----", re.S)
_FAILURE = re.compile(r"^\S+: (?P<check>[a-z_]+): (?P<text>.*)$", re.S)
# Checks after which tls_handshake cannot tell whether the server accepted our client certificate.
_UNREACHED = ("connect", "handshake", "local")


def pem_certificates(text):
    """The certificates of a PEM text as their base64 bodies without whitespace, in file order,
    duplicates dropped: equal certificates give equal strings however the file wraps its lines."""
    out = []
    for body in _PEM.findall(text or ""):
        norm = re.sub(r"\s+", "", body)
        if norm and norm not in out:
            out.append(norm)
    return out


def _failures(result):
    """tls_handshake's failures as {check: text}."""
    out = {}
    for line in result.get("failures") or []:
        match = _FAILURE.match(line)
        if match:
            out.setdefault(match.group("check"), match.group("text"))
    return out


def _tls_rows(seen, channel, client=None):
    """The probes of a channel (by one client), latest first: a record may hold earlier probes too."""
    return [r for r in reversed(seen.get("tls") or [])
            if r.get("channel") == channel and (client is None or r.get("client") == client)]


def _served(seen, channel):
    """The certificate a channel served in its latest probe, or None and why."""
    rows = _tls_rows(seen, channel)
    if rows and rows[0].get("peer_cert"):
        return rows[0]["peer_cert"], None
    return None, ("; ".join(rows[0].get("failures") or []) or "no certificate") if rows else "not probed"


def _tls_accepts(row):
    """True/False: the port accepted/refused the client certificate of this probe; None: cannot tell."""
    if row is None:
        return None
    checks = _failures(row)
    if "client_cert" in checks:
        return False
    if any(check in checks for check in _UNREACHED) or not row.get("peer_cert"):
        return None
    return True


def _grpc_accepts(row):
    """A gRPC call that got any answer got past the TLS handshake: the server took the certificate
    (an UNAUTHENTICATED answer is the CN allow-list, checked after the CA). A connection closed
    before any answer is how gRPC-core refuses a certificate from a CA it does not trust."""
    if row is None:
        return None
    if row.get("stage") == "done":
        return True
    if row.get("stage") in ("handshake", "call"):
        return False
    return None


def _requests_cert(row):
    """Whether the port asks for a client certificate (tls_handshake's client_cert_required)."""
    if row is None:
        return None
    return row.get("client_cert_required")


def _issued_by(cert_facts, subject):
    return bool(cert_facts) and cert_facts.get("issuer") == subject


def _judge_served(seen, new_subject):
    unmet = []
    file_facts = seen.get("file") or {}
    if not file_facts.get("serial"):
        return [{"channel": "file", "port": None,
                 "why": "its certificate file cannot be read: %s" % (file_facts.get("error") or "no certificate")}]
    if new_subject is not None and not _issued_by(file_facts, new_subject):
        unmet.append({"channel": "file", "port": None,
                      "why": "its certificate file (serial %s) is issued by %s, not by the new CA %s"
                             % (file_facts["serial"], file_facts.get("issuer"), new_subject)})
    for chan in seen["instance"].get("channels") or []:
        served, error = _served(seen, chan["channel"])
        if served is None:
            unmet.append({"channel": chan["channel"], "port": chan["port"],
                          "why": "serves no certificate: %s" % error})
        elif served.get("serial") != file_facts["serial"]:
            unmet.append({"channel": chan["channel"], "port": chan["port"], "reload": True,
                          "why": "serves serial %s, the certificate file holds serial %s (the new certificate is not "
                                 "loaded)" % (served.get("serial"), file_facts["serial"])})
        elif new_subject is not None and served.get("issuer") != new_subject:
            unmet.append({"channel": chan["channel"], "port": chan["port"], "reload": True,
                          "why": "serves a certificate issued by %s, not by the new CA" % served.get("issuer")})
    return unmet


def _judge_trust(seen, expect, anchors, client):
    """trust_new (client 'new' must be accepted) or drop_old (client 'old' must be refused)."""
    unmet = []
    want_accept = expect == "trust_new"
    have = [_fp(a) for a in seen.get("anchors") or []]
    if want_accept:
        missing = [a for a in anchors if a not in have]
        if missing:
            unmet.append({"channel": "file", "port": None,
                          "why": "its ca.crt lacks the new CA (%d certificate(s) missing)" % len(missing)})
    else:
        kept = [a for a in anchors if a in have]
        if kept:
            unmet.append({"channel": "file", "port": None,
                          "why": "its ca.crt still holds the old CA (%d certificate(s))" % len(kept)})
    what = "a client certificate signed by the %s CA" % ("new" if want_accept else "old")
    for chan in seen["instance"].get("channels") or []:
        name, port = chan["channel"], chan["port"]
        if name == "pd_peer":
            continue  # same process and CA pool as pd_client; its CN allow-list may refuse any probe
        if name == "tikv_grpc":
            row = next((r for r in reversed(seen.get("grpc") or []) if r.get("client") == client), None)
            accepted = _grpc_accepts(row)
            detail = (row or {}).get("error") or (row or {}).get("verdict") or "not probed"
        else:
            row = next(iter(_tls_rows(seen, name, client)), None)
            if name == "tikv_status" and _requests_cert(row) is False:
                continue  # no cert-allowed-cn: the status port checks no client certificate at all
            accepted = _tls_accepts(row)
            detail = "; ".join((row or {}).get("failures") or []) or ("accepted" if accepted else "not probed")
        if accepted is None:
            unmet.append({"channel": name, "port": port, "why": "could not tell whether it accepts %s: %s"
                                                                % (what, detail)})
        elif accepted != want_accept:
            unmet.append({"channel": name, "port": port, "reload": True,
                          "why": ("refuses %s (it has not loaded the new CA): %s" % (what, detail)) if want_accept
                          else ("still accepts %s (it has not dropped the old CA)" % what)})
    return unmet


def _fp(fingerprint):
    """Fingerprints compare without their separators and case."""
    return re.sub(r"[^0-9a-f]", "", str(fingerprint).lower())


def _anchors(cas, which):
    ca = (cas or {}).get(which) or {}
    return [_fp(a) for a in ca.get("anchors") or []]


def _judge_one(seen, expect, cas):
    if expect == "served":
        return _judge_served(seen, None)
    if expect == "served_new":
        return _judge_served(seen, ((cas or {}).get("new") or {}).get("subject"))
    new_anchors = _anchors(cas, "new")
    if expect == "trust_new":
        return _judge_trust(seen, expect, new_anchors, "new")
    old_only = [a for a in _anchors(cas, "old") if a not in new_anchors]
    if not old_only:
        return []  # the old and the new CA share their trust anchors: nothing to drop
    return _judge_trust(seen, expect, old_only, "old")


def rotation_judge(seen_list, expect, cas=None):
    """Judge every instance's seen record against one expectation (module docstring)."""
    if expect not in EXPECTATIONS:
        raise AnsibleFilterError("rotation_judge: expect must be one of %s, not %r" % (", ".join(EXPECTATIONS), expect))
    if expect != "served" and not (cas or {}).get("new"):
        raise AnsibleFilterError("rotation_judge: %s needs the CAs ({'old': {...}, 'new': {...}})" % expect)
    instances, lines, unmet_names = {}, [], []
    for seen in plain(seen_list or []):
        inst = seen.get("instance") or {}
        name = inst.get("name")
        if not name:
            raise AnsibleFilterError("rotation_judge: every record needs instance.name")
        address = inst.get("address", "")
        unmet = _judge_one(seen, expect, plain(cas))
        instances[name] = {
            "component": inst.get("component"),
            "unmet": unmet,
            # What a reload (TiKV) or restart can fix: a port that shows old material.
            "ports": sorted(set(u["channel"] for u in unmet if u.get("port") is not None)),
            "files": [u["why"] for u in unmet if u.get("port") is None],
        }
        if unmet:
            unmet_names.append(name)
        for item in unmet:
            where = ("%s %s:%s" % (item["channel"], address, item["port"])) if item.get("port") is not None \
                else "files"
            lines.append("%s %s: %s" % (name, where, item["why"]))
    return {"expect": expect, "instances": instances, "unmet": unmet_names, "lines": lines, "met": not unmet_names}


def ca_rotation_phase(seen_list, cas, clients=None):
    """The phase a CA rotation is in: the first of trust_new (1), served_new plus the client
    certificates (2) and drop_old (3) that is not met everywhere; 4 when all three are."""
    cas = plain(cas)
    if not (cas or {}).get("new") or not cas.get("old"):
        raise AnsibleFilterError("ca_rotation_phase: needs the CAs ({'old': {...}, 'new': {...}})")
    new_subject = cas["new"].get("subject")
    client_lines = []
    for client in plain(clients or []):
        if client.get("issuer") != new_subject:
            client_lines.append("client certificate %s is issued by %s, not by the new CA"
                                % (client.get("path"), client.get("issuer") or "(unreadable)"))
    phases = {}
    for number, expect in ((1, "trust_new"), (2, "served_new"), (3, "drop_old")):
        judged = rotation_judge(seen_list, expect, cas)
        lines = judged["lines"] + (client_lines if number == 2 else [])
        phases[number] = {"expect": expect, "done": not lines, "lines": lines, "unmet": judged["unmet"]}
    # The first phase not met everywhere. A later phase that looks met while an earlier one is not
    # (files changed by hand) is redone in order: each phase's work is idempotent.
    phase = next((n for n in (1, 2, 3) if not phases[n]["done"]), 4)
    return {"phase": phase, "phases": phases}


class FilterModule(object):
    def filters(self):
        return {"rotation_judge": rotation_judge, "ca_rotation_phase": ca_rotation_phase,
                "pem_certificates": pem_certificates}

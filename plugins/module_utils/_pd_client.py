# -*- coding: utf-8 -*-
# Copyright (c) tlsops.tikv maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""PD HTTP API client shared by the collection's modules (private to the collection).

PD answers its HTTP API on the client port; with TLS on, that port requires a client certificate
(RequireAndVerifyClientCert), so every call presents one. The client takes several endpoints and
uses the first that answers, the way pd-ctl does: any member serves the API (followers forward
what only the leader can do).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import copy
import json
import time

from ansible.module_utils.six.moves.urllib.error import HTTPError, URLError
from ansible.module_utils.urls import open_url

API = "/pd/api/v1"

# The options every module that talks to PD takes (documented once in the tlsops.tikv.pd_client doc
# fragment); modules build their spec with pd_argument_spec() so the names and types never drift.
# Client TLS options of every module that talks HTTP to PD or TiKV (doc fragment tlsops.tikv.pd_client.tls).
TLS_ARGUMENT_SPEC = dict(
    ca_path=dict(type="path"),
    client_cert_path=dict(type="path"),
    client_key_path=dict(type="path", no_log=False),
    timeout=dict(type="float", default=5.0),
)
# ... plus the PD endpoints (doc fragments tlsops.tikv.pd_client and tlsops.tikv.pd_client.tls).
PD_ARGUMENT_SPEC = dict(TLS_ARGUMENT_SPEC, endpoints=dict(type="list", elements="str", required=True))
PD_REQUIRED_TOGETHER = [("client_cert_path", "client_key_path")]


def pd_argument_spec(**extra):
    """The shared PD connection options plus a module's own (a fresh copy each time)."""
    spec = copy.deepcopy(PD_ARGUMENT_SPEC)
    spec.update(extra)
    return spec


def tls_argument_spec(**extra):
    """The shared client TLS options plus a module's own (a fresh copy each time)."""
    spec = copy.deepcopy(TLS_ARGUMENT_SPEC)
    spec.update(extra)
    return spec


def client_from_params(params):
    """A PDClient from the shared options of a module's params."""
    return PDClient(params["endpoints"], params.get("ca_path"), params.get("client_cert_path"),
                    params.get("client_key_path"), params.get("timeout") or 5.0)


class PDError(Exception):
    """A PD call that failed; the message names the endpoint(s) and the cause."""

    def __init__(self, message, status=None):
        super(PDError, self).__init__(message)
        self.status = status


def endpoint_url(endpoint, tls):
    """`host:port`, `http://host:port` or `https://host:port` -> a base URL with the scheme TLS needs.

    As in TiKV, the scheme written in an endpoint does not decide TLS; whether we have TLS material
    does. A cluster half-way through a cutover still publishes http:// URLs for some members.
    """
    hostport = endpoint.split("://", 1)[-1].rstrip("/")
    return ("https://" if tls else "http://") + hostport


class PDClient:
    """Calls PD's HTTP API on the first endpoint that answers."""

    def __init__(self, endpoints, ca_path=None, cert_path=None, key_path=None, timeout=5.0):
        if not endpoints:
            raise PDError("no PD endpoint given")
        self.tls = bool(ca_path)
        self.endpoints = [endpoint_url(e, self.tls) for e in endpoints]
        self.ca_path = ca_path
        self.cert_path = cert_path
        self.key_path = key_path
        self.timeout = timeout

    def _open(self, url, method, body):
        data = None if body is None else json.dumps(body)
        headers = {"Content-Type": "application/json"} if data is not None else {}
        return open_url(url, method=method, data=data, headers=headers, timeout=self.timeout,
                        validate_certs=True, ca_path=self.ca_path, client_cert=self.cert_path,
                        client_key=self.key_path, follow_redirects="safe", use_proxy=False)

    def request(self, method, path, body=None, endpoints=None):
        """Return the parsed answer (JSON, else text). Connection failures move on to the next
        endpoint; an HTTP error from PD is final (PD answered, and said no)."""
        failures = []
        for base in endpoints or self.endpoints:
            url = base + path
            try:
                resp = self._open(url, method, body)
                raw = resp.read()
            except HTTPError as exc:
                text = exc.read().decode("utf-8", "replace").strip() if hasattr(exc, "read") else ""
                raise PDError("%s %s: HTTP %s %s" % (method, url, exc.code, text), status=exc.code)
            except (URLError, OSError, ValueError) as exc:
                failures.append("%s: %s" % (base, getattr(exc, "reason", exc)))
                continue
            text = raw.decode("utf-8", "replace")
            try:
                return json.loads(text) if text else None
            except ValueError:
                return text
        raise PDError("%s %s: no PD endpoint answered (%s)" % (method, path, "; ".join(failures)))

    # Read-only calls -------------------------------------------------------------------------------

    def members(self):
        return self.request("GET", API + "/members")

    def leader(self):
        return self.request("GET", API + "/leader")

    def health(self):
        return self.request("GET", API + "/health")

    def stores(self):
        return self.request("GET", API + "/stores")

    def store(self, store_id):
        return self.request("GET", API + "/store/%d" % int(store_id))

    def schedulers(self):
        return self.request("GET", API + "/schedulers")

    def config(self):
        return self.request("GET", API + "/config")

    def version(self):
        return self.request("GET", API + "/version")

    def etcd_members(self):
        """etcd's own member list (the v3 JSON gateway on PD's client port): peer URLs as stored."""
        return self.request("POST", "/v3/cluster/member/list", body={})

    def etcd_range(self, prefix):
        """Every (key, value) under a key prefix of PD's etcd (the v3 JSON gateway's kv/range; keys
        and values travel base64-encoded, the range end of a prefix is the prefix with its last byte + 1)."""
        raw = prefix.encode("utf-8")
        end = raw[:-1] + bytes(bytearray([raw[-1] + 1]))
        answer = self.request("POST", "/v3/kv/range", body={
            "key": base64.b64encode(raw).decode("ascii"), "range_end": base64.b64encode(end).decode("ascii")})
        return [(base64.b64decode(kv.get("key", "")).decode("utf-8", "replace"),
                 base64.b64decode(kv.get("value", "")).decode("utf-8", "replace"))
                for kv in (answer or {}).get("kvs") or []]

    # Changing calls (used by the orchestration modules) --------------------------------------------

    def transfer_leader(self, name):
        return self.request("POST", API + "/leader/transfer/" + name)

    def resign_leader(self):
        return self.request("POST", API + "/leader/resign")

    def add_evict_leader(self, store_id):
        return self.request("POST", API + "/schedulers",
                            body={"name": "evict-leader-scheduler", "store_id": int(store_id)})

    def remove_evict_leader(self, store_id):
        """Remove the store's evict-leader scheduler; False when there was none (PD answers 404)."""
        try:
            self.request("DELETE", API + "/schedulers/evict-leader-scheduler-%d" % int(store_id))
        except PDError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def update_member_peer_urls(self, member_id, peer_urls):
        """etcd MemberUpdate through the JSON gateway; member ids are decimal in PD's API and are
        passed as such (the gateway takes the uint64 as a JSON string)."""
        return self.request("POST", "/v3/cluster/member/update",
                            body={"ID": str(member_id), "peerURLs": list(peer_urls)})


def poll(check, timeout, interval=1.0, clock=time.monotonic, sleep=time.sleep):
    """Call check() until it returns a true value or `timeout` seconds have passed.

    A PDError from check() counts as "not yet" (a member restarting or electing answers 503 or not at
    all); the last one is kept so a timeout can say why. Returns (value, waited seconds, last error):
    value is the first true answer, or the last answer (falsy) when time ran out.
    """
    began = clock()
    value, error = None, None
    while True:
        try:
            value, error = check(), None
        except PDError as exc:
            value, error = None, exc
        waited = clock() - began
        if value or waited >= timeout:
            return value, waited, error
        sleep(max(0.0, min(interval, timeout - waited)))


def member_named(members, name):
    """The member called `name` in a GET /members answer, or None."""
    for member in (members or {}).get("members") or []:
        if member.get("name") == name:
            return member
    return None


def store_matching(stores, store_id=None, address=None):
    """The entry of GET /stores for a store id or address (`host:port`; a scheme is ignored), or None.

    By address, a live store wins over a Tombstone one: a store rebuilt at the same address gets a new id
    and the old one stays listed as Tombstone.
    """
    wanted = address.split("://", 1)[-1].rstrip("/") if address else None
    found = []
    for entry in (stores or {}).get("stores") or []:
        store = entry.get("store") or {}
        if store_id is not None and int(store.get("id", -1)) == int(store_id):
            return entry
        if wanted is not None and store.get("address") == wanted:
            found.append(entry)
    found.sort(key=lambda e: (e.get("store") or {}).get("state_name") == "Tombstone")
    return found[0] if found else None


def cluster_problems(members, health, stores):
    """Human-readable problems with a cluster's PD quorum and stores ([] when healthy).
    A part that was not read (None) is not judged."""
    problems = []
    if members is not None and not members.get("leader"):
        problems.append("PD has no leader (%d members listed)" % len(members.get("members") or []))
    for item in health or []:
        if not item.get("health"):
            problems.append("PD member %s is not healthy (client URLs %s)"
                            % (item.get("name"), ", ".join(item.get("client_urls") or [])))
    for entry in (stores or {}).get("stores") or []:
        store = entry.get("store") or {}
        state = store.get("state_name")
        if state not in ("Up", "Tombstone"):
            problems.append("store %s at %s is %s" % (store.get("id"), store.get("address"), state))
    return problems


# Where the cluster's clients make themselves known to PD: TiDB (and TiUP's monitoring) register under
# /topology/<component>/<host:port>/ in PD's etcd; TiCDC captures under /tidb/cdc/ (one key per capture,
# its JSON value names the address); TiFlash and other engines are stores with an `engine` label.
TOPOLOGY_PREFIX = "/topology/"
TICDC_PREFIX = "/tidb/cdc/"


def known_clients(topology_keys, ticdc_keys, stores):
    """The clients of the cluster PD knows of, as sorted dicts {component, address, source}, from the
    (key, value) pairs under TOPOLOGY_PREFIX and TICDC_PREFIX and the GET /stores answer."""
    found = set()
    for key, _value in topology_keys:
        parts = key[len(TOPOLOGY_PREFIX):].split("/")
        if key.startswith(TOPOLOGY_PREFIX) and len(parts) >= 2 and parts[0] and parts[1]:
            found.add((parts[0], parts[1], "etcd " + TOPOLOGY_PREFIX))
    for key, value in ticdc_keys:
        if "/capture/" not in key:
            continue
        try:
            address = json.loads(value).get("address") or key.rsplit("/", 1)[-1]
        except (ValueError, AttributeError):
            address = key.rsplit("/", 1)[-1]
        found.add(("ticdc", address, "etcd " + TICDC_PREFIX))
    for entry in (stores or {}).get("stores") or []:
        store = entry.get("store") or {}
        if store.get("state_name") == "Tombstone":
            continue
        for label in store.get("labels") or []:
            if label.get("key") == "engine" and label.get("value") not in (None, "", "tikv"):
                found.add((label["value"], store.get("address"), "PD stores (engine label)"))
    return [dict(component=c, address=a, source=s) for c, a, s in sorted(found)]

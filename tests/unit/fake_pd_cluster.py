"""A small stateful PD HTTP API for the orchestration modules' unit tests (pd_leader, store_leaders,
pd_member): members with a leader and health, stores with leader counts, evict-leader schedulers
that drain a store a few leaders per read (unless the store is pinned), and etcd's JSON gateway for
the member list and member update. It records every changing call so a test can prove that check
mode and unchanged runs sent none.
"""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from ansible.module_utils.testing import patch_module_args

API = "/pd/api/v1"


class Cluster:
    def __init__(self):
        self.lock = threading.Lock()
        self.members = {name: {"id": 1000 + i, "peer_urls": ["http://10.0.0.%d:2380" % (i + 1)], "healthy": True}
                        for i, name in enumerate(["pd-a", "pd-b", "pd-c"])}
        self.leader = "pd-a"
        self.stores = {1: {"address": "10.0.1.1:20160", "leaders": 10, "state": "Up", "pinned": False},
                       4: {"address": "10.0.1.2:20160", "leaders": 10, "state": "Up", "pinned": False},
                       7: {"address": "10.0.1.3:20160", "leaders": 10, "state": "Up", "pinned": False}}
        self.schedulers = set()
        self.changes = []          # (method, path, body) of every changing call
        self.transfer_moves = True  # False: PD accepts a transfer but the leader never moves
        self.drain_per_read = 4

    # --- answers --------------------------------------------------------------------------------------

    def member(self, name):
        m = self.members[name]
        return {"name": name, "member_id": m["id"], "peer_urls": m["peer_urls"],
                "client_urls": ["http://%s:2379" % m["peer_urls"][0].split("//")[1].split(":")[0]]}

    def members_answer(self):
        leader = self.member(self.leader) if self.leader else None
        return {"header": {"cluster_id": 1}, "members": [self.member(n) for n in sorted(self.members)],
                "leader": leader, "etcd_leader": leader}

    def store_entry(self, sid):
        s = self.stores[sid]
        return {"store": {"id": sid, "address": s["address"], "state_name": s["state"]},
                "status": {"leader_count": s["leaders"], "region_count": 30}}

    def drain(self, sid):
        """Each read of an evicted store moves a few of its leaders away, as PD's scheduler would."""
        s = self.stores[sid]
        if "evict-leader-scheduler-%d" % sid in self.schedulers and not s["pinned"]:
            s["leaders"] = max(0, s["leaders"] - self.drain_per_read)

    def handle(self, method, path, body):
        if method != "GET" and path != "/v3/cluster/member/list":
            self.changes.append((method, path, body))
        if path == API + "/members":
            return 200, self.members_answer()
        if path == API + "/leader":
            return (200, self.member(self.leader)) if self.leader else (503, "no leader")
        if path == API + "/health":
            return 200, [{"name": n, "member_id": m["id"], "client_urls": [], "health": m["healthy"]}
                         for n, m in sorted(self.members.items())]
        match = re.fullmatch(API + r"/leader/transfer/(.+)", path)
        if match:
            if match.group(1) not in self.members:
                return 404, "not found"
            if self.transfer_moves:
                self.leader = match.group(1)
            return 200, "The transfer command is submitted."
        if path == API + "/stores":
            for sid in self.stores:
                self.drain(sid)
            return 200, {"count": len(self.stores), "stores": [self.store_entry(sid) for sid in sorted(self.stores)]}
        match = re.fullmatch(API + r"/store/(\d+)", path)
        if match:
            sid = int(match.group(1))
            if sid not in self.stores:
                return 404, "store not found"
            self.drain(sid)
            return 200, self.store_entry(sid)
        if path == API + "/schedulers" and method == "GET":
            return 200, ["balance-leader-scheduler"] + sorted(self.schedulers)
        if path == API + "/schedulers" and method == "POST":
            self.schedulers.add("%s-%d" % (body["name"], body["store_id"]))
            return 200, "The scheduler is created."
        match = re.fullmatch(API + r"/schedulers/(.+)", path)
        if match and method == "DELETE":
            if match.group(1) not in self.schedulers:
                return 404, "scheduler not found"
            self.schedulers.discard(match.group(1))
            return 200, "The scheduler is removed."
        if path == "/v3/cluster/member/list":
            return 200, {"header": {}, "members": [
                {"ID": str(m["id"]), "name": n, "peerURLs": m["peer_urls"], "clientURLs": []}
                for n, m in sorted(self.members.items())]}
        if path == "/v3/cluster/member/update":
            for m in self.members.values():
                if str(m["id"]) == body["ID"]:
                    m["peer_urls"] = list(body["peerURLs"])
                    return 200, {"header": {}}
            return 404, {"error": "member not found"}
        return 404, "404 page not found"


class Handler(BaseHTTPRequestHandler):
    cluster: Cluster

    def log_message(self, *args):  # keep test output clean
        pass

    def _do(self, method):
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"null")
        with self.server.cluster.lock:
            status, answer = self.server.cluster.handle(method, self.path, body)
        raw = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def do_GET(self):
        self._do("GET")

    def do_POST(self):
        self._do("POST")

    def do_DELETE(self):
        self._do("DELETE")


@pytest.fixture
def pd():
    """(cluster state, module args reaching it) for one test."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.cluster = Cluster()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.cluster, {"endpoints": ["127.0.0.1:%d" % server.server_address[1]], "timeout": 2}
    server.shutdown()
    server.server_close()


def run(module, args, capsys, check_mode=False, diff=False):
    """Run a module's main() in-process; (exit code, parsed result)."""
    if check_mode:
        args = dict(args, _ansible_check_mode=True)
    if diff:
        args = dict(args, _ansible_diff=True)
    with patch_module_args(args):
        with pytest.raises(SystemExit) as exc:
            module.main()
    return exc.value.code, json.loads(capsys.readouterr().out)

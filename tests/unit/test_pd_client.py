"""PD client: endpoint failover, PD's own errors, TLS scheme choice and the health verdict."""

import base64
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from ansible_collections.tlsops.tikv.plugins.module_utils._pd_client import (
    PDClient,
    PDError,
    TICDC_PREFIX,
    TOPOLOGY_PREFIX,
    cluster_problems,
    endpoint_url,
    known_clients,
)

MEMBERS = {"header": {"cluster_id": 1}, "members": [{"name": "pd1"}], "leader": {"name": "pd1"},
           "etcd_leader": {"name": "pd1"}}


class FakePD(BaseHTTPRequestHandler):
    calls = []

    def log_message(self, *args):  # keep test output clean
        pass

    def _answer(self, status, body):
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def do_GET(self):
        self.calls.append(("GET", self.path, None))
        if self.path == "/pd/api/v1/members":
            self._answer(200, MEMBERS)
        else:
            self._answer(404, {"error": "not found"})

    def do_DELETE(self):
        self.calls.append(("DELETE", self.path, None))
        self._answer(404, "scheduler not found")

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"null")
        self.calls.append(("POST", self.path, body))
        if self.path == "/v3/kv/range":
            key = base64.b64encode(b"/topology/tidb/10.0.1.5:4000/info").decode()
            self._answer(200, {"header": {}, "kvs": [{"key": key, "value": base64.b64encode(b"{}").decode()}]})
            return
        self._answer(200, {"header": {}, "members": []})


@pytest.fixture
def fake_pd():
    FakePD.calls = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakePD)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield "127.0.0.1:%d" % server.server_address[1]
    server.shutdown()
    server.server_close()


def closed_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return "127.0.0.1:%d" % sock.getsockname()[1]


def test_first_endpoint_that_answers_serves_the_call(fake_pd):
    client = PDClient([closed_port(), fake_pd])
    assert client.members()["leader"]["name"] == "pd1"


def test_no_endpoint_answering_names_every_endpoint_tried():
    dead = [closed_port(), closed_port()]
    with pytest.raises(PDError) as info:
        PDClient(dead, timeout=1).members()
    for endpoint in dead:
        assert endpoint in str(info.value)


def test_pd_error_is_final_and_carries_the_status(fake_pd):
    client = PDClient([fake_pd, closed_port()])
    with pytest.raises(PDError) as info:
        client.stores()
    assert info.value.status == 404
    assert FakePD.calls == [("GET", "/pd/api/v1/stores", None)]


def test_removing_an_absent_evict_leader_scheduler_is_not_an_error(fake_pd):
    assert PDClient([fake_pd]).remove_evict_leader(4) is False
    assert FakePD.calls[-1] == ("DELETE", "/pd/api/v1/schedulers/evict-leader-scheduler-4", None)


def test_member_update_sends_the_decimal_id_as_the_gateway_expects(fake_pd):
    PDClient([fake_pd]).update_member_peer_urls(12345678901234567890, ["https://10.0.0.1:2380"])
    assert FakePD.calls[-1] == ("POST", "/v3/cluster/member/update",
                                {"ID": "12345678901234567890", "peerURLs": ["https://10.0.0.1:2380"]})


@pytest.mark.parametrize("endpoint,tls,expected", [
    ("10.0.0.1:2379", True, "https://10.0.0.1:2379"),
    ("http://10.0.0.1:2379", True, "https://10.0.0.1:2379"),
    ("https://10.0.0.1:2379/", False, "http://10.0.0.1:2379"),
])
def test_tls_material_not_the_written_scheme_decides_tls(endpoint, tls, expected):
    assert endpoint_url(endpoint, tls) == expected


def test_cluster_problems_names_what_is_unhealthy():
    health = [{"name": "pd1", "health": True, "client_urls": ["https://a:2379"]},
              {"name": "pd2", "health": False, "client_urls": ["https://b:2379"]}]
    stores = {"stores": [{"store": {"id": 1, "address": "a:20160", "state_name": "Up"}},
                         {"store": {"id": 4, "address": "b:20160", "state_name": "Disconnected"}},
                         {"store": {"id": 7, "address": "c:20160", "state_name": "Tombstone"}}]}
    problems = cluster_problems({"members": [{}, {}], "leader": None}, health, stores)
    assert problems == [
        "PD has no leader (2 members listed)",
        "PD member pd2 is not healthy (client URLs https://b:2379)",
        "store 4 at b:20160 is Disconnected",
    ]
    assert cluster_problems(MEMBERS, health[:1], {"stores": stores["stores"][:1]}) == []
    assert cluster_problems(None, None, None) == []


def test_etcd_range_asks_for_the_whole_prefix_and_decodes_the_answer(fake_pd):
    pairs = PDClient([fake_pd]).etcd_range("/topology/")
    assert pairs == [("/topology/tidb/10.0.1.5:4000/info", "{}")]
    body = FakePD.calls[-1][2]
    # etcd's range end for a prefix: the prefix with its last byte plus one ('/' + 1 = '0').
    assert base64.b64decode(body["key"]) == b"/topology/"
    assert base64.b64decode(body["range_end"]) == b"/topology0"


def test_known_clients_lists_tidb_ticdc_and_other_engines_once_each():
    topology = [
        (TOPOLOGY_PREFIX + "tidb/10.0.1.5:4000/info", "{}"),
        (TOPOLOGY_PREFIX + "tidb/10.0.1.5:4000/ttl", "1700000000"),
        (TOPOLOGY_PREFIX + "prometheus/10.0.1.9:9090", "{}"),
    ]
    ticdc = [
        (TICDC_PREFIX + "default/__cdc_meta__/capture/6f1d", json.dumps({"id": "6f1d", "address": "10.0.1.7:8300"})),
        (TICDC_PREFIX + "default/__cdc_meta__/owner/22", "6f1d"),
    ]
    stores = {"stores": [
        {"store": {"address": "10.0.1.2:20160", "state_name": "Up", "labels": [{"key": "zone", "value": "a"}]}},
        {"store": {"address": "10.0.1.8:3930", "state_name": "Up", "labels": [{"key": "engine", "value": "tiflash"}]}},
        {"store": {"address": "10.0.1.6:3930", "state_name": "Tombstone",
                   "labels": [{"key": "engine", "value": "tiflash"}]}},
    ]}
    assert [(c["component"], c["address"]) for c in known_clients(topology, ticdc, stores)] == [
        ("prometheus", "10.0.1.9:9090"), ("ticdc", "10.0.1.7:8300"), ("tidb", "10.0.1.5:4000"),
        ("tiflash", "10.0.1.8:3930")]


def test_a_cluster_without_clients_lists_none():
    assert known_clients([], [], {"stores": [{"store": {"address": "a:1", "state_name": "Up"}}]}) == []

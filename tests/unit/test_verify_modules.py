"""The verify role's modules in-process: check mode, a real run, a second run (never a change), and
their DOCUMENTATION against what they accept and return."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml
from ansible.module_utils.testing import patch_module_args

from ansible_collections.tlsops.tikv.plugins.modules import grpc_call, pd_peer_links, running_config, tls_log_scan
from test_grpc_call import start as start_grpc
from tls_servers import PKI

LOCAL, REMOTE = "11209198945811462817", "3788998753707004145"  # 9b8f130d65c67aa1, 34953a4aa11a90f1


def run(module, args, capsys, check_mode=False):
    if check_mode:
        args = dict(args, _ansible_check_mode=True)
    with patch_module_args(args):
        with pytest.raises(SystemExit) as exc:
            module.main()
    return exc.value.code, json.loads(capsys.readouterr().out)


def three_runs(module, args, capsys):
    """Check mode, real, again: same answer, never a change. Returns the real run's result."""
    results = [run(module, args, capsys, check_mode=True), run(module, args, capsys), run(module, args, capsys)]
    for code, out in results:
        assert code == 0, out
        assert out["changed"] is False
    return results[1][1]


def doc_of(module):
    return yaml.safe_load(module.DOCUMENTATION), yaml.safe_load(module.RETURN)


@pytest.mark.parametrize("module", [tls_log_scan, pd_peer_links, grpc_call, running_config])
def test_documentation_is_complete(module):
    doc, returns = doc_of(module)
    assert doc["author"] == ["tlsops.tikv maintainers (@tlsops)"] and doc["version_added"] == "0.1.0"
    for attribute in ("check_mode", "diff_mode", "idempotent"):
        assert doc["attributes"][attribute]["description"] and doc["attributes"][attribute]["support"]
    assert returns
    assert "GPL-3.0-or-later" in open(module.__file__, encoding="utf-8").read()


class FakePD(BaseHTTPRequestHandler):
    metrics = []

    def log_message(self, *args):
        pass

    def _send(self, body, kind="application/json"):
        raw = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def do_GET(self):
        if self.path == "/metrics":
            self._send(self.metrics[0] if len(self.metrics) == 1 else self.metrics.pop(0), "text/plain")
        elif self.path == "/pd/api/v1/config":
            self._send({"client-urls": "https://10.0.0.1:2379", "peer-urls": "http://10.0.0.1:2380",
                        "security": {"cacert-path": "/t/ca.crt", "cert-path": "/t/pd.crt", "key-path": "/t/pd.pem",
                                     "cert-allowed-cn": "pd"}})
        elif self.path == "/config":
            self._send({"security": {"ca-path": "/t/ca.crt", "cert-path": "", "key-path": "", "cert-allowed-cn": []}})
        else:
            self.send_error(404)

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._send({"header": {"member_id": LOCAL}, "members": [
            {"ID": LOCAL, "name": "pd1", "peerURLs": ["https://10.0.0.1:2380"]},
            {"ID": REMOTE, "name": "pd2", "peerURLs": ["https://10.0.0.2:2380"]}]})


@pytest.fixture
def fake_pd():
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakePD)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield "127.0.0.1:%d" % server.server_address[1]
    server.shutdown()
    server.server_close()


def test_pd_peer_links_module(fake_pd, capsys):
    FakePD.metrics = ['etcd_network_active_peers{Local="9b8f130d65c67aa1",Remote="34953a4aa11a90f1"} 0\n'
                      "etcd_server_has_leader 1\n"]
    out = three_runs(pd_peer_links, dict(endpoint=fake_pd, interval=0), capsys)
    assert out["checked"] is True and out["member"]["name"] == "pd1"
    assert out["links"][0]["remote_name"] == "pd2" and out["links"][0]["ok"] is False
    assert out["problems"] == ["link pd1 -> pd2 (https://10.0.0.2:2380): not active now"]
    code, failed = run(pd_peer_links, dict(endpoint=fake_pd, interval=0, fail_on_problems=True), capsys)
    assert code == 1 and "not active now" in failed["msg"]


def test_pd_peer_links_without_an_answer_reports_it(capsys):
    out = three_runs(pd_peer_links, dict(endpoint="127.0.0.1:1", interval=0, timeout=1), capsys)
    assert out["checked"] is False and "did not answer" in out["problems"][0]


def test_running_config_module(fake_pd, capsys):
    pd = three_runs(running_config, dict(component="pd", endpoint=fake_pd), capsys)
    assert pd["security"] == dict(ca_path="/t/ca.crt", cert_path="/t/pd.crt", key_path="/t/pd.pem",
                                  cert_allowed_cn=["pd"], tls=True, partial=False)
    assert pd["urls"]["peer-urls"] == ["http://10.0.0.1:2380"]
    tikv = three_runs(running_config, dict(component="tikv", endpoint=fake_pd), capsys)
    assert tikv["security"]["partial"] is True and "partial TLS settings" in tikv["problems"][0]
    down = three_runs(running_config, dict(component="tikv", endpoint="127.0.0.1:1", timeout=1), capsys)
    assert down["reachable"] is False and "did not answer" in down["problems"][0]


def test_tls_log_scan_module(tmp_path, capsys):
    log = tmp_path / "pd.log"
    log.write_text('[2026/11/24 15:00:00.000 +00:00] [WARN] [x:1] ["TLS handshake error"] '
                   '[error="remote error: tls: bad certificate"]\n'
                   '[2026/11/24 15:00:01.000 +00:00] [WARN] [x:1] ["x"] [error="tls: client didn\'t provide a certificate"]\n')
    args = dict(paths=[str(log), str(tmp_path / "absent.log")], since="2026-11-24T14:00:00Z")
    out = three_runs(tls_log_scan, args, capsys)
    assert out["errors"] == 1 and out["counts"]["bad_certificate"] == 1 and out["counts"]["missing_client_cert"] == 1
    assert out["error_lines"][0]["line"] == 1 and out["files"][1]["exists"] is False
    code, failed = run(tls_log_scan, dict(args, fail_on_errors=True), capsys)
    assert code == 1 and "bad_certificate=1" in failed["msg"]
    code, bad = run(tls_log_scan, dict(args, since="last tuesday"), capsys)
    assert code == 1 and "is not a time" in bad["msg"]


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return PKI(tmp_path_factory.mktemp("module-pki"))


def test_grpc_call_module(pki, capsys):
    server, port = start_grpc(pki, allowed=["tikv"])
    try:
        allowed_cert, allowed_key = pki.leaf("allowed-module", "tikv", ["127.0.0.1"])
        args = dict(host="127.0.0.1", port=port, ca_path=pki.ca_path, client_cert_path=allowed_cert,
                    client_key_path=allowed_key, timeout=3)
        out = three_runs(grpc_call, args, capsys)
        assert out["call_accepted"] is True and out["failures"] == []
        code, refused = run(grpc_call, dict(args, client_cert_path=pki.client_cert, client_key_path=pki.client_key),
                            capsys)
        assert code == 1 and refused["call_accepted"] is False
        assert refused["failures"][0] == ("127.0.0.1:%d: call_refused: /tikvpb.Tikv/KvGet the server refused the "
                                          "call: UNAUTHENTICATED 'Common name check fail'" % port)
        code, reported = run(grpc_call, dict(args, client_cert_path=pki.client_cert, client_key_path=pki.client_key,
                                             require_accepted=False), capsys)
        assert code == 0 and reported["grpc_status_name"] == "UNAUTHENTICATED"
    finally:
        server.stop(None)
    code, bad = run(grpc_call, dict(host="127.0.0.1", port=1, method="KvGet"), capsys)
    assert code == 1 and "method must look like" in bad["msg"]


# --- many targets in one run (what the verify and rotate roles use) ---------------------------------


def test_running_config_reads_many_instances_in_one_run(fake_pd, capsys):
    targets = [dict(component="pd", endpoint=fake_pd, tag={"instance": "pd1"}),
               dict(component="tikv", endpoint=fake_pd, tls=False, tag="tikv1"),
               dict(component="tikv", endpoint="127.0.0.1:1", tag="tikv2")]
    out = three_runs(running_config, dict(targets=targets, timeout=1, parallel=2), capsys)
    results = out["results"]
    assert [r["tag"] for r in results] == [{"instance": "pd1"}, "tikv1", "tikv2"]
    assert [r["component"] for r in results] == ["pd", "tikv", "tikv"]
    assert results[0]["security"]["cert_allowed_cn"] == ["pd"] and results[0]["problems"] == []
    assert results[1]["security"]["partial"] is True and results[1]["url"].startswith("http://")
    assert results[2]["reachable"] is False
    assert out["problems"] == results[1]["problems"] + results[2]["problems"] and len(out["problems"]) == 2
    code, failed = run(running_config, dict(targets=targets, timeout=1, fail_on_problems=True), capsys)
    assert code == 1 and "did not answer" in failed["msg"] and "partial TLS settings" in failed["msg"]
    code, both = run(running_config, dict(targets=targets, component="pd", endpoint=fake_pd), capsys)
    assert code == 1 and "mutually exclusive: endpoint|targets" in both["msg"]


def test_pd_peer_links_reads_many_members_in_one_run(fake_pd, capsys):
    FakePD.metrics = ['etcd_network_active_peers{Local="9b8f130d65c67aa1",Remote="34953a4aa11a90f1"} 1\n'
                      "etcd_server_has_leader 1\n"]
    targets = [dict(endpoint=fake_pd, tag="pd1"), dict(endpoint="127.0.0.1:1", tls=False, tag="pd2")]
    out = three_runs(pd_peer_links, dict(targets=targets, interval=0.2, timeout=1), capsys)
    first, second = out["results"]
    assert (first["tag"], first["checked"], first["problems"]) == ("pd1", True, [])
    assert first["links"][0]["remote_name"] == "pd2" and first["links"][0]["ok"] is True
    assert second["tag"] == "pd2" and second["checked"] is False
    assert out["problems"] == second["problems"] and "did not answer" in out["problems"][0]
    code, bad = run(pd_peer_links, dict(targets=targets, parallel=65), capsys)
    assert code == 1 and "parallel must be between 1 and 64" in bad["msg"]


def test_grpc_call_calls_many_servers_in_one_run(pki, capsys):
    server, port = start_grpc(pki, allowed=["tikv"])
    try:
        allowed_cert, allowed_key = pki.leaf("allowed-batch", "tikv", ["127.0.0.1"])
        targets = [dict(host="127.0.0.1", port=port, client_cert_path=allowed_cert, client_key_path=allowed_key,
                        tag="as tikv"),
                   dict(host="127.0.0.1", port=port, tag="as the client")]
        args = dict(targets=targets, ca_path=pki.ca_path, client_cert_path=pki.client_cert,
                    client_key_path=pki.client_key, timeout=3)
        code, out = run(grpc_call, args, capsys)
        assert code == 1
        accepted, refused = out["results"]
        assert (accepted["tag"], accepted["call_accepted"], accepted["failures"]) == ("as tikv", True, [])
        assert (refused["tag"], refused["call_accepted"]) == ("as the client", False)
        assert out["failures"] == refused["failures"] and "call_refused" in out["failures"][0]
        reported = three_runs(grpc_call, dict(args, require_accepted=False), capsys)
        assert [r["call_accepted"] for r in reported["results"]] == [True, False] and reported["failures"] == []
    finally:
        server.stop(None)


@pytest.mark.parametrize("module,problems_key", [(running_config, "problems"), (pd_peer_links, "problems"),
                                                 (grpc_call, "failures")])
def test_an_empty_list_of_targets_reads_nothing(module, problems_key, capsys):
    # The roles pass every instance whose port answered: on a cluster that is all down that is no one.
    out = three_runs(module, dict(targets=[]), capsys)
    assert out["results"] == [] and out[problems_key] == []

"""Tests for the tlsops.tikv.tls_handshake module: its interface (DOCUMENTATION vs argument_spec),
its results in-process, and end-to-end runs through ansible / ansible-playbook on localhost."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest
import yaml
from ansible.module_utils.testing import patch_module_args

from ansible_collections.tlsops.tikv.plugins.doc_fragments import batch as batch_fragment
from ansible_collections.tlsops.tikv.plugins.module_utils import _tls_probe
from ansible_collections.tlsops.tikv.plugins.modules import tls_handshake
from tls_servers import PKI, PlainHTTPServer, TLSServer, closed_port, start_grpc

pytestmark = pytest.mark.timeout(300)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VENV_BIN = os.path.join(REPO, ".venv", "bin")
RETURN_KEYS = {"protocol", "cipher", "alpn", "chain_verified", "hostname_verified", "client_cert_required",
               "plaintext_refused", "weak_protocols_accepted", "untested_protocols", "handshake_ms", "peer_cert",
               "failures"}
SINGLE_KEYS = RETURN_KEYS  # what a run without targets (and without grpc_method) returns


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return PKI(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def mtls13(pki):
    with TLSServer(pki.server_cert, pki.server_key, ca=pki.ca_path, client_auth="required",
                   versions=("TLSv1_3", "TLSv1_3"), alpn=["h2"]) as srv:
        yield srv


def run_module(args, capsys, check_mode=False):
    if check_mode:
        args = dict(args, _ansible_check_mode=True)
    with patch_module_args(args):
        with pytest.raises(SystemExit) as exc:
            tls_handshake.main()
    out = json.loads(capsys.readouterr().out)
    return exc.value.code, out


def warning_text(out):
    """Module warnings as text (ansible-core 2.19 returns them as structured events in-process)."""
    return json.dumps(out.get("warnings", []))


def good_args(pki, port, **extra):
    args = dict(host="127.0.0.1", port=port, ca_path=pki.ca_path, client_cert_path=pki.client_cert,
                client_key_path=pki.client_key, timeout=2)
    args.update(extra)
    return args


# --- interface ------------------------------------------------------------------------------------


def _captured_spec():
    """argument_spec and flags the module passes to AnsibleModule."""
    seen = {}

    class Stop(Exception):
        pass

    def fake(**kwargs):
        seen.update(kwargs)
        raise Stop()

    original = tls_handshake.AnsibleModule
    tls_handshake.AnsibleModule = fake
    try:
        with pytest.raises(Stop):
            tls_handshake.main()
    finally:
        tls_handshake.AnsibleModule = original
    return seen


def test_documentation_matches_argument_spec():
    doc = yaml.safe_load(tls_handshake.DOCUMENTATION)
    assert doc["extends_documentation_fragment"] == ["tlsops.tikv.batch"]
    doc["options"].update(yaml.safe_load(batch_fragment.ModuleDocFragment.DOCUMENTATION)["options"])
    captured = _captured_spec()
    spec = captured["argument_spec"]
    assert captured["supports_check_mode"] is True
    assert set(doc["options"]) == set(spec)
    for name, opt in spec.items():
        documented = doc["options"][name]
        assert documented["type"] == opt["type"], name
        assert documented.get("required", False) == opt.get("required", False), name
        assert documented.get("default") == opt.get("default"), name
        assert documented.get("choices") == opt.get("choices"), name
        assert documented.get("elements") == opt.get("elements"), name
    assert spec["client_key_path"]["no_log"] is False
    assert spec["min_protocol"]["choices"] == ["TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"]
    assert doc["attributes"]["check_mode"]["support"] == "full"
    assert doc["attributes"]["diff_mode"]["support"] == "none"
    assert set(yaml.safe_load(tls_handshake.RETURN)) == RETURN_KEYS | {"results", "grpc_call"}
    suboptions = doc["options"]["targets"]["suboptions"]
    assert set(suboptions) == set(spec["targets"]["options"])
    for name, opt in spec["targets"]["options"].items():
        assert suboptions[name]["type"] == opt["type"], name
        assert suboptions[name].get("required", False) == opt.get("required", False), name
    # Every option a target may set for itself exists at the module level too, with the same type.
    for name in tls_handshake.TARGET_OWN:
        assert spec["targets"]["options"][name]["type"] == spec[name]["type"], name
    examples = yaml.safe_load(tls_handshake.EXAMPLES)
    assert all(any(k.startswith("tlsops.tikv.") or k.startswith("ansible.builtin.") for k in task) for task in examples)


# --- in-process runs ------------------------------------------------------------------------------


@pytest.mark.parametrize("check_mode", [False, True])
def test_success_returns_every_key_and_never_changes(pki, mtls13, capsys, check_mode):
    rc, out = run_module(good_args(pki, mtls13.port, require_client_cert=True, require_plaintext_refused=True,
                                   min_protocol="TLSv1.2", min_days_valid=10), capsys, check_mode)
    assert rc == 0
    assert RETURN_KEYS <= set(out)
    assert out["changed"] is False and "failed" not in out
    assert out["failures"] == []
    assert out["protocol"] == "TLSv1.3" and out["alpn"] == "h2"
    assert out["client_cert_required"] is True and out["plaintext_refused"] is True
    assert out["peer_cert"]["key_type"] == "ECDSA P-256"


def test_failure_joins_messages_and_keeps_results(pki, mtls13, capsys):
    rc, out = run_module(good_args(pki, mtls13.port, ca_path=pki.foreign_ca_path, server_name="10.1.1.1",
                                   min_protocol="TLSv1.3", min_days_valid=400), capsys)
    assert rc == 1 and out["failed"] is True and out["changed"] is False
    assert out["msg"] == "; ".join(out["failures"])
    assert [f.split(": ")[1] for f in out["failures"]] == ["chain", "hostname", "min_days_valid"]
    assert RETURN_KEYS <= set(out)
    assert out["peer_cert"]["subject_cn"] == "server"


def test_connection_refused_fails_readably(pki, capsys):
    port = closed_port()
    rc, out = run_module(good_args(pki, port), capsys)
    assert rc == 1
    assert out["msg"] == "127.0.0.1:%d: connect: connection refused (nothing listening on this port?)" % port


def test_plaintext_server_module(pki, capsys):
    with PlainHTTPServer() as srv:
        rc, out = run_module(good_args(pki, srv.port, require_plaintext_refused=True), capsys)
    assert rc == 1 and out["plaintext_refused"] is False
    assert "handshake: the server did not answer with TLS" in out["msg"]


def test_untested_protocols_are_warned(pki, mtls13, capsys, monkeypatch):
    monkeypatch.setitem(_tls_probe._HAS_PROTOCOL, "TLSv1.1", False)
    rc, out = run_module(good_args(pki, mtls13.port, min_protocol="TLSv1.2"), capsys)
    assert rc == 0 and out["untested_protocols"] == ["TLSv1.1"]
    assert "TLSv1.1 not tried" in warning_text(out)


def test_min_days_valid_needs_cryptography(pki, mtls13, capsys, monkeypatch):
    monkeypatch.setattr(_tls_probe, "HAS_CRYPTOGRAPHY", False)
    rc, out = run_module(good_args(pki, mtls13.port, min_days_valid=1), capsys)
    assert rc == 1 and "Failed to import the required Python library (cryptography)" in out["msg"]
    rc, out = run_module(good_args(pki, mtls13.port), capsys)
    assert rc == 0 and out["peer_cert"]["details"].startswith("partial")
    assert "cryptography is not installed" in warning_text(out)


@pytest.mark.parametrize("args,text", [
    (dict(port=0), "port must be between 1 and 65535"),
    (dict(timeout=0), "timeout must be positive"),
    (dict(client_cert_path=None), "missing parameter(s) required by 'client_key_path': client_cert_path"),
    (dict(min_protocol="SSLv3"), "value of min_protocol must be one of"),
])
def test_bad_arguments(pki, capsys, args, text):
    rc, out = run_module(dict(good_args(pki, 443), **args), capsys)
    assert rc == 1 and text in out["msg"]


# --- many targets in one run ---------------------------------------------------------------------


def test_targets_are_probed_in_one_run_in_order_with_their_own_settings(pki, mtls13, capsys):
    with TLSServer(pki.server_cert, pki.server_key, ca=pki.ca_path, client_auth="none",
                   versions=("TLSv1_2", "TLSv1_3")) as open_server:
        targets = [
            dict(host="127.0.0.1", port=mtls13.port, tag={"instance": "a", "channel": "grpc"}),
            dict(host="127.0.0.1", port=open_server.port, require_client_cert=False, tag="b"),
            dict(host="127.0.0.1", port=mtls13.port, ca_path=pki.foreign_ca_path, tag=["c"]),
            dict(host="127.0.0.1", port=open_server.port, tag="d"),
        ]
        args = dict(good_args(pki, None, require_client_cert=True, targets=targets, parallel=2))
        del args["host"], args["port"]
        rc, out = run_module(args, capsys)
    assert rc == 1 and out["changed"] is False
    results = out["results"]
    assert [r["tag"] for r in results] == [{"instance": "a", "channel": "grpc"}, "b", ["c"], "d"]
    assert [r["port"] for r in results] == [mtls13.port, open_server.port, mtls13.port, open_server.port]
    assert all(SINGLE_KEYS <= set(r) for r in results)
    # a: the module-level expectations; b: its own require_client_cert=false, so nothing is asked
    assert results[0]["failures"] == [] and results[0]["client_cert_required"] is True
    assert results[1]["failures"] == [] and results[1]["client_cert_required"] is None
    # c: its own CA does not verify the server; d: the module-level require_client_cert finds the open door
    assert [f.split(": ")[1] for f in results[2]["failures"]] == ["chain"]
    assert results[3]["client_cert_required"] is False
    assert [f.split(": ")[1] for f in results[3]["failures"]] == ["require_client_cert"]
    # The module's failures are every target's, each naming its endpoint.
    assert out["failures"] == results[2]["failures"] + results[3]["failures"]
    assert out["msg"] == "; ".join(out["failures"])
    assert "protocol" not in out


def test_targets_all_passing_exit_cleanly(pki, mtls13, capsys):
    args = dict(good_args(pki, None, targets=[dict(host="127.0.0.1", port=mtls13.port, tag=i) for i in range(5)]))
    del args["host"], args["port"]
    rc, out = run_module(args, capsys, check_mode=True)
    assert rc == 0 and out["failures"] == []
    assert [r["tag"] for r in out["results"]] == list(range(5))
    assert all(r["protocol"] == "TLSv1.3" for r in out["results"])


def test_a_grpc_call_after_the_handshake_tells_who_the_allow_list_admits(pki, capsys, tmp_path):
    # TiKV's rule: the handshake accepts any certificate of the CA, the call checks the CN. The client
    # "tikv-client" is admitted, a second client of the same CA ("pd") is not.
    other_cert, other_key = pki.leaf("pd-client", "pd", ["127.0.0.1"])
    server, port = start_grpc(pki, allowed=["tikv-client"])
    try:
        targets = [dict(host="127.0.0.1", port=port, grpc_method="/tikvpb.Tikv/KvGet", tag="admitted"),
                   dict(host="127.0.0.1", port=port, grpc_method="/tikvpb.Tikv/KvGet", client_cert_path=other_cert,
                        client_key_path=other_key, tag="refused"),
                   dict(host="127.0.0.1", port=port, tag="handshake only")]
        args = dict(good_args(pki, None, targets=targets, alpn_protocols=["h2"]))
        del args["host"], args["port"]
        rc, out = run_module(args, capsys)
    finally:
        server.stop(None)
    admitted, refused, plain = out["results"]
    # Both handshakes pass: only the call tells the two certificates apart.
    assert admitted["failures"] == [] and refused["failures"] == [] and plain["failures"] == []
    assert admitted["grpc_call"]["call_accepted"] is True and admitted["grpc_call"]["failures"] == []
    assert refused["grpc_call"]["call_accepted"] is False
    assert refused["grpc_call"]["grpc_status_name"] == "UNAUTHENTICATED"
    assert refused["grpc_call"]["grpc_message"] == "Common name check fail"
    assert "grpc_call" not in plain
    # The refused call fails the module, named with its endpoint and check.
    assert rc == 1
    assert out["failures"] == refused["grpc_call"]["failures"]
    assert out["failures"][0].startswith("127.0.0.1:%d: call_refused: /tikvpb.Tikv/KvGet" % port)


def test_a_malformed_grpc_method_is_refused_before_any_probe(pki, capsys):
    rc, out = run_module(good_args(pki, closed_port(), grpc_method="KvGet"), capsys)
    assert rc == 1 and "grpc_method must look like /package.Service/Method, got 'KvGet'" in out["msg"]
    assert "protocol" not in out


ONE_TARGET = [dict(host="127.0.0.1", port=443)]


@pytest.mark.parametrize("args,text", [
    (dict(host="127.0.0.1", port=443, targets=ONE_TARGET), "parameters are mutually exclusive: host|targets"),
    (dict(), "one of the following is required: host, targets"),
    (dict(host="127.0.0.1"), "parameters are required together: host, port"),
    (dict(targets=ONE_TARGET, parallel=0), "parallel must be between 1 and 64"),
    (dict(targets=[dict(host="127.0.0.1", port=70000)]), "127.0.0.1: port must be between 1 and 65535"),
    (dict(targets=[dict(host="127.0.0.1")]), "missing required arguments: port found in targets"),
    (dict(targets=[dict(host="127.0.0.1", port=443, client_key_path="/k")], client_key_path=None, client_cert_path=None),
     "127.0.0.1:443: client_key_path needs client_cert_path"),
])
def test_bad_target_arguments(pki, capsys, args, text):
    base = dict(ca_path=pki.ca_path, client_cert_path=pki.client_cert, client_key_path=pki.client_key, timeout=2)
    rc, out = run_module(dict(base, **args), capsys)
    assert rc == 1 and text in out["msg"], out["msg"]


# --- end to end through ansible -------------------------------------------------------------------


def _env():
    env = dict(os.environ)
    env.update(ANSIBLE_COLLECTIONS_PATH=os.path.join(REPO, "build", "collections"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_HOST_KEY_CHECKING="False", ANSIBLE_RETRY_FILES_ENABLED="False",
               ANSIBLE_LOCALHOST_WARNING="False", ANSIBLE_INVENTORY_UNPARSED_WARNING="False",
               ANSIBLE_LOCAL_TEMP=os.path.join(REPO, "build", "ansible-tmp"),
               ANSIBLE_REMOTE_TEMP=os.path.join(REPO, "build", "ansible-tmp"),
               PATH=VENV_BIN + os.pathsep + env.get("PATH", ""))
    return env


def adhoc(module_args, check=False, interpreter=sys.executable):
    cmd = [os.path.join(VENV_BIN, "ansible"), "localhost", "-i", "localhost,", "-c", "local",
           "-e", "ansible_python_interpreter=%s" % interpreter, "-m", "tlsops.tikv.tls_handshake",
           "-a", json.dumps(module_args)]
    if check:
        cmd.append("--check")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=120, check=False)
    # "localhost | SUCCESS => {...}" / "localhost | FAILED! => {...}"
    head, dummy, body = proc.stdout.partition(" => ")
    assert body, proc.stdout + proc.stderr
    out = json.loads(body)
    out["_stderr"] = proc.stderr
    return proc.returncode, head, out


@pytest.mark.parametrize("check", [True, False], ids=["check_mode", "normal"])
def test_adhoc_runs(pki, mtls13, check):
    rc, head, out = adhoc(good_args(pki, mtls13.port, require_client_cert=True, require_plaintext_refused=True,
                                    min_protocol="TLSv1.2", min_days_valid=10), check=check)
    assert rc == 0 and "SUCCESS" in head, out
    assert out["changed"] is False and out["failures"] == []
    assert out["chain_verified"] is True and out["client_cert_required"] is True
    rc, head, out = adhoc(good_args(pki, mtls13.port, client_cert_path=None, client_key_path=None), check=check)
    assert rc == 2 and "FAILED" in head
    assert out["failures"] == [out["msg"]]
    assert "client_cert: the server requires a client certificate and none was presented" in out["msg"]


@pytest.mark.skipif(not os.path.exists(os.path.expanduser("~/.pyenv/versions/3.8.18/bin/python")),
                    reason="no Python 3.8 interpreter here")
def test_adhoc_on_python38_without_cryptography(pki, mtls13):
    """Oldest target Python ansible-core 2.19 supports, and no cryptography there: the module still
    runs, peer_cert is partial, and min_days_valid asks for the library."""
    py38 = os.path.expanduser("~/.pyenv/versions/3.8.18/bin/python")
    has_lib = subprocess.run([py38, "-c", "import cryptography"], capture_output=True, check=False)
    if has_lib.returncode == 0:
        pytest.skip("cryptography is installed for Python 3.8 here")
    rc, head, out = adhoc(good_args(pki, mtls13.port, require_client_cert=True), interpreter=py38)
    assert rc == 0, out
    assert out["peer_cert"]["subject_cn"] == "server" and out["peer_cert"]["key_type"] is None
    assert "[WARNING]: 127.0.0.1:%d: peer_cert: partial: the Python library cryptography is not installed" % (
        mtls13.port) in out["_stderr"]
    rc, head, out = adhoc(good_args(pki, mtls13.port, min_days_valid=5), interpreter=py38)
    assert rc == 2 and "cryptography" in out["msg"]


PLAYBOOK = """
- name: Probe TLS endpoints
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Probe the mTLS server with the right material
      tlsops.tikv.tls_handshake:
        host: 127.0.0.1
        port: {port}
        ca_path: {ca}
        client_cert_path: {cert}
        client_key_path: {key}
        require_client_cert: true
        require_plaintext_refused: true
        min_protocol: TLSv1.2
        min_days_valid: 10
      register: good

    - name: Probe it with a foreign CA
      tlsops.tikv.tls_handshake:
        host: 127.0.0.1
        port: {port}
        ca_path: {foreign_ca}
        client_cert_path: {cert}
        client_key_path: {key}
      register: bad
      ignore_errors: true

    - name: Check what came back
      ansible.builtin.assert:
        that:
          - good is not changed
          - good is not failed
          - good.chain_verified
          - good.client_cert_required
          - good.peer_cert.subject_cn == 'server'
          - bad is failed
          - bad is not changed
          - bad.chain_verified == false
          - bad.peer_cert.subject_cn == 'server'
          - bad.failures | length == 1
          - "'chain: certificate verify failed' in bad.msg"
"""


@pytest.mark.parametrize("check", [True, False], ids=["check_mode", "normal"])
def test_playbook_run(pki, mtls13, tmp_path, check):
    playbook = tmp_path / "probe.yml"
    playbook.write_text(textwrap.dedent(PLAYBOOK.format(port=mtls13.port, ca=pki.ca_path, cert=pki.client_cert,
                                                        key=pki.client_key, foreign_ca=pki.foreign_ca_path)))
    cmd = [os.path.join(VENV_BIN, "ansible-playbook"), "-i", "localhost,", "-c", "local",
           "-e", "ansible_python_interpreter=%s" % sys.executable, str(playbook)]
    if check:
        cmd.append("--check")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=180, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ok=3" in proc.stdout and "changed=0" in proc.stdout and "ignored=1" in proc.stdout
    assert "All assertions passed" in proc.stdout


def test_ansible_doc_renders():
    proc = subprocess.run([os.path.join(VENV_BIN, "ansible-doc"), "tlsops.tikv.tls_handshake"], capture_output=True,
                          text=True, env=_env(), timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "require_plaintext_refused" in proc.stdout and "weak_protocols_accepted" in proc.stdout
    assert shutil.which("ansible-doc", path=VENV_BIN)

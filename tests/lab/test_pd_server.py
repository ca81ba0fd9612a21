"""The pd-server stand-in, run as a process with PD's flags, against a real etcd child.

Module-scoped clusters (one plaintext 3-member, one TLS 3-member) carry most tests; single-member
stand-ins cover lifecycle (SIGTERM, etcd death, PDEATHSIG, --join) and refusals. The region-model
arithmetic is tested as plain functions.
"""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pd_helpers import (PD, PKI, TLSFiles, alive, free_base, issue, lab_env, leader_name, record_etcd_pid,
                        run_refused, security_toml, serial_of, serving_serial, start, start_cluster, stop,
                        stop_all, wait_for_cluster, wait_for_leader, wait_until, write_pd_toml)
from tikvlab import certs
from tikvlab.common import http_json
from tikvlab.pd_state import Store, rebalance, region_count, store_state

pytestmark = pytest.mark.timeout(120)
API = "/pd/api/v1"


# --- fixtures -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[PD]]:
    pds = start_cluster(str(tmp_path_factory.mktemp("plain")), 3)
    try:
        wait_for_cluster(pds)
        yield pds
    finally:
        stop_all(pds)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    return PKI.create(str(tmp_path_factory.mktemp("pki")))


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory, pki: PKI) -> Iterator[list[PD]]:
    """3 members, https client and peer URLs, PD v8.5 with two allowed CNs (so the client port checks CNs)."""
    pds = start_cluster(str(tmp_path_factory.mktemp("tls")), 3, client_scheme="https", peer_scheme="https",
                        ca=pki.ca, allowed_cn=["pd", "x"])
    try:
        wait_for_cluster(pds)
        yield pds
    finally:
        stop_all(pds)


@pytest.fixture
def single(tmp_path: Path) -> Iterator[PD]:
    pds = start_cluster(str(tmp_path), 1)
    try:
        wait_for_leader(pds)
        yield pds[0]
    finally:
        stop_all(pds)


# --- plaintext cluster ----------------------------------------------------------------------------

def test_three_members_elect_one_leader_listed_with_decimal_ids(plain: list[PD]) -> None:
    status, members = plain[1].api("GET", f"{API}/members")
    assert status == 200
    assert sorted(m["name"] for m in members["members"]) == sorted(pd.name for pd in plain)
    _status, etcd_view = plain[1].api("POST", "/v3/cluster/member/list", {})
    assert {m["member_id"] for m in members["members"]} == {int(m["ID"]) for m in etcd_view["members"]}
    for member in members["members"]:
        assert isinstance(member["member_id"], int)
        assert member["client_urls"][0].startswith("http://") and member["peer_urls"][0].startswith("http://")
        assert member["binary_version"] == "v8.5.0" and len(member["git_hash"]) == 40
    assert members["leader"] == members["etcd_leader"]
    assert members["leader"]["name"] in {pd.name for pd in plain}
    assert {leader_name(pd) for pd in plain} == {members["leader"]["name"]}


def test_health_is_true_for_every_member(plain: list[PD]) -> None:
    status, health = plain[2].api("GET", f"{API}/health")
    assert status == 200
    assert sorted((h["name"], h["health"]) for h in health) == sorted((pd.name, True) for pd in plain)


def _etcd_leader_id(pd: PD) -> int:
    return int(pd.api("POST", "/v3/maintenance/status", {})[1]["leader"])


def _member_id(pd: PD) -> int:
    return int(pd.api("POST", "/v3/maintenance/status", {})[1]["header"]["member_id"])


def test_leader_transfer_moves_the_etcd_leader(plain: list[PD]) -> None:
    leader = next(pd for pd in plain if pd.name == leader_name(plain[0]))
    target, bystander = [pd for pd in plain if pd is not leader]
    # Asked on a member that is neither leader nor target: the move goes through the leader's client URL.
    status, text = bystander.api("POST", f"{API}/leader/transfer/{target.name}")
    assert (status, text) == (200, "The transfer command is submitted.")
    assert {_etcd_leader_id(pd) for pd in plain} == {_member_id(target)}
    assert leader_name(leader) == target.name

    status, _answer = leader.api("POST", f"{API}/leader/resign")
    assert status == 200
    assert _etcd_leader_id(leader) != _member_id(target)
    assert leader_name(target) != target.name


def test_transfer_to_an_unknown_member_is_404(plain: list[PD]) -> None:
    status, text = plain[0].api("POST", f"{API}/leader/transfer/no-such-pd")
    assert status == 404 and "no-such-pd" in text


def _heartbeat(pd: PD, address: str, store_id: int = 0) -> dict:
    status, answer = pd.api("POST", f"{API}/lab/store/heartbeat",
                            {"store_id": store_id, "address": address, "status_address": address + "1",
                             "version": "8.5.0"})
    assert status == 200, answer
    return answer


def test_heartbeat_registers_a_store_that_turns_disconnected(plain: list[PD]) -> None:
    first = _heartbeat(plain[0], "127.0.0.1:40160")
    store_id = first["store_id"]
    assert store_id > 0
    assert {"id": store_id, "address": "127.0.0.1:40160"} in first["stores"]
    # Any member answers, and a known address keeps its id.
    assert _heartbeat(plain[2], "127.0.0.1:40160", store_id)["store_id"] == store_id
    status, entry = plain[1].api("GET", f"{API}/store/{store_id}")
    assert status == 200 and entry["store"]["state_name"] == "Up"
    assert entry["store"]["address"] == "127.0.0.1:40160" and entry["store"]["version"] == "8.5.0"
    wait_until(lambda: plain[1].api("GET", f"{API}/store/{store_id}")[1]["store"]["state_name"] == "Disconnected",
               10, what="the store to read Disconnected")
    _status, stores = plain[0].api("GET", f"{API}/stores")
    assert stores["count"] == len(stores["stores"]) >= 1


def test_evict_leader_scheduler_add_list_delete(plain: list[PD]) -> None:
    store_id = _heartbeat(plain[0], "127.0.0.1:40260")["store_id"]
    name = f"evict-leader-scheduler-{store_id}"
    status, _answer = plain[0].api("POST", f"{API}/schedulers", {"name": "evict-leader-scheduler", "store_id": store_id})
    assert status == 200
    status, listed = plain[1].api("GET", f"{API}/schedulers")
    assert status == 200 and name in listed and "balance-leader-scheduler" in listed
    assert plain[2].api("DELETE", f"{API}/schedulers/{name}")[0] == 200
    assert name not in plain[0].api("GET", f"{API}/schedulers")[1]
    status, text = plain[0].api("DELETE", f"{API}/schedulers/{name}")
    assert status == 404 and "not found" in text


def test_scheduler_for_an_unknown_store_is_refused(plain: list[PD]) -> None:
    status, _answer = plain[0].api("POST", f"{API}/schedulers", {"name": "evict-leader-scheduler", "store_id": 99999})
    assert status == 404


class Heartbeats:
    """Keeps a set of stores Up by heartbeating every 0.5 s, as TiKV does."""

    def __init__(self, pd: PD, addresses: list[str]):
        self.pd, self.addresses, self.ids = pd, addresses, {a: 0 for a in addresses}
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stopped.is_set():
            for address in self.addresses:
                status, answer = http_json("POST", self.pd.hostport, f"{API}/lab/store/heartbeat",
                                           {"store_id": self.ids[address], "address": address})
                if status == 200:
                    self.ids[address] = answer["store_id"]
            self.stopped.wait(0.5)

    def __enter__(self) -> Heartbeats:
        self.thread.start()
        wait_until(lambda: all(self.ids.values()), 10, what="store ids")
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stopped.set()
        self.thread.join(5)


def _leader_counts(pd: PD, ids: list[int]) -> list[int]:
    entries = {e["store"]["id"]: e for e in pd.api("GET", f"{API}/stores")[1]["stores"]}
    return [entries[i]["status"]["leader_count"] for i in ids]


def test_pd_leader_moves_region_leaders_off_an_evicted_store(plain: list[PD]) -> None:
    addresses = ["127.0.0.1:40360", "127.0.0.1:40370", "127.0.0.1:40380"]
    with Heartbeats(plain[0], addresses) as beats:
        ids = [beats.ids[a] for a in addresses]
        wait_until(lambda: min(_leader_counts(plain[1], ids)) >= 5, 30, what="leaders on every new store")
        plain[0].api("POST", f"{API}/schedulers", {"name": "evict-leader-scheduler", "store_id": ids[0]})
        try:
            wait_until(lambda: _leader_counts(plain[2], ids)[0] == 0, 20, what="the evicted store to drain")
        finally:
            plain[0].api("DELETE", f"{API}/schedulers/evict-leader-scheduler-{ids[0]}")
        wait_until(lambda: _leader_counts(plain[2], ids)[0] >= 3, 20, what="leaders to come back")


def test_config_version_and_metrics(plain: list[PD]) -> None:
    status, config = plain[0].api("GET", f"{API}/config")
    assert status == 200
    assert config["security"] == {"cacert-path": "", "cert-path": "", "key-path": "", "cert-allowed-cn": [],
                                  "redact-info-log": False}
    assert config["name"] == plain[0].name and config["replication"] == {"max-replicas": 3}
    assert plain[0].api("GET", f"{API}/version") == (200, {"version": "v8.5.0"})
    status, metrics = plain[0].api("GET", "/metrics")
    assert status == 200
    assert "etcd_network_peer_round_trip_time_seconds" in metrics  # etcd's real peer metrics
    assert "pd_lab_is_leader" in metrics and 'pd_cluster_status{type="store_up_count"}' in metrics


def test_member_without_quorum_answers_503_quickly(plain: list[PD]) -> None:
    survivor, frozen = plain[0], plain[1:]
    for pd in frozen:  # SIGSTOP the stand-in and its etcd (one process group), like `tikv-lab fault hang`
        os.killpg(pd.process.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        wait_until(lambda: survivor.api("POST", f"{API}/lab/store/heartbeat",
                                        {"store_id": 0, "address": "127.0.0.1:40460"}, timeout=10)[0] == 503,
                   15, what="503 from a member without quorum")
        assert time.monotonic() - started < 12
        started = time.monotonic()
        status, reason = survivor.api("GET", f"{API}/members", timeout=10)
        assert status == 503 and "leader" in reason and time.monotonic() - started < 5
        status, health = survivor.api("GET", f"{API}/health", timeout=10)
        assert status == 200 and sorted(h["health"] for h in health) == [False, False, True]
    finally:
        for pd in frozen:
            os.killpg(pd.process.pid, signal.SIGCONT)
    wait_for_leader(plain)


# --- TLS cluster ----------------------------------------------------------------------------------

def test_tls_cluster_is_healthy_with_https_client_and_peer_urls(secure: list[PD]) -> None:
    status, members = secure[0].api("GET", f"{API}/members")
    assert status == 200
    for member in members["members"]:
        assert member["client_urls"][0].startswith("https://") and member["peer_urls"][0].startswith("https://")
    status, health = secure[1].api("GET", f"{API}/health")  # pings over TLS with the member's own cert
    assert status == 200 and all(h["health"] for h in health) and len(health) == 3
    assert secure[0].api("GET", f"{API}/config")[1]["security"]["cert-allowed-cn"] == ["pd", "x"]
    assert '"[lab] etcd takes a single --peer-cert-allowed-cn' in secure[0].log()


def test_peer_port_requires_a_client_certificate(secure: list[PD]) -> None:
    """Peer TLS is etcd's, configured from [security] with --peer-client-cert-auth."""
    ctx = ssl.create_default_context(cafile=secure[0].tls.ca)
    with pytest.raises(OSError):
        http_json("GET", f"127.0.0.1:{secure[0].peer_port}", "/members", tls=ctx)


def _refusal_logged(pd: PD, cause: str) -> bool:
    return any('["TLS handshake error"]' in line and cause in line for line in pd.log().splitlines())


def test_client_without_certificate_is_refused(secure: list[PD]) -> None:
    ctx = ssl.create_default_context(cafile=secure[0].tls.ca)
    with pytest.raises(OSError):
        secure[0].api("GET", f"{API}/ping", tls=ctx)
    wait_until(lambda: _refusal_logged(secure[0], "PEER_DID_NOT_RETURN_A_CERTIFICATE"), 5,
               what="the refused handshake in the log")


def test_client_certificate_from_another_ca_is_refused(secure: list[PD], pki: PKI) -> None:
    with pytest.raises(OSError):
        secure[1].api("GET", f"{API}/ping", tls=pki.foreign.client())
    wait_until(lambda: _refusal_logged(secure[1], "CERTIFICATE_VERIFY_FAILED"), 5,
               what="the refused handshake in the log")


def test_client_with_an_allowed_cn_is_accepted(secure: list[PD], pki: PKI) -> None:
    assert secure[2].api("GET", f"{API}/version", tls=pki.allowed.client()) == (200, {"version": "v8.5.0"})


def test_v85_client_port_refuses_a_cn_outside_the_list(secure: list[PD], pki: PKI) -> None:
    with pytest.raises(OSError):
        secure[2].api("GET", f"{API}/version", tls=pki.other_cn.client())
    wait_until(lambda: '["client certificate CN check failed"]' in secure[2].log()
               and "[cn=other]" in secure[2].log(), 5, what="the CN refusal in the log")


def _replace(path: str, data: bytes) -> None:
    tmp = path + ".new"
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def test_certificate_is_reread_on_every_handshake(secure: list[PD], pki: PKI) -> None:
    pd = secure[0]
    before = serving_serial(pd, pki.allowed)
    assert before == serial_of(pd.tls.cert)
    backup = {p: open(p, "rb").read() for p in (pd.tls.cert, pd.tls.key)}
    rotated = certs.make_leaf(pki.ca, "pd")
    try:
        _replace(pd.tls.key, rotated.key_pem)
        _replace(pd.tls.cert, rotated.cert_pem)
        after = serving_serial(pd, pki.allowed)
        assert after == serial_of(pd.tls.cert) != before
        assert pd.process.poll() is None
    finally:
        for path, data in backup.items():
            _replace(path, data)


def test_ca_file_is_not_reloaded(secure: list[PD], pki: PKI) -> None:
    pd = secure[1]
    original = open(pd.tls.ca, "rb").read()
    try:
        _replace(pd.tls.ca, pki.other_ca.cert_pem)
        # The pool built at start still trusts the old CA: its clients get in, new-CA clients do not.
        assert pd.api("GET", f"{API}/ping", tls=pki.allowed.client())[0] == 200
        with pytest.raises(OSError):
            pd.api("GET", f"{API}/ping", tls=pki.foreign.client())
    finally:
        _replace(pd.tls.ca, original)


# --- single members: lifecycle ----------------------------------------------------------------------

def test_single_member_serves_and_sigterm_stops_etcd_too(single: PD) -> None:
    assert single.api("GET", f"{API}/health")[1][0]["health"] is True
    assert _heartbeat(single, "127.0.0.1:40560")["region_count"] == region_count(1)
    assert stop(single) == 0
    assert not alive(single.etcd_pid)
    assert '["PD server stopped"] [reason="received SIGTERM"]' in single.log()


def test_stand_in_exits_nonzero_when_etcd_dies(single: PD) -> None:
    os.kill(single.etcd_pid, signal.SIGKILL)
    assert single.process.wait(15) == 1
    assert '["etcd exited unexpectedly; PD cannot serve without it"] [exit_code=-9]' in single.log()


def test_etcd_does_not_outlive_a_killed_stand_in(single: PD) -> None:
    single.process.kill()  # SIGKILL: no handler runs, only PDEATHSIG can take etcd down
    single.process.wait(5)
    wait_until(lambda: not alive(single.etcd_pid), 5, what="etcd to die with its parent")


def test_join_adds_a_member_to_a_running_cluster(single: PD, tmp_path: Path) -> None:
    base = free_base(1)
    joiner = PD(name="joiner", directory=str(tmp_path / "joiner"), client_port=base, peer_port=base + 1,
                etcd_port=base + 5, extra_flags=[f"--join={single.client_url}"])
    write_pd_toml(joiner)
    start(joiner, initial_cluster="")
    try:
        record_etcd_pid(joiner)
        wait_until(lambda: len(joiner.api("GET", f"{API}/members", timeout=5)[1]["members"]) == 2, 30,
                   what="the joiner in the member list")
        wait_until(lambda: all(h["health"] for h in single.api("GET", f"{API}/health")[1]), 10,
                   what="both members healthy")
    finally:
        stop(joiner)


def test_http_listeners_with_certificates_warn_and_serve_plaintext(tmp_path: Path, pki: PKI) -> None:
    """[security] set but http:// URLs: etcd's peer listener and the stand-in's client listener both log
    etcd's warning and stay plaintext."""
    pds = start_cluster(str(tmp_path), 1, ca=pki.ca)
    try:
        wait_for_leader(pds)
        log = pds[0].log()
        assert '"msg":"scheme is HTTP while key and cert files are present; ignoring key and cert files",' \
               f'"peer-url":"{pds[0].peer_url}"' in log
        assert f'["scheme is HTTP while key and cert files are present; ignoring key and cert files"] ' \
               f'[client_url={pds[0].client_url}]' in log
        assert pds[0].api("GET", f"{API}/ping")[0] == 200
    finally:
        stop_all(pds)


@pytest.mark.skipif(not os.access("/usr/bin/etcd", os.X_OK), reason="Debian's etcd 3.4 is not installed")
def test_v81_runs_on_etcd_34_with_one_allowed_cn(tmp_path: Path, pki: PKI) -> None:
    pds = start_cluster(str(tmp_path), 1, client_scheme="https", peer_scheme="https", ca=pki.ca,
                        allowed_cn=["pd"], version="v8.1.0")
    try:
        wait_for_leader(pds)
        assert pds[0].api("GET", f"{API}/version")[1] == {"version": "v8.1.0"}
        assert "[etcd_binary=/usr/bin/etcd]" in pds[0].log() and '"etcd-version":"3.4.' in pds[0].log()
        # <= v8.3 never checks CNs on the client port
        assert pds[0].api("GET", f"{API}/ping", tls=pki.other_cn.client())[0] == 200
    finally:
        stop_all(pds)


# --- refusals -----------------------------------------------------------------------------------------

@pytest.fixture
def tls_files(tmp_path: Path, pki: PKI) -> TLSFiles:
    return issue(str(tmp_path / "tls"), pki.ca, "pd", component="pd")


def test_partial_security_names_the_missing_key(tmp_path: Path, tls_files: TLSFiles) -> None:
    toml = f'[security]\ncacert-path = "{tls_files.ca}"\ncert-path = "{tls_files.cert}"\n'
    code, output = run_refused(str(tmp_path), [], toml)
    assert code == 1 and "missing [security] key-path" in output
    assert not os.path.exists(tmp_path / "data")  # refused before etcd started


def test_unreadable_file_names_the_path(tmp_path: Path, tls_files: TLSFiles) -> None:
    missing = str(tmp_path / "nope.pem")
    code, output = run_refused(str(tmp_path),
                               [f"--cacert={tls_files.ca}", f"--cert={tls_files.cert}", f"--key={missing}"])
    assert code == 1 and f"key-path {missing}" in output and "No such file" in output


def test_unknown_scheme_is_refused(tmp_path: Path) -> None:
    code, output = run_refused(str(tmp_path), ["--peer-urls=tcp://127.0.0.1:1"])
    assert code == 1 and "URL scheme must be http, https, unix, or unixs: tcp://127.0.0.1:1" in output


def test_https_client_url_without_certificates_is_refused(tmp_path: Path) -> None:
    code, output = run_refused(str(tmp_path), ["--client-urls=https://127.0.0.1:1"])
    assert code == 1
    assert "TLS key/cert (--cert-file, --key-file) must be provided for client url https://127.0.0.1:1" in output


def test_v83_refuses_more_than_one_allowed_cn(tmp_path: Path, tls_files: TLSFiles) -> None:
    toml = security_toml(tls_files, ["pd", "x"])
    code, output = run_refused(str(tmp_path), [], toml, version="v8.3.0")
    assert code == 1 and "only supports one CN" in output


def test_crash_on_tls_fault_refuses_to_start_with_tls(tmp_path: Path, tls_files: TLSFiles) -> None:
    (tmp_path / "lab-fault-crash-on-tls").write_text("")
    code, output = run_refused(str(tmp_path), [], security_toml(tls_files))
    assert code == 1 and "[lab] fault lab-fault-crash-on-tls" in output


def test_version_flag_prints_the_lab_version() -> None:
    out = subprocess.run([sys.executable, "-m", "tikvlab.pd_server", "-V"], env=lab_env("v7.5.1"),
                         capture_output=True, text=True, check=False, timeout=30)
    assert out.returncode == 0
    assert out.stdout.splitlines()[0] == "Release Version: v7.5.1" and "\nGit Commit Hash: " in out.stdout


# --- region model -------------------------------------------------------------------------------------

def test_store_state_follows_heartbeat_age() -> None:
    assert [store_state(age) for age in (0, 2.9, 3, 30, 30.1)] == ["Up", "Up", "Disconnected", "Disconnected", "Down"]


def test_region_count_is_three_replicas_spread_and_capped() -> None:
    assert [region_count(n) for n in (1, 2, 3, 6)] == [10, 20, 30, 30]


def _stores(now: float, down: frozenset[int] = frozenset(), pinned: frozenset[int] = frozenset()) -> list[Store]:
    return [Store(id=i, address=f"s{i}", last_heartbeat=now - (60 if i in down else 0), pinned=i in pinned)
            for i in (1, 2, 3)]


def test_rebalance_drains_at_most_five_per_tick_then_balances_one() -> None:
    now = time.time()
    counts = rebalance({1: 10, 2: 10, 3: 10}, _stores(now), {1}, now)
    assert counts[1] == 5 and sum(counts.values()) == 30
    counts = rebalance(counts, _stores(now), set(), now)
    assert counts[1] == 6  # eviction lifted: one leader per tick back to the idlest store


def test_rebalance_moves_leaders_off_a_down_store_even_if_pinned() -> None:
    now = time.time()
    counts = rebalance({1: 10, 2: 10, 3: 10}, _stores(now, down=frozenset({1}), pinned=frozenset({1})), set(), now)
    assert counts[1] == 5


def test_pinned_store_keeps_its_leaders_when_evicted() -> None:
    now = time.time()
    counts = rebalance({1: 10, 2: 10, 3: 10}, _stores(now, pinned=frozenset({1})), {1}, now)
    assert counts == {1: 10, 2: 10, 3: 10}


def test_nothing_moves_without_an_eligible_store() -> None:
    now = time.time()
    assert rebalance({1: 10, 2: 10, 3: 10}, _stores(now, down=frozenset({1, 2, 3})), set(), now) == {1: 10, 2: 10, 3: 10}


def test_new_stores_receive_the_new_regions() -> None:
    now = time.time()
    assert rebalance({1: 10}, _stores(now), set(), now) == {1: 10, 2: 10, 3: 10}

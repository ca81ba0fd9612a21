"""tlsops.tikv.enable_tls and disable_tls against the lab, as a user runs them.

TestEnableThenDisable (plaintext 3 PD + 3 TiKV): --check changes nothing and shows the plan; enable_tls
ends with the final audit (tikv_tls_verify_require_tls) passing, PD's stored peer URLs https and the
restart order read back from the instances' logs (every PD before any TiKV in the cutover, the PD leader
last in the peer step); a second run changes and restarts nothing; disable_tls gives back the original
files byte for byte and a healthy plaintext cluster, and its second run changes nothing.
With 1 PD member: the same round trip. With 5: enable_tls killed right after the cutover; the next run
finishes the peer step without a second cutover; disable_tls gives the original files back.
TestRefusalsAndRollback: a TiDB registered in PD's etcd stops the cutover until confirmed; a TiKV that
cannot start with TLS (`tikv-lab fault tikv2 crash-on-tls`) makes the cutover fail and the whole cluster
go back to its plaintext files, healthy, with a message naming the store.
"""

from __future__ import annotations

import base64
import json
import os
import re
import time
import urllib.request
from datetime import datetime

import pytest

from lab_files import managed_files
from playbook_runner import PlaybookRun, interrupt_playbook_at, run_playbook

pytestmark = pytest.mark.timeout(1500)

ENABLE = "tlsops.tikv.enable_tls"
DISABLE = "tlsops.tikv.disable_tls"
LOG_LINE = re.compile(r"^\[(\d{4}/\d\d/\d\d \d\d:\d\d:\d\d\.\d{3}) [^\]]*\] \[INFO\] \[[^\]]*\] \[\"([^\"]+)\"\](.*)$")


def lab_args(cluster, name: str) -> list[str]:
    """The collection's own PKI in a directory of the test, and the reports beside it."""
    base = os.path.join(os.path.dirname(cluster.root), name)
    return ["-e", f"tikv_tls_controller_dir={base}/controller", "-e", f"tikv_tls_report_dir={base}/report"]


def report(args: list[str], *sub: str) -> dict:
    with open(os.path.join(args[3].split("=", 1)[1], *sub, "verify.json"), encoding="utf-8") as fh:
        return json.load(fh)


def pending_files(root: str) -> list[str]:
    return sorted(os.path.join(d, n) for d, _dirs, names in os.walk(root) for n in names if n.endswith(".tls-pending"))


def status(handle) -> tuple[int, dict]:
    result = handle.run("status", "--json")
    return result.returncode, json.loads(result.stdout)


def tls_states(handle) -> dict[str, str]:
    return {row["name"]: row["tls"] for row in status(handle)[1]["instances"]}


def pids(handle) -> dict[str, int | None]:
    return {inst.name: inst.pid for inst in handle.lab().instances}


def url_schemes(handle) -> list[str]:
    members = handle.pd("GET", "/members")["members"]
    return sorted(url.split(":")[0] for m in members for url in m["peer_urls"] + m["client_urls"])


def failure_message(run: PlaybookRun, starting: str) -> str:
    """The play's failure message that starts with `starting` (every host fails; one says it all)."""
    messages = re.findall(r'^fatal: \[[^\]]+\]: FAILED! => .*"msg": "(.*)"\}$', run.output, re.M)
    found = [m.replace('\\"', '"') for m in messages if m.startswith(starting)]
    assert found, run.output[-4000:]
    return found[-1]


def events(handle, since: datetime) -> list[tuple[datetime, str, str, str]]:
    """(time, instance, event, fields) from every instance's log since `since`, in time order: what the
    instances themselves say about their starts, stops and PD leadership."""
    out = []
    for inst in handle.lab().instances:
        with open(inst.log_path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                match = LOG_LINE.match(line)
                if match:
                    when = datetime.strptime(match.group(1), "%Y/%m/%d %H:%M:%S.%f")
                    if when >= since:
                        out.append((when, inst.name, match.group(2), match.group(3)))
    return sorted(out)


def starts(timeline, component: str) -> list[tuple[datetime, str, str]]:
    marker = "PD server started" if component == "pd" else "Welcome to TiKV"
    return [(when, name, fields) for when, name, event, fields in timeline if event == marker]


def put_etcd_key(handle, key: str, value: str) -> None:
    """Write a key in PD's etcd through the v3 JSON gateway on a plaintext PD client port (as TiDB does
    through its etcd client when it registers under /topology/)."""
    pd1 = handle.instance("pd1")
    body = json.dumps({"key": base64.b64encode(key.encode()).decode(),
                       "value": base64.b64encode(value.encode()).decode()}).encode()
    request = urllib.request.Request(f"http://{pd1.address}/v3/kv/put", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        assert answer.status == 200


def enable_and_check(cluster, args: list[str], pd_count: int) -> PlaybookRun:
    run = run_playbook(ENABLE, cluster.inventory, *args).assert_ok()
    final = report(args)
    assert final["verdict"] == "pass", final["failures"]
    assert final["cluster_state"] == "tls"
    assert final["settings"]["require_tls"] is True
    assert [c["result"] for c in final["cluster_checks"] if c["name"] == "pd_peer_links"] == ["ok"]
    assert set(tls_states(cluster.handle).values()) == {"on"}
    assert url_schemes(cluster.handle) == ["https"] * (2 * pd_count)
    assert status(cluster.handle)[0] == 0
    assert pending_files(cluster.root) == []
    return run


def disable_and_check(cluster, args: list[str], pd_count: int, original: dict[str, bytes]) -> PlaybookRun:
    run = run_playbook(DISABLE, cluster.inventory, *args).assert_ok()
    assert set(tls_states(cluster.handle).values()) == {"off"}
    assert url_schemes(cluster.handle) == ["http"] * (2 * pd_count)
    assert status(cluster.handle)[0] == 0
    assert managed_files(cluster.handle.lab()) == original, "disable did not give back the original files"
    assert pending_files(cluster.root) == []
    return run


class TestEnableThenDisable:
    """One plaintext 3 PD + 3 TiKV lab: check, enable, enable again, disable, disable again."""

    state: dict = {}

    @pytest.fixture(autouse=True)
    def _lab(self, plaintext_cluster):
        self.cluster = plaintext_cluster
        self.handle = plaintext_cluster.handle
        self.args = lab_args(plaintext_cluster, "enable")
        if "plaintext" not in self.state:
            self.state["plaintext"] = managed_files(self.handle.lab())

    def test_check_mode_changes_nothing_and_shows_the_plan(self):
        before = pids(self.handle)
        run = run_playbook(ENABLE, self.cluster.inventory, *self.args, "--check", "--diff").assert_ok()
        assert "Cutover to tls: needed" in run.output
        assert "would promote the staged configs, stop every TiKV and PD" in run.output
        assert "would move PD member" in run.output
        assert "Clients PD knows of: none" in run.output
        assert pids(self.handle) == before, "a check run restarted an instance"
        assert managed_files(self.handle.lab()) == self.state["plaintext"]
        assert pending_files(self.cluster.root) == []
        assert not os.path.exists(self.args[1].split("=", 1)[1]), "a check run created the controller's CA"
        assert not any(os.listdir(os.path.join(inst.deploy_dir, "tls")) for inst in self.handle.lab().instances
                       if os.path.isdir(os.path.join(inst.deploy_dir, "tls"))), "a check run wrote TLS files"

    def test_enable_ends_with_every_channel_tls_in_the_right_order(self):
        began = datetime.utcnow()
        enable_and_check(self.cluster, self.args, 3)
        timeline = events(self.handle, began)
        pd_starts, tikv_starts = starts(timeline, "pd"), starts(timeline, "tikv")
        cutover = [s for s in pd_starts if "[peer_scheme=http]" in s[2]]
        peer_step = [s for s in pd_starts if "[peer_scheme=https]" in s[2]]
        assert sorted(s[1] for s in cutover) == ["pd1", "pd2", "pd3"], pd_starts
        assert len(tikv_starts) == 3, tikv_starts
        assert max(s[0] for s in cutover) < min(s[0] for s in tikv_starts), "a TiKV started before every PD had"
        assert sorted(s[1] for s in peer_step) == ["pd1", "pd2", "pd3"], pd_starts
        assert min(s[0] for s in peer_step) > max(s[0] for s in tikv_starts)
        # The member that led when the peer step began is the last one moved.
        led = [fields for when, _name, event, fields in timeline
               if event == "PD leader changed" and "[is_self=true]" in fields and when < peer_step[0][0]]
        leader_name = re.search(r"\[leader=([^\]]+)\]", led[-1]).group(1)
        last = self.handle.instance(peer_step[-1][1])
        assert last.pd_name == leader_name, (leader_name, peer_step)

    def test_second_run_changes_nothing(self):
        before = pids(self.handle)
        run = run_playbook(ENABLE, self.cluster.inventory, *self.args).assert_ok()
        assert run.changed() == {}, run.changed()
        assert pids(self.handle) == before, "a second run restarted an instance"

    def test_disable_brings_back_plaintext(self):
        run = disable_and_check(self.cluster, self.args, 3, self.state["plaintext"])
        assert run.changed()
        again = run_playbook(DISABLE, self.cluster.inventory, *self.args).assert_ok()
        assert again.changed() == {}, again.changed()


def test_enable_and_disable_with_one_pd(make_lab):
    cluster = make_lab("pd1", "--pd", "1", "--tikv", "2")
    args = lab_args(cluster, "run")
    original = managed_files(cluster.handle.lab())
    enable_and_check(cluster, args, 1)
    disable_and_check(cluster, args, 1, original)


def test_five_pd_interrupted_after_the_cutover_then_finished_and_disabled(make_lab):
    """5 PD members; enable_tls killed right after the cutover (SIGKILL, as a lost controller): the next run
    finishes the peer step without a second cutover; disable_tls then gives the original cluster back."""
    cluster = make_lab("pd5", "--pd", "5", "--tikv", "2")
    handle, args = cluster.handle, lab_args(cluster, "run")
    original = managed_files(handle.lab())
    interrupt_playbook_at("PLAY [Enable TLS | PD peer URLs to https", ENABLE, cluster.inventory, *args)
    # What the interruption left: TLS on every client port, raft still over http.
    assert set(tls_states(handle).values()) == {"on"}
    assert url_schemes(handle).count("http") == 5
    tikv_pids = {name: pid for name, pid in pids(handle).items() if name.startswith("tikv")}
    run = enable_and_check(cluster, args, 5)
    assert "Cutover: already done" in run.output
    assert {name: pid for name, pid in pids(handle).items() if name.startswith("tikv")} == tikv_pids
    disable_and_check(cluster, args, 5, original)


def test_two_pd_members_are_refused_unless_allowed(make_lab):
    cluster = make_lab("pd2", "--pd", "2", "--tikv", "1")
    before, before_pids = managed_files(cluster.handle.lab()), pids(cluster.handle)
    run = run_playbook(ENABLE, cluster.inventory, *lab_args(cluster, "run"))
    assert run.returncode != 0
    message = failure_message(run, "The inventory has 2 PD members")
    assert "tikv_tls_allow_two_pd_members=true" in message and "Nothing was changed" in message, message
    assert managed_files(cluster.handle.lab()) == before and pids(cluster.handle) == before_pids


class TestRefusalsAndRollback:
    """Clients PD knows of stop the cutover until confirmed; a TiKV that cannot start with TLS rolls it back."""

    def test_a_registered_tidb_stops_the_cutover_until_confirmed(self, plaintext_cluster):
        handle = plaintext_cluster.handle
        before, before_pids = managed_files(handle.lab()), pids(handle)
        put_etcd_key(handle, "/topology/tidb/10.0.9.5:4000/info", json.dumps({"version": "8.5.0"}))
        run = run_playbook(ENABLE, plaintext_cluster.inventory, *lab_args(plaintext_cluster, "clients"))
        assert run.returncode != 0
        message = failure_message(run, "These clients of the cluster")
        assert "tidb 10.0.9.5:4000" in message and "tikv_tls_clients_ready=true" in message, message
        assert managed_files(handle.lab()) == before and pids(handle) == before_pids

    def test_crash_on_tls_rolls_back_to_a_healthy_plaintext_cluster(self, plaintext_cluster):
        handle = plaintext_cluster.handle
        before = managed_files(handle.lab())
        handle.ok("fault", "tikv2", "crash-on-tls")
        began = time.monotonic()
        run = run_playbook(ENABLE, plaintext_cluster.inventory, *lab_args(plaintext_cluster, "rollback"),
                           "-e", "tikv_tls_clients_ready=true", "-e", "tikv_tls_restart_store_timeout=30")
        assert run.returncode != 0, run.output[-4000:]
        message = failure_message(run, "The cutover to tls failed")
        assert "tikv2" in message and "rolled back" in message, message
        assert status(handle)[0] == 0, "the cluster is not healthy after the rollback"
        assert set(tls_states(handle).values()) == {"off"}
        assert managed_files(handle.lab()) == before, "the rollback did not put back the plaintext files"
        assert pending_files(plaintext_cluster.root) == []
        for name in ("tikv1", "tikv2", "tikv3"):
            assert handle.store_state(name) == "Up"
        assert time.monotonic() - began < 900
        handle.ok("fault", "tikv2", "clear")

"""store_leaders against a small stateful PD: eviction waits for 0 leaders, a timeout FAILS by
default and puts the store back as it was, warn mode goes on knowingly, check mode sends nothing,
and second runs change nothing."""

from __future__ import annotations

from ansible_collections.tlsops.tikv.plugins.module_utils._pd_client import store_matching
from ansible_collections.tlsops.tikv.plugins.modules import store_leaders
from fake_pd_cluster import pd, run  # noqa: F401  pylint: disable=unused-import

SCHEDULERS = "/pd/api/v1/schedulers"


def test_evict_in_check_mode_then_for_real_then_again(pd, capsys):  # noqa: F811
    cluster, conn = pd
    args = dict(conn, store_address="10.0.1.2:20160", poll_interval=0.05, wait_timeout=5)

    code, out = run(store_leaders, args, capsys, check_mode=True)
    assert code == 0 and out["changed"] is True and out["store_id"] == 4
    assert out["msg"].startswith("would add evict-leader-scheduler-4 and wait up to 5 s")
    assert cluster.changes == [] and cluster.stores[4]["leaders"] == 10

    code, out = run(store_leaders, args, capsys)
    assert code == 0 and out["changed"] is True
    assert (out["leader_count_before"], out["leader_count"], out["scheduler_present"]) == (10, 0, True)
    assert cluster.changes == [("POST", SCHEDULERS, {"name": "evict-leader-scheduler", "store_id": 4})]

    code, out = run(store_leaders, args, capsys)
    assert code == 0 and out["changed"] is False and len(cluster.changes) == 1


def test_a_store_that_keeps_its_leaders_fails_and_is_put_back(pd, capsys):  # noqa: F811
    cluster, conn = pd
    cluster.stores[4]["pinned"] = True
    code, out = run(store_leaders, dict(conn, store_id=4, wait_timeout=0.5, poll_interval=0.1), capsys)
    assert code == 1 and out["failed"] is True
    assert out["msg"].startswith("store 4 (10.0.1.2:20160) still holds 10 leaders after waiting 0.5 s with evict-leader-scheduler-4")
    assert "evict-leader-scheduler-4 was removed again" in out["msg"]
    assert cluster.schedulers == set() and out["scheduler_present"] is False
    assert cluster.changes[-1] == ("DELETE", SCHEDULERS + "/evict-leader-scheduler-4", None)


def test_a_scheduler_that_was_already_there_is_left_alone_on_failure(pd, capsys):  # noqa: F811
    cluster, conn = pd
    cluster.stores[4]["pinned"] = True
    cluster.schedulers.add("evict-leader-scheduler-4")
    code, out = run(store_leaders, dict(conn, store_id=4, wait_timeout=0.3, poll_interval=0.1), capsys)
    assert code == 1 and cluster.schedulers == {"evict-leader-scheduler-4"} and cluster.changes == []


def test_warn_mode_goes_on_and_says_so(pd, capsys):  # noqa: F811
    cluster, conn = pd
    cluster.stores[4]["pinned"] = True
    code, out = run(store_leaders, dict(conn, store_id=4, wait_timeout=0.3, poll_interval=0.1, on_timeout="warn"),
                    capsys)
    assert code == 0 and out["timed_out"] is True and out["changed"] is True
    assert any("on_timeout=warn" in str(w) for w in out["warnings"])
    assert "evict-leader-scheduler-4" in cluster.schedulers


def test_allowed_removes_the_scheduler_once(pd, capsys):  # noqa: F811
    cluster, conn = pd
    cluster.schedulers.add("evict-leader-scheduler-7")
    args = dict(conn, store_address="http://10.0.1.3:20160", state="allowed")
    code, out = run(store_leaders, args, capsys, check_mode=True)
    assert code == 0 and out["changed"] is True and cluster.changes == []
    code, out = run(store_leaders, args, capsys)
    assert code == 0 and out["changed"] is True and cluster.schedulers == set()
    code, out = run(store_leaders, args, capsys)
    assert code == 0 and out["changed"] is False and out["msg"] == (
        "store 7 (10.0.1.3:20160) has no evict-leader-scheduler-7; nothing to do")


def test_an_unknown_store_is_named_with_the_fix(pd, capsys):  # noqa: F811
    _cluster, conn = pd
    code, out = run(store_leaders, dict(conn, store_address="10.9.9.9:20160"), capsys)
    assert code == 1 and out["msg"].startswith("the store at 10.9.9.9:20160 is not known to PD")


def test_store_id_and_address_are_exclusive(pd, capsys):  # noqa: F811
    _cluster, conn = pd
    code, out = run(store_leaders, dict(conn, store_id=4, store_address="10.0.1.2:20160"), capsys)
    assert code == 1 and "mutually exclusive" in out["msg"]


def test_by_address_a_live_store_wins_over_a_tombstone_at_the_same_address():
    stores = {"stores": [{"store": {"id": 2, "address": "10.0.1.2:20160", "state_name": "Tombstone"}},
                         {"store": {"id": 9, "address": "10.0.1.2:20160", "state_name": "Up"}}]}
    assert store_matching(stores, address="https://10.0.1.2:20160/")["store"]["id"] == 9
    assert store_matching(stores, store_id=2)["store"]["state_name"] == "Tombstone"
    assert store_matching(stores, address="10.0.1.3:20160") is None

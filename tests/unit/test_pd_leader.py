"""pd_leader against a small stateful PD: check mode sends nothing, a transfer waits for the new
leader, a second run changes nothing, and each refusal names the member and the fix."""

from __future__ import annotations

import yaml

from ansible_collections.tlsops.tikv.plugins.module_utils._pd_client import PDError, poll
from ansible_collections.tlsops.tikv.plugins.modules import pd_leader
from fake_pd_cluster import pd, run  # noqa: F401  pylint: disable=unused-import

TRANSFER = "/pd/api/v1/leader/transfer/"


def test_moving_leadership_away_in_check_mode_then_for_real_then_again(pd, capsys):  # noqa: F811
    cluster, conn = pd
    args = dict(conn, name="pd-a", state="absent")

    code, out = run(pd_leader, args, capsys, check_mode=True)
    assert code == 0 and out["changed"] is True
    assert out["msg"] == "would transfer PD leadership from pd-a to pd-b"
    assert cluster.changes == [] and cluster.leader == "pd-a"

    code, out = run(pd_leader, args, capsys)
    assert code == 0 and out["changed"] is True
    assert (out["previous_leader"], out["transferred_to"], out["leader"]) == ("pd-a", "pd-b", "pd-b")
    assert cluster.changes == [("POST", TRANSFER + "pd-b", None)]

    code, out = run(pd_leader, args, capsys)
    assert code == 0 and out["changed"] is False and out["transferred_to"] is None
    assert "pd-a is not the PD leader (pd-b is)" in out["msg"]
    assert len(cluster.changes) == 1


def test_the_default_target_is_a_healthy_member(pd, capsys):  # noqa: F811
    cluster, conn = pd
    cluster.members["pd-b"]["healthy"] = False
    code, out = run(pd_leader, dict(conn, name="pd-a"), capsys)
    assert code == 0 and out["leader"] == "pd-c"


def test_an_unhealthy_target_is_refused_before_anything_is_sent(pd, capsys):  # noqa: F811
    cluster, conn = pd
    cluster.members["pd-c"]["healthy"] = False
    code, out = run(pd_leader, dict(conn, name="pd-a", target="pd-c"), capsys)
    assert code == 1 and out["failed"] is True
    assert "cannot move PD leadership away from pd-a: target pd-c is not healthy" in out["msg"]
    assert cluster.changes == []


def test_no_healthy_member_to_take_over_fails_naming_the_members(pd, capsys):  # noqa: F811
    cluster, conn = pd
    cluster.members["pd-b"]["healthy"] = cluster.members["pd-c"]["healthy"] = False
    code, out = run(pd_leader, dict(conn, name="pd-a"), capsys)
    assert code == 1 and "no other PD member is healthy (members: pd-b, pd-c)" in out["msg"]
    assert cluster.changes == []


def test_present_transfers_onto_the_member_and_is_idempotent(pd, capsys):  # noqa: F811
    cluster, conn = pd
    code, out = run(pd_leader, dict(conn, name="pd-c", state="present"), capsys)
    assert code == 0 and out["changed"] is True and cluster.leader == "pd-c"
    code, out = run(pd_leader, dict(conn, name="pd-c", state="present"), capsys)
    assert code == 0 and out["changed"] is False and out["msg"] == "pd-c is already the PD leader; nothing to do"


def test_a_transfer_that_never_lands_fails_after_the_wait(pd, capsys):  # noqa: F811
    cluster, conn = pd
    cluster.transfer_moves = False
    code, out = run(pd_leader, dict(conn, name="pd-a", wait_timeout=0.5, poll_interval=0.1), capsys)
    assert code == 1
    assert out["msg"].startswith("PD leadership did not move from pd-a to pd-b within 0.5 s (leader now: pd-a)")
    assert out["waited"] >= 0.5


def test_an_unknown_member_is_named(pd, capsys):  # noqa: F811
    _cluster, conn = pd
    code, out = run(pd_leader, dict(conn, name="pd-x"), capsys)
    assert code == 1 and out["msg"] == ("pd-x is not a PD member (members: pd-a, pd-b, pd-c). "
                                        "Check pd_name in the inventory.")


def test_no_leader_fails_instead_of_guessing(pd, capsys):  # noqa: F811
    cluster, conn = pd
    cluster.leader = None
    code, out = run(pd_leader, dict(conn, name="pd-a"), capsys)
    assert code == 1 and out["msg"].startswith("PD has no leader right now")


def test_documentation_declares_the_shared_pd_options_and_every_return():
    doc = yaml.safe_load(pd_leader.DOCUMENTATION)
    assert doc["extends_documentation_fragment"] == ["tlsops.tikv.pd_client", "tlsops.tikv.pd_client.tls"]
    assert doc["attributes"]["check_mode"]["support"] == "full"
    assert set(yaml.safe_load(pd_leader.RETURN)) == {"leader", "previous_leader", "transferred_to", "waited", "msg"}


def test_poll_counts_pd_errors_as_not_yet_and_keeps_the_last_one():
    answers = iter([PDError("503 no leader"), None, "pd-b"])

    def check():
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    clock = iter(range(100))
    value, waited, error = poll(check, timeout=10, interval=1, clock=lambda: next(clock), sleep=lambda s: None)
    assert (value, waited, error) == ("pd-b", 3, None)

    def down():
        raise PDError("down")

    value, waited, error = poll(down, timeout=0, interval=1)
    assert value is None and str(error) == "down"

"""pd_member against a small PD with etcd's JSON gateway: peer URLs updated once (check mode and
diff first), a second run changes nothing, bad input refused before any call."""

from __future__ import annotations

from ansible_collections.tlsops.tikv.plugins.modules import pd_member
from fake_pd_cluster import pd, run  # noqa: F401  pylint: disable=unused-import


def test_update_in_check_mode_then_for_real_then_again(pd, capsys):  # noqa: F811
    cluster, conn = pd
    args = dict(conn, name="pd-b", peer_urls=["https://10.0.0.2:2380"])

    code, out = run(pd_member, args, capsys, check_mode=True, diff=True)
    assert code == 0 and out["changed"] is True
    assert out["diff"]["before"] == {"peer_urls": ["http://10.0.0.2:2380"]}
    assert out["diff"]["after"] == {"peer_urls": ["https://10.0.0.2:2380"]}
    assert cluster.changes == []

    code, out = run(pd_member, args, capsys)
    assert code == 0 and out["changed"] is True
    assert out["member"]["peer_urls"] == ["https://10.0.0.2:2380"] and out["previous_peer_urls"] == ["http://10.0.0.2:2380"]
    assert out["member"]["member_id"] == "1001" and out["member"]["member_id_hex"] == "3e9"
    # The gateway takes the uint64 id as a JSON string.
    assert cluster.changes == [("POST", "/v3/cluster/member/update", {"ID": "1001", "peerURLs": ["https://10.0.0.2:2380"]})]

    code, out = run(pd_member, args, capsys)
    assert code == 0 and out["changed"] is False and len(cluster.changes) == 1


def test_member_id_names_the_member_too(pd, capsys):  # noqa: F811
    cluster, conn = pd
    code, out = run(pd_member, dict(conn, member_id="0x3ea", peer_urls=["https://10.0.0.3:2380"]), capsys)
    assert code == 0 and out["member"]["name"] == "pd-c"
    assert cluster.members["pd-c"]["peer_urls"] == ["https://10.0.0.3:2380"]


def test_an_unknown_member_lists_the_members(pd, capsys):  # noqa: F811
    cluster, conn = pd
    code, out = run(pd_member, dict(conn, name="pd-x", peer_urls=["https://10.0.0.9:2380"]), capsys)
    assert code == 1 and out["msg"] == ("pd-x is not an etcd member of this PD cluster "
                                        "(members: pd-a (1000), pd-b (1001), pd-c (1002))")
    assert cluster.changes == []


def test_unusable_peer_urls_are_refused_before_any_call(pd, capsys):  # noqa: F811
    cluster, conn = pd
    code, out = run(pd_member, dict(conn, name="pd-a", peer_urls=["ftp://10.0.0.1:2380", "https://10.0.0.1"]), capsys)
    assert code == 1
    assert out["msg"] == ("peer_urls for pd-a are not usable: ftp://10.0.0.1:2380: the scheme must be http or https; "
                          "https://10.0.0.1: needs a host and a port")
    assert cluster.changes == []

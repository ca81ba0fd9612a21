"""After the faults drill: the rolling restart stopped at the partitioned host, the cluster kept serving
and healed by itself, and nothing past the failure was restarted."""

from __future__ import annotations

import json
import os

import pytest

PARTITIONED = "host3"


def read(name: str) -> str:
    with open(os.path.join(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"], name), encoding="utf-8") as fh:
        return fh.read()


@pytest.fixture(scope="module")
def before() -> dict:
    return json.loads(read("faults-before.json"))


@pytest.fixture(scope="module")
def during() -> dict:
    return json.loads(read("faults-during.json"))


def pids(status: dict) -> dict[str, int]:
    return {row["name"]: row["pid"] for row in status["instances"]}


def test_the_play_stopped_at_the_partitioned_host(during):
    """The partition fired, and the play failed pointing at the cut-off host: its address (its store,
    unreachable over SSH) or one of its instances."""
    log = read("faults-rolling-restart.log")
    host = next(h for h in during["hosts"] if h["name"] == PARTITIONED)
    assert host["partitioned"], "the partition never fired"
    failures = [line for line in log.splitlines() if line.startswith("fatal:")]
    assert failures, log[-3000:]
    pointers = [host["address"] + ":"] + [f"[{name}]" for name in host["instances"]]
    assert [line for line in failures if any(p in line for p in pointers)], \
        f"no failure points at {PARTITIONED} ({pointers}):\n" + "\n".join(f[:400] for f in failures)


def test_the_cluster_kept_serving_while_the_host_was_cut_off(during):
    assert during["leader"], "PD lost its leader: two members of three must keep quorum"
    up = {s["instance"] for s in during["stores"] if s["state_name"] == "Up"}
    others = {row["name"] for row in during["instances"] if row["component"] == "tikv" and row["host"] != PARTITIONED}
    assert others <= up, f"stores on the linked hosts not Up: {sorted(others - up)}"


def test_nothing_was_restarted_after_the_failure(before, during):
    """PD went first (all members), then one store; the stores after it were left alone."""
    restarted = {name for name, pid in pids(during).items() if pid != pids(before)[name]}
    tikv_restarted = sorted(name for name in restarted if name.startswith("tikv"))
    assert len(tikv_restarted) <= 1, f"the play went on after the partition: {tikv_restarted} restarted"
    for row in during["instances"]:
        if row["host"] == PARTITIONED and row["component"] == "tikv":
            assert row["name"] not in restarted or tikv_restarted == [row["name"]], row


def test_every_instance_runs_again_through_its_service(host, instance):
    assert host.run(f"service {instance.service} status").rc == 0


def test_the_cluster_is_healthy_after_the_partition_heals(lab_status):
    code, status = lab_status()
    assert code == 0, status["problems"]
    assert not any(h["partitioned"] for h in status["hosts"])

"""Benchmark: availability during rotate_certs, rolling_restart and rotate_ca on a TLS lab.

    .venv/bin/python bench/availability.py                          # 3 PD + 3 TiKV, all three playbooks
    .venv/bin/python bench/availability.py --playbooks rotate_certs  # one of them
    .venv/bin/python bench/availability.py --small                   # rotate_certs only (a quick check)

A TLS lab (`tikv-lab up --tls`) whose CA and operator certificate the collection adopts (copied into the
controller directory as the pki role would have made them, as the rotation tests do). While each playbook
runs, an independent client (bench/_bench.py Probe) asks PD's HTTP API (any member) and makes one gRPC
KvGet on every TiKV every 50 ms with the operator's files, re-read when they change. Reported per playbook:
requests, failed requests (PD: no member answered; TiKV: a KvGet failed, and of those the ones on a store
that held region leaders then), the longest gap without an answer (PD, any TiKV), the wall time.
Targets: 0 failed requests for rotate_certs and rotate_ca. The playbooks run in the order given, on one
lab; a failed playbook is reported with an excerpt of its output and the ones after it still run.
Writes bench/results/availability.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _bench as b  # noqa: E402  pylint: disable=wrong-import-position

PLAYBOOKS = {
    "rotate_certs": ("tlsops.tikv.rotate_certs", []),
    "rolling_restart": ("tlsops.tikv.rolling_restart", []),
    # As tests/integration/test_rotate_ca.py runs it.
    "rotate_ca": ("tlsops.tikv.rotate_ca", ["-e", "tikv_tls_renew_before_days=7"]),
}
ZERO_FAILURE_TARGETS = ("rotate_certs", "rotate_ca")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--playbooks", default="rotate_certs,rolling_restart,rotate_ca",
                        help="comma-separated, run in this order on one lab (%s)" % ", ".join(PLAYBOOKS))
    parser.add_argument("--tikv", type=int, default=3, help="TiKV instances (3 PD always)")
    parser.add_argument("--interval", type=float, default=0.05, help="probe interval, seconds")
    parser.add_argument("--small", action="store_true", help="rotate_certs only")
    parser.add_argument("--output", default=None)
    args = parser.parse_args()
    if args.small:
        args.playbooks = "rotate_certs"
    names = [n.strip() for n in args.playbooks.split(",") if n.strip()]
    unknown = [n for n in names if n not in PLAYBOOKS]
    if unknown:
        parser.error("unknown playbook(s) %s; choose from %s" % (", ".join(unknown), ", ".join(PLAYBOOKS)))
    report = b.base_report("availability", args)
    results = []
    with b.BenchLab("avail", tikv=args.tikv, tls=True) as lab:
        report["lab_up_seconds"] = round(lab.up_seconds, 1)
        with b.Probe(lab.root, lab.ctl, interval=args.interval) as probe:
            time.sleep(1)
            for name in names:
                lab.cli("wait", "--timeout", "120", check=False)
                playbook, extra = PLAYBOOKS[name]
                began = time.monotonic()
                run = b.run_playbook(playbook, lab.inventory, *lab.playbook_args(), *extra)
                entry = {"playbook": name, "ok": run.ok, "wall": round(run.wall, 1),
                         "availability": probe.availability(since=began, until=time.monotonic()),
                         "profile": b.profile(run, lab.instance_count())}
                if not run.ok:
                    entry["output_excerpt"] = run.excerpt()
                results.append(entry)
                time.sleep(1)
    report["results"] = results
    report["targets"] = [{"metric": "%s failed requests" % r["playbook"], "goal": 0,
                          "achieved": r["availability"]["failed"], "playbook_ok": r["ok"],
                          "met": r["ok"] and r["availability"]["failed"] == 0}
                         for r in results if r["playbook"] in ZERO_FAILURE_TARGETS]
    print("Availability, 3 PD + %d TiKV TLS lab, probe every %.0f ms; %d CPUs, load at start %s"
          % (args.tikv, args.interval * 1000, os.cpu_count(), report["machine"]["load_average_at_start"]))
    rows = []
    for r in results:
        a = r["availability"]
        rows.append([r["playbook"] + ("" if r["ok"] else " (FAILED)"), r["wall"], a["requests"], a["failed"], a["pd_failed"],
                     a["tikv_failed"], a["tikv_failed_with_leaders"], a["longest_gap_pd"], a["longest_gap_tikv"]])
    print(b.table(["playbook", "wall s", "requests", "failed", "PD failed", "KvGet failed", "on leader stores",
                   "PD gap s", "TiKV gap s"], rows))
    for target in report["targets"]:
        print("target: %s = 0: %s -> %s" % (target["metric"], target["achieved"], "met" if target["met"] else "NOT met"))
    b.write_report("availability", report, args.output)
    for r in results:
        if not r["ok"]:
            print("--- %s failed; the end of its output:\n%s" % (r["playbook"], r["output_excerpt"]))


if __name__ == "__main__":
    main()

"""Benchmark: the outage of enable_tls's cutover against its floor, a plain restart of the same lab.

    .venv/bin/python bench/cutover_outage.py                 # 3 PD + 3 TiKV, floor twice each, enable_tls once
    .venv/bin/python bench/cutover_outage.py --small         # one floor of each kind (a quick check)
    .venv/bin/python bench/cutover_outage.py --tikv 6 --repeat 2

On a plaintext lab (local mode), an independent client (bench/_bench.py Probe) asks PD's HTTP API and
makes a gRPC KvGet on every TiKV every 50 ms, over whichever of plaintext and TLS works (TLS with the
cluster's CA and the operator's client certificate from the controller directory once the pki role wrote
them). The outage is what that client sees: from its first failed sample to the first sample in which
PD answers, every store is Up and every TiKV answers (over TLS after enable_tls).

  floor, stop all + start all   `tikv-lab service <inst> stop` for every instance at once, then `start`
                                for every instance at once: no TLS work, no Ansible
  floor, PD leader last         the same, but the PD leader stopped after the others (tikv-lab down's
                                order, and the cutover's): etcd's leader otherwise waits up to 7 s to
                                hand leadership to a peer that is stopping too. The target's floor
  floor, in cutover order       the cutover's order without TLS and without Ansible: stop every
                                instance, start PD, wait for PD (polled every 0.1 s), start TiKV
  enable_tls                    tlsops.tikv.enable_tls on the same lab (the cutover is its one outage; the
                                PD peer step after it restarts one member at a time and is reported apart)
  TLS floor                     stop all (PD leader last) + start all again once the lab is TLS

Prints the figures, the ratio to the floor (target: <= 1.3x) and the outage the playbook itself prints;
writes bench/results/cutover_outage.json. Run lab benchmarks one at a time on a small machine.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _bench as b  # noqa: E402  pylint: disable=wrong-import-position

TARGET_RATIO = 1.3


def stop_leader_last(lab: b.BenchLab) -> None:
    """Every instance but the PD leader at once, then the leader (tikv-lab down's order, and the cutover's):
    etcd's leader waits up to 7 s to hand leadership to a peer that is stopping too."""
    for wave in b.cli.shutdown_waves(lab.lab()):
        lab.service(wave, "stop")


def floor_stop_start(lab: b.BenchLab, probe: b.Probe, names: list[str], leader_last: bool) -> dict:
    began = time.monotonic()
    if leader_last:
        stop_leader_last(lab)
    else:
        lab.service(names, "stop")
    stopped = time.monotonic()
    lab.service(names, "start")
    # Back: the first good sample taken once everything was stopped (one taken before says nothing).
    back = probe.wait_ok(120, since=stopped)
    outage = probe.outage(since=began - 0.01)
    return {"kind": "stop all (PD leader last) + start all" if leader_last else "stop all + start all",
            "commands_to_ok": round((back or time.monotonic()) - began, 3), "probe": _clean(outage)}


def floor_cutover_order(lab: b.BenchLab, probe: b.Probe) -> dict:
    pds = [i.name for i in lab.lab().of("pd")]
    tikvs = [i.name for i in lab.lab().of("tikv")]
    began = time.monotonic()
    stop_leader_last(lab)
    stopped = time.monotonic()
    lab.service(pds, "start")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # PD back: a leader and /stores answering, in a sample taken after the stop
        if probe.samples and probe.samples[-1].at > stopped and probe.samples[-1].pd_ok:
            break
        time.sleep(0.1)
    lab.service(tikvs, "start")
    back = probe.wait_ok(120, since=stopped)
    outage = probe.outage(since=began - 0.01)
    return {"kind": "cutover order", "commands_to_ok": round((back or time.monotonic()) - began, 3),
            "probe": _clean(outage)}


def _clean(outage: dict | None) -> dict | None:
    if outage is None:
        return None
    return {k: v for k, v in outage.items() if k not in ("began", "ended")}


def one_lab(args, index: int) -> dict:
    with b.BenchLab("outage", tikv=args.tikv) as lab:
        names = [i.name for i in lab.lab().instances]
        out = {"lab": index, "up_seconds": round(lab.up_seconds, 1), "floors": [], "tls_floors": []}
        with b.Probe(lab.root, lab.ctl, interval=args.interval) as probe:
            time.sleep(1)
            for _round in range(args.floors):
                out["floors"].append(floor_stop_start(lab, probe, names, leader_last=False))
                time.sleep(1)
                out["floors"].append(floor_stop_start(lab, probe, names, leader_last=True))
                time.sleep(1)
                out["floors"].append(floor_cutover_order(lab, probe))
                time.sleep(1)
            lab.cli("wait", "--timeout", "60")
            began = time.monotonic()
            run = b.run_playbook("tlsops.tikv.enable_tls", lab.inventory, *lab.playbook_args())
            ended = time.monotonic()
            cutover = probe.outage(since=began)
            after = probe.availability(since=cutover["ended"], until=ended) if cutover and cutover.get("ended") else None
            out["enable_tls"] = {"ok": run.ok, "wall": round(run.wall, 1), "probe": _clean(cutover),
                                 "playbook_reported_outage": b.playbook_outage(run.output),
                                 "after_cutover": after, "profile": b.profile(run, lab.instance_count())}
            steps = b.window(run, "Note when the outage begins", "Note how long the outage lasted")
            out["enable_tls"]["cutover_tasks"] = steps
            out["enable_tls"]["cutover_split"] = {
                "tasks": len(steps), "tasks_that_ran": sum(1 for s in steps if s["hosts_ran"]),
                "waiting": round(sum(s["wall"] for s in steps if s["wait"]), 2),
                "controller": round(sum(s["wall"] for s in steps if not s["wait"]), 2)}
            if not run.ok:
                out["enable_tls"]["output_excerpt"] = run.excerpt()
                return out
            time.sleep(1)
            for _round in range(args.floors):
                out["tls_floors"].append(floor_stop_start(lab, probe, names, leader_last=True))
                time.sleep(1)
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--tikv", type=int, default=3, help="TiKV instances (3 PD always)")
    parser.add_argument("--floors", type=int, default=2, help="floor runs of each kind per lab (median reported)")
    parser.add_argument("--repeat", type=int, default=1, help="labs, each with one enable_tls (median reported)")
    parser.add_argument("--interval", type=float, default=0.05, help="probe interval, seconds")
    parser.add_argument("--small", action="store_true", help="one floor of each kind, one lab")
    parser.add_argument("--output", default=None)
    args = parser.parse_args()
    if args.small:
        args.floors, args.repeat = 1, 1
    report = b.base_report("cutover_outage", args)
    labs = [one_lab(args, i) for i in range(args.repeat)]
    report["labs"] = labs

    def seconds(entries, kind=None):
        return [e["probe"]["seconds"] for e in entries if e.get("probe") and e["probe"].get("seconds") is not None
                and (kind is None or e["kind"] == kind)]
    floor_naive = b.median([s for lab in labs for s in seconds(lab["floors"], "stop all + start all")])
    floor_plain = b.median([s for lab in labs for s in seconds(lab["floors"], "stop all (PD leader last) + start all")])
    floor_order = b.median([s for lab in labs for s in seconds(lab["floors"], "cutover order")])
    tls_floor = b.median([s for lab in labs for s in seconds(lab["tls_floors"])])
    runs = [lab["enable_tls"] for lab in labs if lab.get("enable_tls", {}).get("ok")]
    outage = b.median([r["probe"]["seconds"] for r in runs if r.get("probe") and r["probe"].get("seconds")])
    reported = b.median([r["playbook_reported_outage"] for r in runs if r.get("playbook_reported_outage")])
    ratio = round(outage / floor_plain, 2) if floor_plain and outage else None
    report["summary"] = {
        "floor_stop_all_start_all": round(floor_naive, 2), "floor_leader_last": round(floor_plain, 2),
        "floor_cutover_order": round(floor_order, 2),
        "tls_floor_stop_all_start_all": round(tls_floor, 2), "enable_tls_outage_probe": round(outage, 2),
        "enable_tls_outage_playbook": reported, "ratio_to_floor": ratio,
        "ratio_to_naive_floor": round(outage / floor_naive, 2) if floor_naive and outage else None,
        "ratio_to_cutover_order_floor": round(outage / floor_order, 2) if floor_order and outage else None,
        "enable_tls_wall": b.median([r["wall"] for r in runs]),
        "enable_tls_runs_failed": sum(1 for lab in labs if not lab.get("enable_tls", {}).get("ok")),
    }
    report["target"] = {"metric": "enable_tls outage / floor (stop all, PD leader last, + start all)", "goal": TARGET_RATIO,
                        "achieved": ratio, "met": bool(ratio is not None and ratio <= TARGET_RATIO)}
    print("Cutover outage, 3 PD + %d TiKV lab, probe every %.0f ms; %d CPUs, load at start %s"
          % (args.tikv, args.interval * 1000, os.cpu_count(), report["machine"]["load_average_at_start"]))
    rows = []
    for lab in labs:
        for entry in lab["floors"] + lab["tls_floors"]:
            probe = entry["probe"] or {}
            rows.append(["floor, " + entry["kind"] + (" (TLS)" if entry in lab["tls_floors"] else ""),
                         probe.get("seconds"), probe.get("pd_gap"), probe.get("tikv_gap"), entry["commands_to_ok"], ""])
        run = lab.get("enable_tls") or {}
        probe = run.get("probe") or {}
        rows.append(["enable_tls cutover" + ("" if run.get("ok") else " (FAILED)"), probe.get("seconds"),
                     probe.get("pd_gap"), probe.get("tikv_gap"), run.get("playbook_reported_outage"),
                     "back over TLS: %s" % probe.get("back_over_tls")])
    print(b.table(["what", "outage s (probe)", "PD gap s", "TiKV gap s", "own timing s", "note"], rows))
    summary = report["summary"]
    print("enable_tls wall %.1f s; outage %.2f s (probe), %s s (playbook); floor %.2f s (stop all, PD leader last, + "
          "start all), %.2f s (stop all at once + start all), %.2f s (cutover order), TLS floor %.2f s"
          % (summary["enable_tls_wall"] or 0, summary["enable_tls_outage_probe"], summary["enable_tls_outage_playbook"],
             floor_plain, floor_naive, floor_order, tls_floor))
    for lab in labs:
        split = (lab.get("enable_tls") or {}).get("cutover_split")
        if split:
            print("the cutover's tasks (playbook's outage window): %d tasks (%d ran), %.1f s waiting on the cluster "
                  "(service actions, waits), %.1f s controller"
                  % (split["tasks"], split["tasks_that_ran"], split["waiting"], split["controller"]))
            costly = sorted(lab["enable_tls"]["cutover_tasks"], key=lambda s: -s["wall"])[:8]
            print("  costliest: " + "; ".join("%s %.2f s" % (s["name"].split(" : ", 1)[-1], s["wall"]) for s in costly))
    print("target: outage <= %.1fx the floor: %sx -> %s" % (TARGET_RATIO, ratio, "met" if report["target"]["met"] else "NOT met"))
    b.write_report("cutover_outage", report, args.output)
    if summary["enable_tls_runs_failed"]:
        for lab in labs:
            if lab.get("enable_tls", {}).get("output_excerpt"):
                print(lab["enable_tls"]["output_excerpt"])
        sys.exit(1)


if __name__ == "__main__":
    main()

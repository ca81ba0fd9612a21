"""Benchmark: the controller's own time per instance (wall time minus waiting on the cluster) against
the number of instances, and which Ansible settings lower it.

    .venv/bin/python bench/overhead.py                         # 3 PD + 3, 12, 30 TiKV; verify and rotate_certs
    .venv/bin/python bench/overhead.py --small                 # 3 and 6 TiKV, verify only, no settings study
    .venv/bin/python bench/overhead.py --sizes 3,12 --playbooks verify,rotate_certs,enable_tls
    .venv/bin/python bench/overhead.py --study-size 12 --sizes ''   # only the forks/pipelining study

For each size a lab (3 PD + N TiKV, local mode) is brought up; verify, rotate_certs and rolling_restart run
on a TLS lab whose PKI the collection adopted, enable_tls on a plaintext lab of the same size. Every task
is timed by the bench_timing callback (bench/callback_plugins/; ansible-core has no profile_tasks). A task
counts as waiting on the cluster when it is a service action (stop/start/restart), a leadership move
(pd_leader, store_leaders), wait_for/pause, a task named "Wait ...", a task retried with until/retries, or
pd_peer_links (two metric readings an interval apart): bench/_bench.py wait_reason() is the rule.
Overhead = wall - waiting; per instance = overhead / (PD + TiKV instances). The slope of overhead against
the instance count is fitted by least squares. Target: under 1 s per instance for rotate_certs and verify.

Each lab is calibrated first: the same inventory runs ansible.builtin.ping on every host, set_fact on every
host and ping once on the controller, a few times each; the median task times price each playbook's task
mix (bench/_bench.py profile(), task_mix) as "Ansible's floor": what Ansible alone costs for that many tasks
of those kinds, whatever the tasks do. Overhead minus that floor is the part the collection's own code can
change without removing tasks.

The settings study runs verify at --study-size with forks 5 (Ansible's default), forks = the instance
count, and that with pipelining. The playbooks need the linear strategy (run_once, serial batches and the
cutover's barriers assume it), so strategies are not compared. Writes bench/results/overhead.json.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _bench as b  # noqa: E402  pylint: disable=wrong-import-position

PLAYBOOKS = {"verify": ("tlsops.tikv.verify", True), "rotate_certs": ("tlsops.tikv.rotate_certs", True),
             "rolling_restart": ("tlsops.tikv.rolling_restart", True), "enable_tls": ("tlsops.tikv.enable_tls", False)}
TARGETED = ("verify", "rotate_certs")
TARGET_PER_INSTANCE = 1.0


def settings_env(forks: int, pipelining: bool) -> dict[str, str]:
    return {"ANSIBLE_FORKS": str(forks), "ANSIBLE_PIPELINING": "1" if pipelining else "0"}


def run_one(lab: b.BenchLab, name: str, forks: int, pipelining: bool, calibration: dict | None = None) -> dict:
    playbook = PLAYBOOKS[name][0]
    lab.cli("wait", "--timeout", str(60 + 4 * lab.tikv), check=False)
    run = b.run_playbook(playbook, lab.inventory, *lab.playbook_args(), extra_env=settings_env(forks, pipelining))
    entry = {"playbook": name, "tikv": lab.tikv, "instances": lab.instance_count(), "forks": forks,
             "pipelining": pipelining, "ok": run.ok, **b.profile(run, lab.instance_count())}
    if calibration and calibration.get("ok"):
        entry["ansible_floor"] = ansible_floor(entry, calibration)
    if not run.ok:
        entry["output_excerpt"] = run.excerpt()
    status = "ok" if run.ok else "FAILED"
    print("  %-15s %2d instances forks=%-2d pipelining=%-5s %s: wall %6.1f s, waiting %6.1f s, overhead %6.1f s = %.2f s/instance"
          "%s" % (name, lab.instance_count(), forks, pipelining, status, entry["wall"], entry["wait"], entry["overhead"],
                  entry["overhead_per_instance"],
                  (", Ansible's floor for its tasks %.1f s" % entry["ansible_floor"]) if "ansible_floor" in entry else ""),
          flush=True)
    return entry


CALIBRATION_TASKS = 6
CALIBRATION = """---
- name: Calibration | Ansible's own cost per task on this inventory (bench/overhead.py)
  hosts: "pd:tikv"
  gather_facts: false
  tasks:
%s
"""


def calibrate(lab: b.BenchLab, forks: int, pipelining: bool) -> dict:
    """What Ansible itself costs here, on the same inventory and settings: the median wall time of a task
    that runs a module on every host (ansible.builtin.ping), of a light one on every host (set_fact), and of
    a module run once on the controller. The floor of a playbook is its task mix priced at these."""
    kinds = [("module per host", "ansible.builtin.ping: {}"), ("light per host", "ansible.builtin.set_fact:\n        x: 1"),
             ("module once", "ansible.builtin.ping: {}\n      delegate_to: localhost\n      run_once: true")]
    tasks = []
    for kind, body in kinds:
        for index in range(CALIBRATION_TASKS):
            tasks.append("    - name: %s %d\n      %s" % (kind, index, body))
    path = os.path.join(lab.base, "calibration.yml")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(CALIBRATION % "\n".join(tasks))
    run = b.run_playbook(path, lab.inventory, extra_env=settings_env(forks, pipelining))
    timing = run.timing.get("tasks") or []
    walls: dict[str, list[float]] = {}
    for index, task in enumerate(timing):
        stop = timing[index + 1]["start"] if index + 1 < len(timing) else run.timing.get("ended", task["start"])
        kind = (task.get("name") or "").rsplit(" ", 1)[0]
        walls.setdefault(kind, []).append(stop - task["start"])
    count = lab.instance_count()
    module, light, once = (b.median(walls.get(kind, [])) for kind, _body in kinds)
    return {"ok": run.ok, "instances": count, "module_task_wall": round(module, 3), "light_task_wall": round(light, 3),
            "once_module_wall": round(once, 3), "module_per_host": round(module / count, 4),
            "light_per_host": round(light / count, 4)}


def ansible_floor(entry: dict, calibration: dict) -> float:
    """The run's task mix priced at the calibration: what Ansible alone would cost for the same tasks
    (a light task run once counts as a light task on one host)."""
    mix = entry.get("task_mix") or {}
    return round(mix.get("per_host_module_host_runs", 0) * calibration["module_per_host"]
                 + mix.get("per_host_light_host_runs", 0) * calibration["light_per_host"]
                 + mix.get("once_module", 0) * calibration["once_module_wall"]
                 + mix.get("once_light", 0) * calibration["light_per_host"], 2)


def run_study(lab: b.BenchLab, done: list[dict]) -> list[dict]:
    """verify with forks 5 (reusing a run at those settings when there is one), forks = the instance
    count, and that with pipelining."""
    count = lab.instance_count()
    print("settings study: verify, 3 PD + %d TiKV" % lab.tikv, flush=True)
    out = []
    for forks, pipelining in ((5, False), (count, False), (count, True)):
        same = [r for r in done if r["forks"] == forks and r["pipelining"] == pipelining and r["ok"]]
        out.append(dict(same[0]) if same else run_one(lab, "verify", forks, pipelining))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--sizes", default="3,12,30", help="TiKV counts (3 PD always); '' for none")
    parser.add_argument("--playbooks", default="verify,rotate_certs", help="comma-separated: %s" % ", ".join(PLAYBOOKS))
    parser.add_argument("--forks", type=int, default=5, help="forks for the size runs (Ansible's default: 5)")
    parser.add_argument("--pipelining", action="store_true", help="pipelining for the size runs")
    parser.add_argument("--study-size", type=int, default=12, help="TiKV count of the forks/pipelining study (0: none)")
    parser.add_argument("--max-size", action="append", metavar="PLAYBOOK=N",
                        help="run PLAYBOOK only up to N TiKV (repeatable), e.g. rotate_certs=12")
    parser.add_argument("--small", action="store_true", help="sizes 3 and 6, verify only, no study")
    parser.add_argument("--output", default=None)
    args = parser.parse_args()
    if args.small:
        args.sizes, args.playbooks, args.study_size = "3,6", "verify", 0
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    names = [n.strip() for n in args.playbooks.split(",") if n.strip()]
    unknown = [n for n in names if n not in PLAYBOOKS]
    if unknown:
        parser.error("unknown playbook(s) %s; choose from %s" % (", ".join(unknown), ", ".join(PLAYBOOKS)))
    limits = {}
    for item in args.max_size or []:
        name, _sep, value = item.partition("=")
        limits[name] = int(value)
    report = b.base_report("overhead", args)
    runs, study, lab_failures = [], [], []
    report["runs"], report["study"], report["lab_failures"], report["calibration"] = runs, study, lab_failures, []
    print("Controller overhead; %d CPUs, load at start %s" % (os.cpu_count(), report["machine"]["load_average_at_start"]),
          flush=True)
    for size in sizes:
        for tls in (True, False):
            todo = [n for n in names if PLAYBOOKS[n][1] == tls]
            if not todo:
                continue
            todo = [n for n in todo if size <= limits.get(n, size)]
            if not todo:
                continue
            try:
                lab = b.BenchLab("overhead-%d" % size, tikv=size, tls=tls).__enter__()
            except RuntimeError as exc:
                # A lab that does not come up (the machine too loaded for its heartbeats) is a result too.
                print("3 PD + %d TiKV: the lab did not come up: %s" % (size, str(exc).splitlines()[0:3]), flush=True)
                lab_failures.append({"tikv": size, "tls": tls, "error": str(exc)[:2000]})
                continue
            try:
                print("3 PD + %d TiKV (%s lab up in %.0f s)" % (size, "TLS" if tls else "plaintext", lab.up_seconds), flush=True)
                calibration = calibrate(lab, args.forks, args.pipelining)
                calibration.update(tikv=size, tls=tls)
                report["calibration"].append(calibration)
                print("  calibration: a module on every host %.2f s per task (%.3f s per host), a light task %.2f s "
                      "(%.3f s per host), a module once %.2f s"
                      % (calibration["module_task_wall"], calibration["module_per_host"], calibration["light_task_wall"],
                         calibration["light_per_host"], calibration["once_module_wall"]), flush=True)
                for name in todo:
                    runs.append(run_one(lab, name, args.forks, args.pipelining, calibration))
                    b.write_report("overhead", report, args.output)  # partial results survive a later failure
                if tls and size == args.study_size:
                    study.extend(run_study(lab, [r for r in runs if r["playbook"] == "verify" and r["instances"] == lab.instance_count()]))
            finally:
                lab.down()
    if args.study_size and args.study_size not in sizes:
        with b.BenchLab("overhead-study", tikv=args.study_size, tls=True) as lab:
            study.extend(run_study(lab, []))
    fits, targets = {}, []
    for name in names:
        points = [(r["instances"], r["overhead"]) for r in runs if r["playbook"] == name and r["ok"]]
        if len(points) >= 2:
            slope, intercept = b.least_squares([p[0] for p in points], [p[1] for p in points])
            fits[name] = {"slope_seconds_per_instance": round(slope, 3), "intercept_seconds": round(intercept, 2),
                          "points": points}
        if name in TARGETED:
            mine = [r for r in runs if r["playbook"] == name and r["ok"]]
            failed = [r["instances"] for r in runs if r["playbook"] == name and not r["ok"]]
            largest = max(mine, key=lambda r: r["instances"], default=None)
            worst = max((r["overhead_per_instance"] for r in mine), default=None)
            slope = fits.get(name, {}).get("slope_seconds_per_instance")
            for metric, value in (("%s overhead per instance at the largest size" % name,
                                   largest["overhead_per_instance"] if largest else None),
                                  ("%s overhead per added instance (slope)" % name, slope),
                                  ("%s overhead per instance at the worst (smallest) size" % name, worst)):
                targets.append({"metric": metric, "goal": TARGET_PER_INSTANCE, "achieved": value, "failed_sizes": failed,
                                "met": value is not None and value < TARGET_PER_INSTANCE and not failed})
    report["fits"], report["targets"] = fits, targets
    print()
    rows = [[r["playbook"] + ("" if r["ok"] else " (FAILED)"), r["instances"], r["forks"], r["pipelining"], r["wall"],
             r["wait"], r["overhead"], r["overhead_per_instance"], r.get("ansible_floor", ""), r["tasks_that_ran"]]
            for r in runs + study]
    print(b.table(["playbook", "instances", "forks", "pipelining", "wall s", "waiting s", "overhead s", "s/instance",
                   "Ansible floor s", "tasks"], rows))
    for name, fit in fits.items():
        print("%s: overhead = %.3f s x instances + %.1f s (least squares over %d sizes)"
              % (name, fit["slope_seconds_per_instance"], fit["intercept_seconds"], len(fit["points"])))
    for target in targets:
        print("target: %s < %.1f s: %s -> %s" % (target["metric"], target["goal"], target["achieved"],
                                                 "met" if target["met"] else "NOT met"))
    b.write_report("overhead", report, args.output)
    for r in runs + study:
        if not r["ok"]:
            print("--- %s (%d instances) failed; the end of its output:\n%s" % (r["playbook"], r["instances"], r["output_excerpt"]))


if __name__ == "__main__":
    main()

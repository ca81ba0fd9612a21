"""Benchmark: the verify audit, per endpoint and for the whole cluster.

    .venv/bin/python bench/verify_audit.py                 # TLS labs of 3 PD + 3 and + 12 TiKV, 3 audits each
    .venv/bin/python bench/verify_audit.py --small         # 3 PD + 3 TiKV, one audit

For each size, on a TLS lab (`up --tls`, PKI adopted into the controller directory):
  whole cluster   tlsops.tikv.verify (TLS required), wall time, waiting (pd_peer_links' interval between
                  its two metric readings) and the tasks that cost most (bench_timing callback)
  per endpoint    the same checks the controller probe runs on one port (tls_handshake's
                  _tls_probe.run_checks: handshake and certificate, a client without a certificate, a
                  plaintext request, every protocol below TLS 1.2), in this process, split by check,
                  for every PD client/peer and TiKV gRPC/status port: the cost of the probe itself,
                  without Ansible
Writes bench/results/verify_audit.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _bench as b  # noqa: E402  pylint: disable=wrong-import-position

from ansible_collections.tlsops.tikv.plugins.module_utils import _tls_probe  # noqa: E402  pylint: disable=wrong-import-position

PORTS = {"pd": (("pd_client", "client"), ("pd_peer", "peer")), "tikv": (("tikv_grpc", "grpc"), ("tikv_status", "status"))}


def endpoint_checks(lab: b.BenchLab, timeout: float) -> list[dict]:
    """Each check of the controller probe, timed on each endpoint."""
    files = dict(ca_path=os.path.join(lab.ctl, "ca.crt"), client_cert_path=os.path.join(lab.ctl, "clients", "client.crt"),
                 client_key_path=os.path.join(lab.ctl, "clients", "client.pem"))
    rows = []
    for inst in lab.lab().instances:
        for channel, port_name in PORTS[inst.component]:
            target = _tls_probe.Target(host=inst.host, port=inst.ports[port_name], timeout=timeout, **files)
            row = {"instance": inst.name, "channel": channel, "endpoint": "%s:%d" % (inst.host, inst.ports[port_name])}
            for check, call in (("handshake", lambda t=target: _tls_probe.probe_server(t)),
                                ("no_client_cert", lambda t=target: _tls_probe.probe_client_cert_required(t)),
                                ("plaintext", lambda t=target: _tls_probe.probe_plaintext_refused(t)),
                                ("weak_protocols", lambda t=target: _tls_probe.probe_weak_protocols(t, "TLSv1.2")),
                                ("run_checks", lambda t=target: _tls_probe.run_checks(
                                    t, require_client_cert=True, require_plaintext_refused=True, min_protocol="TLSv1.2",
                                    min_days_valid=14))):
                began = time.perf_counter()
                call()
                row[check] = round(time.perf_counter() - began, 4)
            rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--sizes", default="3,12", help="TiKV counts (3 PD always)")
    parser.add_argument("--repeat", type=int, default=3, help="audits per size (median reported)")
    parser.add_argument("--timeout", type=float, default=5.0, help="probe timeout (tikv_tls_verify_timeout's default)")
    parser.add_argument("--small", action="store_true", help="3 TiKV, one audit")
    parser.add_argument("--output", default=None)
    args = parser.parse_args()
    if args.small:
        args.sizes, args.repeat = "3", 1
    report = b.base_report("verify_audit", args)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    results = []
    for size in sizes:
        with b.BenchLab("verify-%d" % size, tikv=size, tls=True) as lab:
            endpoints = 2 * lab.instance_count()
            probes = endpoint_checks(lab, args.timeout)
            audits = []
            for _round in range(args.repeat):
                lab.cli("wait", "--timeout", "120", check=False)
                run = b.run_playbook("tlsops.tikv.verify", lab.inventory, *lab.playbook_args(),
                                     "-e", "tikv_tls_verify_require_tls=true")
                entry = {"ok": run.ok, **b.profile(run, lab.instance_count())}
                if not run.ok:
                    entry["output_excerpt"] = run.excerpt()
                audits.append(entry)
            good = [a for a in audits if a["ok"]] or audits
            wall = b.median([a["wall"] for a in good])
            kinds = ("handshake", "no_client_cert", "plaintext", "weak_protocols", "run_checks")
            checks = {k: b.median([p[k] for p in probes]) for k in kinds}
            slowest = sorted(probes, key=lambda p: -p["run_checks"])[:3]
            results.append({"tikv": size, "instances": lab.instance_count(), "endpoints": endpoints,
                            "audit_wall_median": round(wall, 2), "audit_seconds_per_endpoint": round(wall / endpoints, 3),
                            "audit_waiting_median": round(b.median([a["wait"] for a in good]), 2),
                            "probe_seconds_per_endpoint_median": checks, "probe_slowest": slowest,
                            "probe_total_seconds": round(sum(p["run_checks"] for p in probes), 3),
                            "audits": audits, "probes": probes})
    report["results"] = results
    print("Verify audit; %d CPUs, load at start %s" % (os.cpu_count(), report["machine"]["load_average_at_start"]))
    print(b.table(["instances", "endpoints", "audit wall s", "s/endpoint", "waiting s", "probe ms/endpoint",
                   "of which plaintext ms", "weak protocols ms", "ok"],
                  [[r["instances"], r["endpoints"], r["audit_wall_median"], r["audit_seconds_per_endpoint"],
                    r["audit_waiting_median"], round(1000 * r["probe_seconds_per_endpoint_median"]["run_checks"], 1),
                    round(1000 * r["probe_seconds_per_endpoint_median"]["plaintext"], 1),
                    round(1000 * r["probe_seconds_per_endpoint_median"]["weak_protocols"], 1),
                    all(a["ok"] for a in r["audits"])] for r in results]))
    for r in results:
        print("3 PD + %d TiKV: the audit's costliest tasks: %s" % (r["tikv"], "; ".join(
            "%s %.1f s" % (t["name"], t["wall"]) for t in r["audits"][0]["top_tasks"][:5])))
        print("  slowest endpoints (probe, s): %s" % ", ".join("%s %s %.3f" % (p["instance"], p["channel"], p["run_checks"])
                                                               for p in r["probe_slowest"]))
    b.write_report("verify_audit", report, args.output)
    for r in results:
        for audit in r["audits"]:
            if not audit["ok"]:
                print("--- verify failed on 3 PD + %d TiKV; the end of its output:\n%s" % (r["tikv"], audit["output_excerpt"]))


if __name__ == "__main__":
    main()

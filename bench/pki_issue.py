"""Benchmark: issue instance certificates for a large cluster on the controller.

    .venv/bin/python bench/pki_issue.py            # 300 instances, ecdsa-p256 and rsa-3072

Compares, for N instances (default 300) and each key type:
  collection, keys on controller   key + CSR + signature per instance, all in one Python process
                                   (the tikv_tls_key_location=controller path; like for like with
                                   the openssl CLI row, which also makes the key)
  collection, x509_sign only       what the controller does in the default mode (keys made on the
                                   hosts): verify N CSRs and sign N certificates in one call
  x509_sign module, one process    the real module run once as Ansible runs it (python + args
                                   file), N requests: includes interpreter start and imports
  openssl CLI, process per cert    `openssl req -x509 -newkey ... -CA ca.crt -CAkey ca.key`, one
                                   process per certificate (key + certificate, the same extensions)
Every certificate is checked: a sample of each row is verified with `openssl verify -purpose
sslserver/sslclient`. Prints a table and writes bench/results/pki_issue.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tools"))

from collection_link import link_collection  # noqa: E402  pylint: disable=wrong-import-position

COLLECTIONS = link_collection()
REPO = os.path.dirname(HERE)

import cryptography  # noqa: E402

from ansible_collections.tlsops.tikv.plugins.module_utils import _x509 as x  # noqa: E402

OPENSSL_KEYGEN = {
    "ecdsa-p256": ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
    "ecdsa-p384": ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384"],
    "rsa-2048": ["-newkey", "rsa:2048"],
    "rsa-3072": ["-newkey", "rsa:3072"],
    "rsa-4096": ["-newkey", "rsa:4096"],
}


def sans_for(i):
    return ["10.%d.%d.%d" % (i // 65536, (i // 256) % 256, i % 256), "127.0.0.1", "localhost"]


def setup_ca(workdir, key_type):
    key = x.generate_key(key_type)
    cert = x.create_ca_cert(key, "bench-ca-%s" % key_type)
    ca_crt, ca_key = os.path.join(workdir, "ca.crt"), os.path.join(workdir, "ca.key")
    with open(ca_crt, "w") as handle:
        handle.write(x.cert_to_pem(cert))
    with open(ca_key, "wb") as handle:
        handle.write(x.private_key_pem(key))
    os.chmod(ca_key, 0o600)
    return x.CA(cert, key), ca_crt, ca_key


def run_keys_on_controller(ca, key_type, n):
    start = time.perf_counter()
    reqs = []
    for i in range(n):
        key = x.generate_key(key_type)
        reqs.append(dict(name="tikv-%d" % i, cn="tikv", sans=sans_for(i),
                         csr=x.csr_to_pem(x.csr_for(key, "tikv", sans_for(i)))))
    out = x.sign_requests(ca, reqs)
    elapsed = time.perf_counter() - start
    return elapsed, [out["tikv-%d" % i]["cert"] for i in range(n)], reqs


def run_sign_only(ca, reqs):
    start = time.perf_counter()
    out = x.sign_requests(ca, reqs)
    elapsed = time.perf_counter() - start
    return elapsed, [out[r["name"]]["cert"] for r in reqs]


def run_module(workdir, ca_crt, ca_key, reqs):
    args = os.path.join(workdir, "args.json")
    with open(args, "w") as handle:
        json.dump({"ANSIBLE_MODULE_ARGS": {"ca_path": ca_crt, "ca_key_path": ca_key, "requests": reqs}}, handle)
    module = os.path.join(REPO, "plugins", "modules", "x509_sign.py")
    env = dict(os.environ, PYTHONPATH=COLLECTIONS)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, module, args], capture_output=True, text=True, env=env, check=False)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit("x509_sign module failed: %s %s" % (proc.stdout[-2000:], proc.stderr[-2000:]))
    result = json.loads(proc.stdout)
    if result.get("failed"):
        raise SystemExit("x509_sign module failed: %s" % result.get("msg"))
    return elapsed, [result["certificates"][r["name"]]["cert"] for r in reqs]


def run_openssl(workdir, ca_crt, ca_key, key_type, n, openssl):
    digest = "-sha384" if key_type == "ecdsa-p384" else "-sha256"
    certs = []
    start = time.perf_counter()
    for i in range(n):
        key_out = os.path.join(workdir, "o%d.key" % i)
        cert_out = os.path.join(workdir, "o%d.crt" % i)
        san = ",".join(("IP:%s" % s) if s[0].isdigit() else ("DNS:%s" % s) for s in sans_for(i))
        eku = ["-addext", "keyUsage=critical,digitalSignature%s" % (",keyEncipherment" if key_type.startswith("rsa") else "")]
        subprocess.run([openssl, "req", "-x509", "-nodes", "-keyout", key_out, "-out", cert_out, "-subj", "/CN=tikv",
                        "-addext", "subjectAltName=" + san, "-addext", "basicConstraints=critical,CA:FALSE"] + eku +
                       ["-addext", "extendedKeyUsage=serverAuth,clientAuth", "-CA", ca_crt, "-CAkey", ca_key,
                        "-days", "365", digest] + OPENSSL_KEYGEN[key_type],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        certs.append(cert_out)
    elapsed = time.perf_counter() - start
    return elapsed, certs


def verify_sample(openssl, ca_crt, workdir, certs, label, sample=5):
    """openssl verify both purposes on a spread of the issued certificates."""
    picks = sorted(set([0, len(certs) - 1] + [len(certs) * k // sample for k in range(sample)]))
    for index in picks:
        item = certs[index]
        path = item
        if not os.path.exists(item):
            path = os.path.join(workdir, "check-%s-%d.crt" % (label, index))
            with open(path, "w") as handle:
                handle.write(item)
        for purpose in ("sslserver", "sslclient"):
            proc = subprocess.run([openssl, "verify", "-x509_strict", "-purpose", purpose, "-CAfile", ca_crt, path],
                                  capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                raise SystemExit("%s: certificate #%d fails openssl verify -purpose %s: %s"
                                 % (label, index, purpose, proc.stdout + proc.stderr))
    return len(picks)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--instances", type=int, default=300)
    parser.add_argument("--key-types", default="ecdsa-p256,rsa-3072")
    parser.add_argument("--repeat", type=int, default=1, help="runs per measurement; the median is reported")
    parser.add_argument("--output", default=os.path.join(HERE, "results", "pki_issue.json"))
    args = parser.parse_args()
    openssl = shutil.which("openssl")
    if not openssl:
        raise SystemExit("the openssl CLI is needed for the comparison")
    openssl_version = subprocess.run([openssl, "version"], capture_output=True, text=True, check=True).stdout.strip()
    n = args.instances
    rows = []
    for key_type in args.key_types.split(","):
        x.check_key_type(key_type)
        times = {"keys_on_controller": [], "sign_only": [], "module": [], "openssl": []}
        checked = 0
        for _run in range(args.repeat):
            workdir = tempfile.mkdtemp(prefix="pki-bench-")
            try:
                ca, ca_crt, ca_key = setup_ca(workdir, key_type)
                elapsed, certs, reqs = run_keys_on_controller(ca, key_type, n)
                times["keys_on_controller"].append(elapsed)
                checked += verify_sample(openssl, ca_crt, workdir, certs, "keys_on_controller")
                elapsed, certs = run_sign_only(ca, reqs)
                times["sign_only"].append(elapsed)
                checked += verify_sample(openssl, ca_crt, workdir, certs, "sign_only")
                elapsed, certs = run_module(workdir, ca_crt, ca_key, reqs)
                times["module"].append(elapsed)
                checked += verify_sample(openssl, ca_crt, workdir, certs, "module")
                elapsed, certs = run_openssl(workdir, ca_crt, ca_key, key_type, n, openssl)
                times["openssl"].append(elapsed)
                checked += verify_sample(openssl, ca_crt, workdir, certs, "openssl")
            finally:
                shutil.rmtree(workdir, ignore_errors=True)
        med = dict((k, statistics.median(v)) for k, v in times.items())
        base = med["openssl"]
        for method, label, note in (
                ("keys_on_controller", "collection, keys on controller", "key+CSR+cert per instance, one process"),
                ("sign_only", "collection, x509_sign only", "N CSRs verified and signed, one call"),
                ("module", "x509_sign module, one process", "real module run incl. interpreter start"),
                ("openssl", "openssl CLI, process per cert", "key+cert per instance, N processes")):
            rows.append(dict(key_type=key_type, method=method, label=label, note=note, instances=n,
                             seconds=round(med[method], 4), runs=[round(t, 4) for t in times[method]],
                             certs_per_second=round(n / med[method], 1),
                             ms_per_cert=round(1000.0 * med[method] / n, 3),
                             speedup_vs_openssl=round(base / med[method], 2)))
        rows[-4]["verified_sample"] = checked

    print("PKI issuance, %d instances, median of %d run(s); %s; cryptography %s; Python %s; %d CPUs"
          % (n, args.repeat, openssl_version, cryptography.__version__, platform.python_version(), os.cpu_count()))
    header = "%-11s %-32s %9s %10s %9s %10s" % ("key type", "method", "seconds", "certs/s", "ms/cert", "vs openssl")
    print(header)
    print("-" * len(header))
    for row in rows:
        print("%-11s %-32s %9.3f %10.1f %9.3f %9.2fx" % (
            row["key_type"], row["label"], row["seconds"], row["certs_per_second"], row["ms_per_cert"],
            row["speedup_vs_openssl"]))
    ecdsa = [r for r in rows if r["key_type"] == "ecdsa-p256" and r["method"] == "keys_on_controller"]
    target = None
    if ecdsa:
        target = {"metric": "ecdsa-p256 keys_on_controller vs openssl CLI", "goal": 5.0,
                  "achieved": ecdsa[0]["speedup_vs_openssl"], "met": ecdsa[0]["speedup_vs_openssl"] >= 5.0}
        print("target: ECDSA P-256 >= 5x faster than the openssl CLI: %.1fx -> %s"
              % (target["achieved"], "met" if target["met"] else "NOT met"))
    report = dict(benchmark="pki_issue", date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                  command="python bench/pki_issue.py " + " ".join(sys.argv[1:]), instances=n, repeat=args.repeat,
                  environment=dict(python=platform.python_version(), cryptography=cryptography.__version__,
                                   openssl=openssl_version, cpus=os.cpu_count(), machine=platform.machine()),
                  target=target, results=rows)
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as handle:
        json.dump(report, handle, indent=2)
        handle.write("\n")
    print("wrote %s" % os.path.relpath(args.output))


if __name__ == "__main__":
    main()

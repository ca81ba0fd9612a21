"""The x509_* modules run through their main() with patched module args (ansible-core's
`patch_module_args`), each in check mode, then for real, then again (must be unchanged); plus one
real `ansible-playbook` run on localhost that chains all four modules the way the pki role does.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
import time

import pytest

from ansible_collections.tlsops.tikv.plugins.module_utils import _x509 as x
from ansible_collections.tlsops.tikv.plugins.modules import x509_ca, x509_info, x509_key, x509_sign

import module_runner
from module_runner import ModuleFailed as Fail

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SANS = ["10.0.1.5", "127.0.0.1", "localhost"]


def run(module, args, check=False, diff=True):
    """Run module.main() with args; return its result dict, or raise Fail with the failure."""
    return module_runner.run(module, args, check, diff)


def fails(module, args, check=False):
    with pytest.raises(Fail) as exc:
        run(module, args, check)
    return exc.value.result["msg"]


def no_key_material(result):
    text = json.dumps(result)
    assert "PRIVATE KEY" not in text


def mode_of(path):
    return stat.S_IMODE(os.stat(path).st_mode)


# ---------------------------------------------------------------------------------------------
# x509_ca
# ---------------------------------------------------------------------------------------------

def ca_args(tmp_path, **kw):
    args = dict(path=str(tmp_path / "ca" / "ca.crt"), key_path=str(tmp_path / "ca" / "ca.key"))
    args.update(kw)
    return args


def test_ca_check_real_again(tmp_path):
    args = ca_args(tmp_path, common_name="unit-ca")
    res = run(x509_ca, args, check=True)
    assert res["changed"] and res["created"] and res["cert"] is None
    assert not (tmp_path / "ca").exists()
    assert res["diff"]["after"]["state"] == "would be created"

    res = run(x509_ca, args)
    assert res["changed"] and res["created"]
    assert mode_of(tmp_path / "ca" / "ca.key") == 0o600
    assert mode_of(tmp_path / "ca" / "ca.crt") == 0o644
    assert mode_of(tmp_path / "ca") == 0o700
    assert res["subject"] == "CN=unit-ca" and res["key_type"] == "ecdsa-p256" and res["self_signed"]
    assert res["trust"] == res["cert"] and res["chain"] == ""
    assert 3649 <= res["days_left"] <= 3650
    assert res["diff"]["before"] == {} and res["diff"]["after"]["subject"] == "CN=unit-ca"
    no_key_material(res)
    first = res

    for check in (True, False):
        res = run(x509_ca, args, check=check)
        assert not res["changed"] and not res["created"]
        assert res["fingerprint_sha256"] == first["fingerprint_sha256"]
        assert res["diff"]["before"] == res["diff"]["after"]


def test_ca_options_key_type_validity_pathlen(tmp_path):
    res = run(x509_ca, ca_args(tmp_path, key_type="rsa-3072", validity_days=100, path_length=1))
    cert = x.load_certs(res["cert"], "ca")[0]
    assert res["key_type"] == "rsa-3072" and 99 <= res["days_left"] <= 100
    assert x.cert_facts(cert)["path_length"] == 1


def test_ca_passphrase(tmp_path):
    args = ca_args(tmp_path, passphrase="correct horse")
    res = run(x509_ca, args)
    assert res["changed"]
    assert (tmp_path / "ca" / "ca.key").read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert not run(x509_ca, args)["changed"]
    msg = fails(x509_ca, ca_args(tmp_path))
    assert msg == ("CA %s: %s is encrypted and no passphrase was given: set the passphrase for it"
                   % (args["path"], args["key_path"]))
    msg = fails(x509_ca, ca_args(tmp_path, passphrase="wrong"))
    assert "wrong passphrase" in msg and "correct horse" not in msg


def test_ca_existing_kept_even_if_options_differ(tmp_path):
    first = run(x509_ca, ca_args(tmp_path))
    res = run(x509_ca, ca_args(tmp_path, key_type="rsa-2048", common_name="other"))
    assert not res["changed"] and res["fingerprint_sha256"] == first["fingerprint_sha256"]


def test_ca_refuses_cert_without_key(tmp_path):
    args = ca_args(tmp_path)
    run(x509_ca, args)
    os.unlink(args["key_path"])
    msg = fails(x509_ca, args)
    assert "exists but its key" in msg and args["key_path"] in msg


def test_ca_key_without_cert_gets_new_cert_for_same_key(tmp_path):
    args = ca_args(tmp_path)
    first = run(x509_ca, args)
    before = (tmp_path / "ca" / "ca.key").read_bytes()
    os.unlink(args["path"])
    res = run(x509_ca, args)
    assert res["changed"] and (tmp_path / "ca" / "ca.key").read_bytes() == before
    old = x.load_certs(first["cert"], "a")[0]
    new = x.load_certs(res["cert"], "b")[0]
    assert x.same_public_key(old.public_key(), new.public_key())


def test_ca_provided_missing_refused(tmp_path):
    msg = fails(x509_ca, ca_args(tmp_path, create=False))
    assert msg.startswith("provided CA: ") and "does not exist" in msg


def test_ca_bad_numbers_are_refused_naming_the_ca_and_nothing_is_written(tmp_path):
    args = ca_args(tmp_path, validity_days=0)
    msg = fails(x509_ca, args)
    assert msg == ("CA %s: validity_days must be at least 1 (got 0); the pki role sets it from "
                   "tikv_tls_ca_validity_days" % args["path"])
    assert fails(x509_ca, ca_args(tmp_path, path_length=-1)).endswith("path_length must not be negative (got -1)")
    assert not os.path.exists(tmp_path / "ca")


def test_ca_provided_intermediate(tmp_path):
    root_key = x.generate_key()
    root = x.CA(x.create_ca_cert(root_key, "corp-root", path_length=1), root_key)
    ikey = x.generate_key("ecdsa-p384")
    icert = x.create_ca_cert(ikey, "corp-tikv-intermediate", 1000, 0, issuer=root)
    (tmp_path / "bundle.crt").write_text(x.cert_to_pem(icert) + x.cert_to_pem(root.cert))
    (tmp_path / "i.key").write_bytes(x.private_key_pem(ikey, "pw"))
    args = dict(path=str(tmp_path / "bundle.crt"), key_path=str(tmp_path / "i.key"), passphrase="pw", create=False)
    for check in (True, False, False):
        res = run(x509_ca, args, check=check)
        assert not res["changed"]
        assert res["subject"] == "CN=corp-tikv-intermediate" and not res["self_signed"]
        assert res["chain"] == x.cert_to_pem(icert) and res["trust"] == x.cert_to_pem(root.cert)
        assert res["key_type"] == "ecdsa-p384"


def test_ca_provided_not_a_ca_refused(tmp_path):
    ca = x.CA(x.create_ca_cert(x.generate_key(), "r"), None)
    ca.key = x.load_private_key(x.private_key_pem(x.generate_key()), "k")
    leaf_key = x.generate_key()
    root_key = x.generate_key()
    root = x.CA(x.create_ca_cert(root_key, "r"), root_key)
    leaf = x.issue_cert(root, leaf_key.public_key(), "pd", SANS)
    (tmp_path / "leaf.crt").write_text(x.cert_to_pem(leaf))
    (tmp_path / "leaf.key").write_bytes(x.private_key_pem(leaf_key))
    msg = fails(x509_ca, dict(path=str(tmp_path / "leaf.crt"), key_path=str(tmp_path / "leaf.key"), create=False))
    assert "cannot sign certificates" in msg and "is not a CA" in msg and "keyCertSign" in msg


# ---------------------------------------------------------------------------------------------
# x509_key
# ---------------------------------------------------------------------------------------------

def key_args(tmp_path, **kw):
    args = dict(path=str(tmp_path / "pd.pem"), common_name="pd", subject_alt_names=SANS)
    args.update(kw)
    return args


def test_key_check_real_again(tmp_path):
    args = key_args(tmp_path)
    res = run(x509_key, args, check=True)
    assert res["changed"] and res["created"] and res["reason"] == "absent"
    assert res["csr"] is None and res["public_key_sha256"] is None
    assert not (tmp_path / "pd.pem").exists()

    res = run(x509_key, args)
    assert res["changed"] and res["created"] and mode_of(tmp_path / "pd.pem") == 0o600
    csr = x.load_csr(res["csr"], "csr")
    assert x.common_name(csr.subject) == "pd" and x.sans_of(csr) == SANS
    assert res["key_type"] == "ecdsa-p256"
    no_key_material(res)
    fp = res["public_key_sha256"]
    assert res["diff"]["before"] == {} and res["diff"]["after"]["public_key_sha256"] == fp

    for check in (True, False):
        res = run(x509_key, args, check=check)
        assert not res["changed"] and res["reason"] == "exists" and res["public_key_sha256"] == fp
        assert x.same_public_key(x.load_csr(res["csr"], "csr").public_key(),
                                 x.load_private_key((tmp_path / "pd.pem").read_bytes(), "k"))


def test_key_type_change_replaces_key(tmp_path):
    args = key_args(tmp_path)
    fp = run(x509_key, args)["public_key_sha256"]
    res = run(x509_key, dict(args, key_type="rsa-2048"), check=True)
    assert res["changed"] and res["reason"] == "key type ecdsa-p256, want rsa-2048" and res["csr"] is None
    res = run(x509_key, dict(args, key_type="rsa-2048"))
    assert res["changed"] and res["key_type"] == "rsa-2048" and res["public_key_sha256"] != fp
    assert mode_of(tmp_path / "pd.pem") == 0o600
    assert not run(x509_key, dict(args, key_type="rsa-2048"))["changed"]


def test_key_mode_drift_fixed(tmp_path):
    args = key_args(tmp_path)
    fp = run(x509_key, args)["public_key_sha256"]
    os.chmod(tmp_path / "pd.pem", 0o644)
    res = run(x509_key, args, check=True)
    assert res["changed"] and not res["created"] and mode_of(tmp_path / "pd.pem") == 0o644
    res = run(x509_key, args)
    assert res["changed"] and not res["created"] and res["public_key_sha256"] == fp
    assert mode_of(tmp_path / "pd.pem") == 0o600


def test_key_owner_group(tmp_path):
    import grp
    import pwd
    user = pwd.getpwuid(os.getuid()).pw_name
    group = grp.getgrgid(os.getgid()).gr_name
    args = key_args(tmp_path, owner=user, group=group)
    assert run(x509_key, args)["changed"]
    assert not run(x509_key, args)["changed"]
    msg = fails(x509_key, key_args(tmp_path, owner="no-such-user-tlsops"))
    assert "no-such-user-tlsops" in msg


def test_key_without_cn_returns_no_csr(tmp_path):
    res = run(x509_key, dict(path=str(tmp_path / "k.pem")))
    assert res["changed"] and res["csr"] is None and res["public_key_sha256"]


def test_key_unreadable_or_encrypted_refused_unless_force(tmp_path):
    path = tmp_path / "pd.pem"
    path.write_bytes(x.private_key_pem(x.generate_key(), "pw"))
    msg = fails(x509_key, key_args(tmp_path))
    assert "is encrypted" in msg and "force=true" in msg
    path.write_text("garbage")
    msg = fails(x509_key, key_args(tmp_path))
    assert str(path) in msg and "not a PEM private key" in msg
    res = run(x509_key, key_args(tmp_path, force=True))
    assert res["changed"] and res["reason"] == "unreadable key replaced (force)" and res["csr"]


def test_key_missing_directory(tmp_path):
    msg = fails(x509_key, dict(path=str(tmp_path / "nope" / "k.pem")))
    assert "does not exist; create it first" in msg


def test_key_bad_san_refused(tmp_path):
    msg = fails(x509_key, key_args(tmp_path, subject_alt_names=["https://10.0.0.1:2379"]))
    assert "is not a host name or IP address" in msg


# ---------------------------------------------------------------------------------------------
# x509_sign
# ---------------------------------------------------------------------------------------------

@pytest.fixture()
def ca_files(tmp_path):
    args = ca_args(tmp_path, passphrase="pw")
    run(x509_ca, args)
    return dict(ca_path=args["path"], ca_key_path=args["key_path"], ca_passphrase="pw")


def _requests(tmp_path, n=3, check=False):
    reqs = []
    for i in range(n):
        res = run(x509_key, dict(path=str(tmp_path / ("k%d.pem" % i)), common_name="tikv",
                                 subject_alt_names=["10.0.0.%d" % i]), check=check)
        reqs.append(dict(name="tikv-%d" % i, cn="tikv", sans=["10.0.0.%d" % i, "127.0.0.1", "localhost"],
                         csr=res["csr"], current_cert=None))
    return reqs


def test_sign_check_real_again(tmp_path, ca_files):
    reqs = _requests(tmp_path)
    res = run(x509_sign, dict(ca_files, requests=reqs), check=True)
    assert res["changed"] and res["issued"] == ["tikv-0", "tikv-1", "tikv-2"] and res["reused"] == []
    assert all(c["cert"] is None and c["reason"] == "no certificate yet" for c in res["certificates"].values())
    assert res["diff"]["after"]["tikv-0"]["state"] == "would be issued"

    res = run(x509_sign, dict(ca_files, requests=reqs))
    assert res["changed"] and len(res["issued"]) == 3 and res["ca_subject"] == "CN=tlsops-tikv-ca"
    for req in reqs:
        entry = res["certificates"][req["name"]]
        leaf = x.load_certs(entry["cert"], "c")[0]
        assert x.sans_of(leaf) == req["sans"] and x.common_name(leaf.subject) == "tikv"
        assert entry["serial"] == "%X" % leaf.serial_number
        assert res["diff"]["after"][req["name"]]["serial"] == entry["serial"]
        req["current_cert"] = entry["chain"]
    no_key_material(res)

    for check in (True, False):
        again = run(x509_sign, dict(ca_files, requests=reqs), check=check)
        assert not again["changed"] and again["issued"] == [] and len(again["reused"]) == 3
        assert all(c["reason"] == "up to date" for c in again["certificates"].values())
        assert again["certificates"]["tikv-1"]["cert"] == res["certificates"]["tikv-1"]["cert"]
        assert again["diff"] == {"before": {}, "after": {}}


def test_sign_drift_reissues_only_what_changed(tmp_path, ca_files):
    reqs = _requests(tmp_path)
    first = run(x509_sign, dict(ca_files, requests=reqs))
    for req in reqs:
        req["current_cert"] = first["certificates"][req["name"]]["chain"]
    reqs[2]["sans"].append("tikv-2.example")
    res = run(x509_sign, dict(ca_files, requests=reqs, renew_before_days=30))
    assert res["issued"] == ["tikv-2"] and res["reused"] == ["tikv-0", "tikv-1"]
    assert res["certificates"]["tikv-2"]["reason"] == "SANs differ: missing tikv-2.example"
    assert res["diff"]["before"]["tikv-2"]["serial"] == first["certificates"]["tikv-2"]["serial"]
    # renewal window larger than the remaining validity: everything is renewed
    res = run(x509_sign, dict(ca_files, requests=reqs, validity_days=800, renew_before_days=400))
    assert len(res["issued"]) == 3 and "renew_before_days=400" in res["certificates"]["tikv-0"]["reason"]


def test_sign_reissue_before_selects_older_certificates(tmp_path, ca_files):
    reqs = _requests(tmp_path, 2)
    first = run(x509_sign, dict(ca_files, requests=reqs))
    for req in reqs:
        req["current_cert"] = first["certificates"][req["name"]]["chain"]
    # Only tikv-0 is selected (per request); the selection time is after its issue.
    time.sleep(1.1)  # certificate times have a resolution of one second
    reqs[0]["reissue_before"] = x.fmt_time(x.utcnow())
    for check in (True, False):
        res = run(x509_sign, dict(ca_files, requests=reqs), check=check)
        assert res["issued"] == ["tikv-0"] and res["reused"] == ["tikv-1"]
        assert "before reissue_before=" in res["certificates"]["tikv-0"]["reason"]
    reqs[0]["current_cert"] = res["certificates"]["tikv-0"]["chain"]
    again = run(x509_sign, dict(ca_files, requests=reqs))
    assert not again["changed"], again["certificates"]["tikv-0"]["reason"]
    reqs[0]["reissue_before"] = "2999-01-01T00:00:00Z"
    assert "tikv-0: reissue_before 2999-01-01T00:00:00Z is in the future" in fails(x509_sign, dict(ca_files, requests=reqs))


def test_sign_check_mode_before_keys_and_ca_exist(tmp_path):
    reqs = _requests(tmp_path, 2, check=True)
    assert all(r["csr"] is None for r in reqs)
    args = dict(ca_path=str(tmp_path / "ca" / "ca.crt"), ca_key_path=str(tmp_path / "ca" / "ca.key"), requests=reqs)
    res = run(x509_sign, args, check=True)
    assert res["changed"] and res["issued"] == ["tikv-0", "tikv-1"]
    assert res["certificates"]["tikv-0"]["reason"].startswith("the CA (")
    msg = fails(x509_sign, args)
    assert "missing; create the CA first (tlsops.tikv.x509_ca)" in msg


def test_sign_refusals_name_the_instance(tmp_path, ca_files):
    reqs = _requests(tmp_path, 2)
    reqs[1]["csr"] = reqs[1]["csr"].replace("MI", "MA", 1)
    msg = fails(x509_sign, dict(ca_files, requests=reqs))
    assert "tikv-1:" in msg and "tikv-0" not in msg
    msg = fails(x509_sign, dict(ca_files, requests=_requests(tmp_path, 1), ca_passphrase=None))
    assert "is encrypted and no passphrase was given" in msg
    msg = fails(x509_sign, dict(ca_files, requests=[], validity_days=10, renew_before_days=10))
    assert "renew_before_days (10) must be smaller than validity_days (10)" in msg


def test_sign_client_certificates(tmp_path, ca_files):
    res = run(x509_key, dict(path=str(tmp_path / "ops.key"), common_name="ops-alice"))
    out = run(x509_sign, dict(ca_files, requests=[dict(name="ops-alice", cn="ops-alice", usage="client",
                                                       csr=res["csr"])]))
    leaf = x.load_certs(out["certificates"]["ops-alice"]["cert"], "c")[0]
    assert x.eku_of(leaf) == ["clientAuth"] and x.common_name(leaf.subject) == "ops-alice"


# ---------------------------------------------------------------------------------------------
# x509_info
# ---------------------------------------------------------------------------------------------

@pytest.fixture()
def issued(tmp_path, ca_files):
    key = run(x509_key, key_args(tmp_path))
    out = run(x509_sign, dict(ca_files, requests=[dict(name="pd-1", cn="pd", sans=SANS, csr=key["csr"])]))
    (tmp_path / "pd.crt").write_text(out["certificates"]["pd-1"]["chain"])
    (tmp_path / "ca.crt").write_text((tmp_path / "ca" / "ca.crt").read_text())
    return dict(path=str(tmp_path / "pd.crt"), key_path=str(tmp_path / "pd.pem"), ca_path=str(tmp_path / "ca.crt"),
                name="pd-1", common_name="pd", subject_alt_names=SANS)


def test_info_good(issued):
    for check in (True, False, False):
        res = run(x509_info, dict(issued, fail_on_problems=True, min_valid_days=30), check=check)
        assert not res["changed"] and res["problems"] == []
        assert res["key_matches"] is True and res["chain_valid"] is True
        assert res["chain"] == ["CN=pd", "CN=tlsops-tikv-ca"]
        assert res["cert"]["subject_alt_names"] == SANS
        no_key_material(res)


def test_info_problems_and_fail(issued, tmp_path):
    run(x509_key, dict(path=str(tmp_path / "other.pem")))
    args = dict(issued, key_path=str(tmp_path / "other.pem"), subject_alt_names=SANS + ["10.0.1.6"])
    res = run(x509_info, args)
    assert res["key_matches"] is False and len(res["problems"]) == 2
    msg = fails(x509_info, dict(args, fail_on_problems=True))
    assert msg.startswith("pd-1: certificate %s: 2 problem(s): the private key %s does not match"
                          % (issued["path"], args["key_path"]))
    assert "SANs lack 10.0.1.6" in msg


def test_info_not_signed_by_provided_ca(issued, tmp_path):
    run(x509_ca, dict(path=str(tmp_path / "o" / "ca.crt"), key_path=str(tmp_path / "o" / "ca.key"), common_name="o"))
    res = run(x509_info, dict(issued, ca_path=str(tmp_path / "o" / "ca.crt")))
    assert res["chain_valid"] is False
    assert res["problems"][0].startswith("not signed by the CA: 'CN=pd' was issued by 'CN=tlsops-tikv-ca'")


def test_info_missing_file(tmp_path):
    res = run(x509_info, dict(path=str(tmp_path / "none.crt")))
    assert not res["exists"] and res["problems"] == ["certificate file %s does not exist" % (tmp_path / "none.crt")]
    msg = fails(x509_info, dict(path=str(tmp_path / "none.crt"), name="tikv-3", fail_on_problems=True))
    assert msg.startswith("tikv-3: certificate ")


# ---------------------------------------------------------------------------------------------
# documentation and a real playbook
# ---------------------------------------------------------------------------------------------

MODULES = ["x509_ca", "x509_key", "x509_sign", "x509_info"]


def _env():
    env = dict(os.environ)
    env["ANSIBLE_COLLECTIONS_PATH"] = os.path.join(REPO, "build", "collections")
    env["ANSIBLE_NOCOLOR"] = "1"
    env["ANSIBLE_LOCALHOST_WARNING"] = "False"
    env["ANSIBLE_INVENTORY_UNPARSED_WARNING"] = "False"
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    return env


@pytest.mark.parametrize("name", MODULES)
def test_docs_parse(name):
    bindir = os.path.dirname(sys.executable)
    out = subprocess.run([os.path.join(bindir, "ansible-doc"), "--json", "tlsops.tikv." + name],
                         capture_output=True, text=True, env=_env(), timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)["tlsops.tikv." + name]
    assert doc["doc"]["attributes"]["check_mode"]["support"] == "full"
    assert "idempotent" in doc["doc"]["attributes"]
    assert doc["return"] and doc["examples"]
    # every option in the doc is in the argument_spec and vice versa
    module = {"x509_ca": x509_ca, "x509_key": x509_key, "x509_sign": x509_sign, "x509_info": x509_info}[name]
    import yaml
    documented = set(yaml.safe_load(module.DOCUMENTATION)["options"])
    source = open(module.__file__).read()
    for option in documented:
        assert "%s=dict(" % option in source, option


PLAYBOOK = textwrap.dedent("""\
    - name: PKI round trip with the x509 modules
      hosts: localhost
      gather_facts: false
      vars:
        d: "{{ work }}"
      tasks:
        - name: CA
          tlsops.tikv.x509_ca:
            path: "{{ d }}/ca/ca.crt"
            key_path: "{{ d }}/ca/ca.key"
            passphrase: hunter2hunter2
          register: ca

        - name: Instance key and CSR
          tlsops.tikv.x509_key:
            path: "{{ d }}/tikv.pem"
            common_name: tikv
            subject_alt_names: [127.0.0.1, localhost]
          register: key

        - name: Sign
          tlsops.tikv.x509_sign:
            ca_path: "{{ d }}/ca/ca.crt"
            ca_key_path: "{{ d }}/ca/ca.key"
            ca_passphrase: hunter2hunter2
            requests:
              - name: tikv-1
                cn: tikv
                sans: [127.0.0.1, localhost]
                csr: "{{ key.csr }}"
                current_cert: "{{ lookup('ansible.builtin.file', d ~ '/tikv.crt', errors='ignore') | default('', true) }}"
          register: signed

        - name: Write the certificate
          ansible.builtin.copy:
            content: "{{ signed.certificates['tikv-1'].chain }}"
            dest: "{{ d }}/tikv.crt"
            mode: "0644"
          when: signed.certificates['tikv-1'].chain is not none

        - name: Check it
          tlsops.tikv.x509_info:
            path: "{{ d }}/tikv.crt"
            key_path: "{{ d }}/tikv.pem"
            ca_path: "{{ d }}/ca/ca.crt"
            name: tikv-1
            common_name: tikv
            subject_alt_names: [127.0.0.1, localhost]
            fail_on_problems: true
          when: not ansible_check_mode
""")


def _play(tmp_path, *extra):
    book = tmp_path / "pki.yml"
    book.write_text(PLAYBOOK)
    bindir = os.path.dirname(sys.executable)
    cmd = [os.path.join(bindir, "ansible-playbook"), "-i", "localhost,", "-c", "local", "-e", "work=%s" % tmp_path,
           "-e", "ansible_python_interpreter=%s" % sys.executable, str(book)] + list(extra)
    out = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=300, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    recap = [line for line in out.stdout.splitlines() if line.startswith("localhost")][-1]
    return out.stdout, int(recap.split("changed=")[1].split()[0])


@pytest.mark.skipif(shutil.which("ansible-playbook", path=os.path.dirname(sys.executable)) is None,
                    reason="ansible-playbook not installed in the venv")
def test_playbook_check_real_again(tmp_path):
    out, changed = _play(tmp_path, "--check", "--diff")
    assert changed == 3 and not (tmp_path / "ca").exists()   # CA, key, sign would change
    out, changed = _play(tmp_path)
    assert changed == 4                                      # + the copy
    assert "hunter2" not in out
    out, changed = _play(tmp_path, "--diff")
    assert changed == 0, out
    out, changed = _play(tmp_path, "--check", "--diff")
    assert changed == 0, out


def _bad_leaf(ca_files, kind):
    """A provided certificate that is wrong in exactly one way, and the key it goes with."""
    import datetime as dt
    from cryptography import x509 as cx
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    ca = x.load_ca_files(ca_files["ca_path"], ca_files["ca_key_path"], ca_files["ca_passphrase"])
    if kind == "other_ca":
        other_key = x.generate_key()
        ca = x.CA(x.create_ca_cert(other_key, "someone-else"), other_key)
    key = x.generate_key()
    now = dt.datetime.now(dt.timezone.utc)
    start, end = now - dt.timedelta(hours=1), now + dt.timedelta(days=90)
    if kind == "expired":
        start, end = now - dt.timedelta(days=90), now - dt.timedelta(days=1)
    if kind == "not_yet_valid":
        start, end = now + dt.timedelta(days=1), now + dt.timedelta(days=90)
    ekus = [ExtendedKeyUsageOID.SERVER_AUTH]
    if kind != "no_client_auth":
        ekus.append(ExtendedKeyUsageOID.CLIENT_AUTH)
    sans = SANS[1:] if kind == "missing_san" else SANS
    cert = (cx.CertificateBuilder()
            .subject_name(cx.Name([cx.NameAttribute(NameOID.COMMON_NAME, "tikv")]))
            .issuer_name(ca.cert.subject).public_key(key.public_key())
            .serial_number(cx.random_serial_number()).not_valid_before(start).not_valid_after(end)
            .add_extension(cx.SubjectAlternativeName(x.normalize_sans(sans)), critical=False)
            .add_extension(cx.ExtendedKeyUsage(ekus), critical=False)
            .sign(ca.key, hashes.SHA256()))
    if kind == "key_mismatch":
        key = x.generate_key()
    return cert, key


@pytest.mark.parametrize("kind,reason", [
    ("key_mismatch", "does not match the certificate"),
    ("missing_san", "SANs lack 10.0.1.5"),
    ("no_client_auth", "extended key usage lacks clientAuth"),
    ("expired", "expired on "),
    ("not_yet_valid", "not yet valid: valid from "),
    ("other_ca", "not signed by the CA: 'CN=tikv' was issued by 'CN=someone-else'"),
    ("good", None)])
def test_info_refuses_bad_provided_cert_with_instance_and_reason(tmp_path, ca_files, kind, reason):
    cert, key = _bad_leaf(ca_files, kind)
    (tmp_path / "tikv.crt").write_text(x.cert_to_pem(cert))
    (tmp_path / "tikv.pem").write_bytes(x.private_key_pem(key))
    args = dict(path=str(tmp_path / "tikv.crt"), key_path=str(tmp_path / "tikv.pem"), ca_path=ca_files["ca_path"],
                name="tikv-7", common_name="tikv", subject_alt_names=SANS, fail_on_problems=True)
    if reason is None:
        assert run(x509_info, args)["problems"] == []
        return
    with pytest.raises(Fail) as exc:
        run(x509_info, args)
    msg = exc.value.result["msg"]
    assert msg.startswith("tikv-7: certificate %s: 1 problem(s): " % args["path"]), msg
    assert reason in msg
    assert "PRIVATE KEY" not in msg

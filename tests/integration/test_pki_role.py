"""The pki role against the lab (local mode, 3 PD + 3 TiKV), through real `ansible-playbook` runs.

What a user would check: the files on each host (owner, modes, CN/SANs/EKU, chain, the certificate
written after the key), that a second run and `--check --diff` change nothing, that drift re-issues
(and keeps the host key unless its type changed), that bad input is refused before anything is written,
that no key material or passphrase reaches the output at -vvv, and finally that the issued material
turns the lab into a healthy TLS cluster (client, TiKV and PD peer links) with the stand-ins.

Tests inside a class run in order and share one lab (class-scoped fixture).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import os
import pwd
import re
import subprocess
import time

import pytest
import tomlkit
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ansible_collections.tlsops.tikv.plugins.module_utils import _x509 as x
from playbook_runner import REPO, run_playbook
from tikvlab import certs, common, services

pytestmark = pytest.mark.timeout(600)

PLAYBOOK = os.path.join(REPO, "tests", "integration", "playbooks", "pki.yml")
TIKV_LAB = os.path.join(REPO, "lab", "bin", "tikv-lab")
LOCAL_SANS = {"127.0.0.1", "localhost"}


# ---------------------------------------------------------------------------------------------
# helpers


class Instance:
    def __init__(self, name, component, hostvars):
        self.name = name
        self.component = component
        self.vars = hostvars
        self.tls_dir = os.path.join(hostvars["deploy_dir"], "tls")
        self.ca = os.path.join(self.tls_dir, "ca.crt")
        self.cert = os.path.join(self.tls_dir, component + ".crt")
        self.key = os.path.join(self.tls_dir, component + ".pem")


def instances(cluster):
    with open(cluster.inventory, encoding="utf-8") as fh:
        inv = yaml.safe_load(fh)
    out = []
    for component in ("pd", "tikv"):
        for name, hostvars in inv["all"]["children"][component]["hosts"].items():
            out.append(Instance(name, component, hostvars))
    return out


def service_user(cluster):
    with open(cluster.inventory, encoding="utf-8") as fh:
        return yaml.safe_load(fh)["all"]["vars"]["tikv_tls_service_user"]


def play(cluster, ctl, *args, **kwargs):
    return run_playbook(PLAYBOOK, cluster.inventory, "-e", "tikv_tls_controller_dir=%s" % ctl, *args, **kwargs)


def tree_state(*roots):
    """Every file and directory under roots: content hash, mode and mtime (nothing written = equal)."""
    state = {}
    for root in roots:
        if not os.path.exists(root):
            state[root] = None
            continue
        for dirpath, dirs, files in os.walk(root):
            for name in dirs + files:
                path = os.path.join(dirpath, name)
                st = os.lstat(path)
                digest = None
                if os.path.isfile(path):
                    with open(path, "rb") as fh:
                        digest = hashlib.sha256(fh.read()).hexdigest()
                state[path] = (digest, st.st_mode, st.st_mtime_ns, st.st_uid)
    return state


def tls_state(cluster, ctl):
    return tree_state(*[i.tls_dir for i in instances(cluster)], str(ctl))


def read(path):
    with open(path, "rb") as fh:
        return fh.read()


def certs_in(path):
    return x509.load_pem_x509_certificates(read(path))


def sans_of(cert):
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {str(v) for v in ext.get_values_for_type(x509.IPAddress)} | set(ext.get_values_for_type(x509.DNSName))


def eku_of(cert):
    return set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def cn_of(cert):
    return cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value


def public_der(key_or_cert):
    pub = key_or_cert.public_key()
    return pub.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def load_key(path, passphrase=None):
    return serialization.load_pem_private_key(read(path), password=passphrase)


def mode(path):
    return os.stat(path).st_mode & 0o777


def _private_values(key):
    """The secret numbers of a private key, as big-endian bytes."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        size = (key.curve.key_size + 7) // 8
        return [key.private_numbers().private_value.to_bytes(size, "big")]
    numbers = key.private_numbers()
    return [n.to_bytes((n.bit_length() + 7) // 8, "big") for n in (numbers.d, numbers.p, numbers.q)]


def secret_fragments(paths, passphrase=None):
    """Strings that appear in the output only if a private key (or the passphrase) leaked into it:
    the PEM lines of each key file that carry its secret numbers (not the lines that only hold its
    public half, which the certificate and CSR legitimately show), the file as slurp would encode it,
    and the secret numbers in hex. Encrypted key files: every body line (ciphertext), plus the
    secret numbers of the decrypted key."""
    fragments = []
    for path in paths:
        data = read(path)
        pem_lines = [ln for ln in data.decode().splitlines() if ln and not ln.startswith("-----") and ":" not in ln]
        encrypted = b"ENCRYPTED" in data
        key = load_key(path, passphrase.encode() if encrypted else None)
        secrets = _private_values(key)
        if encrypted:
            fragments.extend(ln for ln in pem_lines if len(ln) >= 16)
        else:
            der = base64.b64decode("".join(pem_lines))
            wanted = set()
            for value in secrets:
                start = der.find(value)
                assert start >= 0, "secret not found in %s" % path
                for byte in range(start, start + len(value)):
                    wanted.add((byte * 4 // 3) // 64)
            fragments.extend(pem_lines[i] for i in sorted(wanted) if len(pem_lines[i]) >= 16)
        fragments.append(base64.b64encode(data).decode()[40:100])
        fragments.extend(v.hex()[:40] for v in secrets)
    if passphrase:
        fragments.append(passphrase)
    return fragments


def assert_no_secrets(output, fragments):
    leaked = [f[:12] + "..." for f in fragments if f in output]
    assert not leaked, "key material or passphrase in the playbook output: %s" % leaked


def assert_instance_files(cluster, ctl, key_type=None):
    """Owner, modes, CN/SANs/EKU, chain to ca.crt, the certificate written after the key."""
    user = service_user(cluster)
    trust = certs_in(os.path.join(ctl, "ca.crt"))
    for inst in instances(cluster):
        assert mode(inst.tls_dir) == 0o700, inst.name
        assert mode(inst.key) == 0o600, inst.name
        assert mode(inst.cert) == 0o644 and mode(inst.ca) == 0o644, inst.name
        for path in (inst.tls_dir, inst.ca, inst.cert, inst.key):
            assert pwd.getpwuid(os.stat(path).st_uid).pw_name == user, path
        chain = certs_in(inst.cert)
        leaf = chain[0]
        assert cn_of(leaf) == inst.component
        assert sans_of(leaf) >= {inst.vars["ansible_host"]} | LOCAL_SANS
        assert eku_of(leaf) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
        key = load_key(inst.key)
        assert public_der(leaf) == public_der(key), "%s: key does not match its certificate" % inst.name
        if key_type:
            assert x.key_type_of(key) == key_type, inst.name
        # The chain the instance serves verifies against the ca.crt it trusts.
        problems, _path, ok = x.check_leaf(chain, key=key, anchors=certs_in(inst.ca), cn=inst.component,
                                           sans=[inst.vars["ansible_host"], "127.0.0.1", "localhost"])
        assert ok and not problems, (inst.name, problems)
        assert read(inst.ca) == read(os.path.join(ctl, "ca.crt"))
        assert certs_in(inst.ca)[0] in trust
        assert os.stat(inst.cert).st_mtime_ns >= os.stat(inst.key).st_mtime_ns, \
            "%s: the certificate must be written after the key (TiKV reloads on the cert's mtime)" % inst.name


def serials(cluster):
    return {i.name: certs_in(i.cert)[0].serial_number for i in instances(cluster)}


def keys(cluster):
    return {i.name: read(i.key) for i in instances(cluster)}


# ---------------------------------------------------------------------------------------------
# turning TLS on in the lab with the issued files (what the config and restart roles will do)


def lab_cli(cluster, *args, timeout=120):
    result = subprocess.run([TIKV_LAB, "--root", cluster.root, *args], capture_output=True, text=True,
                            timeout=timeout, check=False)
    assert result.returncode == 0, "tikv-lab %s: %s%s" % (" ".join(args), result.stdout, result.stderr)
    return result.stdout


def enable_tls_in_files(cluster, allowed_cn):
    for inst in services.load_lab(cluster.root).instances:
        tls = os.path.join(inst.deploy_dir, "tls")
        with open(inst.config_path, encoding="utf-8") as fh:
            doc = tomlkit.parse(fh.read())
        security = tomlkit.table()
        security.add("cacert-path" if inst.component == "pd" else "ca-path", tls + "/ca.crt")
        security.add("cert-path", "%s/%s.crt" % (tls, inst.component))
        security.add("key-path", "%s/%s.pem" % (tls, inst.component))
        security.add("cert-allowed-cn", allowed_cn)
        doc["security"] = security
        with open(inst.config_path, "w", encoding="utf-8") as fh:
            fh.write(tomlkit.dumps(doc))
        if inst.component == "pd":  # client URLs https; the peer listener stays http (cutover state)
            with open(inst.run_script, encoding="utf-8") as fh:
                script = fh.read()
            script = re.sub(r'--(client-urls|advertise-client-urls)="http://', r'--\1="https://', script)
            with open(inst.run_script, "w", encoding="utf-8") as fh:
                fh.write(script)


def operator_context(ctl):
    return common.client_context(os.path.join(ctl, "ca.crt"), os.path.join(ctl, "clients", "client.crt"),
                                 os.path.join(ctl, "clients", "client.pem"))


def pd_peers_to_https(cluster, ctl):
    """One PD at a time: etcd member update to https (as the operator, with the issued client
    certificate), https peer listener, restart, wait healthy."""
    ctx = operator_context(ctl)
    pds = services.load_lab(cluster.root).of("pd")
    status, listing = common.http_json("POST", pds[0].address, "/v3/cluster/member/list", {}, ctx)
    assert status == 200, listing
    ids = {m["name"]: m["ID"] for m in listing["members"]}
    for inst in pds:
        url = "https://%s:%d" % (inst.host, inst.ports["peer"])
        status, out = common.http_json("POST", inst.address, "/v3/cluster/member/update",
                                       {"ID": ids[inst.pd_name], "peerURLs": [url]}, ctx)
        assert status == 200, out
        with open(inst.run_script, encoding="utf-8") as fh:
            script = fh.read()
        script = re.sub(r'--(peer-urls|advertise-peer-urls)="http://', r'--\1="https://', script)
        script = re.sub(r'(--initial-cluster="[^"]*)', lambda m: m.group(1).replace("http://", "https://"), script)
        with open(inst.run_script, "w", encoding="utf-8") as fh:
            fh.write(script)
        lab_cli(cluster, "service", inst.name, "restart")
        cluster.handle.wait_healthy(90)


def active_peer_links(ctl, address):
    status, text = common.http_json("GET", address, "/pd/api/v1/metrics", None, operator_context(ctl))
    assert status == 200, text
    return sum(1 for line in str(text).splitlines()
               if line.startswith("etcd_network_active_peers{") and line.rstrip().endswith(" 1"))


def tikv_peer_links_up(ctl, inst):
    ctx = operator_context(ctl)
    status, text = common.http_json("GET", "%s:%d" % (inst.host, inst.ports["status"]), "/metrics", None, ctx)
    assert status == 200, text
    return sum(1 for line in str(text).splitlines()
               if line.startswith("tikv_lab_peer_link_up{") and line.rstrip().endswith(" 1"))


def wait_for(predicate, timeout=60, interval=1.0):
    deadline = time.monotonic() + timeout
    value = predicate()
    while not value and time.monotonic() < deadline:
        time.sleep(interval)
        value = predicate()
    assert value, "condition not met within %s s" % timeout
    return value


# ---------------------------------------------------------------------------------------------
# generate mode: the whole life of the material on one lab


@pytest.fixture(scope="class")
def ctl(tmp_path_factory):
    return str(tmp_path_factory.mktemp("controller") / "tlsops")


@pytest.mark.usefixtures("plaintext_cluster")
class TestGenerate:

    def test_check_mode_first_writes_nothing_and_says_what_would_change(self, plaintext_cluster, ctl):
        before = tls_state(plaintext_cluster, ctl)
        run = play(plaintext_cluster, ctl, "--check", "--diff").assert_ok()
        assert tls_state(plaintext_cluster, ctl) == before, "check mode wrote something"
        assert run.changed(), "check mode must report the changes it would make"
        assert "would be created" in run.output  # the CA
        for inst in instances(plaintext_cluster):
            assert "%s (%s, CN %s): would be issued" % (inst.name, inst.component, inst.component) in run.output
        assert "client:client: would be issued" in run.output

    def test_missing_service_user_is_refused_before_any_write(self, plaintext_cluster, ctl):
        before = tls_state(plaintext_cluster, ctl)
        run = play(plaintext_cluster, ctl, "-e", "tikv_tls_service_user=tlsops-no-such-user")
        assert run.returncode != 0
        for inst in instances(plaintext_cluster):
            assert re.search(r"%s: the service user 'tlsops-no-such-user' .* does not exist" % inst.name, run.output)
        assert tls_state(plaintext_cluster, ctl) == before, "a refused run wrote something"

    def test_issues_material_for_3_pd_and_3_tikv(self, plaintext_cluster, ctl):
        run = play(plaintext_cluster, ctl).assert_ok()
        assert set(run.changed()) == {i.name for i in instances(plaintext_cluster)}
        assert_instance_files(plaintext_cluster, ctl, key_type="ecdsa-p256")
        # The CA stays on the controller, private.
        assert mode(os.path.join(ctl, "ca", "ca.key")) == 0o600
        assert mode(ctl) == 0o700 and mode(os.path.join(ctl, "clients")) == 0o700
        ca_cert = certs_in(os.path.join(ctl, "ca", "ca.crt"))[0]
        assert certs_in(os.path.join(ctl, "ca.crt")) == [ca_cert]
        assert ca_cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        # The operator's client certificate: clientAuth only, CN client, key 0600.
        client = certs_in(os.path.join(ctl, "clients", "client.crt"))[0]
        assert cn_of(client) == "client"
        assert eku_of(client) == {ExtendedKeyUsageOID.CLIENT_AUTH}
        assert mode(os.path.join(ctl, "clients", "client.pem")) == 0o600
        assert public_der(client) == public_der(load_key(os.path.join(ctl, "clients", "client.pem")))
        # No instance key on the controller: host keys never leave their host.
        assert not os.path.exists(os.path.join(ctl, "keys"))

    def test_second_run_changes_nothing_and_logs_no_key_material_at_vvv(self, plaintext_cluster, ctl):
        before = tls_state(plaintext_cluster, ctl)
        run = play(plaintext_cluster, ctl, "-vvv").assert_ok()
        assert run.changed() == {}, run.output[-4000:]
        assert tls_state(plaintext_cluster, ctl) == before
        key_files = [i.key for i in instances(plaintext_cluster)] + [
            os.path.join(ctl, "ca", "ca.key"), os.path.join(ctl, "clients", "client.pem")]
        fragments = secret_fragments(key_files)
        assert_no_secrets(run.output, fragments)
        # Negative control: the detector sees a key printed as text (JSON-escaped) or as slurp encodes it.
        for path in key_files:
            with pytest.raises(AssertionError):
                assert_no_secrets(json.dumps({"content": read(path).decode()}), fragments)
            with pytest.raises(AssertionError):
                assert_no_secrets(base64.b64encode(read(path)).decode(), fragments)

    def test_check_diff_on_issued_material_changes_nothing(self, plaintext_cluster, ctl):
        before = tls_state(plaintext_cluster, ctl)
        run = play(plaintext_cluster, ctl, "--check", "--diff").assert_ok()
        assert run.changed() == {}
        assert tls_state(plaintext_cluster, ctl) == before

    def test_renewal_window_reissues_and_keeps_keys(self, plaintext_cluster, ctl):
        # Limited to two instances: the others must stay untouched.
        old_serials, old_keys = serials(plaintext_cluster), keys(plaintext_cluster)
        run = play(plaintext_cluster, ctl, "--limit", "pd1,tikv1", "-e", "tikv_tls_renew_before_days=400",
                   "-e", "tikv_tls_validity_days=500").assert_ok()
        assert "renew_before_days=400" in run.output
        assert set(run.changed()) == {"pd1", "tikv1"}
        new_serials = serials(plaintext_cluster)
        assert {n for n in new_serials if new_serials[n] != old_serials[n]} == {"pd1", "tikv1"}
        assert keys(plaintext_cluster) == old_keys, "a re-issue must keep the host key"
        assert_instance_files(plaintext_cluster, ctl)

    def test_san_change_reissues_and_keeps_keys(self, plaintext_cluster, ctl):
        old_serials, old_keys = serials(plaintext_cluster), keys(plaintext_cluster)
        extra = ["-e", '{"tikv_tls_extra_sans": ["kv.example.internal", "10.9.8.7"]}']
        # --check --diff first: says what would change, changes nothing.
        before = tls_state(plaintext_cluster, ctl)
        check = play(plaintext_cluster, ctl, *extra, "--check", "--diff").assert_ok()
        assert tls_state(plaintext_cluster, ctl) == before, "check mode wrote something"
        assert "SANs differ: missing kv.example.internal, 10.9.8.7" in check.output
        assert '"state": "would be issued"' in check.output
        assert "pd1 (pd, CN pd): would be issued - SANs differ" in check.output
        run = play(plaintext_cluster, ctl, *extra, "--diff").assert_ok()
        assert "SANs differ: missing" in run.output
        assert set(run.changed()) == {i.name for i in instances(plaintext_cluster)}
        new_serials = serials(plaintext_cluster)
        for inst in instances(plaintext_cluster):
            assert new_serials[inst.name] != old_serials[inst.name]
            assert {"kv.example.internal", "10.9.8.7"} <= sans_of(certs_in(inst.cert)[0])
        assert keys(plaintext_cluster) == old_keys, "a re-issue must keep the host key"
        assert_instance_files(plaintext_cluster, ctl)

    def test_key_type_change_replaces_keys(self, plaintext_cluster, ctl):
        old_keys = keys(plaintext_cluster)
        run = play(plaintext_cluster, ctl, "-e", "tikv_tls_key_type=rsa-2048").assert_ok()
        assert "key type ecdsa-p256, want rsa-2048" in run.output
        new_keys = keys(plaintext_cluster)
        assert all(new_keys[n] != old_keys[n] for n in new_keys)
        assert_instance_files(plaintext_cluster, ctl, key_type="rsa-2048")
        assert isinstance(load_key(os.path.join(ctl, "clients", "client.pem")), rsa.RSAPrivateKey)
        # ...and the type stays chosen: the same run again changes nothing.
        again = play(plaintext_cluster, ctl, "--limit", "tikv1", "-e", "tikv_tls_key_type=rsa-2048").assert_ok()
        assert again.changed() == {}

    def test_reissue_before_rotates_every_certificate_once(self, plaintext_cluster, ctl):
        """What rotate_certs does: re-issue everything issued before its start, keep the keys; a re-run with the
        same start changes nothing. The trust bundle goes where the caller says."""
        cluster = plaintext_cluster
        key_type = ["-e", "tikv_tls_key_type=rsa-2048"]  # as chosen by the previous test
        future = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
        before = tls_state(cluster, ctl)
        refused = play(cluster, ctl, *key_type, "-e", "tikv_tls_reissue_before=" + future)
        assert refused.returncode != 0
        for inst in instances(cluster):
            assert "%s: tikv_tls_reissue_before '%s' must be a past time" % (inst.name, future) in refused.output
        assert tls_state(cluster, ctl) == before, "a refused run wrote something"

        time.sleep(1.1)  # certificate times have whole seconds
        start = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        client_crt = os.path.join(ctl, "clients", "client.crt")
        old_serials, old_keys = serials(cluster), keys(cluster)
        old_client = certs_in(client_crt)[0].serial_number
        bundle = os.path.join(ctl, "bundle-for-rotation.crt")
        rotate = [*key_type, "-e", "tikv_tls_reissue_before=" + start, "-e", "tikv_tls_trust_bundle_path=" + bundle]
        run = play(cluster, ctl, *rotate).assert_ok()
        assert "before reissue_before=%s" % start in run.output
        assert set(run.changed()) == {i.name for i in instances(cluster)}
        new_serials = serials(cluster)
        assert all(new_serials[n] != old_serials[n] for n in new_serials)
        assert certs_in(client_crt)[0].serial_number != old_client
        assert keys(cluster) == old_keys, "a re-issue must keep the host key"
        assert_instance_files(cluster, ctl, key_type="rsa-2048")
        assert read(bundle) == read(os.path.join(ctl, "ca.crt"))
        # The same rotation again (a re-run after an interruption): everything is new already.
        again = play(cluster, ctl, *rotate).assert_ok()
        assert again.changed() == {}, again.output[-3000:]
        assert serials(cluster) == new_serials

    def test_issued_material_makes_a_healthy_tls_cluster(self, plaintext_cluster, ctl):
        cluster = plaintext_cluster
        enable_tls_in_files(cluster, ["pd", "tikv", "client"])
        for name in ("pd1", "pd2", "pd3", "tikv1", "tikv2", "tikv3"):  # every PD first, then the TiKVs
            lab_cli(cluster, "service", name, "restart")
        cluster.handle.wait_healthy(90)
        status = lab_cli(cluster, "status")
        assert status.count("tls=on") == 6, status
        # PD peer links over TLS too (etcd member update, then an https peer listener, one at a time).
        pd_peers_to_https(cluster, ctl)
        lab = services.load_lab(cluster.root)
        for pd in lab.of("pd"):
            wait_for(lambda pd=pd: active_peer_links(ctl, pd.address) == 2)
        for kv in lab.of("tikv"):
            wait_for(lambda kv=kv: tikv_peer_links_up(ctl, kv) == 2)
        members = cluster.handle.pd("GET", "/members")["members"]
        assert all(u.startswith("https://") for m in members for u in m["peer_urls"] + m["client_urls"])
        cluster.handle.wait_healthy(60)


# ---------------------------------------------------------------------------------------------
# provided_ca: an intermediate with an encrypted key signs; the served chain includes it


PASSPHRASE = "correct horse battery staple 7"


@pytest.fixture(scope="class")
def intermediate(tmp_path_factory):
    """A root CA and an intermediate (encrypted key) it signed, as files on the controller."""
    base = tmp_path_factory.mktemp("user-pki")
    root_key = x.generate_key("ecdsa-p384")
    root = x.CA(x.create_ca_cert(root_key, "Example Corp Root", 3650, 1), root_key)
    inter_key = x.generate_key("ecdsa-p256")
    inter_cert = x.create_ca_cert(inter_key, "Example Corp TiKV Intermediate", 1000, 0, issuer=root)
    files = {"dir": str(base), "root": str(base / "root.crt"), "bundle": str(base / "intermediate-bundle.crt"),
             "key": str(base / "intermediate.key"), "root_cert": root.cert, "inter_cert": inter_cert}
    with open(files["root"], "w", encoding="ascii") as fh:
        fh.write(x.cert_to_pem(root.cert))
    with open(files["bundle"], "w", encoding="ascii") as fh:
        fh.write(x.cert_to_pem(inter_cert) + x.cert_to_pem(root.cert))
    with open(files["key"], "wb") as fh:
        fh.write(x.private_key_pem(inter_key, PASSPHRASE))
    os.chmod(files["key"], 0o600)
    return files


@pytest.mark.usefixtures("plaintext_cluster")
class TestProvidedCA:

    def provided(self, intermediate):
        return ["-e", "tikv_tls_ca_mode=provided_ca", "-e", "tikv_tls_ca_cert_path=%s" % intermediate["bundle"],
                "-e", "tikv_tls_ca_key_path=%s" % intermediate["key"]]

    def test_generated_material_first(self, plaintext_cluster, ctl):
        play(plaintext_cluster, ctl, "--limit", "pd1").assert_ok()
        assert certs_in(instances(plaintext_cluster)[0].cert)

    def test_encrypted_ca_key_without_passphrase_is_refused_before_any_write(self, plaintext_cluster, ctl,
                                                                             intermediate):
        before = tls_state(plaintext_cluster, ctl)
        run = play(plaintext_cluster, ctl, *self.provided(intermediate))
        assert run.returncode != 0
        assert "is encrypted and no passphrase was given" in run.output
        assert "tikv_tls_ca_passphrase" in run.output
        assert tls_state(plaintext_cluster, ctl) == before, "a refused run wrote something"

    def test_intermediate_signs_with_controller_keys_and_nothing_secret_is_logged(self, plaintext_cluster, ctl,
                                                                                  intermediate):
        old_keys = {i.name: read(i.key) for i in instances(plaintext_cluster) if os.path.exists(i.key)}
        run = play(plaintext_cluster, ctl, *self.provided(intermediate), "-e", "tikv_tls_key_location=controller",
                   "-e", json.dumps({"tikv_tls_ca_passphrase": PASSPHRASE}), "-vvv").assert_ok()
        # pd1's certificate is re-issued because the signer changed; keys now made on the controller and copied.
        assert ("pd1 (pd, CN pd): issued - issued by 'CN=tlsops.tikv tikv CA', the current CA is "
                "'CN=Example Corp TiKV Intermediate'") in run.output
        assert_instance_files(plaintext_cluster, ctl)
        for inst in instances(plaintext_cluster):
            chain = certs_in(inst.cert)
            assert chain[1:] == [intermediate["inter_cert"]], "%s must serve leaf + intermediate" % inst.name
            assert chain[0].issuer == intermediate["inter_cert"].subject
            assert certs_in(inst.ca) == [intermediate["root_cert"]], "ca.crt holds the root only"
            controller_key = os.path.join(ctl, "keys", inst.name + ".pem")
            assert read(controller_key) == read(inst.key) != old_keys.get(inst.name)
            assert mode(controller_key) == 0o600
        assert mode(os.path.join(ctl, "keys")) == 0o700
        client_chain = certs_in(os.path.join(ctl, "clients", "client.crt"))
        assert client_chain[1:] == [intermediate["inter_cert"]]
        key_files = [i.key for i in instances(plaintext_cluster)] + [
            os.path.join(ctl, "clients", "client.pem"), intermediate["key"]]
        assert_no_secrets(run.output, secret_fragments(key_files, PASSPHRASE))

    def test_controller_keys_second_run_changes_nothing(self, plaintext_cluster, ctl, intermediate):
        before = tls_state(plaintext_cluster, ctl)
        run = play(plaintext_cluster, ctl, *self.provided(intermediate), "-e", "tikv_tls_key_location=controller",
                   "-e", json.dumps({"tikv_tls_ca_passphrase": PASSPHRASE})).assert_ok()
        assert run.changed() == {}
        assert tls_state(plaintext_cluster, ctl) == before


# ---------------------------------------------------------------------------------------------
# provided_certs: the user's certificates are validated, refused when bad, else copied as they are


@pytest.fixture(scope="class")
def user_certs(tmp_path_factory):
    base = tmp_path_factory.mktemp("user-certs")
    ca = certs.make_ca("Example Corp Provided CA")
    other_ca = certs.make_ca("Some Other CA")
    with open(base / "ca.crt", "wb") as fh:
        fh.write(ca.cert_pem)
    return {"dir": base, "ca": ca, "other_ca": other_ca, "ca_path": str(base / "ca.crt")}


def write_pair(base, name, issued, key_pem=None):
    cert, key = str(base / (name + ".crt")), str(base / (name + ".key"))
    with open(cert, "wb") as fh:
        fh.write(issued.cert_pem)
    with open(key, "wb") as fh:
        fh.write(key_pem or issued.key_pem)
    os.chmod(key, 0o600)
    return {"cert": cert, "key": key}


def provided_vars(user_certs, mapping, name, **more):
    client = write_pair(user_certs["dir"], "operator-client",
                        certs.make_leaf(user_certs["ca"], "client", server=False, sans=["localhost"]))
    path = user_certs["dir"] / (name + ".yml")
    with open(path, "w", encoding="utf-8") as fh:
        yaml.safe_dump(dict({"tikv_tls_ca_mode": "provided_certs", "tikv_tls_provided_ca_path": user_certs["ca_path"],
                             "tikv_tls_provided_certs": mapping, "tikv_tls_operator_cert_path": client["cert"],
                             "tikv_tls_operator_key_path": client["key"]}, **more), fh)
    return "@" + str(path)


def good_mapping(cluster, user_certs, tag):
    out = {}
    for inst in instances(cluster):
        leaf = certs.make_leaf(user_certs["ca"], inst.component, sans=["127.0.0.1", "localhost"], days=200)
        out[inst.name] = write_pair(user_certs["dir"], "%s-%s" % (tag, inst.name), leaf)
    return out


@pytest.mark.usefixtures("plaintext_cluster")
class TestProvidedCerts:

    def test_every_bad_certificate_is_refused_with_its_instance_and_reason(self, plaintext_cluster, ctl,
                                                                           user_certs):
        ca, d = user_certs["ca"], user_certs["dir"]
        stranger = certs.make_leaf(ca, "pd")
        bad = {
            "pd1": (write_pair(d, "bad-pd1", certs.make_leaf(ca, "pd"), key_pem=stranger.key_pem),
                    "does not match the certificate"),
            "pd2": (write_pair(d, "bad-pd2", certs.make_leaf(ca, "pd", sans=["10.1.2.3", "localhost"])),
                    "SANs lack 127.0.0.1"),
            "pd3": (write_pair(d, "bad-pd3", certs.make_leaf(ca, "pd", client=False)),
                    "extended key usage lacks clientAuth"),
            "tikv1": (write_pair(d, "bad-tikv1", certs.make_leaf(ca, "tikv", days=-2)), "expired on"),
            "tikv2": (write_pair(d, "bad-tikv2", certs.make_leaf(ca, "tikv", not_before_days=3)), "not yet valid"),
            "tikv3": (write_pair(d, "bad-tikv3", certs.make_leaf(user_certs["other_ca"], "tikv")),
                      "not signed by the CA"),
        }
        before = tls_state(plaintext_cluster, ctl)
        run = play(plaintext_cluster, ctl, "-e",
                   provided_vars(user_certs, {h: pair for h, (pair, _r) in bad.items()}, "all-bad"))
        assert run.returncode != 0
        for host, (pair, reason) in bad.items():
            line = next((ln for ln in run.output.splitlines()
                         if "%s: provided certificate %s" % (host, pair["cert"]) in ln), "")
            assert reason in line, "%s: expected %r in %r" % (host, reason, line or run.output[-3000:])
        assert tls_state(plaintext_cluster, ctl) == before, "a refused run wrote something"

    def test_one_bad_certificate_refuses_the_whole_run(self, plaintext_cluster, ctl, user_certs):
        mapping = good_mapping(plaintext_cluster, user_certs, "one-bad")
        mapping["tikv2"] = write_pair(user_certs["dir"], "one-bad-tikv2-wrong",
                                      certs.make_leaf(user_certs["ca"], "tikv", sans=["localhost"]))
        before = tls_state(plaintext_cluster, ctl)
        run = play(plaintext_cluster, ctl, "-e", provided_vars(user_certs, mapping, "one-bad"))
        assert run.returncode != 0
        assert "tikv2: provided certificate" in run.output and "SANs lack 127.0.0.1" in run.output
        assert "Refusing to write TLS material: tikv2 failed the checks above" in run.output
        assert tls_state(plaintext_cluster, ctl) == before, "the good instances must not be written either"

    def test_good_certificates_are_distributed_as_they_are(self, plaintext_cluster, ctl, user_certs):
        mapping = good_mapping(plaintext_cluster, user_certs, "good")
        # An extra trusted CA (as rotate_ca's old+new phase uses) is appended to every ca.crt.
        other_ca = user_certs["dir"] / "other-ca.crt"
        other_ca.write_bytes(user_certs["other_ca"].cert_pem)
        extra_vars = provided_vars(user_certs, mapping, "good", tikv_tls_extra_trusted_ca_paths=[str(other_ca)])
        run = play(plaintext_cluster, ctl, "-e", extra_vars, "-vvv").assert_ok()
        assert_no_secrets(run.output, secret_fragments([p["key"] for p in mapping.values()]))
        for inst in instances(plaintext_cluster):
            assert read(inst.cert) == read(mapping[inst.name]["cert"])
            assert read(inst.key) == read(mapping[inst.name]["key"])
            assert certs_in(inst.ca) == certs_in(user_certs["ca_path"]) + [
                x509.load_pem_x509_certificate(user_certs["other_ca"].cert_pem)]
        assert_instance_files(plaintext_cluster, ctl)
        again = play(plaintext_cluster, ctl, "-e", extra_vars).assert_ok()
        assert again.changed() == {}

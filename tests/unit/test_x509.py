"""Unit tests of plugins/module_utils/_x509.py: issuance, validation rules, drift decision, CAs.

Every test states a rule the collection promises; the wrong-material cases are built here with
cryptography directly so that each rule can be seen failing.
"""

from __future__ import annotations

import datetime as dt
import re

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ansible_collections.tlsops.tikv.plugins.module_utils import _x509 as x

UTC = dt.timezone.utc
NOW = dt.datetime.now(UTC)
SANS = ["10.0.1.5", "pd-1.example", "127.0.0.1", "localhost"]


def _ca(key_type="ecdsa-p256", cn="test-ca", days=3650, now=None, path_length=0):
    key = x.generate_key(key_type)
    return x.CA(x.create_ca_cert(key, cn, days, path_length, now=now), key)


def _intermediate(root, cn="test-intermediate", key_type="ecdsa-p256", days=1000):
    key = x.generate_key(key_type)
    return key, x.create_ca_cert(key, cn, days, 0, issuer=root)


def _ext(cert, cls):
    return cert.extensions.get_extension_for_class(cls)


@pytest.fixture(scope="module")
def ca():
    return _ca()


@pytest.fixture(scope="module")
def host_key():
    return x.generate_key()


def _issue(ca, key, cn="pd", sans=None, usage="server_client", days=365, now=None):
    return x.issue_cert(ca, key.public_key(), cn, SANS if sans is None else sans, usage, days, now=now)


def _raw_leaf(ca, key, cn="pd", sans=None, ekus=("serverAuth", "clientAuth"), start=None, end=None,
              ca_flag=False):
    """A leaf built by hand, for shapes the collection itself never issues."""
    start = start or NOW - dt.timedelta(hours=1)
    end = end or NOW + dt.timedelta(days=100)
    oids = {"serverAuth": ExtendedKeyUsageOID.SERVER_AUTH, "clientAuth": ExtendedKeyUsageOID.CLIENT_AUTH}
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
               .issuer_name(ca.cert.subject).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end)
               .add_extension(x509.BasicConstraints(ca=ca_flag, path_length=None), critical=True)
               .add_extension(x509.SubjectAlternativeName(x.normalize_sans(SANS if sans is None else sans)),
                              critical=False))
    if ekus is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([oids[e] for e in ekus]), critical=False)
    return builder.sign(ca.key, hashes.SHA256())


# ---------------------------------------------------------------------------------------------
# keys
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("key_type,cls,size", [
    ("ecdsa-p256", ec.EllipticCurvePrivateKey, 256), ("ecdsa-p384", ec.EllipticCurvePrivateKey, 384),
    ("rsa-2048", rsa.RSAPrivateKey, 2048), ("rsa-3072", rsa.RSAPrivateKey, 3072),
    ("rsa-4096", rsa.RSAPrivateKey, 4096)])
def test_generate_key_types(key_type, cls, size):
    key = x.generate_key(key_type)
    assert isinstance(key, cls) and key.key_size == size
    assert x.key_type_of(key) == key_type
    assert x.key_type_of(key.public_key()) == key_type


def test_unknown_key_type_refused():
    with pytest.raises(x.X509Error, match="unsupported key type 'dsa-1024'"):
        x.generate_key("dsa-1024")


def test_default_key_type_is_p256():
    assert x.DEFAULT_KEY_TYPE == "ecdsa-p256"
    assert x.key_type_of(x.generate_key()) == "ecdsa-p256"


def test_signing_hash_sha384_for_p384_else_sha256():
    assert isinstance(x.signing_hash(x.generate_key("ecdsa-p384")), hashes.SHA384)
    assert isinstance(x.signing_hash(x.generate_key("ecdsa-p256")), hashes.SHA256)
    assert isinstance(x.signing_hash(x.generate_key("rsa-2048")), hashes.SHA256)


def test_weak_keys_are_named():
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    assert "too weak" in x.key_strength_problem(weak.public_key())
    assert x.key_strength_problem(x.generate_key("rsa-2048").public_key()) is None


# ---------------------------------------------------------------------------------------------
# passphrase-protected keys
# ---------------------------------------------------------------------------------------------

def _assert_no_key_material(text, pem):
    body = b"".join(pem.splitlines()[1:-1]).decode()
    assert "PRIVATE KEY" not in text
    for chunk in re.findall(".{16}", body):
        assert chunk not in text


def test_passphrase_key_round_trip_and_errors():
    key = x.generate_key()
    pem = x.private_key_pem(key, "s3cret")
    assert pem.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert x.is_encrypted_pem(pem)
    loaded = x.load_private_key(pem, "/ca/ca.key", "s3cret")
    assert x.same_public_key(loaded, key)
    with pytest.raises(x.X509Error) as missing:
        x.load_private_key(pem, "/ca/ca.key")
    assert "/ca/ca.key is encrypted and no passphrase was given" in str(missing.value)
    with pytest.raises(x.X509Error) as wrong:
        x.load_private_key(pem, "/ca/ca.key", "nope")
    assert "wrong passphrase" in str(wrong.value) and "/ca/ca.key" in str(wrong.value)
    for exc in (missing.value, wrong.value):
        _assert_no_key_material(str(exc), pem)


def test_passphrase_for_unencrypted_key_is_ignored():
    key = x.generate_key()
    pem = x.private_key_pem(key)
    assert not x.is_encrypted_pem(pem)
    assert x.same_public_key(x.load_private_key(pem, "k", "unused"), key)


def test_garbage_key_refused_without_echoing_it():
    data = b"-----BEGIN PRIVATE KEY-----\nTm90QUtleUF0QWxsSnVzdEdhcmJhZ2U=\n-----END PRIVATE KEY-----\n"
    with pytest.raises(x.X509Error, match="/tls/pd.pem is not a PEM private key") as exc:
        x.load_private_key(data, "/tls/pd.pem")
    assert "Tm90QUtleU" not in str(exc.value)


def test_passphrase_ca_signs(tmp_path):
    key = x.generate_key("ecdsa-p384")
    cert = x.create_ca_cert(key, "pw-ca")
    (tmp_path / "ca.crt").write_text(x.cert_to_pem(cert))
    (tmp_path / "ca.key").write_bytes(x.private_key_pem(key, "pw"))
    with pytest.raises(x.X509Error, match="encrypted and no passphrase"):
        x.load_ca_files(str(tmp_path / "ca.crt"), str(tmp_path / "ca.key"))
    ca = x.load_ca_files(str(tmp_path / "ca.crt"), str(tmp_path / "ca.key"), "pw")
    leaf = _issue(ca, x.generate_key())
    assert x.issued_by(leaf, ca.cert)
    assert isinstance(leaf.signature_hash_algorithm, hashes.SHA384)


# ---------------------------------------------------------------------------------------------
# CA
# ---------------------------------------------------------------------------------------------

def test_ca_extensions(ca):
    cert = ca.cert
    bc = _ext(cert, x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length == 0
    ku = _ext(cert, x509.KeyUsage)
    assert ku.critical and ku.value.key_cert_sign and ku.value.crl_sign
    ski = _ext(cert, x509.SubjectKeyIdentifier).value
    aki = _ext(cert, x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    assert x.is_self_signed(cert) and ca.self_signed
    assert ca.chain == [] and ca.anchors == [cert]
    assert ca.problems() == []
    assert 3649 <= x.days_left(cert) <= 3650


def test_ca_validity_and_pathlen_configurable():
    ca = _ca(days=42, path_length=1)
    assert 41 <= x.days_left(ca.cert) <= 42
    assert _ext(ca.cert, x509.BasicConstraints).value.path_length == 1


def test_ca_problems_expired_and_mismatched_key():
    old = _ca(days=10, now=NOW - dt.timedelta(days=20))
    assert any("expired" in p for p in old.problems())
    other = x.CA(old.cert, x.generate_key())
    assert any("does not match" in p for p in other.problems())


def test_ca_problems_not_a_ca(ca, host_key):
    leaf = _issue(ca, host_key)
    problems = x.CA(leaf, host_key).problems()
    assert any("is not a CA" in p for p in problems)


def test_load_ca_key_must_match(ca):
    with pytest.raises(x.X509Error, match="does not match any certificate"):
        x.load_ca(x.cert_to_pem(ca.cert), x.private_key_pem(x.generate_key()), "ca.crt", "ca.key")


def test_intermediate_bundle_chain_and_anchor():
    root = _ca(cn="root", path_length=1)
    ikey, icert = _intermediate(root)
    bundle = x.cert_to_pem(root.cert) + x.cert_to_pem(icert)  # order does not matter
    ca = x.load_ca(bundle, x.private_key_pem(ikey, "p"), "bundle", "ikey", "p")
    assert ca.cert == icert
    assert ca.chain == [icert] and ca.anchors == [root.cert]
    assert not ca.self_signed and ca.warnings == []
    assert ca.problems() == []
    leaf = _issue(ca, x.generate_key())
    assert x.issued_by(leaf, icert)
    result = x.sign_requests(ca, [{"name": "pd1", "cn": "pd", "sans": SANS,
                                   "csr": x.csr_to_pem(x.csr_for(x.generate_key(), "pd", []))}])
    chain = x.load_certs(result["pd1"]["chain"], "chain")
    assert [c.subject for c in chain] == [chain[0].subject, icert.subject]
    path, problems = x.build_chain(chain[0], chain[1:], [root.cert])
    assert problems == [] and path[-1] == root.cert


def test_intermediate_without_root_warns():
    root = _ca(cn="root", path_length=1)
    ikey, icert = _intermediate(root)
    ca = x.load_ca(x.cert_to_pem(icert), x.private_key_pem(ikey), "bundle", "ikey")
    assert ca.anchors == [icert]
    assert ca.warnings and "no self-signed root" in ca.warnings[0]


# ---------------------------------------------------------------------------------------------
# leaves
# ---------------------------------------------------------------------------------------------

def test_leaf_extensions_ecdsa(ca, host_key):
    leaf = _issue(ca, host_key)
    assert x.common_name(leaf.subject) == "pd"
    bc = _ext(leaf, x509.BasicConstraints)
    assert bc.critical and bc.value.ca is False
    ku = _ext(leaf, x509.KeyUsage)
    assert ku.critical and ku.value.digital_signature and not ku.value.key_encipherment
    assert not ku.value.key_cert_sign
    eku = _ext(leaf, x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    sans = _ext(leaf, x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.IPAddress) == [x.ipaddress.ip_address("10.0.1.5"),
                                                        x.ipaddress.ip_address("127.0.0.1")]
    assert sans.get_values_for_type(x509.DNSName) == ["pd-1.example", "localhost"]
    ski = _ext(leaf, x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(host_key.public_key())
    aki = _ext(leaf, x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == _ext(ca.cert, x509.SubjectKeyIdentifier).value.digest
    assert isinstance(leaf.signature_hash_algorithm, hashes.SHA256)
    assert x.issued_by(leaf, ca.cert)
    assert 364 <= x.days_left(leaf) <= 365


def test_leaf_rsa_has_key_encipherment(ca):
    leaf = _issue(ca, x.generate_key("rsa-2048"))
    assert _ext(leaf, x509.KeyUsage).value.key_encipherment


def test_client_certificate_is_client_auth_only(ca, host_key):
    leaf = _issue(ca, host_key, cn="ops-alice", sans=[], usage="client")
    assert x.eku_of(leaf) == ["clientAuth"]
    assert x.sans_of(leaf) == []


def test_serials_are_random_and_distinct(ca, host_key):
    serials = {_issue(ca, host_key).serial_number for _index in range(20)}
    assert len(serials) == 20
    assert all(s.bit_length() > 100 for s in serials)


def test_leaf_validity_clamped_to_ca():
    short = _ca(days=100)
    leaf = _issue(short, x.generate_key(), days=365)
    assert x.not_after(leaf) == x.not_after(short.cert)


def test_server_cert_needs_sans(ca, host_key):
    with pytest.raises(x.X509Error, match="at least one subject alternative name"):
        _issue(ca, host_key, sans=[])


@pytest.mark.parametrize("value,kind", [("10.0.0.1", "IP:10.0.0.1"), ("::1", "IP:::1"),
                                        ("PD-1.Example", "DNS:pd-1.example"), ("DNS:10.0.0.1", "DNS:10.0.0.1"),
                                        ("IP: 10.0.0.2", "IP:10.0.0.2"), ("*.tikv.svc", "DNS:*.tikv.svc")])
def test_parse_san(value, kind):
    assert x.san_key(x.parse_san(value)) == kind


@pytest.mark.parametrize("value", ["https://10.0.0.1:2379", "10.0.0.1:2379", "IP:pd-1", "", "a b"])
def test_parse_san_refuses_non_addresses(value):
    with pytest.raises(x.X509Error):
        x.parse_san(value)


# ---------------------------------------------------------------------------------------------
# CSR handling in sign_requests
# ---------------------------------------------------------------------------------------------

def _csr(key, cn="anything", sans=("203.0.113.9",)):
    return x.csr_to_pem(x.csr_for(key, cn, list(sans)))


def test_sign_uses_request_cn_sans_not_csr(ca, host_key):
    res = x.sign_requests(ca, [{"name": "tikv-1", "cn": "tikv", "sans": SANS,
                                "csr": _csr(host_key, "admin", ["evil.example"])}])
    leaf = x.load_certs(res["tikv-1"]["cert"], "c")[0]
    assert x.common_name(leaf.subject) == "tikv"
    assert x.sans_of(leaf) == ["10.0.1.5", "pd-1.example", "127.0.0.1", "localhost"]
    assert x.same_public_key(leaf.public_key(), host_key)
    assert res["tikv-1"]["changed"] and res["tikv-1"]["reason"] == "no certificate yet"
    assert res["tikv-1"]["chain"] == res["tikv-1"]["cert"]  # root CA: nothing else to serve


def test_sign_refuses_tampered_csr(ca, host_key):
    der = bytearray(x.csr_for(host_key, "tikv", []).public_bytes(serialization.Encoding.DER))
    der[-1] ^= 0x55  # last byte of the signature
    pem = x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM)
    with pytest.raises(x.X509Error) as exc:
        x.sign_requests(ca, [{"name": "tikv-2", "cn": "tikv", "sans": SANS, "csr": pem.decode()}])
    assert "tikv-2" in str(exc.value) and "signature does not verify" in str(exc.value)


def test_sign_refuses_weak_csr_key_and_lists_every_bad_request(ca):
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    reqs = [{"name": "a", "cn": "tikv", "sans": SANS, "csr": _csr(weak)},
            {"name": "b", "cn": "tikv", "sans": SANS, "csr": None},
            {"name": "c", "cn": "tikv", "sans": [], "csr": _csr(x.generate_key())},
            {"name": "c", "cn": "tikv", "sans": SANS, "csr": _csr(x.generate_key())},
            {"name": "d", "cn": "tikv", "sans": ["http://x"], "csr": _csr(x.generate_key())}]
    with pytest.raises(x.X509Error) as exc:
        x.sign_requests(ca, reqs)
    msg = str(exc.value)
    assert msg.startswith("5 request(s) refused")
    assert "a: CSR key type rsa-1024 is too weak" in msg
    assert "b: 'csr' is required" in msg
    assert "c: 'sans' is empty" in msg
    assert "c: duplicate request name" in msg
    assert "d: 'http://x' is not a host name" in msg


def test_renew_before_must_be_below_validity(ca, host_key):
    with pytest.raises(x.X509Error, match="must be smaller than validity_days"):
        x.sign_requests(ca, [], validity_days=30, renew_before_days=30)


def test_check_mode_decides_but_does_not_issue(ca, host_key):
    reqs = [{"name": "new", "cn": "pd", "sans": SANS, "csr": None},
            {"name": "keyed", "cn": "pd", "sans": SANS, "csr": _csr(host_key)}]
    res = x.sign_requests(ca, reqs, check_mode=True)
    assert res["new"] == {"changed": True, "reason": "no host key yet (check mode)", "warnings": [],
                          "cert": None, "chain": None, "not_after": None, "serial": None}
    assert res["keyed"]["changed"] and res["keyed"]["cert"] is None


# ---------------------------------------------------------------------------------------------
# drift decision
# ---------------------------------------------------------------------------------------------

def _decide(ca, current, key, **kw):
    args = dict(cn="pd", sans=SANS, public_key=key.public_key())
    args.update(kw)
    return x.decide(current, ca, **args)


def test_drift_up_to_date_is_reused(ca, host_key):
    pem = x.cert_to_pem(_issue(ca, host_key))
    d = _decide(ca, pem, host_key)
    assert d.action == "reuse" and d.reason == "up to date"
    # SAN order and case do not matter
    d = _decide(ca, pem, host_key, sans=list(reversed(["10.0.1.5", "PD-1.example", "127.0.0.1", "localhost"])))
    assert d.action == "reuse"


def test_drift_chain_file_uses_leaf(ca, host_key):
    pem = x.cert_to_pem(_issue(ca, host_key)) + x.cert_to_pem(ca.cert)
    assert _decide(ca, pem, host_key).action == "reuse"


@pytest.mark.parametrize("current,reason", [(None, "no certificate yet"), ("", "no certificate yet"),
                                            ("junk", "current certificate unreadable")])
def test_drift_missing_or_unreadable(ca, host_key, current, reason):
    d = _decide(ca, current, host_key)
    assert d.reissue and d.reason.startswith(reason)


def test_drift_other_ca_same_name(ca, host_key):
    impostor = _ca(cn="test-ca")  # same subject, different key
    d = _decide(ca, x.cert_to_pem(_issue(impostor, host_key)), host_key)
    assert d.reissue and "not signed by the current CA key" in d.reason


def test_drift_other_ca_name(ca, host_key):
    other = _ca(cn="old-ca")
    d = _decide(ca, x.cert_to_pem(_issue(other, host_key)), host_key)
    assert d.reissue and "issued by 'CN=old-ca', the current CA is 'CN=test-ca'" in d.reason


def test_drift_host_key_changed(ca, host_key):
    d = _decide(ca, x.cert_to_pem(_issue(ca, host_key)), x.generate_key())
    assert d.reissue and d.reason == "certificate is for another key than the host's"


def test_drift_key_type_changed(ca, host_key):
    d = _decide(ca, x.cert_to_pem(_issue(ca, host_key)), x.generate_key("rsa-2048"))
    assert d.reissue and "key type is ecdsa-p256, the host key is rsa-2048" in d.reason


def test_drift_cn_changed(ca, host_key):
    d = _decide(ca, x.cert_to_pem(_issue(ca, host_key)), host_key, cn="tikv")
    assert d.reissue and d.reason == "CN is 'pd', want 'tikv'"


def test_drift_sans_changed_both_ways(ca, host_key):
    pem = x.cert_to_pem(_issue(ca, host_key))
    d = _decide(ca, pem, host_key, sans=SANS + ["10.0.1.6"])
    assert d.reissue and d.reason == "SANs differ: missing 10.0.1.6"
    d = _decide(ca, pem, host_key, sans=SANS[1:])
    assert d.reissue and d.reason == "SANs differ: unexpected 10.0.1.5"


def test_drift_eku_changed(ca, host_key):
    pem = x.cert_to_pem(_raw_leaf(ca, host_key, ekus=("serverAuth",)))
    d = _decide(ca, pem, host_key)
    assert d.reissue and d.reason == "EKU is serverAuth, want serverAuth/clientAuth"
    client = x.cert_to_pem(_issue(ca, host_key, usage="client"))
    assert _decide(ca, client, host_key, usage="client").action == "reuse"
    assert _decide(ca, client, host_key).reissue


def test_drift_renew_before_days(ca, host_key):
    pem = x.cert_to_pem(_issue(ca, host_key, days=20))
    d = _decide(ca, pem, host_key, renew_before_days=30)
    assert d.reissue and "days left, renew_before_days=30" in d.reason
    assert _decide(ca, pem, host_key, renew_before_days=10).action == "reuse"


def test_drift_expired_and_not_yet_valid(ca, host_key):
    expired = _raw_leaf(ca, host_key, start=NOW - dt.timedelta(days=10), end=NOW - dt.timedelta(days=1))
    assert _decide(ca, x.cert_to_pem(expired), host_key).reason.startswith("expired on")
    future = _raw_leaf(ca, host_key, start=NOW + dt.timedelta(days=1), end=NOW + dt.timedelta(days=300))
    assert _decide(ca, x.cert_to_pem(future), host_key).reason.startswith("not valid before")


def test_drift_reports_every_reason(ca, host_key):
    other = _ca(cn="old-ca")
    d = _decide(other, x.cert_to_pem(_issue(ca, host_key)), x.generate_key("rsa-2048"), cn="tikv", sans=["10.9.9.9"])
    assert len(d.reasons) == 4


def test_drift_does_not_loop_when_ca_expires_first(host_key):
    short = _ca(days=20)
    pem = x.cert_to_pem(_issue(short, host_key))  # clamped to the CA: 20 days
    d = _decide(short, pem, host_key, renew_before_days=30)
    assert d.action == "reuse"
    assert d.warnings and "rotate the CA" in d.warnings[0]


@pytest.mark.parametrize("text,expected", [
    ("2026-05-01T10:00:00Z", dt.datetime(2026, 5, 1, 10, 0, tzinfo=UTC)),
    ("2026-05-01T12:00:00+02:00", dt.datetime(2026, 5, 1, 10, 0, tzinfo=UTC)),
    ("2026-05-01 10:00:00", dt.datetime(2026, 5, 1, 10, 0, tzinfo=UTC)),  # no zone: UTC
    ("2026-05-01", dt.datetime(2026, 5, 1, tzinfo=UTC)),
])
def test_parse_time(text, expected):
    assert x.parse_time(text) == expected


def test_parse_time_empty_and_garbage():
    assert x.parse_time(None) is None and x.parse_time("  ") is None
    with pytest.raises(x.X509Error, match="'yesterday' is not an ISO 8601 time"):
        x.parse_time("yesterday", "reissue_before")


def test_reissue_before_in_the_future_is_refused():
    with pytest.raises(x.X509Error, match="is in the future"):
        x.check_reissue_before(x.fmt_time(NOW + dt.timedelta(hours=1)), NOW)
    assert x.check_reissue_before("", NOW) is None


def test_drift_reissue_before(host_key):
    ca = _ca(now=NOW - dt.timedelta(days=30))  # leaves never start before their CA
    old = x.cert_to_pem(_issue(ca, host_key, now=NOW - dt.timedelta(days=10)))
    d = _decide(ca, old, host_key, reissue_before=NOW - dt.timedelta(days=1))
    assert d.reissue and d.reason.startswith("issued ") and "before reissue_before=" in d.reason
    # Issued after the selection time: kept.
    assert _decide(ca, old, host_key, reissue_before=NOW - dt.timedelta(days=20)).action == "reuse"
    # A certificate issued right at (or just after) the selection time is kept despite its backdated notBefore:
    # a rotation's re-run does not re-issue what the rotation already issued.
    fresh = x.cert_to_pem(_issue(ca, host_key, now=NOW))
    assert _decide(ca, fresh, host_key, reissue_before=NOW).action == "reuse"


def test_sign_requests_reissue_before_selects_and_converges():
    ca = _ca(now=NOW - dt.timedelta(days=30))
    keys = [x.generate_key() for _index in range(2)]
    reqs = [{"name": "h%d" % i, "cn": "tikv", "sans": ["10.0.0.%d" % i], "csr": _csr(k)} for i, k in enumerate(keys)]
    first = x.sign_requests(ca, reqs, now=NOW - dt.timedelta(days=3))
    reqs[0]["current_cert"] = first["h0"]["chain"]
    reqs[1]["current_cert"] = x.cert_to_pem(_issue(ca, keys[1], "tikv", ["10.0.0.1"], now=NOW))  # already new
    start = NOW - dt.timedelta(minutes=1)
    rotated = x.sign_requests(ca, [dict(r, reissue_before=x.fmt_time(start)) for r in reqs], now=NOW)
    assert [n for n, r in sorted(rotated.items()) if r["changed"]] == ["h0"]
    reqs[0]["current_cert"] = rotated["h0"]["chain"]
    again = x.sign_requests(ca, [dict(r, reissue_before=x.fmt_time(start)) for r in reqs], now=NOW)
    assert not any(r["changed"] for r in again.values())
    with pytest.raises(x.X509Error, match=r"h0: reissue_before .* is in the future"):
        x.sign_requests(ca, [dict(reqs[0], reissue_before=x.fmt_time(NOW + dt.timedelta(days=1)))], now=NOW)


def test_sign_requests_idempotent_and_selective(ca):
    keys = [x.generate_key() for _index in range(3)]
    reqs = [{"name": "h%d" % i, "cn": "tikv", "sans": ["10.0.0.%d" % i, "127.0.0.1", "localhost"],
             "csr": _csr(k)} for i, k in enumerate(keys)]
    first = x.sign_requests(ca, reqs)
    assert all(r["changed"] for r in first.values())
    for req in reqs:
        req["current_cert"] = first[req["name"]]["chain"]
    second = x.sign_requests(ca, reqs)
    assert not any(r["changed"] for r in second.values())
    assert all(second[n]["cert"] == first[n]["cert"] for n in first)
    reqs[1]["sans"] = reqs[1]["sans"] + ["tikv-1.example"]
    third = x.sign_requests(ca, reqs)
    assert [n for n, r in sorted(third.items()) if r["changed"]] == ["h1"]
    assert third["h1"]["reason"] == "SANs differ: missing tikv-1.example"
    # a re-issue keeps the host key: the new certificate is for the same public key
    new = x.load_certs(third["h1"]["cert"], "c")[0]
    assert x.same_public_key(new.public_key(), keys[1])


# ---------------------------------------------------------------------------------------------
# validation of (provided) certificates
# ---------------------------------------------------------------------------------------------

def _check_path(ca, cert, key, **kw):
    args = dict(key=key, key_label="/tls/pd.pem", anchors=[ca.cert], cn="pd", sans=SANS)
    args.update(kw)
    return x.check_leaf([cert] if not isinstance(cert, list) else cert, **args)


def _check(ca, cert, key, **kw):
    """(problems, chain_ok)"""
    problems, _path, chain_ok = _check_path(ca, cert, key, **kw)
    return problems, chain_ok


def _problems(ca, cert, key, **kw):
    return _check(ca, cert, key, **kw)[0]


def test_check_good_certificate(ca, host_key):
    problems, path, chain_ok = _check_path(ca, _issue(ca, host_key), host_key, min_valid_days=30)
    assert problems == [] and chain_ok is True and path[-1] == ca.cert


def test_check_key_does_not_match(ca, host_key):
    other = x.generate_key()
    problems = _problems(ca, _issue(ca, host_key), other)
    assert len(problems) == 1
    assert problems[0].startswith("the private key /tls/pd.pem does not match the certificate")
    _assert_no_key_material(problems[0], x.private_key_pem(other))


def test_check_missing_san(ca, host_key):
    problems = _problems(ca, _issue(ca, host_key, sans=["127.0.0.1", "localhost"]), host_key)
    assert problems == ["SANs lack 10.0.1.5 (the certificate has: 127.0.0.1, localhost)",
                        "SANs lack pd-1.example (the certificate has: 127.0.0.1, localhost)"]


def test_check_ip_only_as_dns_name(ca, host_key):
    cert = _raw_leaf(ca, host_key, sans=["DNS:10.0.1.5", "pd-1.example", "127.0.0.1", "localhost"])
    problems = _problems(ca, cert, host_key)
    assert problems == ["SANs have 10.0.1.5 only as a DNS name; Go and gRPC need it as an IP address SAN"]


def test_check_lacking_client_auth(ca, host_key):
    problems = _problems(ca, _raw_leaf(ca, host_key, ekus=("serverAuth",)), host_key)
    assert len(problems) == 1 and problems[0].startswith("extended key usage lacks clientAuth (has: serverAuth)")


def test_check_no_eku_extension_means_any(ca, host_key):
    problems = _problems(ca, _raw_leaf(ca, host_key, ekus=None), host_key)
    assert problems == []


def test_check_expired_and_not_yet_valid(ca, host_key):
    expired = _raw_leaf(ca, host_key, start=NOW - dt.timedelta(days=10), end=NOW - dt.timedelta(days=1))
    problems = _problems(ca, expired, host_key)
    assert len(problems) == 1 and problems[0].startswith("expired on ")
    future = _raw_leaf(ca, host_key, start=NOW + dt.timedelta(days=2), end=NOW + dt.timedelta(days=300))
    problems = _problems(ca, future, host_key)
    assert len(problems) == 1 and problems[0].startswith("not yet valid: valid from ")


def test_check_min_valid_days(ca, host_key):
    problems = _problems(ca, _issue(ca, host_key, days=5), host_key, min_valid_days=7)
    assert len(problems) == 1 and "day(s) left, 7 required" in problems[0]


def test_check_not_signed_by_ca(ca, host_key):
    other = _ca(cn="someone-else")
    problems, chain_ok = _check(ca, _issue(other, host_key), host_key)
    assert chain_ok is False
    assert problems == ["not signed by the CA: 'CN=pd' was issued by 'CN=someone-else', which is neither in the "
                        "CA file nor an intermediate in the certificate file"]
    impostor = _ca(cn="test-ca")
    problems = _problems(ca, _issue(impostor, host_key), host_key)
    assert problems and "is not signed by the key of the CA named 'CN=test-ca'" in problems[0]


def test_check_chain_through_intermediate_in_cert_file(host_key):
    root = _ca(cn="root", path_length=1)
    ikey, icert = _intermediate(root)
    ica = x.CA(icert, ikey, [root.cert])
    leaf = _issue(ica, host_key)
    problems, path, ok = _check_path(root, [leaf, icert], host_key)
    assert problems == [] and ok and [x.common_name(c.subject) for c in path] == ["pd", "test-intermediate", "root"]
    problems, ok = _check(root, [leaf], host_key)  # intermediate missing from the file
    assert not ok and "was issued by 'CN=test-intermediate'" in problems[0]


def test_check_wrong_cn_and_ca_flag(ca, host_key):
    problems = _problems(ca, _raw_leaf(ca, host_key, cn="tidb", ca_flag=True), host_key)
    assert "CN is 'tidb', expected 'pd'" in problems
    assert any("must not be a CA" in p for p in problems)


def test_cert_facts(ca, host_key):
    facts = x.cert_facts(_issue(ca, host_key))
    assert facts["common_name"] == "pd" and facts["issuer"] == "CN=test-ca"
    assert facts["subject_alt_names"] == ["10.0.1.5", "pd-1.example", "127.0.0.1", "localhost"]
    assert facts["extended_key_usages"] == ["serverAuth", "clientAuth"]
    assert facts["key_usages"] == ["digitalSignature"]
    assert facts["key_type"] == "ecdsa-p256" and facts["is_ca"] is False
    assert facts["public_key_sha256"] == x.public_key_sha256(host_key)
    assert re.match(r"^([0-9A-F]{2}:){31}[0-9A-F]{2}$", facts["fingerprint_sha256"])
    assert facts["signature_algorithm"] == "ecdsa-with-SHA256"

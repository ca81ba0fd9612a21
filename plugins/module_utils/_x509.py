# -*- coding: utf-8 -*-
# Copyright (c) tlsops.tikv maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""X.509 logic shared by the tlsops.tikv x509_* modules (private to the collection).

Everything that decides or builds PKI material lives here so that one controller call can sign a
whole cluster: key generation, CSRs, CA creation and loading (bundles with intermediates), leaf
issuance, chain building, inspection, validation rules that return human-readable problems, and
the drift decision (re-use the current certificate or re-issue it, and why).

Rules encoded here (see docs and TIKV-PD-TLS-FACTS.md):
- key types: ecdsa-p256 (default), ecdsa-p384, rsa-2048, rsa-3072, rsa-4096; signatures SHA-256,
  SHA-384 when the signing key is P-384.
- CA: basicConstraints CA:TRUE critical with pathlen, keyUsage keyCertSign+cRLSign critical, SKI, AKI.
- leaf: basicConstraints CA:FALSE critical, keyUsage digitalSignature (+keyEncipherment for RSA)
  critical, EKU serverAuth+clientAuth (client certificates: clientAuth only), SAN, SKI, AKI,
  random serial, validity clamped to the CA's.
- Private key material never appears in an error message or a returned value.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
import re
import tempfile
import traceback

CRYPTOGRAPHY_IMPORT_ERROR = None
try:
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
except ImportError:
    HAS_CRYPTOGRAPHY = False
    CRYPTOGRAPHY_IMPORT_ERROR = traceback.format_exc()
else:
    HAS_CRYPTOGRAPHY = True

KEY_TYPES = ("ecdsa-p256", "ecdsa-p384", "rsa-2048", "rsa-3072", "rsa-4096")
DEFAULT_KEY_TYPE = "ecdsa-p256"
USAGES = ("server_client", "client")
EKU_CHOICES = ("serverAuth", "clientAuth")
DEFAULT_LEAF_DAYS = 365
DEFAULT_CA_DAYS = 3650
DEFAULT_RENEW_BEFORE_DAYS = 30
# Certificates start this long before "now", so a host whose clock is a little behind accepts them.
BACKDATE = datetime.timedelta(minutes=5)
UTC = datetime.timezone.utc
MIN_RSA_BITS = 2048

_PEM_CERT_RE = re.compile(rb"-----BEGIN CERTIFICATE-----\s.+?-----END CERTIFICATE-----", re.S)
_EKU_NAMES = {}
if HAS_CRYPTOGRAPHY:
    _EKU_NAMES = {
        ExtendedKeyUsageOID.SERVER_AUTH: "serverAuth",
        ExtendedKeyUsageOID.CLIENT_AUTH: "clientAuth",
        ExtendedKeyUsageOID.CODE_SIGNING: "codeSigning",
        ExtendedKeyUsageOID.EMAIL_PROTECTION: "emailProtection",
        ExtendedKeyUsageOID.TIME_STAMPING: "timeStamping",
        ExtendedKeyUsageOID.OCSP_SIGNING: "OCSPSigning",
    }


class X509Error(Exception):
    """A problem with PKI input or material, worded for the operator (path, reason, fix)."""


# --------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------

def utcnow():
    return datetime.datetime.now(UTC)


def _b(data):
    if data is None:
        return None
    if isinstance(data, bytes):
        return data
    return data.encode("utf-8")


def not_after(cert):
    value = getattr(cert, "not_valid_after_utc", None)
    return value if value is not None else cert.not_valid_after.replace(tzinfo=UTC)


def not_before(cert):
    value = getattr(cert, "not_valid_before_utc", None)
    return value if value is not None else cert.not_valid_before.replace(tzinfo=UTC)


def fmt_time(value):
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value, label="time"):
    """An ISO 8601 time (`2026-05-01T10:00:00Z`, `2026-05-01 10:00:00+02:00`, `2026-05-01`) as an aware
    UTC datetime; a time without a zone is UTC. None or empty: None."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, datetime.datetime):
        parsed = value
    else:
        text = str(value).strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            parsed = datetime.datetime.fromisoformat(text)
        except ValueError:
            raise X509Error("%s %r is not an ISO 8601 time (for example 2026-05-01T10:00:00Z)" % (label, value))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def issued_at(cert):
    """When a certificate was issued, as far as it tells: its notBefore plus the backdating this module
    applies (BACKDATE). Exact for certificates signed here; a foreign certificate that starts exactly at its
    issuing time looks BACKDATE younger than it is."""
    return not_before(cert) + BACKDATE


def days_left(cert, now=None):
    now = now or utcnow()
    return int((not_after(cert) - now).total_seconds() // 86400)


def cert_to_pem(cert):
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


def csr_to_pem(csr):
    return csr.public_bytes(serialization.Encoding.PEM).decode("ascii")


def fingerprint(cert):
    """SHA-256 fingerprint as `openssl x509 -fingerprint -sha256` prints it."""
    digest = cert.fingerprint(hashes.SHA256()).hex().upper()
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))


def public_key_der(key):
    if hasattr(key, "private_bytes"):
        key = key.public_key()
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def public_key_sha256(key):
    """Hex SHA-256 of the SubjectPublicKeyInfo: names a key pair without revealing anything secret."""
    return hashlib.sha256(public_key_der(key)).hexdigest()


def same_public_key(a, b):
    return public_key_der(a) == public_key_der(b)


def common_name(name):
    attrs = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return attrs[0].value if attrs else None


def name_str(name):
    return name.rfc4514_string()


def _ext(cert, ext_class):
    try:
        return cert.extensions.get_extension_for_class(ext_class).value
    except x509.ExtensionNotFound:
        return None


# --------------------------------------------------------------------------------------------
# keys
# --------------------------------------------------------------------------------------------

def check_key_type(key_type):
    if key_type not in KEY_TYPES:
        raise X509Error("unsupported key type %r; choose one of %s" % (key_type, ", ".join(KEY_TYPES)))


def generate_key(key_type=DEFAULT_KEY_TYPE):
    check_key_type(key_type)
    if key_type == "ecdsa-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "ecdsa-p384":
        return ec.generate_private_key(ec.SECP384R1())
    return rsa.generate_private_key(public_exponent=65537, key_size=int(key_type.split("-")[1]))


_CURVES = {"secp256r1": "p256", "secp384r1": "p384", "secp521r1": "p521"}


def key_type_of(key):
    """Key type name of a private or public key: ecdsa-p256, rsa-3072, ed25519, ..."""
    if isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)):
        return "ecdsa-" + _CURVES.get(key.curve.name, key.curve.name)
    if isinstance(key, (rsa.RSAPrivateKey, rsa.RSAPublicKey)):
        return "rsa-%d" % key.key_size
    name = type(key).__name__.lower()
    for algo in ("ed25519", "ed448", "dsa", "x25519", "x448"):
        if algo in name:
            return algo
    return "unknown"


def key_strength_problem(key):
    """Why a (public) key cannot be used for a TLS leaf or CA, or None."""
    kind = key_type_of(key)
    if kind.startswith("rsa-"):
        if int(kind.split("-")[1]) < MIN_RSA_BITS:
            return "key type %s is too weak (RSA needs at least %d bits)" % (kind, MIN_RSA_BITS)
        return None
    if kind in ("ecdsa-p256", "ecdsa-p384", "ecdsa-p521"):
        return None
    return "key type %s is not supported (use ECDSA P-256/P-384 or RSA >= %d)" % (kind, MIN_RSA_BITS)


def signing_hash(key):
    """Digest for signatures made with `key`: SHA-256, SHA-384 for P-384, SHA-512 for P-521."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if key.curve.key_size >= 521:
            return hashes.SHA512()
        if key.curve.key_size >= 384:
            return hashes.SHA384()
    return hashes.SHA256()


def private_key_pem(key, passphrase=None):
    """PKCS#8 PEM; encrypted with the best available scheme when a passphrase is given."""
    if passphrase:
        enc = serialization.BestAvailableEncryption(_b(passphrase))
    else:
        enc = serialization.NoEncryption()
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)


def is_encrypted_pem(data):
    data = _b(data) or b""
    return b"ENCRYPTED PRIVATE KEY" in data or b"Proc-Type: 4,ENCRYPTED" in data


def load_private_key(data, label, passphrase=None):
    """Load a PEM private key. Errors name `label` (a path) and the fix, never the key's content.

    A passphrase given for an unencrypted key is ignored (callers may warn via is_encrypted_pem).
    """
    data = _b(data)
    pw = _b(passphrase) if passphrase else None
    if pw is not None and not is_encrypted_pem(data):
        pw = None
    try:
        return serialization.load_pem_private_key(data, password=pw)
    except TypeError:
        if pw is None:
            raise X509Error("%s is encrypted and no passphrase was given: set the passphrase for it" % label)
        raise X509Error("%s could not be loaded with the given passphrase" % label)
    except UnsupportedAlgorithm:
        raise X509Error("%s uses a key algorithm this cryptography build does not support" % label)
    except ValueError:
        if pw is not None:
            raise X509Error("%s could not be decrypted: wrong passphrase (or the file is not a PEM private key)"
                            % label)
        raise X509Error("%s is not a PEM private key (expected '-----BEGIN ... PRIVATE KEY-----')" % label)


def read_file(path, what):
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except (IOError, OSError) as exc:
        raise X509Error("cannot read %s %s: %s" % (what, path, exc.strerror or exc))


# --------------------------------------------------------------------------------------------
# certificates, CSRs, SANs
# --------------------------------------------------------------------------------------------

def load_certs(data, label):
    """All certificates of a PEM file/bundle, in file order. Raises X509Error naming `label`."""
    data = _b(data) or b""
    blocks = _PEM_CERT_RE.findall(data)
    if not blocks:
        raise X509Error("%s holds no PEM certificate (expected '-----BEGIN CERTIFICATE-----')" % label)
    certs = []
    for index, block in enumerate(blocks):
        try:
            certs.append(x509.load_pem_x509_certificate(block))
        except ValueError as exc:
            raise X509Error("%s: certificate #%d cannot be parsed: %s" % (label, index + 1, exc))
    return certs


def load_csr(data, label):
    """Load a PEM CSR and verify its self-signature (proof of possession of the key)."""
    try:
        csr = x509.load_pem_x509_csr(_b(data) or b"")
    except ValueError as exc:
        raise X509Error("%s: not a PEM certificate signing request (%s)" % (label, exc))
    try:
        valid = csr.is_signature_valid
    except (UnsupportedAlgorithm, ValueError):
        valid = False
    if not valid:
        raise X509Error("%s: the CSR's signature does not verify (corrupted, or not signed by its key)" % label)
    return csr


def parse_san(value):
    """One SAN from a string: 'IP:10.0.0.1', 'DNS:pd-1', or auto-detected (IP if it parses as one)."""
    text = str(value).strip()
    lower = text.lower()
    forced = None
    for prefix, kind in (("ip:", "ip"), ("dns:", "dns")):
        if lower.startswith(prefix):
            forced, text = kind, text[len(prefix):].strip()
            break
    if not text:
        raise X509Error("empty subject alternative name in %r" % (value,))
    if forced != "dns":
        try:
            return x509.IPAddress(ipaddress.ip_address(text))
        except ValueError:
            if forced == "ip":
                raise X509Error("%r is not an IP address" % (value,))
    if "://" in text or "/" in text or " " in text or (":" in text and not forced):
        raise X509Error("%r is not a host name or IP address (give the bare address, without scheme or port)"
                        % (value,))
    return x509.DNSName(text.lower())


def san_key(general_name):
    """Canonical comparison key of a SAN: 'IP:10.0.0.1', 'DNS:localhost', 'URI:...'."""
    if isinstance(general_name, x509.IPAddress):
        return "IP:%s" % general_name.value
    if isinstance(general_name, x509.DNSName):
        return "DNS:%s" % general_name.value.lower()
    if isinstance(general_name, x509.UniformResourceIdentifier):
        return "URI:%s" % general_name.value
    if isinstance(general_name, x509.RFC822Name):
        return "email:%s" % general_name.value
    return "other:%r" % (general_name.value,)


def san_display(key):
    """The operator-facing form: IPs and DNS names bare, other kinds with their prefix."""
    kind, _sep, value = key.partition(":")
    return value if kind in ("IP", "DNS") else key


def normalize_sans(values):
    """GeneralNames for a list of SAN strings, de-duplicated, in the given order."""
    seen = set()
    names = []
    for value in values or []:
        gname = parse_san(value)
        key = san_key(gname)
        if key not in seen:
            seen.add(key)
            names.append(gname)
    return names


def san_keys_of(cert_or_csr):
    sans = _ext(cert_or_csr, x509.SubjectAlternativeName)
    return [san_key(g) for g in sans] if sans is not None else []


def sans_of(cert_or_csr):
    return [san_display(k) for k in san_keys_of(cert_or_csr)]


def eku_of(cert):
    """EKU names of a certificate, or None when it has no EKU extension (= any usage)."""
    eku = _ext(cert, x509.ExtendedKeyUsage)
    if eku is None:
        return None
    return [_EKU_NAMES.get(oid, oid.dotted_string) for oid in eku]


def wanted_eku(usage):
    if usage not in USAGES:
        raise X509Error("unknown usage %r; choose one of %s" % (usage, ", ".join(USAGES)))
    return ["serverAuth", "clientAuth"] if usage == "server_client" else ["clientAuth"]


def key_usage_of(cert):
    ku = _ext(cert, x509.KeyUsage)
    if ku is None:
        return None
    names = []
    for attr, label in (("digital_signature", "digitalSignature"), ("content_commitment", "nonRepudiation"),
                        ("key_encipherment", "keyEncipherment"), ("data_encipherment", "dataEncipherment"),
                        ("key_agreement", "keyAgreement"), ("key_cert_sign", "keyCertSign"),
                        ("crl_sign", "cRLSign")):
        if getattr(ku, attr):
            names.append(label)
    return names


def is_ca(cert):
    bc = _ext(cert, x509.BasicConstraints)
    return bool(bc is not None and bc.ca)


def is_self_signed(cert):
    return cert.issuer == cert.subject and issued_by(cert, cert)


def issued_by(child, parent):
    """True when `parent` issued `child`: names chain and the signature verifies with parent's key."""
    if child.issuer != parent.subject:
        return False
    try:
        child.verify_directly_issued_by(parent)
        return True
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False


def csr_for(key, cn, sans):
    """A CSR for `key` with CN and SANs (what x509_key sends to the controller)."""
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
    names = normalize_sans(sans)
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(key, signing_hash(key))


# --------------------------------------------------------------------------------------------
# CA
# --------------------------------------------------------------------------------------------

def _key_usage(digital_signature=False, key_encipherment=False, key_cert_sign=False, crl_sign=False):
    return x509.KeyUsage(digital_signature=digital_signature, content_commitment=False,
                         key_encipherment=key_encipherment, data_encipherment=False, key_agreement=False,
                         key_cert_sign=key_cert_sign, crl_sign=crl_sign, encipher_only=False,
                         decipher_only=False)


def create_ca_cert(key, cn, validity_days=DEFAULT_CA_DAYS, path_length=0, now=None, issuer=None):
    """A CA certificate for `key`: self-signed, or signed by `issuer` (a CA object) for an intermediate."""
    now = now or utcnow()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    end = now + datetime.timedelta(days=validity_days)
    if issuer is not None:
        issuer_name, signer = issuer.cert.subject, issuer.key
        aki = _aki_for(issuer.cert)
        end = min(end, not_after(issuer.cert))
    else:
        issuer_name, signer = subject, key
        aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
    builder = (x509.CertificateBuilder()
               .subject_name(subject).issuer_name(issuer_name).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - BACKDATE).not_valid_after(end)
               .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
               .add_extension(_key_usage(digital_signature=True, key_cert_sign=True, crl_sign=True), critical=True)
               .add_extension(ski, critical=False)
               .add_extension(aki, critical=False))
    return builder.sign(signer, signing_hash(signer))


def _aki_for(issuer_cert):
    ski = _ext(issuer_cert, x509.SubjectKeyIdentifier)
    if ski is not None:
        return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
    return x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_cert.public_key())


class CA(object):
    """A signing CA: its certificate and key, the chain served above leaves, and the trust anchors.

    `cert` signs; `chain` are the certificates a server sends after its leaf (the signing CA and
    further intermediates when the CA is not a self-signed root; empty for a root); `anchors` are
    what peers must trust (ca.crt on every host): the self-signed roots found in the bundle, or the
    top-most certificate when the bundle has no root (then `warnings` says so).
    """

    def __init__(self, cert, key, others=(), label="CA"):
        self.cert = cert
        self.key = key
        self.label = label
        self.warnings = []
        path = [cert]
        pool = [c for c in others if c.fingerprint(hashes.SHA256()) != cert.fingerprint(hashes.SHA256())]
        current = cert
        for _depth in range(10):
            if is_self_signed(current):
                break
            parents = [c for c in pool if issued_by(current, c) and c not in path]
            if not parents:
                break
            current = parents[0]
            path.append(current)
        self.path = path
        self.chain = [c for c in path if not is_self_signed(c)]
        self.anchors = [c for c in path if is_self_signed(c)]
        if not self.anchors:
            self.anchors = [path[-1]]
            self.warnings.append(
                "%s: no self-signed root above '%s' in the bundle; '%s' becomes the trust anchor. "
                "Go (PD) accepts that, OpenSSL-based peers (TiKV) need the root: append the root to the CA file"
                % (label, name_str(cert.subject), name_str(path[-1].subject)))

    @property
    def self_signed(self):
        return not self.chain

    def problems(self, now=None):
        """Why this CA cannot sign leaves (empty list = usable)."""
        now = now or utcnow()
        found = []
        subject = name_str(self.cert.subject)
        bc = _ext(self.cert, x509.BasicConstraints)
        if bc is None or not bc.ca:
            found.append("certificate '%s' is not a CA (basicConstraints CA:TRUE missing)" % subject)
        ku = _ext(self.cert, x509.KeyUsage)
        if ku is not None and not ku.key_cert_sign:
            found.append("certificate '%s' may not sign certificates (keyUsage lacks keyCertSign)" % subject)
        for cert in self.path:
            if now < not_before(cert):
                found.append("certificate '%s' is not valid before %s" % (name_str(cert.subject),
                                                                          fmt_time(not_before(cert))))
            if now > not_after(cert):
                found.append("certificate '%s' expired on %s" % (name_str(cert.subject), fmt_time(not_after(cert))))
        if not same_public_key(self.cert.public_key(), self.key):
            found.append("the CA key does not match certificate '%s'" % subject)
        weak = key_strength_problem(self.key.public_key())
        if weak:
            found.append("CA " + weak)
        return found

    def chain_pem(self):
        return "".join(cert_to_pem(c) for c in self.chain)

    def anchors_pem(self):
        return "".join(cert_to_pem(c) for c in self.anchors)


def load_ca(cert_data, key_data, cert_label="CA certificate", key_label="CA key", passphrase=None):
    """A CA from a PEM bundle (signing CA + optional parents, any order) and its PEM key."""
    certs = load_certs(cert_data, cert_label)
    key = load_private_key(key_data, key_label, passphrase)
    der = public_key_der(key)
    signing = [c for c in certs if public_key_der(c.public_key()) == der]
    if not signing:
        raise X509Error("%s does not match any certificate in %s: give the key of the signing CA"
                        % (key_label, cert_label))
    return CA(signing[0], key, certs, label=cert_label)


def load_ca_files(cert_path, key_path, passphrase=None):
    return load_ca(read_file(cert_path, "CA certificate"), read_file(key_path, "CA key"),
                   cert_label=cert_path, key_label=key_path, passphrase=passphrase)


# --------------------------------------------------------------------------------------------
# leaves
# --------------------------------------------------------------------------------------------

def issue_cert(ca, public_key, cn, sans=(), usage="server_client", validity_days=DEFAULT_LEAF_DAYS, now=None):
    """Sign a leaf for `public_key`. Validity is clamped to the CA's not_after."""
    now = now or utcnow()
    ekus = wanted_eku(usage)
    weak = key_strength_problem(public_key)
    if weak:
        raise X509Error(weak)
    if not cn:
        raise X509Error("a common name (CN) is required")
    names = normalize_sans(sans)
    if usage == "server_client" and not names:
        raise X509Error("a server certificate needs at least one subject alternative name")
    end = min(now + datetime.timedelta(days=validity_days), not_after(ca.cert))
    oids = {"serverAuth": ExtendedKeyUsageOID.SERVER_AUTH, "clientAuth": ExtendedKeyUsageOID.CLIENT_AUTH}
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
               .issuer_name(ca.cert.subject).public_key(public_key)
               .serial_number(x509.random_serial_number())
               .not_valid_before(max(now - BACKDATE, not_before(ca.cert))).not_valid_after(end)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(_key_usage(digital_signature=True,
                                         key_encipherment=isinstance(public_key, rsa.RSAPublicKey)), critical=True)
               .add_extension(x509.ExtendedKeyUsage([oids[e] for e in ekus]), critical=False)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
               .add_extension(_aki_for(ca.cert), critical=False))
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(ca.key, signing_hash(ca.key))


class Decision(object):
    """What to do with one instance's certificate: 'issue' or 'reuse', with the reasons."""

    def __init__(self, action, reasons=None, warnings=None, current=None):
        self.action = action
        self.reasons = reasons or []
        self.warnings = warnings or []
        self.current = current

    @property
    def reissue(self):
        return self.action == "issue"

    @property
    def reason(self):
        return "; ".join(self.reasons) if self.reasons else "up to date"

    def __repr__(self):
        return "Decision(%s, %r)" % (self.action, self.reasons)


def decide(current, ca, cn, sans=(), public_key=None, usage="server_client", validity_days=DEFAULT_LEAF_DAYS,
           renew_before_days=DEFAULT_RENEW_BEFORE_DAYS, now=None, reissue_before=None):
    """Re-use or re-issue? Re-issue when the certificate is missing or unreadable, not signed by the
    current CA, made for another key (or key type), its CN/SANs/EKU differ from what is wanted, it
    is not yet valid, it expires within renew_before_days (unless a new one could not last
    longer because the CA itself expires first: then keep it and warn), or it was issued before
    `reissue_before` (an aware datetime; a rotation's selection: the certificates it replaces are
    exactly those older than its start, so a re-run after an interruption re-issues only the rest)."""
    now = now or utcnow()
    if current is None or (isinstance(current, (str, bytes)) and not _b(current).strip()):
        return Decision("issue", ["no certificate yet"])
    if isinstance(current, (str, bytes)):
        try:
            leaf = load_certs(current, "current certificate")[0]
        except X509Error as exc:
            return Decision("issue", ["current certificate unreadable (%s)" % exc])
    else:
        leaf = current
    reasons, warnings = [], []
    if leaf.issuer != ca.cert.subject:
        reasons.append("issued by '%s', the current CA is '%s'" % (name_str(leaf.issuer), name_str(ca.cert.subject)))
    elif not issued_by(leaf, ca.cert):
        reasons.append("not signed by the current CA key ('%s')" % name_str(ca.cert.subject))
    if public_key is not None and not same_public_key(leaf.public_key(), public_key):
        have, want = key_type_of(leaf.public_key()), key_type_of(public_key)
        if have != want:
            reasons.append("key type is %s, the host key is %s" % (have, want))
        else:
            reasons.append("certificate is for another key than the host's")
    have_cn = common_name(leaf.subject)
    if have_cn != cn:
        reasons.append("CN is %r, want %r" % (have_cn, cn))
    have_sans = set(san_keys_of(leaf))
    want_sans = set(san_key(g) for g in normalize_sans(sans))
    if have_sans != want_sans:
        parts = []
        missing = sorted(want_sans - have_sans)
        extra = sorted(have_sans - want_sans)
        if missing:
            parts.append("missing " + ", ".join(san_display(k) for k in missing))
        if extra:
            parts.append("unexpected " + ", ".join(san_display(k) for k in extra))
        reasons.append("SANs differ: " + "; ".join(parts))
    have_eku = eku_of(leaf)
    want_eku = wanted_eku(usage)
    if have_eku is None or sorted(have_eku) != sorted(want_eku):
        reasons.append("EKU is %s, want %s" % ("/".join(have_eku) if have_eku else "absent", "/".join(want_eku)))
    if now < not_before(leaf):
        reasons.append("not valid before %s" % fmt_time(not_before(leaf)))
    # Certificate times have whole seconds: one issued in the same second as reissue_before is new.
    if reissue_before is not None and issued_at(leaf) < reissue_before.replace(microsecond=0):
        reasons.append("issued %s, before reissue_before=%s" % (fmt_time(issued_at(leaf)), fmt_time(reissue_before)))
    remaining = not_after(leaf) - now
    if remaining < datetime.timedelta(days=renew_before_days):
        possible = min(now + datetime.timedelta(days=validity_days), not_after(ca.cert))
        if remaining.total_seconds() <= 0:
            reasons.append("expired on %s" % fmt_time(not_after(leaf)))
        elif possible > not_after(leaf) + datetime.timedelta(days=1):
            reasons.append("expires %s (%d days left, renew_before_days=%d)"
                           % (fmt_time(not_after(leaf)), days_left(leaf, now), renew_before_days))
        else:
            warnings.append("certificate expires %s and cannot be renewed for longer: the CA '%s' expires %s; "
                            "rotate the CA" % (fmt_time(not_after(leaf)), name_str(ca.cert.subject),
                                               fmt_time(not_after(ca.cert))))
    return Decision("issue" if reasons else "reuse", reasons, warnings, current=leaf)


def check_sign_params(validity_days, renew_before_days):
    if validity_days < 1:
        raise X509Error("validity_days must be at least 1 (got %d)" % validity_days)
    if renew_before_days < 0:
        raise X509Error("renew_before_days must not be negative (got %d)" % renew_before_days)
    if renew_before_days >= validity_days:
        raise X509Error("renew_before_days (%d) must be smaller than validity_days (%d), otherwise every run "
                        "re-issues every certificate" % (renew_before_days, validity_days))


def check_reissue_before(value, now=None):
    """`value` parsed (see parse_time); refused when it lies in the future: every certificate issued
    until then would be re-issued again on every run."""
    now = now or utcnow()
    when = parse_time(value, "reissue_before")
    if when is not None and when > now:
        raise X509Error("reissue_before %s is in the future (now %s); a rotation selects the certificates "
                        "issued before it started, so give a past time (for example the rotation's start)"
                        % (fmt_time(when), fmt_time(now)))
    return when


def sign_requests(ca, requests, validity_days=DEFAULT_LEAF_DAYS, renew_before_days=DEFAULT_RENEW_BEFORE_DAYS,
                  check_mode=False, now=None):
    """Decide and (unless check_mode) issue for many requests in one call.

    Each request: name (unique), cn, sans (list), usage (server_client|client), csr (PEM or None),
    current_cert (PEM or None), reissue_before (ISO 8601 time or None: re-issue if issued earlier).
    The CSR only contributes its public key (its signature is verified);
    CN and SANs come from the request. Raises X509Error listing every refused request by name.
    Returns {name: {changed, reason, cert, chain, not_after, serial, warnings}}; in check mode a
    certificate that would be issued is returned as None.
    """
    check_sign_params(validity_days, renew_before_days)
    now = now or utcnow()
    errors, prepared, seen = [], [], set()
    for index, req in enumerate(requests):
        name = req.get("name")
        if not name:
            errors.append("request #%d: 'name' is required" % (index + 1))
            continue
        if name in seen:
            errors.append("%s: duplicate request name" % name)
            continue
        seen.add(name)
        usage = req.get("usage") or "server_client"
        cn = req.get("cn")
        sans = req.get("sans") or []
        try:
            if not cn:
                raise X509Error("'cn' is required")
            wanted_eku(usage)
            normalize_sans(sans)
            reissue_before = check_reissue_before(req.get("reissue_before"), now)
            if usage == "server_client" and not sans:
                raise X509Error("'sans' is empty; a server certificate needs every address it is dialled at")
            public_key = None
            if req.get("csr"):
                csr = load_csr(req["csr"], "CSR")
                public_key = csr.public_key()
                weak = key_strength_problem(public_key)
                if weak:
                    raise X509Error("CSR " + weak)
            elif not check_mode:
                raise X509Error("'csr' is required (only check mode may run before the key exists)")
        except X509Error as exc:
            errors.append("%s: %s" % (name, exc))
            continue
        prepared.append((name, cn, sans, usage, public_key, req.get("current_cert"), reissue_before))
    if errors:
        raise X509Error("%d request(s) refused: %s" % (len(errors), "; ".join(errors)))

    results = {}
    chain_pem = ca.chain_pem()
    for name, cn, sans, usage, public_key, current, reissue_before in prepared:
        if public_key is None:  # check mode, key not created yet
            decision = Decision("issue", ["no host key yet (check mode)"])
        else:
            decision = decide(current, ca, cn, sans, public_key, usage, validity_days, renew_before_days, now,
                              reissue_before)
        entry = {"changed": decision.reissue, "reason": decision.reason, "warnings": decision.warnings}
        if not decision.reissue:
            leaf = decision.current
        elif check_mode:
            leaf = None
        else:
            leaf = issue_cert(ca, public_key, cn, sans, usage, validity_days, now)
        if leaf is None:
            entry.update(cert=None, chain=None, not_after=None, serial=None)
        else:
            pem = cert_to_pem(leaf)
            entry.update(cert=pem, chain=pem + chain_pem, not_after=fmt_time(not_after(leaf)),
                         serial="%X" % leaf.serial_number)
        results[name] = entry
    return results


# --------------------------------------------------------------------------------------------
# inspection and validation
# --------------------------------------------------------------------------------------------

def signature_algorithm(cert):
    oid = cert.signature_algorithm_oid
    return getattr(oid, "_name", None) or oid.dotted_string


def cert_facts(cert, now=None):
    """Everything an operator asks about a certificate, as plain data (no key material)."""
    now = now or utcnow()
    bc = _ext(cert, x509.BasicConstraints)
    return {
        "subject": name_str(cert.subject),
        "common_name": common_name(cert.subject),
        "issuer": name_str(cert.issuer),
        "serial": "%X" % cert.serial_number,
        "not_before": fmt_time(not_before(cert)),
        "not_after": fmt_time(not_after(cert)),
        "days_left": days_left(cert, now),
        "subject_alt_names": sans_of(cert),
        "extended_key_usages": eku_of(cert),
        "key_usages": key_usage_of(cert),
        "key_type": key_type_of(cert.public_key()),
        "signature_algorithm": signature_algorithm(cert),
        "is_ca": bool(bc is not None and bc.ca),
        "path_length": bc.path_length if bc is not None and bc.ca else None,
        "self_signed": is_self_signed(cert),
        "fingerprint_sha256": fingerprint(cert),
        "public_key_sha256": public_key_sha256(cert.public_key()),
    }


def cert_summary(cert):
    """Short description used in diffs."""
    if cert is None:
        return {}
    return {
        "subject": name_str(cert.subject),
        "issuer": name_str(cert.issuer),
        "serial": "%X" % cert.serial_number,
        "not_after": fmt_time(not_after(cert)),
        "subject_alt_names": sans_of(cert),
        "key_type": key_type_of(cert.public_key()),
        "fingerprint_sha256": fingerprint(cert),
    }


def build_chain(leaf, intermediates=(), anchors=(), now=None):
    """Path from `leaf` to one of `anchors` through `intermediates`.

    Returns (path, problems): path is the list of certificates from the leaf to the anchor used
    (or as far as it got), problems why it does not verify (empty = verified).
    """
    now = now or utcnow()
    anchor_fps = set(c.fingerprint(hashes.SHA256()) for c in anchors)
    pool = [c for c in intermediates if c.fingerprint(hashes.SHA256()) != leaf.fingerprint(hashes.SHA256())]
    path, problems = [leaf], []
    current = leaf
    for _depth in range(10):
        if current.fingerprint(hashes.SHA256()) in anchor_fps and current is not leaf:
            break
        parents = [a for a in anchors if issued_by(current, a)]
        if parents:
            path.append(parents[0])
            break
        parents = [c for c in pool if issued_by(current, c) and c not in path]
        if not parents:
            same_name = [a for a in list(anchors) + pool if a.subject == current.issuer]
            if same_name:
                problems.append("'%s' is not signed by the key of the CA named '%s' (another CA with the same "
                                "name?)" % (name_str(current.subject), name_str(current.issuer)))
            else:
                problems.append("not signed by the CA: '%s' was issued by '%s', which is neither in the CA file "
                                "nor an intermediate in the certificate file"
                                % (name_str(current.subject), name_str(current.issuer)))
            return path, problems
        current = parents[0]
        path.append(current)
    else:
        problems.append("chain longer than 10 certificates")
        return path, problems
    for cert in path[1:]:
        label = "CA" if cert.fingerprint(hashes.SHA256()) in anchor_fps else "intermediate"
        if not is_ca(cert):
            problems.append("%s '%s' is not a CA certificate (basicConstraints CA:TRUE missing)"
                            % (label, name_str(cert.subject)))
        if now > not_after(cert):
            problems.append("%s '%s' expired on %s" % (label, name_str(cert.subject), fmt_time(not_after(cert))))
        elif now < not_before(cert):
            problems.append("%s '%s' is not valid before %s"
                            % (label, name_str(cert.subject), fmt_time(not_before(cert))))
    return path, problems


def check_leaf(certs, key=None, key_label="private key", anchors=None, cn=None, sans=None,
               ekus=("serverAuth", "clientAuth"), min_valid_days=0, now=None):
    """Problems (human-readable strings) of a leaf certificate file against expectations.

    certs: the file's certificates (leaf first, then intermediates); key: its private key or None;
    anchors: trusted CA certificates or None (no chain check); sans: addresses that must be covered;
    ekus: extended key usages that must be allowed (a certificate without an EKU extension allows
    every usage); min_valid_days: days it must remain valid.
    Returns (problems, chain_path, chain_ok); chain_ok is None without anchors.
    """
    now = now or utcnow()
    leaf = certs[0]
    problems = []
    if now < not_before(leaf):
        problems.append("not yet valid: valid from %s (check the issuing date or the host clock)"
                        % fmt_time(not_before(leaf)))
    if now > not_after(leaf):
        problems.append("expired on %s" % fmt_time(not_after(leaf)))
    elif min_valid_days and not_after(leaf) - now < datetime.timedelta(days=min_valid_days):
        problems.append("expires %s: %d day(s) left, %d required" % (fmt_time(not_after(leaf)),
                                                                     days_left(leaf, now), min_valid_days))
    if key is not None and not same_public_key(leaf.public_key(), key):
        problems.append("the private key %s does not match the certificate (%s key %s, certificate key %s)"
                        % (key_label, key_type_of(key), public_key_sha256(key)[:16],
                           public_key_sha256(leaf.public_key())[:16]))
    weak = key_strength_problem(leaf.public_key())
    if weak:
        problems.append(weak)
    if cn is not None and common_name(leaf.subject) != cn:
        problems.append("CN is %r, expected %r" % (common_name(leaf.subject), cn))
    have_list = san_keys_of(leaf)
    have = set(have_list)
    for gname in normalize_sans(sans or []):
        want = san_key(gname)
        if want in have:
            continue
        if isinstance(gname, x509.IPAddress) and ("DNS:%s" % gname.value) in have:
            problems.append("SANs have %s only as a DNS name; Go and gRPC need it as an IP address SAN" % gname.value)
        else:
            problems.append("SANs lack %s (the certificate has: %s)"
                            % (san_display(want), ", ".join(san_display(k) for k in have_list) or "none"))
    have_eku = eku_of(leaf)
    if have_eku is not None:
        for eku in ekus or ():
            if eku not in have_eku:
                problems.append("extended key usage lacks %s (has: %s); TiKV and PD use one certificate as server "
                                "and as client, so it needs serverAuth and clientAuth"
                                % (eku, ", ".join(have_eku) or "none"))
    if is_ca(leaf):
        problems.append("basicConstraints says CA:TRUE; an instance certificate must not be a CA")
    path, chain_ok = [leaf], None
    if anchors is not None:
        path, chain_problems = build_chain(leaf, list(certs[1:]) + [a for a in anchors if not is_self_signed(a)],
                                           anchors, now)
        problems.extend(chain_problems)
        chain_ok = not chain_problems
    return problems, path, chain_ok


# --------------------------------------------------------------------------------------------
# files (used by modules; AnsibleModule passed in)
# --------------------------------------------------------------------------------------------

def write_file(module, path, data, mode):
    """Write `data` to `path` atomically with `mode`, never exposing it with a wider mode.

    The temporary file is created 0600 in the destination directory; the umask is 077 while
    AnsibleModule.atomic_move puts it in place (it chmods new files to 0666 & ~umask), then the
    wanted mode is applied.
    """
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".%s." % os.path.basename(path), dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(_b(data))
            handle.flush()
            os.fsync(handle.fileno())
        old_umask = os.umask(0o077)
        try:
            module.atomic_move(tmp, path)
        finally:
            os.umask(old_umask)
        os.chmod(path, mode)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)

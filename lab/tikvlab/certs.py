"""Throwaway certificates for the lab and its tests (`tikv-lab up --tls`, test fixtures).

Not the collection's PKI (that lives in plugins/module_utils); this exists so the lab can stand up a
TLS cluster on its own and tests can make deliberately wrong material (another CA, wrong CN, expired).
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
import os
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass
class Issued:
    cert_pem: bytes
    key_pem: bytes


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def make_ca(cn: str = "tikvlab-ca", days: int = 365) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = _dt.datetime.now(_dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _dt.timedelta(minutes=5)).not_valid_after(now + _dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return Issued(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def make_leaf(ca: Issued, cn: str, sans: list[str] | None = None, days: float = 30,
              not_before_days: float = 0, server: bool = True, client: bool = True) -> Issued:
    """A leaf signed by `ca`. SANs: IP strings become IP SANs, anything else a DNS SAN.
    `not_before_days` > 0 moves validity into the future; `days` < 0 makes an expired cert."""
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem)
    ca_key = serialization.load_pem_private_key(ca.key_pem, password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = _dt.datetime.now(_dt.timezone.utc) + _dt.timedelta(days=not_before_days)
    start = now - _dt.timedelta(minutes=5)
    end = now + _dt.timedelta(days=days)
    if end <= start:
        start = end - _dt.timedelta(days=1)
    alt: list[x509.GeneralName] = []
    for san in sans or ["127.0.0.1", "localhost"]:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(san)))
        except ValueError:
            alt.append(x509.DNSName(san))
    usages = ([ExtendedKeyUsageOID.SERVER_AUTH] if server else []) + ([ExtendedKeyUsageOID.CLIENT_AUTH] if client else [])
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
               .issuer_name(ca_cert.subject).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.SubjectAlternativeName(alt), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()),
                              critical=False))
    if usages:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    return Issued(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def write_tls_dir(directory: str, component: str, ca: Issued, leaf: Issued) -> dict[str, str]:
    """Write TiUP's file names: ca.crt, <component>.crt, <component>.pem (key 0600, dir 0700).
    The key goes first and the cert last: TiKV reloads on the cert's mtime."""
    os.makedirs(directory, mode=0o700, exist_ok=True)
    os.chmod(directory, 0o700)
    paths = {"ca": os.path.join(directory, "ca.crt"),
             "cert": os.path.join(directory, f"{component}.crt"),
             "key": os.path.join(directory, f"{component}.pem")}
    with open(paths["ca"], "wb") as fh:
        fh.write(ca.cert_pem)
    fd = os.open(paths["key"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(leaf.key_pem)
    os.chmod(paths["key"], 0o600)
    with open(paths["cert"], "wb") as fh:
        fh.write(leaf.cert_pem)
    return paths

"""tikv-server's flags and tikv.toml, merged and validated the way TiKV does it.

Flags override the file (TiKV's `overwrite_config_with_cmd_args`). Validation returns TiKV's own
texts, because operators and the collection grep for them:

* some but not all of ca/cert/key -> `ca, cert and private key should be all configured.`
* a path that cannot be opened    -> `failed to open <path> to load <ca key|cert key|private key>: Os {...}`

(tikv components/security/src/lib.rs `SecurityConfig::validate`; the caller prefixes
`invalid configuration: `). The files are checked before the all-or-nothing rule, as TiKV does.
"""

from __future__ import annotations

import argparse
import errno
import os
from dataclasses import dataclass, field
from typing import Any

from .common import strip_scheme, url_scheme

VERSION_ENV = "TIKVLAB_TIKV_VERSION"
DEFAULT_VERSION = "v8.5.0"
DEFAULT_ADDR = "127.0.0.1:20160"
DEFAULT_STATUS_ADDR = "127.0.0.1:20180"
ACCEPTED_PD_SCHEMES = ("", "http", "https")

# How Rust's `{:?}` of an io::Error names the kind, for the errors File::open can really meet.
RUST_IO_KINDS = {errno.ENOENT: "NotFound", errno.EACCES: "PermissionDenied", errno.EPERM: "PermissionDenied",
                 errno.ENOTDIR: "NotADirectory", errno.ELOOP: "FilesystemLoop"}


class ConfigError(Exception):
    """TiKV refuses to start; str() is the text TiKV prints after `invalid configuration: `."""


def release_version() -> str:
    """`8.5.0`: the lab's TiKV version (bin/lab.env sets it) without the leading v, as TiKV prints it."""
    return os.environ.get(VERSION_ENV, DEFAULT_VERSION).lstrip("v")


def rust_io_error(exc: OSError) -> str:
    """An OSError rendered as Rust's Debug of io::Error, e.g. `Os { code: 2, kind: NotFound, ... }`."""
    code = exc.errno or 0
    kind = RUST_IO_KINDS.get(code, "Uncategorized")
    return f'Os {{ code: {code}, kind: {kind}, message: "{os.strerror(code)}" }}'


def check_key_file(tag: str, path: str) -> None:
    """TiKV's `check_key_file`: an empty path is fine, otherwise the file must open.

    os.open rather than open(): like Rust's File::open it succeeds on a directory (TiKV only fails
    later, when it parses the content)."""
    if not path:
        return
    try:
        os.close(os.open(path, os.O_RDONLY))
    except OSError as exc:
        raise ConfigError(f"failed to open {path} to load {tag}: {rust_io_error(exc)}") from None


@dataclass(frozen=True)
class SecurityConfig:
    """`[security]` of tikv.toml. TLS is on iff ca, cert and key are all set."""

    ca_path: str = ""
    cert_path: str = ""
    key_path: str = ""
    cert_allowed_cn: tuple[str, ...] = ()
    redact_info_log: Any = False

    @property
    def tls(self) -> bool:
        return bool(self.ca_path and self.cert_path and self.key_path)

    def validate(self) -> None:
        check_key_file("ca key", self.ca_path)
        check_key_file("cert key", self.cert_path)
        check_key_file("private key", self.key_path)
        configured = [bool(self.ca_path), bool(self.cert_path), bool(self.key_path)]
        if any(configured) and not all(configured):
            raise ConfigError("ca, cert and private key should be all configured.")

    def as_json(self) -> dict[str, Any]:
        return {"ca-path": self.ca_path, "cert-path": self.cert_path, "key-path": self.key_path,
                "cert-allowed-cn": list(self.cert_allowed_cn), "redact-info-log": self.redact_info_log}


@dataclass(frozen=True)
class TikvConfig:
    """The merged configuration the stand-in runs with."""

    addr: str
    advertise_addr: str
    status_addr: str
    advertise_status_addr: str
    pd_endpoints: tuple[str, ...]
    data_dir: str
    log_file: str
    config_path: str
    security: SecurityConfig = field(default_factory=SecurityConfig)

    @property
    def deploy_dir(self) -> str:
        """Where `tikv-lab fault` drops its files: the parent of the directory holding --config
        (TiUP's `<deploy>/conf/tikv.toml`); without --config the parent of the log file's directory
        (`<deploy>/log/tikv.log`); without either the working directory (run_tikv.sh cd's there)."""
        for path in (self.config_path, self.log_file):
            if path:
                return os.path.dirname(os.path.dirname(os.path.abspath(path)))
        return os.getcwd()

    def as_json(self) -> dict[str, Any]:
        """What GET /config shows: TiKV's kebab-case names for the keys the lab knows."""
        return {"server": {"addr": self.addr, "advertise-addr": self.advertise_addr,
                           "status-addr": self.status_addr, "advertise-status-addr": self.advertise_status_addr},
                "pd": {"endpoints": list(self.pd_endpoints)},
                "storage": {"data-dir": self.data_dir},
                "log": {"file": {"filename": self.log_file}},
                "security": self.security.as_json()}


def parse_args(argv: list[str]) -> argparse.Namespace:
    """TiKV's flags (the long forms TiUP writes, and their short aliases)."""
    parser = argparse.ArgumentParser(prog="tikv-server", description="TiKV stand-in of the tikv-lab")
    parser.add_argument("-V", "--version", action="store_true", help="print version information and exit")
    parser.add_argument("-C", "--config", help="path of tikv.toml")
    parser.add_argument("-A", "--addr", help="listening address of the gRPC port")
    parser.add_argument("--advertise-addr", help="gRPC address advertised to PD and peers")
    parser.add_argument("--status-addr", help="listening address of the status port")
    parser.add_argument("--advertise-status-addr", help="status address advertised to PD")
    parser.add_argument("--pd", help="PD endpoints, comma separated")
    parser.add_argument("-s", "--data-dir", help="data directory (the store ident lives here)")
    parser.add_argument("-f", "--log-file", help="log file (stderr when unset)")
    return parser.parse_args(argv)


def log_file_of(args: argparse.Namespace, raw: dict[str, Any]) -> str:
    """--log-file, else [log.file] filename, else "" (log to stderr)."""
    return args.log_file or raw.get("log", {}).get("file", {}).get("filename", "") or ""


def pick(flag: str | None, table: dict[str, Any], key: str, default: str = "") -> str:
    """A flag wins over the file; the file over the default."""
    if flag:
        return flag
    value = table.get(key, "")
    return str(value) if value else default


def pd_endpoints(args: argparse.Namespace, raw: dict[str, Any]) -> tuple[str, ...]:
    """--pd or [pd] endpoints, `http://` / `https://` stripped (TLS is decided by ca-path, not scheme)."""
    if args.pd:
        listed = args.pd.split(",")
    else:
        listed = raw.get("pd", {}).get("endpoints", [])
        if isinstance(listed, str):
            listed = [listed]
    endpoints = [e.strip() for e in listed if str(e).strip()]
    if not endpoints:
        raise ConfigError("please specify pd.endpoints.")
    for endpoint in endpoints:
        if url_scheme(endpoint) not in ACCEPTED_PD_SCHEMES:
            raise ConfigError(f"pd.endpoints: {endpoint} has an unsupported scheme "
                              "(only http:// and https:// or no scheme are accepted)")
    return tuple(strip_scheme(e) for e in endpoints)


def security_config(raw: dict[str, Any]) -> SecurityConfig:
    table = raw.get("security", {})
    allowed = table.get("cert-allowed-cn", [])
    # serde refuses a bare string for Vec<String>; so does the stand-in.
    if not isinstance(allowed, list) or not all(isinstance(cn, str) for cn in allowed):
        raise ConfigError(f"security.cert-allowed-cn: invalid type: {allowed!r}, expected a sequence of strings")
    return SecurityConfig(ca_path=str(table.get("ca-path", "")), cert_path=str(table.get("cert-path", "")),
                          key_path=str(table.get("key-path", "")), cert_allowed_cn=tuple(allowed),
                          redact_info_log=table.get("redact-info-log", False))


def build_config(args: argparse.Namespace, raw: dict[str, Any]) -> TikvConfig:
    """Merge flags over tikv.toml and validate; raises ConfigError with TiKV's text."""
    server = raw.get("server", {})
    security = security_config(raw)
    security.validate()
    addr = pick(args.addr, server, "addr", DEFAULT_ADDR)
    status_addr = pick(args.status_addr, server, "status-addr", DEFAULT_STATUS_ADDR)
    return TikvConfig(
        addr=addr,
        advertise_addr=pick(args.advertise_addr, server, "advertise-addr", addr),
        status_addr=status_addr,
        advertise_status_addr=pick(args.advertise_status_addr, server, "advertise-status-addr", status_addr),
        pd_endpoints=pd_endpoints(args, raw),
        data_dir=pick(args.data_dir, raw.get("storage", {}), "data-dir", "./"),
        log_file=log_file_of(args, raw),
        config_path=args.config or "",
        security=security)

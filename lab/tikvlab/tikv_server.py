"""The tikv-server stand-in: `python -m tikvlab.tikv_server <tikv-server flags>` (PYTHONPATH=lab/).

Takes TiKV's flags and tikv.toml (tikv_config), serves the gRPC port (tikv_grpc) and the status
port (tikv_status), heartbeats to PD and keeps links to its peers (tikv_cluster), all with TiKV's TLS
behaviour. Logs in TiKV's format to --log-file (stderr without one).

Lab faults, read from the instance's deploy dir (`TikvConfig.deploy_dir`: the parent of the
directory holding --config, i.e. `<deploy>/conf/tikv.toml` -> `<deploy>`; else the parent of the
log file's directory; else the working directory):
* `lab-fault-crash-on-tls`: exit 1 at start when TLS is configured (the log says so);
* `lab-fault-slow-start`: its content is a number of seconds to wait before binding any port;
* `lab-fault-pin-leaders`: checked on every heartbeat; heartbeats say `"pinned": true` while it exists.

SIGTERM / SIGINT: stop the loops and both servers, exit 0.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import tomllib
from types import FrameType

from .common import Logger, load_toml
from .tikv_cluster import Heartbeater, PeerLinks, StoreState, load_store_id
from .tikv_config import ConfigError, TikvConfig, build_config, log_file_of, parse_args, release_version
from .tikv_grpc import GrpcStartError, start_grpc_server
from .tikv_status import start_status_server

FAULT_CRASH_ON_TLS = "lab-fault-crash-on-tls"
FAULT_SLOW_START = "lab-fault-slow-start"
FAULT_PIN_LEADERS = "lab-fault-pin-leaders"
LAB_GIT_HASH = "0" * 40  # no real build behind the stand-in; zeros say so plainly
STOP_GRACE = 1.0
LOOP_JOIN_TIMEOUT = 3.0
SIGNAL_POLL = 0.2


def print_version() -> None:
    """`tikv-server -V`, shaped like TiKV's (the lines tools parse come first)."""
    print("TiKV")
    print(f"Release Version:   {release_version()}")
    print("Edition:           Community")
    print(f"Git Commit Hash:   {LAB_GIT_HASH}")
    print("Git Commit Branch: tikv-lab")
    print("Profile:           lab stand-in")


def open_logger(log_file: str) -> Logger:
    if log_file:
        os.makedirs(os.path.dirname(os.path.abspath(log_file)), exist_ok=True)
    return Logger(log_file or None, "tikv")


def refuse(logger: Logger, log_file: str, text: str) -> int:
    """TiKV's fatal!: the reason in the log and on stderr, exit status 1."""
    logger.fatal(text)
    if log_file:  # without a log file the logger already wrote to stderr
        print(text, file=sys.stderr, flush=True)
    return 1


class Faults:
    """The lab's fault files of this instance, read when they matter (never cached)."""

    def __init__(self, deploy_dir: str):
        self.deploy_dir = deploy_dir

    def path(self, name: str) -> str:
        return os.path.join(self.deploy_dir, name)

    def crash_on_tls(self) -> bool:
        return os.path.exists(self.path(FAULT_CRASH_ON_TLS))

    def pin_leaders(self) -> bool:
        return os.path.exists(self.path(FAULT_PIN_LEADERS))

    def slow_start_seconds(self, logger: Logger) -> float:
        try:
            with open(self.path(FAULT_SLOW_START), encoding="utf-8") as fh:
                text = fh.read().strip()
        except FileNotFoundError:
            return 0.0
        try:
            return max(0.0, float(text))
        except ValueError:
            logger.warn("[lab] ignoring fault file without a number of seconds", path=self.path(FAULT_SLOW_START),
                        content=text)
            return 0.0


class StopSignal:
    """SIGTERM/SIGINT set an event the main thread waits on (the handler itself does nothing else)."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.received = ""
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.received = signal.Signals(signum).name
        self.event.set()

    def wait(self, seconds: float | None = None) -> bool:
        """True once a stop was requested, False when `seconds` passed first. Waits in short steps so
        the main thread regularly returns to the interpreter, where signal handlers run."""
        waited = 0.0
        while not self.event.wait(SIGNAL_POLL):
            waited += SIGNAL_POLL
            if seconds is not None and waited >= seconds:
                return False
        return True


def start_loops(config: TikvConfig, state: StoreState, logger: Logger, faults: Faults,
                stop: threading.Event) -> list[threading.Thread]:
    heartbeater = Heartbeater(config, state, logger, faults.pin_leaders, release_version())
    links = PeerLinks(config.security, state, logger)
    threads = [threading.Thread(target=heartbeater.run, args=(stop,), name="pd-heartbeat", daemon=True),
               threading.Thread(target=links.run, args=(stop,), name="peer-links", daemon=True)]
    for thread in threads:
        thread.start()
    return threads


def serve(config: TikvConfig, logger: Logger) -> int:
    """Everything after a valid configuration: faults, ports, loops, then wait for a stop signal."""
    stop = StopSignal()
    faults = Faults(config.deploy_dir)
    tls = config.security.tls
    if tls and faults.crash_on_tls():
        return refuse(logger, config.log_file,
                      f"[lab] fault {FAULT_CRASH_ON_TLS} is set and TLS is configured: exiting")
    delay = faults.slow_start_seconds(logger)
    if delay:
        logger.warn(f"[lab] fault {FAULT_SLOW_START}: waiting before serving", seconds=delay)
        if stop.wait(delay):
            return 0
    try:
        os.makedirs(config.data_dir, exist_ok=True)
        state = StoreState(load_store_id(config.data_dir), config.advertise_addr)
    except (OSError, ValueError) as exc:
        return refuse(logger, config.log_file, f"failed to load store ident: {exc}")
    try:
        grpc_server = start_grpc_server(config.addr, config.security, logger)
    except GrpcStartError as exc:
        return refuse(logger, config.log_file, f"failed to start gRPC server: {exc}")
    try:
        status_server = start_status_server(config.status_addr, config.security, logger, state.metrics_text,
                                            state.status, config.as_json)
    except OSError as exc:
        grpc_server.stop(0)
        return refuse(logger, config.log_file, f"failed to start status server: {exc}")
    logger.info("TiKV is ready to serve", version=release_version(), tls="on" if tls else "off",
                addr=config.addr, status_addr=config.status_addr, advertise_addr=config.advertise_addr,
                pd_endpoints=",".join(config.pd_endpoints), store_id=state.store_id)
    threads = start_loops(config, state, logger, faults, stop.event)
    stop.wait()
    logger.info("stopping TiKV", signal=stop.received)
    status_server.shutdown()
    status_server.server_close()
    grpc_server.stop(STOP_GRACE).wait()
    for thread in threads:
        thread.join(LOOP_JOIN_TIMEOUT)
    logger.info("TiKV stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.version:
        print_version()
        return 0
    try:
        raw = load_toml(args.config)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        return refuse(open_logger(args.log_file or ""), args.log_file or "",
                      f"invalid configuration file {args.config}: {exc}")
    log_file = log_file_of(args, raw)
    logger = open_logger(log_file)
    logger.info("Welcome to TiKV", release_version=release_version(), git_commit_hash=LAB_GIT_HASH)
    try:
        config = build_config(args, raw)
    except ConfigError as exc:
        return refuse(logger, log_file, f"invalid configuration: {exc}")
    logger.info("using config", config=config.as_json())
    return serve(config, logger)


if __name__ == "__main__":
    sys.exit(main())

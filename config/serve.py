"""`python -m config.serve`: several daphne processes on one port, so that one machine uses every core.

One daphne process is one Python interpreter: it relays on one core however many the
machine has (a Heroku Performance dyno, a VM). This launcher opens the listening port
itself, once per process, with SO_REUSEPORT: every process gets a socket of its own on
the same address, and the kernel hashes each new connection to one of them, so a burst
of reconnecting tabs spreads evenly over the processes (with one socket shared by all,
epoll wakes the waiting processes last-in first-out, and one process can end up
accepting most of a burst). Each daphne adopts its socket with `--fd`; the launcher
keeps no copy, so a connection is never queued on a socket nobody accepts from.

The processes share nothing but the database, Redis and the store: more than one needs
the Redis channel layer (the in-memory one cannot cross processes), and the launcher
refuses to start without it. A process that dies is started again with a new socket
(the other processes keep their connections); one that keeps dying stops the launcher,
so that the platform (Heroku, systemd) restarts the whole thing. SIGTERM or SIGINT
stops every process (each gets SIGTERM, then SIGKILL after `--grace` seconds), and a
child is sent SIGTERM by the kernel if the launcher itself is killed.

    python -m config.serve --host 0.0.0.0 --port "$PORT"     # WEB_CONCURRENCY processes
    python -m config.serve --port 8000 --processes 2 -- -v 1  # after --: daphne's own options
"""
from __future__ import annotations

import argparse
import ctypes
import ipaddress
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass, field

logger = logging.getLogger("config.serve")

APPLICATION = "config.asgi:application"
BACKLOG = 2048  # a deploy reconnects thousands of tabs at once; the kernel caps it at somaxconn
RESTARTS_ALLOWED = 5  # a process that dies more often than this ...
RESTART_WINDOW = 60.0  # ... within this many seconds stops the launcher
PR_SET_PDEATHSIG = 1


class ServeError(Exception):
    """A configuration the launcher refuses, with what to change."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m config.serve", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1", help="IPv4 address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    parser.add_argument("--processes", type=int, default=None,
                        help="daphne processes (default: the WEB_CONCURRENCY setting)")
    parser.add_argument("--grace", type=float, default=20.0,
                        help="seconds the processes get to stop after SIGTERM before SIGKILL (default 20)")
    parser.add_argument("daphne_args", nargs=argparse.REMAINDER, help="after --: options passed to every daphne")
    return parser


def check_layer(processes: int, layer_backend: str) -> None:
    """Refuse several processes on a channel layer that cannot cross processes."""
    if processes < 1:
        raise ServeError(f"the number of processes must be 1 or more, not {processes}")
    if processes > 1 and "InMemory" in layer_backend:
        raise ServeError(
            f"{processes} processes need REDIS_URL: the in-memory channel layer lives inside one process, so a "
            "reply written by one process would never reach the tabs connected to another. Set REDIS_URL, or "
            "WEB_CONCURRENCY=1.")


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket bound to (host, port) with SO_REUSEPORT, listening, inheritable by a child."""
    try:
        if ipaddress.ip_address(host).version != 4:
            raise ServeError(f"--host {host}: daphne --fd adopts IPv4 sockets only; use an IPv4 address")
    except ValueError:
        raise ServeError(f"--host {host!r} is not an IP address") from None
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(BACKLOG)
    except OSError as error:
        sock.close()
        raise ServeError(f"cannot listen on {host}:{port}: {error}") from None
    sock.set_inheritable(True)
    return sock


def _parent_death_signal():
    """A function for the child to run before exec, so that the kernel sends it SIGTERM when the
    launcher dies (even by SIGKILL); None where prctl does not exist (not Linux)."""
    if sys.platform != "linux":
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before fork, not in the child
    except (OSError, AttributeError):
        return None
    return lambda: prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


@dataclass
class Worker:
    index: int
    process: subprocess.Popen
    started: float = field(default_factory=time.monotonic)


class Launcher:
    """Starts, watches and stops the daphne processes."""

    def __init__(self, host: str, port: int, processes: int, daphne_args: list[str], grace: float) -> None:
        self.host, self.port, self.processes = host, port, processes
        self.daphne_args = daphne_args
        self.grace = grace
        self.workers: dict[int, Worker] = {}  # by pid
        self.deaths: deque[float] = deque()
        self.stopping = False
        self._before_exec = _parent_death_signal()

    def spawn(self, index: int) -> Worker:
        sock = listening_socket(self.host, self.port)
        try:
            command = [sys.executable, "-m", "daphne", "--fd", str(sock.fileno()), *self.daphne_args, APPLICATION]
            process = subprocess.Popen(command, pass_fds=(sock.fileno(),),
                                       preexec_fn=self._before_exec)
        finally:
            sock.close()  # the child has its copy; one left here would queue connections nobody accepts
        worker = Worker(index, process)
        self.workers[process.pid] = worker
        logger.info("daphne process started", extra={"worker": index, "pid": process.pid,
                                                      "address": f"{self.host}:{self.port}"})
        return worker

    def run(self) -> int:
        """Start every process, restart the ones that die, return the exit status."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        try:
            for index in range(self.processes):
                self.spawn(index)
            while True:
                pid, status = os.wait()
                worker = self.workers.pop(pid, None)
                if worker is None:
                    continue
                code = os.waitstatus_to_exitcode(status)
                worker.process.returncode = code
                logger.warning("daphne process exited", extra={"worker": worker.index, "pid": pid, "code": code})
                if not self._may_restart():
                    logger.error("daphne processes keep exiting; stopping", extra={
                        "exits": len(self.deaths), "window_seconds": RESTART_WINDOW})
                    self.stop()
                    return 1
                self.spawn(worker.index)
        except _Stop:
            self.stop()
            return 0
        except BaseException:  # a socket that cannot be opened, a bug: no process is left behind
            self.stop()
            raise

    def _may_restart(self) -> bool:
        now = time.monotonic()
        self.deaths.append(now)
        while self.deaths and now - self.deaths[0] > RESTART_WINDOW:
            self.deaths.popleft()
        return len(self.deaths) <= RESTARTS_ALLOWED

    def _on_signal(self, signum: int, frame) -> None:
        if not self.stopping:
            self.stopping = True
            raise _Stop(signum)

    def stop(self) -> None:
        """SIGTERM to every process, SIGKILL to those still there after the grace period."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_IGN)
        workers = list(self.workers.values())
        for worker in workers:
            if worker.process.poll() is None:
                worker.process.terminate()
        deadline = time.monotonic() + self.grace
        for worker in workers:
            try:
                worker.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                logger.warning("daphne process did not stop in time; killing it",
                               extra={"worker": worker.index, "pid": worker.process.pid})
                worker.process.kill()
                worker.process.wait()
        self.workers.clear()
        logger.info("every daphne process stopped", extra={"workers": len(workers)})


class _Stop(Exception):
    """Raised by the signal handler to leave the wait loop."""


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import logging.config

    from django.conf import settings

    args = build_parser().parse_args(argv)
    daphne_args = args.daphne_args[1:] if args.daphne_args[:1] == ["--"] else args.daphne_args
    logging.config.dictConfig(settings.LOGGING)
    processes = args.processes if args.processes is not None else settings.WEB_CONCURRENCY
    try:
        check_layer(processes, settings.CHANNEL_LAYERS["default"]["BACKEND"])
        return Launcher(args.host, args.port, processes, daphne_args, args.grace).run()
    except ServeError as error:
        print(f"config.serve: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

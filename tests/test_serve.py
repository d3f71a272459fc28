"""`python -m config.serve`: several daphne processes on one port, over the real Redis.

Which process holds a socket is read from /proc: the server side of the TCP connection
(the launcher's port, the client's port) is a socket inode that exactly one daphne
process has among its open files.
"""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from chat.client.tab import Tab
from tests.fake_model_server import FakeModelServer
from tests.live_server import REPO, LiveServer, free_port, server_env, stop_process
from tests.redis_layer import REDIS_URL, require_redis

pytestmark = pytest.mark.slow

STARTED = re.compile(r"daphne process started .*\bpid=(\d+)")


class Launcher:
    """The launcher as a process, with its log and the pids of the daphne processes it started."""

    def __init__(self, env: dict[str, str], log_path: Path, processes: int = 2) -> None:
        self.env, self.log_path, self.processes = env, log_path, processes
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    def start(self) -> Launcher:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "config.serve", "--host", "127.0.0.1", "--port", str(self.port),
                 "--processes", str(self.processes), "--grace", "10"],
                cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        self.wait_for_pids(self.processes)
        self.wait_until_serving(self.processes)
        return self

    def wait_until_serving(self, count: int, timeout: float = 60) -> None:
        """Until `count` daphne processes have started serving (their sockets listen from the launcher's
        start, but a connection hashed to a process still importing Django waits for it)."""
        deadline = time.monotonic() + timeout
        while self.log().count("Listening on TCP address") < count:
            assert self.process.poll() is None, f"the launcher exited:\n{self.log()}"
            assert time.monotonic() < deadline, f"{count} daphne processes did not serve in {timeout} s:\n{self.log()}"
            time.sleep(0.1)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def pids(self) -> list[int]:
        """Pids of the daphne processes alive now, in the order they were started."""
        return [pid for pid in map(int, STARTED.findall(self.log())) if alive(pid)]

    def wait_for_pids(self, count: int, timeout: float = 30) -> list[int]:
        deadline = time.monotonic() + timeout
        while len(self.pids()) < count:
            assert self.process.poll() is None, f"the launcher exited with {self.process.returncode}:\n{self.log()}"
            assert time.monotonic() < deadline, f"{count} daphne processes did not start:\n{self.log()}"
            time.sleep(0.1)
        return self.pids()

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/chat/"

    def stop(self) -> None:
        stop_process(self.process, timeout=20)


def alive(pid: int) -> bool:
    """Running, and not a zombie waiting to be reaped."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def _tcp_rows() -> list[tuple[int, int, str, str]]:
    """(local port, remote port, state, inode) of every IPv4 TCP socket."""
    rows = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        rows.append((int(fields[1].split(":")[1], 16), int(fields[2].split(":")[1], 16), fields[3], fields[9]))
    return rows


def listening(pid: int, port: int) -> bool:
    inodes = {inode for local, _, state, inode in _tcp_rows() if local == port and state == "0A"}  # 0A: LISTEN
    return bool(inodes & _socket_inodes(pid))


def holder(tab: Tab, server_port: int, pids: list[int]) -> int:
    """The pid of the daphne process holding the server side of this tab's connection."""
    client_port = tab.ws.transport.get_extra_info("sockname")[1]
    inodes = {inode for local, remote, _, inode in _tcp_rows() if local == server_port and remote == client_port}
    owners = [pid for pid in pids if inodes & _socket_inodes(pid)]
    assert len(owners) == 1, f"connection from port {client_port} held by {owners} (daphne pids {pids})"
    return owners[0]


@pytest.fixture
def model_server():
    with FakeModelServer() as server:
        yield server


@pytest.fixture
def setup(tmp_path, model_server):
    """A migrated database, a user with a token, and the environment of the launcher."""
    require_redis()
    env = server_env(tmp_path, model_server.url, REDIS_URL=REDIS_URL, REDIS_PREFIX=f"serve-{uuid.uuid4().hex[:8]}")
    manager = LiveServer(env, log_path=tmp_path / "manage.log")
    manager.manage("migrate", "--noinput")
    token = manager.create_token("alice")
    return manager.env, token


@pytest.fixture
def launcher(setup, tmp_path):
    env, token = setup
    served = Launcher(env, tmp_path / "serve.log").start()
    yield served, token
    served.stop()


async def test_sockets_of_one_port_land_on_both_processes(launcher):
    served, token = launcher
    pids = served.pids()
    assert len(pids) == 2
    tabs = [await Tab.open(served.ws_url, token) for _ in range(20)]
    holders = [holder(tab, served.port, pids) for tab in tabs]
    for tab in tabs:
        await tab.close()
    assert set(holders) == set(pids), f"20 sockets went to {holders}"


async def test_reply_sent_on_one_process_streams_to_a_tab_on_the_other(launcher):
    served, token = launcher
    pids = served.pids()
    by_process: dict[int, Tab] = {}
    extra = []
    for _ in range(40):
        tab = await Tab.open(served.ws_url, token)
        pid = holder(tab, served.port, pids)
        if pid in by_process:
            extra.append(tab)
        else:
            by_process[pid] = tab
        if len(by_process) == 2:
            break
    for tab in extra:
        await tab.close()
    assert len(by_process) == 2, "40 sockets all went to one process"
    sender, watcher = by_process[pids[0]], by_process[pids[1]]
    await sender.send("message.send", conversation=None, content="across the port #tokens=30 #delay=0.03")
    created = await watcher.receive("conversation.created")
    await sender.receive("reply.delta", seq=0)
    await watcher.send("conversation.open", conversation=created["conversation"]["id"])
    state = await watcher.receive("conversation.state")
    assert state["generating"] is not None, "the reply was still being written"
    text, final = await watcher.follow_reply(state["generating"])
    expected = " ".join(f"w{i}" for i in range(30))
    assert final["type"] == "reply.completed"
    assert text == final["message"]["content"] == expected
    await sender.close()
    await watcher.close()


async def test_sigterm_to_the_launcher_stops_every_process(launcher):
    served, token = launcher
    pids = served.pids()
    tab = await Tab.open(served.ws_url, token)
    served.process.send_signal(signal.SIGTERM)
    assert served.process.wait(30) == 0, served.log()
    assert not [pid for pid in pids if alive(pid)], f"still running after the launcher exited: {served.log()}"
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", served.port), timeout=2).close()
    await tab.ws.wait_closed()


async def test_a_process_that_dies_is_replaced_and_the_port_keeps_serving(launcher):
    served, token = launcher
    first, second = served.pids()
    os.kill(first, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while len(STARTED.findall(served.log())) < 3:  # the launcher's line for the replacement
        assert time.monotonic() < deadline, f"no process was started in place of the killed one:\n{served.log()}"
        time.sleep(0.1)
    pids = served.wait_for_pids(2)
    assert first not in pids and second in pids, served.log()
    replacement = next(pid for pid in pids if pid != second)
    assert listening(replacement, served.port), "the new process has no socket on the port"
    served.wait_until_serving(3)
    tabs = [await Tab.open(served.ws_url, token) for _ in range(20)]
    holders = {holder(tab, served.port, pids) for tab in tabs}
    for tab in tabs:
        await tab.close()
    assert holders == {replacement, second}


def test_several_processes_without_redis_are_refused(setup, tmp_path):
    env, _ = setup
    done = subprocess.run([sys.executable, "-m", "config.serve", "--port", str(free_port()), "--processes", "2"],
                          cwd=REPO, env={**env, "REDIS_URL": ""}, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "2 processes need REDIS_URL" in done.stderr


@pytest.mark.parametrize(("variables", "expected"), [
    ({"WEB_CONCURRENCY": "3"}, 3),
    ({"WEB_CONCURRENCY": "5", "WEB_CONCURRENCY_SET_BY": "heroku/python"}, 1),  # the buildpack's guess
    ({}, 1),
])
def test_web_concurrency_counts_only_when_the_operator_set_it(variables, expected):
    env = {k: v for k, v in os.environ.items() if not k.startswith("WEB_CONCURRENCY")}
    done = subprocess.run([sys.executable, "-c", "from django.conf import settings; print(settings.WEB_CONCURRENCY)"],
                          cwd=REPO, env={**env, "DJANGO_SETTINGS_MODULE": "config.settings", **variables},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(expected)

"""A real daphne process serving the project on a loopback port, for end-to-end tests.

Everything the server needs comes from its environment, so a test builds one env
(database, transcript folder, model server, maybe Redis) and runs both the server
and its management commands with it: the test process's own Django test database
is never the server's.

    server = LiveServer({"DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}", ...})
    server.manage("migrate", "--noinput")
    token = server.create_token("alice")
    server.start()          # returns when the port accepts connections
    ... server.ws_url ...
    server.stop()

Two processes over Redis: two LiveServer objects with the same env (REDIS_URL
included) and their own ports. The server's output goes to `log_path` (a temporary
file unless given; pass one under tmp_path) and `.log()` reads it, e.g. to show in
an assertion message.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def server_env(tmp_path: Path, model_url: str, **extra: str) -> dict[str, str]:
    """The usual environment: SQLite and transcripts under `tmp_path`, the scripted model."""
    return {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "CHAT_DATA_DIR": str(tmp_path / "conversations"),
        "HF_BASE_URL": model_url,
        "HF_MODELS": "test/echo",
        "HF_TOKEN": "",
        "AWS_STORAGE_BUCKET_NAME": "",
        "REDIS_URL": "",
        "SIGNUP_LIMIT_PER_ADDRESS": "0",  # every browser test signs up from 127.0.0.1
        "HF_NEW_ACCOUNT_DAYS": "0",  # and its fresh users get the full daily budget
        **extra,
    }


def started_with_alice(folder: Path, model_url: str, **extra: str) -> tuple[LiveServer, str]:
    """A migrated and started server on the usual environment under `folder`, and the bearer
    token of its user "alice"; the caller stops it."""
    server = LiveServer(server_env(folder, model_url, **extra), log_path=folder / "daphne.log")
    server.manage("migrate", "--noinput")
    token = server.create_token("alice")
    server.start()
    return server, token


def stop_process(process: subprocess.Popen | None, timeout: float = 10) -> None:
    """Terminate, then kill if it will not go; nothing if it is not running."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout)


class LiveServer:
    def __init__(self, env: dict[str, str], port: int | None = None, host: str = "127.0.0.1",
                 log_path: Path | None = None):
        self.env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings", "PYTHONUNBUFFERED": "1", **env}
        self.host = host
        self.port = port or free_port()
        self.process: subprocess.Popen | None = None
        if log_path is None:
            handle, name = tempfile.mkstemp(prefix=f"daphne-{self.port}-", suffix=".log")
            os.close(handle)
            log_path = Path(name)
        self.log_path = Path(log_path)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}/ws/chat/"

    def manage(self, *args: str, timeout: float = 120) -> str:
        """Run `manage.py <args>` with the server's environment; return its stdout."""
        done = subprocess.run([sys.executable, "manage.py", *args], cwd=REPO, env=self.env,
                              capture_output=True, text=True, timeout=timeout)
        if done.returncode:
            raise RuntimeError(f"manage.py {' '.join(args)} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
        return done.stdout

    def create_token(self, username: str) -> str:
        """A user (created if missing) and a fresh API token for it."""
        self.manage("shell", "-c", "from django.contrib.auth import get_user_model; "
                    f"get_user_model().objects.get_or_create(username={username!r})")
        return self.manage("create_token", username).strip()

    def start(self, timeout: float = 30) -> LiveServer:
        with open(self.log_path, "ab") as log:  # append mode: restarts add to the same log
            self.process = subprocess.Popen(
                [sys.executable, "-m", "daphne", "-b", self.host, "-p", str(self.port), "config.asgi:application"],
                cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"daphne exited with {self.process.returncode}:\n{self.log()}")
            try:
                socket.create_connection((self.host, self.port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"daphne did not listen on port {self.port} within {timeout} s:\n{self.log()}")

    def stop(self, timeout: float = 10) -> None:
        stop_process(self.process, timeout)

    def log(self) -> str:
        """What the server printed so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def __enter__(self) -> LiveServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

"""The servers a benchmark starts and stops itself, and what /proc says about them.

daphne runs through the test suite's `tests.live_server.LiveServer` (one launcher for
tests and benchmarks); the scripted model and moto's S3 run as their own processes,
so that no server shares an interpreter (or a GIL) with the clients measuring it.
Every server binds to 127.0.0.1 on a free port.
"""
from __future__ import annotations

import json
import os
import re
import resource
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.live_server import REPO, LiveServer, free_port, stop_process

FAKE_MODEL = "bench/fake"
REDIS_URL = "redis://127.0.0.1:6379/0"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def raise_fd_limit() -> int:
    """Lift this process's open-file limit to the hard limit (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def wait_for_port(port: int, process: subprocess.Popen, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on port {port} within {timeout} s")


class _Process:
    """A helper process on a loopback port, logging to a file in the run's folder."""

    what = "process"

    def __init__(self, workdir: Path, name: str) -> None:
        self.port = free_port()
        self.log_path = workdir / f"{name}.log"
        self.process: subprocess.Popen | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self, timeout: float = 30) -> _Process:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.command(), cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            wait_for_port(self.port, self.process, timeout, self.what)
        except RuntimeError as error:
            self.stop()
            raise RuntimeError(f"{error}:\n{self.log_path.read_text(errors='replace')[-2000:]}") from None
        return self

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self, timeout: float = 10) -> None:
        stop_process(self.process, timeout)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()


class ModelServer(_Process):
    """tests/fake_model_server.py as a process: `#tokens=N #delay=s #stamp #markdown` replies."""

    what = "the scripted model server"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "tests.fake_model_server", "--host", "127.0.0.1", "--port", str(self.port)]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"


class MotoServer(_Process):
    """moto's S3 (ThreadedMotoServer) in a process of its own, with one bucket created."""

    what = "moto"
    bucket = "bench-chat"

    def command(self) -> list[str]:
        code = ("import sys, threading; from moto.server import ThreadedMotoServer; "
                f"s = ThreadedMotoServer(ip_address='127.0.0.1', port={self.port}, verbose=False); s.start(); "
                "sys.stdout.write('ready\\n'); sys.stdout.flush(); threading.Event().wait()")
        return [sys.executable, "-c", code]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        return {"AWS_STORAGE_BUCKET_NAME": self.bucket, "AWS_S3_ENDPOINT_URL": self.url,
                "AWS_S3_REGION_NAME": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1",
                "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"}

    def start(self, timeout: float = 30) -> MotoServer:
        super().start(timeout)
        import boto3

        boto3.session.Session().client("s3", endpoint_url=self.url, region_name="us-east-1",
                                       aws_access_key_id="bench", aws_secret_access_key="bench"
                                       ).create_bucket(Bucket=self.bucket)
        return self


def server_env(workdir: Path, model_url: str, **extra: str) -> dict[str, str]:
    """A production-like environment (DEBUG off) under the run's own folder.

    The per-user rate limits are lifted: the benchmarks measure the relay, not the
    limiter. Replies may be long (the 5,000-token case)."""
    return {
        "DEBUG": "0",
        "SECRET_KEY": "bench-" + secrets.token_urlsafe(48),  # DEBUG=0 refuses a key under 50 characters
        "DATABASE_URL": f"sqlite:///{workdir / 'db.sqlite3'}",
        "CHAT_DATA_DIR": str(workdir / "conversations"),
        "HF_BASE_URL": model_url,
        "HF_MODELS": FAKE_MODEL,
        "HF_TOKEN": "",
        "AWS_STORAGE_BUCKET_NAME": "",
        "REDIS_URL": "",
        "CHAT_RATE_LIMIT_MESSAGES": "1000000",
        "CHAT_RATE_LIMIT_FRAMES": "1000000",
        "CHAT_MAX_REPLY_TOKENS": "8000",
        "HF_NEW_ACCOUNT_DAYS": "0",  # its fresh users get the full daily budget
        # Budgets far beyond any run (still counted, as in production): the defaults, 100
        # requests per user and 1,000 per site a day, refused half of the one-user,
        # 200-tab scenario and the later scenarios of a run.
        "HF_DAILY_REQUESTS_PER_USER": "1000000000",
        "HF_DAILY_REQUESTS_SITE": "1000000000",
        **extra,
    }


TEMPLATE_DB = "template.sqlite3"


def migrations_fingerprint() -> str:
    """Names and times of every migration file: a template made before a change is not used."""
    files = sorted(REPO.glob("*/migrations/*.py"))
    return ";".join(f"{f.relative_to(REPO)}:{f.stat().st_mtime_ns}" for f in files)


def migrated_template(run_dir: Path) -> Path | None:
    """Migrate one SQLite database per run; sections copy it instead of migrating again."""
    path = run_dir / TEMPLATE_DB
    fingerprint = migrations_fingerprint()
    done = subprocess.run([sys.executable, "manage.py", "migrate", "--noinput"], cwd=REPO, capture_output=True,
                          env={**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings",
                               "DATABASE_URL": f"sqlite:///{path}"}, timeout=120)
    leftovers = [p for p in (path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")) if p.exists()]
    if done.returncode or leftovers:
        path.unlink(missing_ok=True)
        return None
    path.with_suffix(".migrations").write_text(fingerprint)
    return path


def _usable_template(workdir: Path) -> Path | None:
    for folder in (workdir, *workdir.parents):
        template = folder / TEMPLATE_DB
        if template.exists():
            stamp = template.with_suffix(".migrations")
            return template if stamp.exists() and stamp.read_text() == migrations_fingerprint() else None
    return None


def daphne(env: dict[str, str], workdir: Path, name: str = "daphne", migrate: bool = True) -> LiveServer:
    """A started daphne with `env` (its SQLite database copied from the run's template, or migrated)."""
    server = LiveServer(env, log_path=workdir / f"{name}.log")
    if migrate:
        url = env.get("DATABASE_URL", "")
        template = _usable_template(workdir)
        target = Path(url[len("sqlite:///"):]) if url.startswith("sqlite:///") else None
        if template is not None and target is not None and not target.exists():
            shutil.copyfile(template, target)
        else:
            server.manage("migrate", "--noinput")
    return server.start(timeout=60)


class ServeServer(LiveServer):
    """`python -m config.serve --processes N`: N daphne processes on one port (the Procfile's `web`)."""

    STARTED = re.compile(r"daphne process started .*\bpid=(\d+)")

    def __init__(self, env: dict[str, str], processes: int, log_path: Path) -> None:
        super().__init__(env, log_path=log_path)
        self.processes = processes

    def start(self, timeout: float = 60) -> ServeServer:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "config.serve", "--host", self.host, "--port", str(self.port),
                 "--processes", str(self.processes)], cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        # Each daphne adopts its own socket: a connection hashed to one that is not up yet
        # would wait, so the server is ready when every process says it listens.
        while self.log().count("Listening on TCP address") < self.processes or len(self.pids) < self.processes:
            if self.process.poll() is not None:
                raise RuntimeError(f"config.serve exited with {self.process.returncode}:\n{self.log()[-3000:]}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"config.serve did not start {self.processes} processes in {timeout} s:\n"
                                   f"{self.log()[-3000:]}")
            time.sleep(0.1)
        return self

    @property
    def pids(self) -> list[int]:
        """The daphne processes (not the launcher, which only waits)."""
        return [int(pid) for pid in self.STARTED.findall(self.log())]

    def stop(self, timeout: float = 30) -> None:
        stop_process(self.process, timeout)


def serve(env: dict[str, str], workdir: Path, name: str, processes: int) -> ServeServer:
    """config.serve with `processes` daphne processes; the database copied from the run's template."""
    url = env.get("DATABASE_URL", "")
    template = _usable_template(workdir)
    target = Path(url[len("sqlite:///"):]) if url.startswith("sqlite:///") else None
    server = ServeServer(env, processes, workdir / f"{name}.log")
    if template is not None and target is not None and not target.exists():
        shutil.copyfile(template, target)
    else:
        server.manage("migrate", "--noinput")
    return server.start()


def seed(server: LiveServer, spec: dict, timeout: float = 300) -> dict:
    """Run bench/seed.py with the server's environment (users, tokens, conversations)."""
    done = subprocess.run([sys.executable, "-m", "bench.seed"], input=json.dumps(spec), cwd=REPO, env=server.env,
                          capture_output=True, text=True, timeout=timeout)
    if done.returncode:
        raise RuntimeError(f"seeding failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- /proc -------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime (fields 14, 15)


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


class CpuMeter:
    """CPU used by some processes over an interval: `with CpuMeter({"daphne": pid}) as m: ...`."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.used: dict[str, float] = {}
        self.wall = 0.0

    def __enter__(self) -> CpuMeter:
        self._start = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        self._self = time.process_time()
        self._t0 = time.monotonic()
        return self

    def __exit__(self, *exc_info) -> None:
        self.wall = time.monotonic() - self._t0
        for name, pid in self.pids.items():
            try:
                self.used[name] = cpu_seconds(pid) - self._start[name]
            except OSError:
                self.used[name] = float("nan")
        self.used["clients"] = time.process_time() - self._self

    def share(self, name: str) -> float:
        """CPU seconds per wall second (1.0 = one core busy)."""
        return self.used.get(name, float("nan")) / self.wall if self.wall else float("nan")

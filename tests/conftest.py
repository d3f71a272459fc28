"""Fixtures shared by the suite: a scripted model server, a fresh store, users, sockets.

Test settings that make the suite quick without changing what it checks live here too:
a fast password hasher, and the production back-off waits in milliseconds.
"""
from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from chat import services
from chat.backends import hf_backend
from chat.store import reset_store
from consumers.chat import ChatConsumer
from tests.fake_model_server import FakeModelServer

ECHO_MODEL = "test/echo"


@pytest.fixture(scope="session")
def fake_model():
    with FakeModelServer() as server:
        yield server


@pytest.fixture(autouse=True)
def chat_settings(settings, tmp_path, fake_model):
    """Every test gets its own transcript folder, the scripted model and fresh limits."""
    settings.CHAT_DATA_DIR = tmp_path / "conversations"
    settings.AWS_STORAGE_BUCKET_NAME = ""
    settings.HF_BASE_URL = fake_model.url
    settings.HF_TOKEN = ""
    settings.HF_MODELS = [ECHO_MODEL]
    # Hashing a password the production way costs about 0.3 s per user; its strength is not under test.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.CHAT_REPLY_STORE_BACKOFF = 0.01
    settings.HF_NEW_ACCOUNT_DAYS = 0  # every test user is new; tests/test_security_signup.py tests that budget
    reset_store()
    ChatConsumer.frame_limiter._events.clear()
    services._reply_limiter._events.clear()
    fake_model.clear()
    yield settings
    reset_store()


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch):
    """The process's HF backend with a short retry budget, so a failing model costs a test
    a second, not the production budget of 10 s."""
    backend = hf_backend()
    monkeypatch.setattr(backend, "retry_budget", 1.0)
    monkeypatch.setattr(backend, "first_backoff", 0.05)
    return backend


@pytest.fixture
def make_user(db):
    def make(username: str = "alice"):
        return get_user_model().objects.create_user(username=username, password="correct horse battery staple")

    return make


def session_cookie(user) -> bytes:
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}".encode()


def record_worker_calls(monkeypatch, module) -> list[str]:
    """The names of the functions `module` hands to a worker thread (its `run_blocking`), in order."""
    calls: list[str] = []
    run = module.run_blocking

    async def recording(function, *args, **kwargs):
        calls.append(getattr(function, "func", function).__name__)  # a partial: its function's name
        return await run(function, *args, **kwargs)

    monkeypatch.setattr(module, "run_blocking", recording)
    return calls


@pytest.fixture
async def no_reply_left_running():
    """After the test, passed or failed: close the sockets it left open and wait for its replies,
    so that no test ends under a running reply or leaks a socket into the next one."""
    from tests.sockets import close_open_sockets, finish_replies

    yield
    await close_open_sockets()
    await finish_replies()


@pytest.fixture(scope="module")
def live_alice(tmp_path_factory, fake_model):
    """A real daphne on the usual environment, one per test module, and alice's bearer token."""
    from tests.live_server import started_with_alice

    server, token = started_with_alice(tmp_path_factory.mktemp("live"), fake_model.url)
    yield server, token
    server.stop()

"""Fixtures shared by the suite: a scripted model server, a fresh store, users, sockets."""
from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from chat import services
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
    settings.HF_NEW_ACCOUNT_DAYS = 0  # every test user is new; tests/test_security_signup.py tests that budget
    reset_store()
    ChatConsumer.frame_limiter._events.clear()
    services._reply_limiter._events.clear()
    fake_model.clear()
    yield settings
    reset_store()


@pytest.fixture
def make_user(db):
    def make(username: str = "alice"):
        return get_user_model().objects.create_user(username=username, password="correct horse battery staple")

    return make


def session_cookie(user) -> bytes:
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}".encode()

"""GET /healthz: the state of the database, channel layer, storage and models, as JSON,
200 when all are up, 503 otherwise, without a login and without a secret; the checks
only for staff or a monitor with HEALTHZ_TOKEN, the bare status for everyone else."""
from __future__ import annotations

import json

import pytest
from django.db import OperationalError

from chat import health
from chat.store import reset_store

pytestmark = pytest.mark.django_db(transaction=True)

SECRETS = ["hf_s3cr3t_t0ken", "hunter2", "/var/secret/path"]


MONITOR_TOKEN = "monitor-token-for-tests"


@pytest.fixture(autouse=True)
def monitor_token(settings):
    settings.HEALTHZ_TOKEN = MONITOR_TOKEN


def get(client, token: str | None = MONITOR_TOKEN):
    """The report as a monitor with the token sees it (token=None: as the public does)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = client.get("/healthz", headers=headers)
    assert response["Content-Type"] == "application/json"
    assert response["Cache-Control"] == "no-store"
    body = response.json()
    text = json.dumps(body)
    for secret in SECRETS:
        assert secret not in text
    return response.status_code, body


def test_all_up_is_200_without_a_login(client, settings):
    settings.HF_TOKEN = SECRETS[0]
    status, body = get(client)
    assert status == 200, body
    assert body["status"] == "ok"
    checks = body["checks"]
    assert set(checks) == {"database", "channel_layer", "storage", "models"}
    assert all(check["ok"] for check in checks.values())
    assert checks["database"]["engine"] in ("sqlite", "postgresql")
    assert checks["channel_layer"]["backend"] == "memory"
    assert checks["storage"]["backend"] == "local"
    models = {model["id"]: model for model in checks["models"]["models"]}
    assert models["test/echo"] == {"id": "test/echo", "backend": "hf", "available": True}
    assert checks["models"]["default"] == "test/echo"
    assert all("ms" in check for check in checks.values())


def test_the_public_gets_a_bare_status(client, settings):
    assert get(client, token=None) == (200, {"status": "ok"})
    assert get(client, token="a wrong token") == (200, {"status": "ok"})
    settings.HEALTHZ_TOKEN = ""
    assert get(client, token="") == (200, {"status": "ok"})  # no token configured: no token opens it


def test_a_broken_service_is_still_503_for_the_public(client, monkeypatch):
    async def broken():
        raise OSError("connection refused to 10.0.0.5:6379")

    monkeypatch.setitem(health.CHECKS, "channel_layer", broken)
    assert get(client, token=None) == (503, {"status": "unavailable"})


def test_staff_see_the_checks_and_other_users_do_not(client, make_user):
    user = make_user("alice")
    client.force_login(user)
    assert get(client, token=None) == (200, {"status": "ok"})
    user.is_staff = True
    user.save()
    status, body = get(client, token=None)
    assert status == 200 and set(body["checks"]) == {"database", "channel_layer", "storage", "models"}


def test_no_request_is_made_to_a_model(client, fake_model):
    get(client)
    assert fake_model.requests == []


def test_head_works_and_post_does_not(client):
    assert client.head("/healthz").status_code == 200
    assert client.post("/healthz").status_code == 405


def test_storage_down_is_503_in_plain_words(client, settings):
    folder = settings.CHAT_DATA_DIR
    folder.parent.mkdir(parents=True, exist_ok=True)
    folder.write_text("not a folder")  # the transcript folder cannot be made
    status, body = get(client)
    assert status == 503 and body["status"] == "unavailable"
    assert body["checks"]["storage"] == {**body["checks"]["storage"], "ok": False,
                                         "error": "the transcript folder is not writable"}
    assert str(folder) not in json.dumps(body)
    assert body["checks"]["database"]["ok"] is True


def test_s3_bucket_missing_is_503(client, settings):
    from moto import mock_aws

    with mock_aws():
        settings.AWS_STORAGE_BUCKET_NAME = "no-such-bucket-hunter2"
        reset_store()
        status, body = get(client)
    assert status == 503
    assert body["checks"]["storage"]["ok"] is False
    assert body["checks"]["storage"]["error"] == "the bucket does not exist"
    assert "no-such-bucket" not in json.dumps(body)


def test_s3_bucket_present_is_up(client, settings):
    import boto3
    from moto import mock_aws

    with mock_aws():
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket="chat-health")
        settings.AWS_STORAGE_BUCKET_NAME = "chat-health"
        settings.AWS_S3_REGION_NAME = "us-east-1"
        reset_store()
        status, body = get(client)
    assert status == 200, body
    assert body["checks"]["storage"]["backend"] == "s3"


class BrokenLayer:
    async def new_channel(self):
        return "specific.health!x"

    async def send(self, channel, message):
        raise ConnectionError("Error connecting to redis://:hunter2@redis.example.com:6379")

    async def receive(self, channel):  # pragma: no cover
        raise AssertionError("not reached")


def test_channel_layer_down_is_503_without_the_exception_text(client, monkeypatch):
    monkeypatch.setattr(health, "get_channel_layer", lambda: BrokenLayer())
    status, body = get(client)
    assert status == 503
    assert body["checks"]["channel_layer"] == {**body["checks"]["channel_layer"], "ok": False, "error": "unavailable"}


class SilentLayer(BrokenLayer):
    async def send(self, channel, message):
        return None

    async def receive(self, channel):
        import asyncio

        await asyncio.sleep(60)


def test_a_layer_that_never_answers_times_out(client, monkeypatch):
    monkeypatch.setattr(health, "get_channel_layer", lambda: SilentLayer())
    monkeypatch.setattr(health, "CHECK_TIMEOUT", 0.2)
    status, body = get(client)
    assert status == 503
    assert body["checks"]["channel_layer"]["error"] == "timed out"


class BrokenConnection:
    vendor = "postgresql"

    def cursor(self):
        raise OperationalError('connection to server at "db.internal" failed: FATAL: password "hunter2" rejected')


def test_database_down_is_503_without_the_exception_text(client, monkeypatch):
    monkeypatch.setattr(health, "connection", BrokenConnection())
    status, body = get(client)
    assert status == 503
    assert body["checks"]["database"] == {**body["checks"]["database"], "ok": False, "error": "unavailable"}


def test_no_usable_model_is_503_without_paths(client, settings):
    settings.HF_BASE_URL = ""
    settings.HF_TOKEN = ""
    settings.LOCAL_MODEL_PATH = SECRETS[2] + "/model.gguf"
    status, body = get(client)
    assert status == 503
    models = body["checks"]["models"]
    assert models["ok"] is False
    assert all(model["available"] is False for model in models["models"])
    assert all(set(model) == {"id", "backend", "available"} for model in models["models"])


def test_healthz_is_exempt_from_the_https_redirect(client, settings):
    settings.SECURE_SSL_REDIRECT = True
    assert client.get("/healthz").status_code == 200
    assert client.get("/accounts/login/").status_code == 301


async def test_channel_layer_round_trip_through_redis(settings):
    from tests.redis_layer import redis_layer_settings, require_redis

    require_redis()
    settings.CHANNEL_LAYERS = redis_layer_settings()
    try:
        result = await health.check_channel_layer()
    finally:
        settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    assert result == {"ok": True, "backend": "redis"}

"""Production settings: deploy checks, the secret key, security headers, static files,
databases, Redis over TLS, and structured logs."""
from __future__ import annotations

import json
import logging
import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from config.logging import JsonFormatter, KeyValueFormatter, logging_config
from tests.sockets import ChatSocket, create_user, finish_replies

REPO = Path(__file__).resolve().parent.parent

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; "
       "connect-src 'self'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'; object-src 'none'")


def run_django(tmp_path: Path, args: list[str], **env: str) -> subprocess.CompletedProcess:
    """`python <args>` in a fresh process with production-like settings from `env` only."""
    clean = {k: v for k, v in os.environ.items()
             if k not in {"DATABASE_URL", "REDIS_URL", "DYNO", "SECRET_KEY", "DEBUG", "ALLOWED_HOSTS", "LOG_FORMAT"}
             and not k.startswith(("SECURE_", "AWS_", "HF_"))}
    full_env = {**clean, "DJANGO_SETTINGS_MODULE": "config.settings", "PYTHONDONTWRITEBYTECODE": "1",
                "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}", "CHAT_DATA_DIR": str(tmp_path / "data"), **env}
    return subprocess.run([sys.executable, *args], cwd=REPO, env=full_env, capture_output=True, text=True, timeout=120)


def production(**extra: str) -> dict[str, str]:
    return {"DEBUG": "0", "SECRET_KEY": secrets.token_urlsafe(64), "ALLOWED_HOSTS": "example.com", **extra}


# --- Deploy checks and the secret key ------------------------------------------------------------


def test_check_deploy_reports_nothing_under_production_settings(tmp_path):
    result = run_django(tmp_path, ["manage.py", "check", "--deploy", "--fail-level", "DEBUG"], **production())
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues (0 silenced)." in result.stdout
    assert "WARNINGS" not in result.stdout + result.stderr


def test_check_deploy_behind_heroku_trusts_the_proxy_header(tmp_path):
    code = ("import django; django.setup(); from django.conf import settings as s; "
            "print(s.SECURE_PROXY_SSL_HEADER, s.TRUSTED_PROXY_COUNT, s.SECURE_SSL_REDIRECT)")
    result = run_django(tmp_path, ["-c", code], **production(DYNO="web.1"))
    assert result.stdout.split("\n")[0] == "('HTTP_X_FORWARDED_PROTO', 'https') 1 True", result.stderr


def test_debug_settings_stay_convenient(tmp_path):
    code = ("import django; django.setup(); from django.conf import settings as s; "
            "print(s.SECURE_SSL_REDIRECT, s.SESSION_COOKIE_SECURE, s.SECURE_HSTS_SECONDS, "
            "hasattr(s, 'SECURE_PROXY_SSL_HEADER') and s.SECURE_PROXY_SSL_HEADER is not None)")
    result = run_django(tmp_path, ["-c", code], DEBUG="1")
    assert result.stdout.strip() == "False False 0 False", result.stderr


def test_production_refuses_to_start_without_a_secret_key(tmp_path):
    env = production()
    del env["SECRET_KEY"]
    result = run_django(tmp_path, ["manage.py", "check"], **env)
    assert result.returncode != 0
    assert "SECRET_KEY must be set when DEBUG=0." in result.stderr


@pytest.mark.parametrize("key", ["short-but-set", "django-insecure-" + "x1y2z3" * 10, "ab" * 40])
def test_production_refuses_to_start_with_a_weak_secret_key(tmp_path, key):
    result = run_django(tmp_path, ["manage.py", "check"], **production(SECRET_KEY=key))
    assert result.returncode != 0
    assert "SECRET_KEY is too weak for DEBUG=0" in result.stderr


def test_bad_log_format_refuses_to_start(tmp_path):
    result = run_django(tmp_path, ["manage.py", "check"], LOG_FORMAT="xml")
    assert result.returncode != 0 and "LOG_FORMAT must be json or plain" in result.stderr


# --- Databases -----------------------------------------------------------------------------------


def test_database_url_selects_postgresql_with_a_test_database_per_process(tmp_path):
    code = ("import os, django; django.setup(); from django.conf import settings as s; d = s.DATABASES['default']; "
            "print(d['ENGINE'], d['NAME'], d['TEST']['NAME'] == f'test_chat_{os.getpid()}'); "
            "import psycopg; print(psycopg.__version__.split('.')[0])")
    result = run_django(tmp_path, ["-c", code], DATABASE_URL="postgres://postgres@127.0.0.1:5432/chat")
    assert result.stdout.split() == ["django.db.backends.postgresql", "chat", "True", "3"], result.stderr


# --- Redis over TLS (Heroku's self-signed certificates) -----------------------------------------


def test_rediss_with_cert_reqs_none_reaches_every_redis_client(tmp_path):
    code = """
import django; django.setup()
from django.conf import settings
from channels_redis.utils import create_pool
from django.core.cache import caches
import ssl
for alias in ('default', 'fanout'):  # the list-based layer and the pub/sub one
    pool = create_pool(dict(settings.CHANNEL_LAYERS[alias]['CONFIG']['hosts'][0]))
    connection = pool.make_connection()  # builds the TLS connection object, connects nothing
    print(type(connection).__name__, connection.ssl_context.cert_reqs == ssl.CERT_NONE)
client = caches['default']._cache.get_client(write=True)
print(type(client.connection_pool.make_connection()).__name__,
      client.connection_pool.connection_kwargs['ssl_cert_reqs'])
"""
    result = run_django(tmp_path, ["-c", code], REDIS_URL="rediss://:pw@redis.example.com:6380",
                        REDIS_SSL_CERT_REQS="none")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:3] == ["SSLConnection True", "SSLConnection True", "SSLConnection none"]


def test_plain_redis_gets_no_tls_options(tmp_path):
    code = ("import django; django.setup(); from django.conf import settings as s; "
            "print(s.CHANNEL_LAYERS['default']['CONFIG']['hosts'][0].get('ssl_cert_reqs'), "
            "s.CACHES['default']['BACKEND'].rsplit('.', 1)[-1], s.CACHES['default']['OPTIONS'].get('ssl_cert_reqs'))")
    result = run_django(tmp_path, ["-c", code], REDIS_URL="redis://127.0.0.1:6379/0", REDIS_SSL_CERT_REQS="none")
    assert result.stdout.strip() == "None RedisCache None", result.stderr


def test_without_redis_the_cache_is_local_memory(settings):
    assert settings.CACHES["default"]["BACKEND"] == "django.core.cache.backends.locmem.LocMemCache"


# --- Static files -------------------------------------------------------------------------------


def test_collectstatic_then_whitenoise_serves_hashed_compressed_files(tmp_path):
    static_root = tmp_path / "staticfiles"
    env = production(STATIC_ROOT=str(static_root))
    collected = run_django(tmp_path, ["manage.py", "collectstatic", "--noinput"], **env)
    assert collected.returncode == 0, collected.stderr
    assert (static_root / "staticfiles.json").is_file()
    code = """
import json, django; django.setup()
from django.conf import settings
from django.templatetags.static import static
from django.test import Client
client = Client(HTTP_HOST="example.com")
url = static("chat/app.js")
plain = client.get(url, secure=True)
gzipped = client.get(url, secure=True, HTTP_ACCEPT_ENCODING="gzip")
body = b"".join(plain.streaming_content).decode()
print(json.dumps({
    "storage": settings.STORAGES["staticfiles"]["BACKEND"],
    "url": url, "status": plain.status_code, "cache": plain.get("Cache-Control"),
    "gzip": gzipped.get("Content-Encoding"), "imports": [line for line in body.splitlines() if line.startswith("import ")],
    "css": static("chat/ui.css"),
    "missing": client.get("/static/chat/nope.js", secure=True).status_code,
}))
"""
    result = run_django(tmp_path, ["-c", code], **env)
    assert result.returncode == 0, result.stderr
    served = json.loads(result.stdout.strip().splitlines()[-1])
    assert served["storage"] == "config.storage.StaticFilesStorage"
    assert re.fullmatch(r"/static/chat/app\.[0-9a-f]{12}\.js", served["url"]), served
    assert re.fullmatch(r"/static/chat/ui\.[0-9a-f]{12}\.css", served["css"]), served
    assert served["status"] == 200
    assert "immutable" in served["cache"] and "max-age=315360000" in served["cache"]
    assert served["gzip"] == "gzip"
    # The page's modules import each other by their hashed names too.
    assert served["imports"] and all(re.search(r'from "\./[a-z]+\.[0-9a-f]{12}\.js";$', line) for line in served["imports"])
    assert served["missing"] == 404


# --- Security headers ------------------------------------------------------------------------------


def assert_security_headers(response) -> None:
    assert response["Content-Security-Policy"] == CSP
    assert "camera=()" in response["Permissions-Policy"] and "microphone=()" in response["Permissions-Policy"]
    assert response["Cross-Origin-Opener-Policy"] == "same-origin"
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"


@pytest.mark.django_db
def test_security_headers_on_every_page(client, make_user, settings):
    from chat import conversations, sharing

    assert_security_headers(client.get("/accounts/login/"))
    assert_security_headers(client.get("/accounts/signup/"))
    assert_security_headers(client.get("/healthz"))
    user = make_user()
    client.force_login(user)
    chat_page = client.get("/new/")
    assert chat_page.status_code == 200
    assert_security_headers(chat_page)
    assert_security_headers(client.get("/settings/"))
    row, _, _ = conversations.create_conversation(user, "test/echo", "hello")
    _, url = sharing.share(user, row.pk)
    shared = client.get(url)
    assert shared.status_code == 200
    assert_security_headers(shared)
    assert shared["Referrer-Policy"] == "no-referrer"  # the view's own, kept


@pytest.mark.django_db
def test_pages_have_no_inline_script_or_style(client, make_user):
    client.force_login(make_user())
    for path in ("/new/", "/settings/", "/accounts/login/"):
        html = client.get(path).content.decode()
        assert "style=" not in html, path
        for tag in re.findall(r"<script\b[^>]*>", html):
            assert 'src="' in tag or 'type="application/json"' in tag, (path, tag)


# --- Logs ---------------------------------------------------------------------------------------


def record(message: str, **extra) -> logging.LogRecord:
    rec = logging.LogRecord("chat.replies", logging.INFO, __file__, 1, message, (), None)
    for key, value in extra.items():
        setattr(rec, key, value)
    return rec


def test_key_value_lines_show_the_extra_fields():
    line = KeyValueFormatter().format(record("reply ended", conversation="ab12", model="org/m x", seconds=1.5,
                                             stopped=False, error=None))
    assert re.fullmatch(r"\S+Z INFO chat\.replies reply ended conversation=ab12 model=\"org/m x\" seconds=1\.5 "
                        r"stopped=false error=-", line), line


def test_json_lines_are_one_object_with_the_extra_fields():
    try:
        raise ValueError("boom")
    except ValueError:
        rec = record("reply task crashed", conversation="ab12")
        rec.exc_info = sys.exc_info()
    data = json.loads(JsonFormatter().format(rec))
    assert data["message"] == "reply task crashed" and data["level"] == "INFO" and data["logger"] == "chat.replies"
    assert data["conversation"] == "ab12" and "ValueError: boom" in data["exception"]
    assert "\n" not in JsonFormatter().format(rec)


def test_log_format_setting_selects_the_formatter():
    assert logging_config("json", "INFO")["handlers"]["console"]["formatter"] == "json"
    assert logging_config("plain", "INFO")["handlers"]["console"]["formatter"] == "plain"
    with pytest.raises(ValueError):
        logging_config("xml", "INFO")


@pytest.mark.django_db(transaction=True)
async def test_socket_events_are_logged_with_fields_and_never_the_words(caplog):
    caplog.set_level(logging.INFO)
    secret_words = "my very private question"
    outcome, code = await ChatSocket.attempt(None, origin=None)
    assert (outcome, code) == ("closed", 4401)
    user = await create_user()
    socket = await ChatSocket.connect(user)
    await socket.send("message.send", conversation=None, content=f"{secret_words} #tokens=7")
    _, final = await socket.reply_text()
    assert final["type"] == "reply.completed"
    await socket.receive("conversation.updated")
    await socket.send("conversation.open", conversation="nosuchconversation")
    await socket.receive("error")
    await socket.close()
    await finish_replies()

    def find(message: str) -> logging.LogRecord:
        matches = [r for r in caplog.records if r.getMessage() == message]
        assert matches, f"no {message!r} log line"
        return matches[0]

    assert find("socket refused").code == 4401
    assert find("socket connected").user == user.pk
    started = find("reply started")
    assert (started.user, started.model) == (user.pk, "test/echo") and started.reply
    ended = find("reply ended")
    assert ended.model == "test/echo" and ended.tokens == 7 and ended.seconds >= 0 and ended.error is None
    refused = find("request refused")
    assert (refused.frame, refused.code) == ("conversation.open", "not_found")
    assert find("socket closed").user == user.pk
    # The reply's and the title's model requests: no line each from httpx2 ("HTTP Request: POST …").
    assert [r.getMessage() for r in caplog.records if r.name.startswith("httpx")] == []
    for rec in caplog.records:
        if rec.levelno >= logging.INFO:
            assert "private question" not in KeyValueFormatter().format(rec), rec.getMessage()

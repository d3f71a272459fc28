"""Settings for the chat server.

Every setting is read here, once, from an environment variable with an embedded
default, so that `python manage.py runserver` works on a fresh machine with no
configuration at all (SQLite, in-memory channel layer, a local folder for
transcripts, the local model). Other modules import the values from
`django.conf.settings`; none of them reads the environment.
"""
from __future__ import annotations

import os
import secrets
import tempfile
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from config.logging import logging_config

BASE_DIR = Path(__file__).resolve().parent.parent


def _env(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def _env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else default


def _env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value not in (None, "") else default


def _env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in _env(name, default).split(",") if item.strip()]


DEBUG = _env_bool("DEBUG", True)

SECRET_KEY = _env("SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG=0.")
    # A development key that changes per process start: sessions do not survive
    # a restart, which is what a developer expects from an unset key.
    SECRET_KEY = "dev-insecure-" + secrets.token_urlsafe(32)
# The same test as Django's security.W009 (`check --deploy`), but refusing to start: a
# guessable key lets anyone forge sessions, so a production server must not run with one.
if not DEBUG and (len(SECRET_KEY) < 50 or len(set(SECRET_KEY)) < 5 or SECRET_KEY.startswith("django-insecure")):
    raise ImproperlyConfigured(
        "SECRET_KEY is too weak for DEBUG=0: use at least 50 random characters, e.g. "
        "python -c 'import secrets; print(secrets.token_urlsafe(64))'.")

ALLOWED_HOSTS = _env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")
CSRF_TRUSTED_ORIGINS = _env_list("CSRF_TRUSTED_ORIGINS", "")
# Exact origins (scheme://host[:port]) whose pages may open the chat socket. Empty (the
# default): the origin the handshake was made to (its Host, which must be in
# ALLOWED_HOSTS, with its scheme) plus the exact entries of CSRF_TRUSTED_ORIGINS (its
# wildcards never count). See consumers/auth.py and docs/security.md.
SOCKET_ALLOWED_ORIGINS = _env_list("SOCKET_ALLOWED_ORIGINS", "")
for _origin in SOCKET_ALLOWED_ORIGINS:
    _scheme, _, _rest = _origin.partition("://")
    if _scheme not in ("http", "https") or not _rest or "*" in _rest or "/" in _rest:
        raise ImproperlyConfigured(
            f"SOCKET_ALLOWED_ORIGINS takes exact origins like https://chat.example.com:8443, not {_origin!r}.")

# --- HTTPS and browser security (production defaults when DEBUG=0) ----------
# `python manage.py check --deploy` reports nothing with these defaults. Behind a proxy
# that terminates TLS (Heroku's router, nginx), trust its X-Forwarded-Proto header so
# Django knows the request was HTTPS; Heroku sets DYNO, so it is on there by default.
# Never turn it on when clients can reach daphne directly.
if _env_bool("SECURE_PROXY_SSL_HEADER", bool(os.environ.get("DYNO"))):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# How many proxies in front of the app append to X-Forwarded-For (Heroku's router: 1,
# nginx with $proxy_add_x_forwarded_for: 1). 0: the client is REMOTE_ADDR. Used for the
# login throttle's per-IP key; the left-most entries are the client's to forge.
TRUSTED_PROXY_COUNT = _env_int("TRUSTED_PROXY_COUNT", 1 if os.environ.get("DYNO") else 0)
SECURE_SSL_REDIRECT = _env_bool("SECURE_SSL_REDIRECT", not DEBUG)
# A load balancer's health check may speak plain HTTP to the app.
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
SESSION_COOKIE_SECURE = _env_bool("SESSION_COOKIE_SECURE", not DEBUG)
CSRF_COOKIE_SECURE = _env_bool("CSRF_COOKIE_SECURE", not DEBUG)
SECURE_HSTS_SECONDS = _env_int("SECURE_HSTS_SECONDS", 0 if DEBUG else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = _env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", not DEBUG)
SECURE_HSTS_PRELOAD = _env_bool("SECURE_HSTS_PRELOAD", not DEBUG)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# Sent on every response by config.middleware.SecurityHeadersMiddleware. Only the app's
# own scripts and styles: no inline script or style anywhere (the chat page's boot data
# is a JSON block, which is not executed). `data:` images are Bootstrap's SVG icons;
# `connect-src 'self'` covers the same-origin ws:/wss: socket.
CONTENT_SECURITY_POLICY = _env(
    "CONTENT_SECURITY_POLICY",
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'; object-src 'none'",
)
PERMISSIONS_POLICY = (
    "accelerometer=(), camera=(), geolocation=(), gyroscope=(), magnetometer=(), microphone=(), "
    "payment=(), usb=()"
)

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "channels",
    "chat",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "config.middleware.SecurityHeadersMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
ASGI_APPLICATION = "config.asgi.application"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {"default": dj_database_url.parse(_env("DATABASE_URL", f"sqlite:///{BASE_DIR / 'db.sqlite3'}"))}
_SQLITE = DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3"
# SQLite: each worker thread keeps its connection: opening one (and registering Django's
# SQL functions on it) for every database call was over half of the CPU of a socket
# handshake (bench/connections.py, py-spy). PostgreSQL: 0, so a process never holds more
# connections than it is using against a plan's connection limit.
DATABASES["default"]["CONN_MAX_AGE"] = _env_int("DATABASE_CONN_MAX_AGE", 600 if _SQLITE else 0)
if _SQLITE:
    # WAL lets the socket workers read while another thread writes. synchronous=NORMAL
    # (SQLite's advice for WAL) syncs the log at checkpoints instead of at every commit:
    # a commit costs 0.03 ms instead of 1.3 ms here, and every write of a reply's start
    # waits for the ones before it. A process that crashes loses nothing; only a power
    # cut can lose the last commits (the sidebar rebuilds from the store: sync_from_store).
    DATABASES["default"].setdefault("OPTIONS", {})
    DATABASES["default"]["OPTIONS"].update(
        {"init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;", "transaction_mode": "IMMEDIATE",
         "timeout": 20}
    )
    # A file, not SQLite's shared-cache memory database: the socket workers write
    # from several threads, and shared-cache locks are not retried.
    # One file per test process, so that concurrent test runs never share one.
    DATABASES["default"]["TEST"] = {
        "NAME": _env("TEST_SQLITE_PATH", str(Path(tempfile.gettempdir()) / f"chat-test-{os.getpid()}.sqlite3"))
    }
elif DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # One test database per test process (Django's default, test_<name>, would be
    # shared, and dropped, by two concurrent runs on one server).
    DATABASES["default"]["TEST"] = {"NAME": _env("TEST_DATABASE_NAME", f"test_chat_{os.getpid()}")}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "chat:index"
LOGOUT_REDIRECT_URL = "login"
SIGNUP_OPEN = _env_bool("SIGNUP_OPEN", True)
# Failed logins per username and client IP before the login form asks to wait.
LOGIN_FAILURE_LIMIT = _env_int("LOGIN_FAILURE_LIMIT", 5)
LOGIN_FAILURE_WINDOW = _env_int("LOGIN_FAILURE_WINDOW", 15 * 60)  # seconds
# Failed logins from one client address, whatever the username, in the same window.
LOGIN_FAILURE_LIMIT_PER_ADDRESS = _env_int("LOGIN_FAILURE_LIMIT_PER_ADDRESS", 50)
# Sign-ups per client address per window, and "username taken" answers (which tell
# that an account exists) per address per window. 0: no limit.
SIGNUP_LIMIT_PER_ADDRESS = _env_int("SIGNUP_LIMIT_PER_ADDRESS", 3)
SIGNUP_TAKEN_LIMIT_PER_ADDRESS = _env_int("SIGNUP_TAKEN_LIMIT_PER_ADDRESS", 20)
SIGNUP_WINDOW = _env_int("SIGNUP_WINDOW", 24 * 60 * 60)  # seconds

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(_env("STATIC_ROOT", str(BASE_DIR / "staticfiles")))
# In development WhiteNoise serves straight from static/; in production from the
# hashed, compressed files that `collectstatic` writes.
WHITENOISE_USE_FINDERS = DEBUG
WHITENOISE_AUTOREFRESH = DEBUG
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "config.storage.StaticFilesStorage"
            if not DEBUG
            else "django.contrib.staticfiles.storage.StaticFilesStorage"
        )
    },
}

# --- Real time -------------------------------------------------------------
REDIS_URL = _env("REDIS_URL")
REDIS_PREFIX = _env("REDIS_PREFIX", "asgi")
REDIS_MAX_CONNECTIONS = _env_int("REDIS_MAX_CONNECTIONS", 1000)  # per process, for the channel layer
# With rediss://, redis-py verifies the server's certificate. Heroku Redis uses a
# self-signed one: set REDIS_SSL_CERT_REQS=none there (the link is still encrypted).
REDIS_SSL_CERT_REQS = _env("REDIS_SSL_CERT_REQS").strip().lower()
if REDIS_SSL_CERT_REQS not in ("", "none", "optional", "required"):
    raise ImproperlyConfigured("REDIS_SSL_CERT_REQS must be none, optional or required.")
# Connection options both Redis clients (channel layer and cache) accept; the TLS one
# only with a rediss:// URL (a plain connection refuses it).
REDIS_TLS_OPTIONS = (
    {"ssl_cert_reqs": REDIS_SSL_CERT_REQS} if REDIS_URL.startswith("rediss://") and REDIS_SSL_CERT_REQS else {}
)
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                # redis-py 8 reads with a 5 s socket timeout by default, the same as
                # the layer's blocking BZPOPMIN: every idle socket then crashes with
                # "Timeout reading" (channels_redis#422). Wait a little longer than
                # the pop, so a dead Redis is still noticed.
                # redis-py 8 caps a pool at 100 connections and then fails the command
                # ("Too many connections") instead of waiting: one process relaying 200
                # conversations has more layer calls than that in flight at once.
                "hosts": [{"address": REDIS_URL, "socket_timeout": 10, "socket_connect_timeout": 5,
                           "max_connections": REDIS_MAX_CONNECTIONS, **REDIS_TLS_OPTIONS}],
                "prefix": REDIS_PREFIX,
                # All sockets of a process share one real channel in Redis, and the
                # capacity counts its messages together: a process relaying dozens of
                # replies needs more than the default 100 (channels#658). Deltas that
                # are dropped anyway show up as a `seq` gap, which the page repairs.
                "capacity": 5000,
                "expiry": 60,
            },
        },
        # Frames for groups cross processes by pub/sub (chat/fanout.py): a PUBLISH per
        # frame, pushed to every subscribed process, never dropped over a capacity.
        "fanout": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {
                "hosts": [{"address": REDIS_URL, "socket_timeout": 10, "socket_connect_timeout": 5,
                           **REDIS_TLS_OPTIONS}],
                "prefix": REDIS_PREFIX + ":fanout:",
            },
        },
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "config.channel_layers.SweepingInMemoryChannelLayer", "CONFIG": {"capacity": 1000}}}

# Server processes that `python -m config.serve` starts on one port (one per core uses
# a multi-core machine; more than one needs REDIS_URL). Heroku's Python buildpack sets
# WEB_CONCURRENCY by itself (2 x cores + 1, sized for gunicorn's sync workers, and
# marked by WEB_CONCURRENCY_SET_BY): only a value the operator set counts.
WEB_CONCURRENCY = 1 if _env("WEB_CONCURRENCY_SET_BY") else _env_int("WEB_CONCURRENCY", 1)
if WEB_CONCURRENCY < 1:
    raise ImproperlyConfigured("WEB_CONCURRENCY must be 1 or more.")

# The cache holds the login throttle's counters: shared by every process through Redis
# when there is one, else per process.
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": REDIS_PREFIX + ":cache",
            "OPTIONS": {"socket_timeout": 5, "socket_connect_timeout": 5, **REDIS_TLS_OPTIONS},
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "chat"}}

# --- Models ----------------------------------------------------------------
HF_TOKEN = _env("HF_TOKEN")
HF_BASE_URL = _env("HF_BASE_URL")
HF_PROVIDER = _env("HF_PROVIDER")
HF_MODELS = _env_list("HF_MODELS", "google/gemma-2-9b-it")
HF_TIMEOUT = _env_float("HF_TIMEOUT", 60.0)
# huggingface_hub names the AI agent running the process in its user agent, and to know
# the agents it fetches a list from the Hub the first time it builds a request's headers:
# a blocking GET (up to 3 s) on the event loop, stalling every socket of the process, and
# a call home a chat server has no business making. Its telemetry switch turns both off;
# it is read when huggingface_hub is imported, which is always after the settings.
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
LOCAL_MODEL_PATH = _env("LOCAL_MODEL_PATH")
LOCAL_MODEL_THREADS = _env_int("LOCAL_MODEL_THREADS", 0)  # 0: let llama.cpp choose
LOCAL_MODEL_CONTEXT = _env_int("LOCAL_MODEL_CONTEXT", 2048)
# Replies one user may have waiting for (or running on) the local model; one more is
# refused with a `busy` error (issue 16). 0: no cap.
LOCAL_MODEL_MAX_QUEUED_REPLIES = _env_int("LOCAL_MODEL_MAX_QUEUED_REPLIES", 3)
CHAT_MAX_REPLY_TOKENS = _env_int("CHAT_MAX_REPLY_TOKENS", 512)
# Daily budgets of requests to Hugging Face models (replies and titles; the local model
# is free), per user and for the whole site, counted in the database per UTC day. Sized
# to the free allowance of about 1,000 requests a day. 0: no limit.
HF_DAILY_REQUESTS_PER_USER = _env_int("HF_DAILY_REQUESTS_PER_USER", 100)
HF_DAILY_REQUESTS_SITE = _env_int("HF_DAILY_REQUESTS_SITE", 1000)
# Accounts younger than this many days get the smaller of the two budgets, so that one
# person with many fresh accounts cannot spend the site's day (0 days: no difference).
HF_DAILY_REQUESTS_NEW_USER = _env_int("HF_DAILY_REQUESTS_NEW_USER", 10)
HF_NEW_ACCOUNT_DAYS = _env_int("HF_NEW_ACCOUNT_DAYS", 7)
# How much of a conversation a remote model is sent (the newest turns that fit).
CHAT_MAX_CONTEXT_CHARS = _env_int("CHAT_MAX_CONTEXT_CHARS", 48000)

# --- Conversations ---------------------------------------------------------
CHAT_DATA_DIR = Path(_env("CHAT_DATA_DIR", str(BASE_DIR / "data")))
AWS_STORAGE_BUCKET_NAME = _env("AWS_STORAGE_BUCKET_NAME")
AWS_S3_ENDPOINT_URL = _env("AWS_S3_ENDPOINT_URL") or None
AWS_S3_REGION_NAME = _env("AWS_S3_REGION_NAME") or None
AWS_S3_KEY_PREFIX = _env("AWS_S3_KEY_PREFIX")
CHAT_DEFAULT_SYSTEM_PROMPT = _env("CHAT_DEFAULT_SYSTEM_PROMPT")
# A reply whose process has not shown signs of life for this long is given up as
# interrupted, so a crash never leaves a conversation stuck in "generating".
# With beats every CHAT_REPLY_CHECKPOINT_SECONDS, a conversation is usable again at most
# this long after its process was killed (issue 15: within 15 s).
CHAT_REPLY_STALE_SECONDS = _env_float("CHAT_REPLY_STALE_SECONDS", 10.0)
# The heartbeat of a running reply, which also stores its text so far: a killed process
# loses at most about this much of a reply (issue 15: at most 2 s).
CHAT_REPLY_CHECKPOINT_SECONDS = _env_float("CHAT_REPLY_CHECKPOINT_SECONDS", 1.0)
# On SIGTERM, how long running replies get to be stored as interrupted before daphne exits.
CHAT_SHUTDOWN_TIMEOUT = _env_float("CHAT_SHUTDOWN_TIMEOUT", 4.0)
# Back-off waits (seconds). Settings so that tests run them in milliseconds.
# A finished reply is stored up to 4 times while storage is down: waits of 1×, 2×, 4× this.
CHAT_REPLY_STORE_BACKOFF = _env_float("CHAT_REPLY_STORE_BACKOFF", 0.5)
# How long a socket that opened a conversation mid-reply waits for the reply's snapshot
# before it reloads the stored state instead (the reply ended, or its process died).
CHAT_RESUME_TIMEOUT = _env_float("CHAT_RESUME_TIMEOUT", 3.0)

# --- Limits a client must respect (sent in `hello.limits`) ------------------
CHAT_MAX_CONTENT_CHARS = _env_int("CHAT_MAX_CONTENT_CHARS", 16000)
CHAT_MAX_FRAME_BYTES = _env_int("CHAT_MAX_FRAME_BYTES", 65536)
CHAT_MAX_TITLE_CHARS = _env_int("CHAT_MAX_TITLE_CHARS", 120)
CHAT_MAX_SYSTEM_PROMPT_CHARS = _env_int("CHAT_MAX_SYSTEM_PROMPT_CHARS", 4000)
# What the server may hold for a client that stops reading before it drops it.
CHAT_MAX_SOCKET_BUFFER_BYTES = _env_int("CHAT_MAX_SOCKET_BUFFER_BYTES", 1024 * 1024)
# permessage-deflate on WebSockets (config/compression.py): reply deltas shrink about 10×
# on the wire for about 12 KB per socket and 10 µs per frame. Off: plain frames.
CHAT_WEBSOCKET_COMPRESSION = _env_bool("CHAT_WEBSOCKET_COMPRESSION", True)
CHAT_RATE_LIMIT_FRAMES = _env_int("CHAT_RATE_LIMIT_FRAMES", 60)  # frames per window per user
CHAT_RATE_LIMIT_WINDOW = _env_float("CHAT_RATE_LIMIT_WINDOW", 10.0)  # seconds
CHAT_RATE_LIMIT_MESSAGES = _env_int("CHAT_RATE_LIMIT_MESSAGES", 20)  # replies started per minute per user

# --- Health -------------------------------------------------------------------
# A monitor that sends `Authorization: Bearer <HEALTHZ_TOKEN>` (or a staff login) sees
# the checks of GET /healthz; anyone else only the bare status. Empty: staff only.
HEALTHZ_TOKEN = _env("HEALTHZ_TOKEN")

# --- Logs --------------------------------------------------------------------
# One line per event, with its fields (`extra`) as key=value pairs or as JSON.
LOG_FORMAT = _env("LOG_FORMAT", "plain")
try:
    LOGGING = logging_config(LOG_FORMAT, _env("LOG_LEVEL", "INFO"))
except ValueError as error:
    raise ImproperlyConfigured(str(error)) from None

"""What `GET /healthz` reports: is each service this process depends on working?

- `database`: a `SELECT 1`.
- `channel_layer`: a message sent to a new channel and received back (with Redis, a
  real round trip through Redis).
- `storage`: the store's `check()`: the transcript folder takes a file, or the S3
  bucket answers HeadBucket.
- `models`: the configured models and whether each can be used, from the settings
  and the local model file; no request is made to a model.

Each check has a time limit and runs concurrently with the others. Anyone (no login)
gets the bare status, `{"status": "ok"}` or `{"status": "unavailable"}` with 200 or
503; the checks (which backends and model ids the server uses) only a staff user or
a monitor that sends `Authorization: Bearer <HEALTHZ_TOKEN>` (`sees_details`). Even
those name no host, URL, path, bucket, token or exception text; details go to the
server log.
"""
from __future__ import annotations

import asyncio
import logging
import secrets
import time
from typing import Any

from channels.layers import get_channel_layer
from django.conf import settings
from django.db import connection
from django.utils.crypto import constant_time_compare

from chat.backends import available_models, default_model_id
from chat.blocking import run_blocking
from chat.store import S3Store, StorageUnavailable, get_store

logger = logging.getLogger(__name__)

CHECK_TIMEOUT = 5.0  # seconds per check



async def _timed(name: str, check) -> dict[str, Any]:
    """Run one check within CHECK_TIMEOUT; its failure becomes `{"ok": false, "error": ...}`."""
    started = time.monotonic()
    try:
        result = await asyncio.wait_for(check(), CHECK_TIMEOUT)
    except TimeoutError:
        logger.warning("health check timed out", extra={"check": name})
        result = {"ok": False, "error": "timed out"}
    except StorageUnavailable as error:  # its reasons are written to be shown (chat/store/ check())
        logger.warning("health check failed", extra={"check": name, "reason": str(error)})
        result = {"ok": False, "error": str(error)}
    except Exception:
        logger.warning("health check failed", exc_info=True, extra={"check": name})
        result = {"ok": False, "error": "unavailable"}
    result["ms"] = round((time.monotonic() - started) * 1000, 1)
    return result


async def check_database() -> dict[str, Any]:
    def select_one() -> None:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()

    await run_blocking(select_one)
    return {"ok": True, "engine": connection.vendor}


async def check_channel_layer() -> dict[str, Any]:
    layer = get_channel_layer()
    backend = "redis" if "redis" in type(layer).__module__ else "memory"
    channel = await layer.new_channel()
    nonce = secrets.token_hex(8)
    await layer.send(channel, {"type": "health.ping", "nonce": nonce})
    message = await layer.receive(channel)
    if message.get("nonce") != nonce:
        return {"ok": False, "backend": backend, "error": "a message came back wrong"}
    return {"ok": True, "backend": backend}


async def check_storage() -> dict[str, Any]:
    store = get_store()
    await run_blocking(store.check)
    return {"ok": True, "backend": "s3" if isinstance(store, S3Store) else "local"}


async def check_models() -> dict[str, Any]:
    def describe() -> dict[str, Any]:
        models = available_models()
        return {
            "ok": any(model.available for model in models),
            "default": default_model_id(),
            # No `reason`: it may name a file path or an import error.
            "models": [{"id": m.id, "backend": m.backend, "available": m.available} for m in models],
        }

    return await run_blocking(describe)


CHECKS = {
    "database": check_database,
    "channel_layer": check_channel_layer,
    "storage": check_storage,
    "models": check_models,
}


async def report() -> tuple[bool, dict[str, Any]]:
    """(everything up?, the JSON body)."""
    results = await asyncio.gather(*(_timed(name, check) for name, check in CHECKS.items()))
    checks = dict(zip(CHECKS, results))
    healthy = all(result["ok"] for result in checks.values())
    return healthy, {"status": "ok" if healthy else "unavailable", "checks": checks}


async def sees_details(request) -> bool:
    """Whether this request may see the checks: the monitoring token, or a staff login."""
    token = settings.HEALTHZ_TOKEN
    authorization = request.headers.get("Authorization", "")
    if token and authorization[:7].lower() == "bearer " and constant_time_compare(authorization[7:].strip(), token):
        return True
    user = await request.auser()
    return user.is_active and user.is_staff

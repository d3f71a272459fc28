"""Daily budgets of requests to metered models (Hugging Face), per user and per site.

Hugging Face's free allowance is about 1,000 requests a day for the whole account,
so the site must not spend it on one user or overrun it. Every request to a metered
model (a reply, or a title) is counted in the database, per UTC day, in a row for the
user and a row for the site (`ModelUsage`, user NULL); the local model is free and
never counted. A count is one conditional upsert (`requests < limit`) per row, inside one
transaction for both rows, so it holds across processes and never overshoots.

API (blocking: call it through `chat.blocking.run_blocking` from async code):
- `check_and_count(user, model_id, purpose)` counts one request or raises
  `ChatError("quota_exceeded")` with plain words and `retry_after` (seconds until UTC
  midnight, when the budgets reset). `purpose="title"` keeps one request in reserve: a
  title is never what makes the next reply fail, so titling is skipped (the caller
  falls back to the user's words) when only one request is left.
- `try_count(...)`: the same, returning False instead of raising.
- `refund(user, model_id)`: gives back a request counted for a reply that never started
  (busy, storage down); chat/services.py counts, claims and stores a turn in one call.
- `usage(user)`: what is used and left today (the hello frame's `usage`).

Settings: HF_DAILY_REQUESTS_PER_USER, HF_DAILY_REQUESTS_SITE (0: no limit); accounts
younger than HF_NEW_ACCOUNT_DAYS get HF_DAILY_REQUESTS_NEW_USER at most.
"""
from __future__ import annotations

import datetime
import functools
import logging
import math

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection, connections, transaction
from django.db.models import F

from chat import rows
from chat.backends import LOCAL_MODEL_ID
from chat.errors import ChatError
from chat.models import ModelUsage

logger = logging.getLogger(__name__)

PURPOSES = ("reply", "title")


def is_metered(model_id: str) -> bool:
    """Every model but the local one is a Hugging Face / OpenAI-compatible one, and counts."""
    return model_id != LOCAL_MODEL_ID


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def today() -> datetime.date:
    return _now().date()


def seconds_until_reset() -> int:
    """Whole seconds until the next UTC midnight, when every budget starts afresh."""
    now = _now()
    midnight = datetime.datetime.combine(now.date() + datetime.timedelta(days=1), datetime.time(),
                                         tzinfo=datetime.UTC)
    return max(1, math.ceil((midnight - now).total_seconds()))


def _user_id(user) -> int:
    return user if isinstance(user, int) else user.pk


def _is_new_account(user) -> bool:
    """`user` is a User (its `date_joined` is at hand) or a user id (one query)."""
    days = settings.HF_NEW_ACCOUNT_DAYS
    if days <= 0:
        return False
    if isinstance(user, int):
        joined = get_user_model().objects.filter(pk=user).values_list("date_joined", flat=True).first()
    else:
        joined = user.date_joined
    return joined is not None and joined > _now() - datetime.timedelta(days=days)


def _limits(user) -> tuple[int, int]:
    """(the user's daily budget, the site's). An account younger than HF_NEW_ACCOUNT_DAYS
    gets HF_DAILY_REQUESTS_NEW_USER at most: ten fresh accounts must not be able to
    spend the site's whole day (sign-up is throttled per address too, chat/accounts.py)."""
    user_limit = max(0, settings.HF_DAILY_REQUESTS_PER_USER)
    if _is_new_account(user):
        new_limit = max(0, settings.HF_DAILY_REQUESTS_NEW_USER)
        user_limit = min(user_limit, new_limit) if user_limit and new_limit else (user_limit or new_limit)
    return user_limit, max(0, settings.HF_DAILY_REQUESTS_SITE)


def _take(day: datetime.date, user_id: int | None, limit: int, reserve: int) -> bool:
    """Count one request on the day's row of the user (None: of the site) if it stays under
    `limit - reserve` (0: no limit), making the row on the day's first request: one
    statement (`_count_sql`: INSERT ... ON CONFLICT DO UPDATE ... WHERE under the limit).

    Every turn counts twice inside a write transaction, and on SQLite every writer of the
    database waits for that transaction. The ORM's `get_or_create` for a user's first
    request of the day (a SELECT, a savepoint, an INSERT and the UPDATE again, each
    compiled) held the lock so long that 200 turns started in one second by users new
    that day waited about 0.6 s more for their first token (bench §1's 200 conversations,
    p50 2.08 → 1.50 s)."""
    below = limit - reserve if limit else None
    if below is not None and below <= 0:
        return False
    params = [ModelUsage._meta.get_field("day").get_db_prep_value(day, connection)]
    if user_id is not None:
        params.append(user_id)
    if below is not None:
        params.append(below)
    with connection.cursor() as cursor:
        cursor.execute(_count_sql(connection.alias, user_id is None, below is not None), params)
        return cursor.rowcount == 1


@functools.cache
def _count_sql(using: str, site: bool, limited: bool) -> str:
    """The counting statement. Its conflict targets are the model's two partial unique
    constraints (one row per user and day, one site row per day), which SQLite (3.24+)
    and PostgreSQL both accept, with their conditions."""
    quote = connections[using].ops.quote_name
    meta = ModelUsage._meta
    table = quote(meta.db_table)
    day, user, requests = (quote(meta.get_field(name).column) for name in ("day", "user", "requests"))
    if site:
        insert = f"INSERT INTO {table} ({day}, {user}, {requests}) VALUES (%s, NULL, 1)"
        target = f"({day}) WHERE {user} IS NULL"
    else:
        insert = f"INSERT INTO {table} ({day}, {user}, {requests}) VALUES (%s, %s, 1)"
        target = f"({day}, {user}) WHERE {user} IS NOT NULL"
    sql = f"{insert} ON CONFLICT {target} DO UPDATE SET {requests} = {table}.{requests} + 1"
    return sql + f" WHERE {table}.{requests} < %s" if limited else sql


def _used(user_id: int | None) -> int:
    spent = ModelUsage.objects.filter(day=today(), user_id=user_id).values_list("requests", flat=True).first()
    return spent or 0


def _used_by_user_and_site(user_id: int) -> tuple[int, int]:
    """Today's requests of the user and of the whole site, in one query (every handshake
    asks: a prepared statement, see chat/rows.py)."""
    spent = {row.user_id: row.requests for row in rows.filter(ModelUsage, day=today(), user_id=[user_id, None])}
    return spent.get(user_id) or 0, spent.get(None) or 0


def _in_words(seconds: int) -> str:
    hours, minutes = divmod(max(1, round(seconds / 60)), 60)
    if hours and minutes:
        return f"{hours} h {minutes} min"
    return f"{hours} h" if hours else f"{minutes} min"


def _exceeded(site: bool, limit: int) -> ChatError:
    wait = seconds_until_reset()
    who = ("This server has used all of today's requests to hosted models"
           if site else f"You have used all {limit} of today's requests to hosted models")
    return ChatError(
        "quota_exceeded",
        f"{who}. They start again at midnight UTC, in {_in_words(wait)}. "
        "The local model does not count and still works.",
        wait,
    )


def check_and_count(user, model_id: str, purpose: str = "reply") -> None:
    """Count one request to `model_id` for `user` (a User or a user id), or raise
    ChatError("quota_exceeded") and count nothing."""
    if purpose not in PURPOSES:
        raise ValueError(f"unknown purpose {purpose!r}")
    if not is_metered(model_id):
        return
    user_id = _user_id(user)
    user_limit, site_limit = _limits(user)
    reserve = 1 if purpose == "title" else 0
    day = today()
    # One transaction: a refusal by the site's budget gives the user's count back.
    # Always the user's row first, then the site's, so that two of these never deadlock.
    with transaction.atomic():
        if not _take(day, user_id, user_limit, reserve):
            raise _exceeded(False, user_limit)
        if not _take(day, None, site_limit, reserve):
            raise _exceeded(True, site_limit)


def try_count(user, model_id: str, purpose: str = "reply") -> bool:
    try:
        check_and_count(user, model_id, purpose)
    except ChatError as refusal:
        logger.info("model request not counted: budget used up",
                    extra={"user": _user_id(user), "model": model_id, "purpose": purpose, "code": refusal.code})
        return False
    return True


def refund(user, model_id: str) -> None:
    """Give back a request that was counted but never made."""
    if not is_metered(model_id):
        return
    day = today()
    with transaction.atomic():
        for user_id in (_user_id(user), None):
            ModelUsage.objects.filter(day=day, user_id=user_id, requests__gt=0).update(requests=F("requests") - 1)


def usage(user) -> dict:
    """Today's use, as sent in the hello frame's `usage`:
    `{"daily_requests", "used", "remaining", "resets_in"}` (see docs/protocol.md)."""
    user_limit, site_limit = _limits(user)
    used, site_used = _used_by_user_and_site(_user_id(user))
    left = [limit - spent for limit, spent in ((user_limit, used), (site_limit, site_used)) if limit]
    return {
        "daily_requests": user_limit or None,
        "used": used,
        "remaining": max(0, min(left)) if left else None,
        "resets_in": seconds_until_reset(),
    }

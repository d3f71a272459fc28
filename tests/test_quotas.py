"""Daily budgets of requests to hosted models (chat/quotas.py), through the socket.

The scripted model is a hosted (metered) model: every reply and every title counts.
"""
from __future__ import annotations

import datetime
import threading

import pytest
from asgiref.sync import sync_to_async
from django.db import connection

from chat import quotas
from chat.backends import LOCAL_MODEL_ID
from chat.errors import ChatError
from chat.models import Conversation, ModelUsage
from chat.store import get_store
from chat.titles import clean_title
from tests.conftest import ECHO_MODEL
from tests.fake_model_server import TITLE_PREFIX
from tests.sockets import ChatSocket, create_user

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("no_reply_left_running")]


@pytest.fixture
def budgets(settings):
    def set_budgets(user: int, site: int = 1000):
        settings.HF_DAILY_REQUESTS_PER_USER = user
        settings.HF_DAILY_REQUESTS_SITE = site

    return set_budgets


def title_requests(fake_model) -> int:
    return sum(1 for body in fake_model.requests if body["messages"][-1]["content"].startswith(TITLE_PREFIX))


async def used(user=None) -> int:
    return await sync_to_async(quotas._used)(user.pk if user is not None else None)


async def expect_quota_exceeded(socket: ChatSocket, ref: str) -> dict:
    frame = await socket.receive("error")
    assert (frame["type"], frame["code"], frame.get("ref")) == ("error", "quota_exceeded", ref), frame
    assert 0 < frame["retry_after"] <= 24 * 3600
    assert frame["retry_after"] == pytest.approx(quotas.seconds_until_reset(), abs=5)
    assert "midnight UTC" in frame["message"] and "local model" in frame["message"]
    return frame


# --- Counting -----------------------------------------------------------------------------


async def test_hello_shows_the_budget_and_a_reply_and_its_title_count(budgets, fake_model):
    budgets(user=10)
    user = await create_user()
    socket = await ChatSocket.connect(user)
    usage = socket.hello["usage"]
    assert usage["daily_requests"] == 10 and usage["used"] == 0 and usage["remaining"] == 10
    assert 0 < usage["resets_in"] <= 24 * 3600
    await socket.new_conversation("hello there world")
    assert title_requests(fake_model) == 1
    assert await used(user) == 2 and await used() == 2  # the reply and the title, for the user and the site
    await socket.close()
    again = await ChatSocket.connect(user)
    assert again.hello["usage"]["used"] == 2 and again.hello["usage"]["remaining"] == 8
    await again.close()


async def test_remaining_is_the_smaller_of_the_users_and_the_sites(budgets):
    budgets(user=10, site=3)
    alice, bob = await create_user("alice"), await create_user("bob")
    socket = await ChatSocket.connect(alice)
    await socket.new_conversation()  # 2 of the site's 3
    await socket.close()
    bobs = await ChatSocket.connect(bob)
    assert bobs.hello["usage"] == {**bobs.hello["usage"], "daily_requests": 10, "used": 0, "remaining": 1}
    await bobs.close()


async def test_no_limits_means_remaining_is_null_but_requests_are_still_counted(budgets):
    budgets(user=0, site=0)
    user = await create_user()
    socket = await ChatSocket.connect(user)
    assert socket.hello["usage"]["remaining"] is None and socket.hello["usage"]["daily_requests"] is None
    await socket.new_conversation()
    assert await used(user) == 2
    await socket.close()


# --- Refusing ------------------------------------------------------------------------------


async def test_user_budget_used_up_refuses_send_edit_and_regenerate_and_changes_nothing(budgets, fake_model):
    budgets(user=3)
    user = await create_user()
    socket = await ChatSocket.connect(user)
    conversation_id = await socket.new_conversation("hello there world")  # reply + title: 2
    await socket.send("message.send", conversation=conversation_id, content="second")  # 3
    text, final = await socket.reply_text()
    assert final["type"] == "reply.completed" and text == "Echo: second"
    asked = len(fake_model.requests)
    before = get_store().load(user.pk, conversation_id).to_dict()
    first_message = get_store().load(user.pk, conversation_id).active_branch()[0].id

    ref = await socket.send("message.send", conversation=conversation_id, content="third")
    error = await expect_quota_exceeded(socket, ref)
    assert "all 3 of today's requests" in error["message"]
    ref = await socket.send("message.edit", conversation=conversation_id, message=first_message, content="edited")
    await expect_quota_exceeded(socket, ref)
    ref = await socket.send("message.regenerate", conversation=conversation_id)
    await expect_quota_exceeded(socket, ref)
    ref = await socket.send("message.send", conversation=None, content="a new chat")
    await expect_quota_exceeded(socket, ref)

    assert get_store().load(user.pk, conversation_id).to_dict() == before
    assert await sync_to_async(Conversation.objects.count)() == 1
    assert len(fake_model.requests) == asked  # the model was never asked
    assert await used(user) == 3
    # Everything that costs nothing still works.
    await socket.send("conversation.rename", conversation=conversation_id, title="Renamed")
    await socket.receive("conversation.updated")
    await socket.close()


async def test_site_budget_used_up_refuses_every_user(budgets):
    budgets(user=100, site=2)
    alice, bob = await create_user("alice"), await create_user("bob")
    alices = await ChatSocket.connect(alice)
    conversation_id = await alices.new_conversation()  # 1 (the title would take the last one: skipped)
    await alices.send("message.send", conversation=conversation_id, content="more")  # 2
    await alices.reply_text()
    bobs = await ChatSocket.connect(bob)
    assert bobs.hello["usage"]["remaining"] == 0
    ref = await bobs.send("message.send", conversation=None, content="hi")
    error = await expect_quota_exceeded(bobs, ref)
    assert error["message"].startswith("This server has used all of today's requests")
    assert await used(bob) == 0  # refused by the site's budget: the user's count is given back
    await alices.close()
    await bobs.close()


async def test_title_is_skipped_when_it_would_take_the_last_request(budgets, fake_model):
    budgets(user=2)
    user = await create_user()
    socket = await ChatSocket.connect(user)
    await socket.send("message.send", conversation=None, content="hello there world")
    conversation_id = (await socket.receive("conversation.created"))["conversation"]["id"]
    _, final = await socket.reply_text()
    assert final["type"] == "reply.completed"
    updated = await socket.receive("conversation.updated")
    assert updated["conversation"]["title"] == clean_title("", "hello there world")  # the user's words
    assert title_requests(fake_model) == 0
    assert await used(user) == 1
    # The request kept in reserve is there for the next reply.
    await socket.send("message.send", conversation=conversation_id, content="one more")
    text, final = await socket.reply_text()
    assert final["type"] == "reply.completed" and text == "Echo: one more"
    assert await used(user) == 2
    await socket.close()


async def test_title_is_skipped_when_the_site_has_one_request_left(budgets, fake_model):
    budgets(user=100, site=2)
    user = await create_user()
    socket = await ChatSocket.connect(user)
    await socket.new_conversation("hello there world")
    assert title_requests(fake_model) == 0 and await used() == 1
    await socket.close()


async def test_a_refused_busy_message_is_given_back(budgets):
    budgets(user=10)
    user = await create_user()
    socket = await ChatSocket.connect(user)
    await socket.send("message.send", conversation=None, content="#tokens=200 #delay=0.02")
    conversation_id = (await socket.receive("conversation.created"))["conversation"]["id"]
    await socket.receive("reply.delta")
    assert await used(user) == 1
    ref = await socket.send("message.send", conversation=conversation_id, content="too soon")
    frame = await socket.receive("error")
    assert (frame["code"], frame["ref"]) == ("busy", ref)
    assert await used(user) == 1
    await socket.send("generation.stop", conversation=conversation_id)
    await socket.receive("reply.completed")
    await socket.close()


async def test_a_failed_reply_still_counts(budgets):
    budgets(user=10)
    user = await create_user()
    socket = await ChatSocket.connect(user)
    await socket.send("message.send", conversation=None, content="#status=500")
    _, final = await socket.reply_text()
    assert final["type"] == "reply.failed" and final["error"]["code"] == "model_failed"
    await socket.receive("conversation.updated")  # a failed first reply is titled too, by the model
    assert await used(user) == 2  # the provider was asked, and the title counts like any request
    await socket.close()


async def test_a_first_reply_rate_limited_by_the_provider_is_titled_without_a_model_call(budgets, fake_model):
    budgets(user=10)
    user = await create_user()
    socket = await ChatSocket.connect(user)
    await socket.send("message.send", conversation=None, content="#status=429 plan a picnic")
    _, final = await socket.reply_text()
    assert final["type"] == "reply.failed" and final["error"]["code"] == "rate_limited"
    updated = await socket.receive("conversation.updated")
    assert updated["conversation"]["title"] == clean_title("", "#status=429 plan a picnic")
    assert title_requests(fake_model) == 0 and await used(user) == 1
    await socket.close()


# --- The API --------------------------------------------------------------------------------


def test_the_local_model_is_never_counted(budgets, make_user):
    budgets(user=1, site=1)
    user = make_user()
    for _ in range(5):
        quotas.check_and_count(user, LOCAL_MODEL_ID, "reply")
    assert ModelUsage.objects.count() == 0
    quotas.check_and_count(user, ECHO_MODEL, "reply")
    with pytest.raises(ChatError) as refused:
        quotas.check_and_count(user.pk, ECHO_MODEL, "reply")
    assert refused.value.code == "quota_exceeded"


def test_yesterdays_use_does_not_count_today(budgets, make_user):
    budgets(user=1, site=1)
    user = make_user()
    yesterday = quotas.today() - datetime.timedelta(days=1)
    ModelUsage.objects.create(day=yesterday, user=user, requests=1)
    ModelUsage.objects.create(day=yesterday, user=None, requests=1)
    assert quotas.usage(user)["remaining"] == 1
    quotas.check_and_count(user, ECHO_MODEL)
    assert quotas.usage(user)["remaining"] == 0


def test_retry_after_is_the_time_until_utc_midnight(budgets, make_user, monkeypatch):
    budgets(user=1)
    user = make_user()
    late = datetime.datetime(2026, 11, 25, 22, 30, 0, tzinfo=datetime.UTC)
    monkeypatch.setattr(quotas, "_now", lambda: late)
    quotas.check_and_count(user, ECHO_MODEL)
    with pytest.raises(ChatError) as refused:
        quotas.check_and_count(user, ECHO_MODEL)
    assert refused.value.retry_after == 90 * 60
    assert "in 1 h 30 min" in refused.value.message
    # Midnight: a new day, a new budget.
    monkeypatch.setattr(quotas, "_now", lambda: late + datetime.timedelta(hours=2))
    quotas.check_and_count(user, ECHO_MODEL)
    assert quotas.usage(user)["used"] == 1


def test_concurrent_requests_never_overshoot_the_budget(budgets, make_user):
    budgets(user=1000, site=25)
    users = [make_user(f"user{i}") for i in range(4)]
    counted, refused = [], []
    lock = threading.Lock()

    def spend(user) -> None:
        try:
            for _ in range(10):
                try:
                    quotas.check_and_count(user, ECHO_MODEL)
                    outcome = counted
                except ChatError:
                    outcome = refused
                with lock:
                    outcome.append(user.pk)
        finally:
            connection.close()  # this thread's own connection

    threads = [threading.Thread(target=spend, args=(user,)) for user in users]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(counted) == 25 and len(refused) == 15
    assert quotas._used(None) == 25
    assert sum(quotas._used(user.pk) for user in users) == 25


def test_title_purpose_keeps_one_in_reserve(budgets, make_user):
    budgets(user=2)
    user = make_user()
    assert quotas.try_count(user, ECHO_MODEL, "title") is True  # 2 left: the title may take one
    assert quotas.try_count(user, ECHO_MODEL, "title") is False  # 1 left: kept for a reply
    quotas.check_and_count(user, ECHO_MODEL, "reply")
    assert quotas.usage(user)["remaining"] == 0


def test_usage_reads_the_users_and_the_sites_count_in_one_query(budgets, make_user, settings,
                                                                 django_assert_num_queries):
    # Every handshake's hello asks for it: one query, the account's age read from the user.
    budgets(user=10, site=100)
    settings.HF_NEW_ACCOUNT_DAYS = 7
    settings.HF_DAILY_REQUESTS_NEW_USER = 4
    user, other = make_user("alice"), make_user("bob")
    quotas.check_and_count(user, ECHO_MODEL)
    quotas.check_and_count(other, ECHO_MODEL)
    with django_assert_num_queries(1):
        usage = quotas.usage(user)
    assert usage == {**usage, "daily_requests": 4, "used": 1, "remaining": 3}
    ModelUsage.objects.filter(user=None).update(requests=99)
    assert quotas.usage(user)["remaining"] == 1, "the site's count is the one in the same query"


def test_a_count_is_one_statement_per_row_even_on_the_days_first_request(budgets, make_user):
    """Counting runs inside a write transaction that every other writer of a SQLite database
    waits for: one upsert per row, the day's row made by the same statement."""
    from django.test.utils import CaptureQueriesContext

    budgets(user=3, site=100)
    user = make_user()
    for expected in (1, 2):
        with CaptureQueriesContext(connection) as queries:
            quotas.check_and_count(user, ECHO_MODEL)
        counting = [q["sql"] for q in queries.captured_queries if ModelUsage._meta.db_table in q["sql"]]
        assert len(counting) == 2 and all(sql.startswith("INSERT") for sql in counting), counting
        assert quotas._used(user.pk) == expected and quotas._used(None) == expected
    assert ModelUsage.objects.count() == 2  # one row for the user, one for the site: no duplicate day rows


def test_a_title_is_refused_without_a_row_when_the_budget_is_one(budgets, make_user):
    budgets(user=1)
    user = make_user()
    assert quotas.try_count(user, ECHO_MODEL, "title") is False
    assert not ModelUsage.objects.exists()
    quotas.check_and_count(user, ECHO_MODEL)  # the one request, for a reply
    with pytest.raises(ChatError) as refused:
        quotas.check_and_count(user, ECHO_MODEL)
    assert refused.value.code == "quota_exceeded"
    assert quotas._used(user.pk) == 1 and quotas._used(None) == 1, "the refusal counted nothing"


def test_a_count_stays_under_the_limit_and_tells_the_site_row_apart(make_user):
    owner = make_user()
    day = datetime.date(2026, 11, 30)
    ModelUsage.objects.create(day=day, user=owner, requests=1)
    ModelUsage.objects.create(day=day, user=None, requests=5)
    assert quotas._take(day, owner.pk, 2, 0) is True
    assert quotas._take(day, owner.pk, 2, 0) is False  # at the limit
    assert quotas._take(day, owner.pk, 3, 1) is False  # the title's reserve
    assert quotas._take(day, None, 0, 0) is True  # no limit
    counts = dict(ModelUsage.objects.filter(day=day).values_list("user_id", "requests"))
    assert counts == {owner.pk: 2, None: 6}
    assert quotas._take(day + datetime.timedelta(days=1), None, 1, 0) is True  # the next day's first: a new row
    assert quotas._take(day + datetime.timedelta(days=1), None, 1, 0) is False
    assert ModelUsage.objects.get(day=day + datetime.timedelta(days=1), user=None).requests == 1
